"""The process's open-file budget: raised to the hard limit at start, and shared so that no
kind of connection not yet trusted can take every descriptor."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Raise the open-file soft limit to the hard limit: every session holds several sockets,
    and Debian's default soft limit (1024) is reached long before memory or CPU."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def connection_budget(wanted: int) -> int:
    """At most a quarter of the process's descriptors for one kind of connection not yet
    trusted, so that the other kinds (and the database, the recordings) always find some."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft // 4))
