"""Checks of text that people type into the broker (ticket titles, e-mail addresses, display
names, token names ...): control characters are refused where the text comes in, with the name
of the field in the message, so that nothing stored can repaint a terminal later. Everything
shown is escaped as well (assist_protocol.safetext); this is the first of the two walls."""

from __future__ import annotations

import re

from assist_protocol.safetext import controls
from broker.errors import Invalid

#: a pragmatic address check: one @, no spaces, a dot in the domain; the mail server decides more
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def plain(value: str, field: str, *, limit: int | None = None, multiline: bool = False) -> str:
    """``value`` unchanged, or :class:`Invalid` naming ``field`` when it holds a control
    character (``multiline``: line breaks and tabs are allowed) or is longer than ``limit``."""
    allowed = {"\\n", "\\t"} if multiline else set()
    found = [
        c for c in controls(value.replace("\r\n", "\n") if multiline else value) if c not in allowed
    ]
    if found:
        raise Invalid(f"{field} must not contain control characters (found {', '.join(found)})")
    if limit is not None and len(value) > limit:
        raise Invalid(f"{field} may have at most {limit} characters")
    return value


def email(value: str | None, field: str = "customer e-mail") -> str | None:
    if value is None or value == "":
        return None
    plain(value, field, limit=320)
    if not _EMAIL.fullmatch(value):
        raise Invalid(f"{field} must look like name@example.com, got {value!r}")
    return value
