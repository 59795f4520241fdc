"""What a consent code looks like, the same for the broker and the helper: nine digits, shown as
``123-456-789``; the spaces and dashes people type are dropped."""

from __future__ import annotations

CODE_DIGITS = 9
#: what the customer reads for anything else (the helper says it without dialling)
MALFORMED = "A code has 9 digits, like 123-456-789. Check what you typed."


def code_digits(text: str) -> str | None:
    """The code's digits, or ``None`` when ``text`` cannot be a code."""
    digits = "".join(ch for ch in text if ch not in " -\t")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits
