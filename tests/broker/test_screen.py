"""The watched shell's screen kept for late watchers: what each marker does to it."""

from __future__ import annotations

from broker.relay.screen import KEEP, ScreenTail

FRESH = b"\x1b[0m\x1b[H\x1b[2J"


def fed(*chunks: bytes) -> ScreenTail:
    screen = ScreenTail()
    for chunk in chunks:
        screen.feed(chunk)
    return screen


def test_the_screen_starts_at_the_last_clear_even_one_split_between_chunks() -> None:
    assert fed(b"old\r\n", b"\x1b[H\x1b[2Jnew\r\n").replay() == FRESH + b"\x1b[H\x1b[2Jnew\r\n"
    assert fed(b"old\r\n\x1b[H\x1b", b"[Jnew").replay() == FRESH + b"\x1b[H\x1b[Jnew"
    assert fed(b"old", b"\x1bcnew", b" more").replay() == FRESH + b"\x1bcnew more"
    assert fed(b"plain").replay() == FRESH + b"plain"


def test_the_alternate_screen_is_kept_apart_and_the_main_one_comes_back() -> None:
    screen = fed(b"$ vim\r\n", b"\x1b[?1049h\x1b[22;0;0t\x1b[H\x1b[2J~\r\n~")
    assert screen.replay() == FRESH + b"$ vim\r\n\x1b[?1049h" + FRESH + b"\x1b[H\x1b[2J~\r\n~"
    screen.feed(b"\x1b[?1049l$ ")
    assert screen.replay() == FRESH + b"$ vim\r\n$ "
    assert fed(b"a\x1b[?1049lb").replay() == FRESH + b"a\x1b[?1049lb"  # never entered


def test_long_output_keeps_its_last_lines() -> None:
    line = b"x" * 99 + b"\n"
    screen = fed(*[line] * (2 * KEEP // len(line)), b"last")
    kept = screen.replay()[len(FRESH) :]
    assert len(kept) <= KEEP + KEEP // 4 and kept.endswith(line + b"last") and kept.startswith(b"x")
