"""Facts about the customer's own account, used by the shell and the file server."""

from __future__ import annotations

import os
import pwd


def user_shell() -> tuple[str, str]:
    """The login shell and home directory of the user running the helper."""
    entry = pwd.getpwuid(os.getuid())
    return entry.pw_shell or "/bin/sh", entry.pw_dir or "/"
