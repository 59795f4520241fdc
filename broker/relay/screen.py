"""What a watched shell's terminal shows now, for a watcher who joins late (``T-1+watch``).

The broker keeps no terminal emulator: it keeps the shell's recorded output since its screen
was last cleared (``ESC [ 2 J``, ``ESC [ H ESC [ J``, ``ESC c``), and replays it into the
watcher's own terminal, which draws it exactly as the driver's terminal did. Full-screen
programs switch to the alternate screen (``ESC [ ? 1049 h``, vim, less, htop): from there on
the main screen's bytes wait aside and the alternate screen's are kept, so a watcher who joins
while vim runs sees vim, and the shell's lines again when it quits, as the driver does.

Why not a screen model such as pyte: it parses about 0.4 MB/s in pure Python, on the relay's
hot path for every byte of every watchable shell (the relay itself carries hundreds of MB/s),
and it has no alternate screen, so the shell's lines were lost after vim. Keeping the output
costs an append and a few substring searches per chunk (the regex only where a marker may be),
and only for shells that may be watched (``observe`` granted, a PTY, recorded).

Each part keeps about :data:`KEEP` bytes; beyond, its oldest lines go. For scrolling output
(a plain shell, ``cat``, logs) that is exact: the screen is the last lines. A full-screen
program that repaints only what changed (top, vim) may, after more than that much output since
its last full repaint, miss rows it never repainted since; they come back with its next full
repaint. Only output that was handed to the recorder is kept here (:mod:`broker.relay.pump`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: bytes each part (the main screen, the alternate screen) keeps at most
KEEP = 256 * 1024
#: a marker split between two chunks is found by looking back this far into the last one
LOOKBACK = 16

_MARK = re.compile(
    rb"(?P<clear>\x1b\[(?:1;1)?H\x1b\[[02]?J|\x1b\[2J|\x1bc)"
    rb"|(?P<enter>\x1b\[\?(?:1049|1047|47)h)"
    rb"|(?P<leave>\x1b\[\?(?:1049|1047|47)l)"
)
#: every marker holds one of these
_HINTS = (b"\x1b[2J", b"\x1b[J", b"\x1b[0J", b"\x1bc", b"\x1b[?")
#: how a replay begins: plain attributes, the whole screen cleared, the cursor home
_FRESH = b"\x1b[0m\x1b[H\x1b[2J"


@dataclass(frozen=True)
class _Span:
    """A part's bytes: those of ``before``, then ``buf[lo:hi]`` of the feed under way."""

    before: _Part
    lo: int
    hi: int


_Part = _Span | bytes | None


def _joined(part: _Part, buf: bytearray) -> bytearray:
    pieces: list[bytes | bytearray] = []
    while isinstance(part, _Span):
        pieces.append(buf[part.lo : part.hi])
        part = part.before
    if part is not None:
        pieces.append(part)
    return bytearray(b"".join(reversed(pieces)))


class ScreenTail:
    """A shell's output since its screen was last cleared, to replay it to a watcher."""

    def __init__(self) -> None:
        #: the screen shown now: the main one, or the alternate one while ``main`` waits aside
        self.shown = bytearray()
        self.main: bytes | None = None

    def feed(self, data: bytes) -> None:
        pos = max(0, len(self.shown) - LOOKBACK)
        buf = self.shown
        buf += data
        # a few searches at C speed; the regex only where a marker may be
        hinted = buf.find(b"\x1b", pos) >= 0 and any(buf.find(hint, pos) >= 0 for hint in _HINTS)
        if not hinted:
            self.shown = _cut(buf)
            return
        # One pass over the markers, moving no bytes: what each part holds is noted as spans
        # of ``buf`` and put together once at the end (a stream of markers costs what its
        # bytes cost, not a copy of the screen each).
        head: _Part = None  # what the screen shows before buf[start:] (after a leave: main)
        start = 0
        main: _Part = self.main
        for mark in _MARK.finditer(buf, pos):
            if mark.lastgroup == "clear":  # all before it is gone from the screen
                head, start = None, mark.start()
            elif mark.lastgroup == "enter":
                if main is None:
                    main = _Span(head, start, mark.start())
                head, start = None, mark.end()
            elif main is not None:  # leaving the alternate screen: the main one is back
                head, start, main = main, mark.end(), None
        shown = _joined(head, buf)
        shown += buf[start:]
        self.shown = _cut(shown)
        self.main = None if main is None else bytes(_cut(_joined(main, buf)))

    def replay(self) -> bytes:
        """Bytes that draw the screen as it is now on a fresh terminal."""
        if self.main is None:
            return _FRESH + bytes(self.shown)
        return _FRESH + self.main + b"\x1b[?1049h" + _FRESH + bytes(self.shown)


def _cut(part: bytearray) -> bytearray:
    """``part`` with its oldest lines gone, down to :data:`KEEP` bytes, once it is a quarter
    over (so that a shell echoing keystrokes does not move the whole part each time)."""
    if len(part) <= KEEP + KEEP // 4:
        return part
    line = part.find(b"\n", len(part) - KEEP)
    del part[: line + 1 if line >= 0 else len(part) - KEEP]
    return part
