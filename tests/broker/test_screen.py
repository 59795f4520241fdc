"""The watched shell's screen kept for late watchers: what each marker does to it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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


class Reference:
    """The marker rules one at a time, the plain way (moving bytes at each marker): what the
    single pass of ScreenTail.feed must give, for any stream and any chunking."""

    def __init__(self) -> None:
        self.shown, self.main = b"", None  # type: tuple[bytes, bytes | None]

    def feed(self, data: bytes) -> None:
        from broker.relay.screen import _MARK

        buf, pos = self.shown + data, max(0, len(self.shown) - 16)
        while (mark := _MARK.search(buf, pos)) is not None:
            if mark.lastgroup == "clear":
                buf, pos = buf[mark.start() :], mark.end() - mark.start()
            elif mark.lastgroup == "enter":
                if self.main is None:
                    self.main = buf[: mark.start()]
                buf, pos = buf[mark.end() :], 0
            elif self.main is None:
                pos = mark.end()
            else:
                buf, pos, self.main = self.main + buf[mark.end() :], len(self.main), None
        self.shown = buf


PIECES = [b"x", b"line\r\n", b"\x1b[2J", b"\x1b[H\x1b[J", b"\x1bc", b"\x1b[?1049h", b"\x1b[?1049l"]


@given(st.lists(st.sampled_from(PIECES), max_size=60), st.lists(st.integers(1, 40), max_size=8))
def test_one_pass_over_the_markers_keeps_the_rules_of_each(
    pieces: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pieces)
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(stream[at : at + cut])
        at += cut
    chunks.append(stream[at:])
    screen, reference = ScreenTail(), Reference()
    for chunk in chunks:
        screen.feed(chunk)
        reference.feed(chunk)
    assert (bytes(screen.shown), screen.main) == (reference.shown, reference.main)
