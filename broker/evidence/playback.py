"""Replay an asciicast v2 recording in the terminal: output as it was seen, at ``speed``, with
pauses capped at ``idle`` seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from broker.errors import Invalid


async def play(
    path: Path,
    write: Callable[[str], None],
    *,
    speed: float = 1.0,
    idle: float | None = 2.0,
) -> int:
    """Write each output event after its delay; return how many were played."""
    if speed <= 0:
        raise Invalid("--speed must be above 0")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()  # noqa: ASYNC240
    try:
        header = json.loads(lines[0])
    except (IndexError, ValueError):
        raise Invalid(f"{path} is not an asciicast recording") from None
    if header.get("version") != 2:
        raise Invalid(f"{path}: only asciicast version 2 is supported")
    played, previous = 0, 0.0
    for line in lines[1:]:
        try:
            at, code, text = json.loads(line)
        except ValueError:
            break  # a recording cut by a crash ends with a partial line
        if code != "o":
            continue
        delay = (float(at) - previous) / speed
        if idle is not None:
            delay = min(delay, idle)
        if delay > 0:
            await asyncio.sleep(delay)
        previous = float(at)
        write(str(text))
        played += 1
    return played
