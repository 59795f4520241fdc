"""Text from outside, made safe to show on a terminal.

Ticket titles, names, commands, file names and host names come from people and machines the
reader does not control. Shown raw, an escape sequence in one of them can clear a customer's
screen and paint a question of its own, or hide lines from an admin. :func:`visible` turns
every character that is not printable (controls, escape, DEL, line and paragraph separators,
bidirectional overrides and other format characters) into a visible escape such as ``\\x1b``,
so the reader sees that it was there and it does nothing.

Standard library only: the customer's helper uses it too.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, limit: int | None = None, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character shown as an escape (``keep_newlines``:
    except line breaks, for text whose lines the caller composed itself). ``limit`` cuts
    the text (before escaping) to that many characters, marking the cut with ``...``."""
    value = str(text)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "..."
    if value.isprintable():
        return value
    if keep_newlines:
        return "\n".join(visible(line) for line in value.split("\n"))
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in value)


def controls(text: str) -> list[str]:
    """The non-printable characters in ``text``, as escapes (empty when there are none)."""
    return sorted({_escape(ch) for ch in text if not ch.isprintable()})
