"""How much does recording cost? Feeds the same stream through three writers in one process:

- ``raw``: bytes appended to a file (what any recorder must at least do);
- ``per-chunk JSON``: one json.dumps and one write per chunk (the prototype's approach, ~4x slower);
- ``recorder``: the broker's RecorderSink (append on the hot path, coalesce, encode in bulk).

Run: ``python -m bench.recording [--mib 256] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from broker.events import ChannelOpened, ChannelRef, Output
from broker.sinks.recorder import RecorderSink

CHUNK = 32 * 1024


def payload() -> bytes:
    line = b"2026-11-25 10:00:00 mail-queue[4242]: deferred: connection timed out 12345\r\n"
    return (line * (CHUNK // len(line) + 1))[:CHUNK]


def run_raw(path: Path, chunks: int, data: bytes) -> float:
    start = time.perf_counter()
    with path.open("wb") as out:
        for _ in range(chunks):
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - start


def run_per_chunk_json(path: Path, chunks: int, data: bytes) -> float:
    start = time.perf_counter()
    t0 = time.monotonic()
    with path.open("w", encoding="utf-8") as out:
        for _ in range(chunks):
            at = time.monotonic() - t0
            out.write(json.dumps([round(at, 6), "o", data.decode("utf-8", "replace")]) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - start


def run_recorder(root: Path, chunks: int, data: bytes) -> float:
    sink = RecorderSink(None, root, root, record_input=True, cap=1 << 62)  # type: ignore[arg-type]
    ref = ChannelRef("bench", "session", 1, "T-1", 1, "bench", "exec")
    sink._start(ChannelOpened(ref, {"pty": True, "width": 80, "height": 24}))
    recording = sink.open["bench"]
    event = Output(ref, data)
    flush_every = max(1, (50 * 1024 * 1024) // CHUNK)  # about one flush per second of traffic
    start = time.perf_counter()
    for i in range(chunks):
        sink.data(event)
        if i % flush_every == flush_every - 1:
            sink._flush(recording)
    sink._flush(recording)
    os.fsync(recording.fd)
    elapsed = time.perf_counter() - start
    os.close(recording.fd)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    chunks = args.mib * 1024 * 1024 // CHUNK
    data = payload()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for round_ in range(2):  # alternate, keep the best of two
            for name, run in (
                ("raw", lambda: run_raw(root / "raw.bin", chunks, data)),
                ("per-chunk JSON", lambda: run_per_chunk_json(root / "naive.cast", chunks, data)),
                ("recorder", lambda r=round_: run_recorder(root / f"r{r}", chunks, data)),
            ):
                seconds = run()
                results[name] = min(results.get(name, seconds), seconds)
    mb = args.mib * 1.048576
    rows = {
        name: {"seconds": s, "MB/s": mb / s, "vs raw": results["raw"] / s}
        for name, s in results.items()
    }
    print(f"recording {args.mib} MiB in {CHUNK // 1024} KiB chunks (best of 2)")
    print(f"{'writer':<16}{'MB/s':>10}{'vs raw':>10}")
    for name, row in rows.items():
        print(f"{name:<16}{row['MB/s']:>10.0f}{row['vs raw']:>10.2f}")
    ratio = results["per-chunk JSON"] / results["recorder"]
    print(f"recorder is {ratio:.1f}x the per-chunk JSON approach")
    if args.json:
        Path(args.json).write_text(json.dumps({"mib": args.mib, "writers": rows}, indent=2))


if __name__ == "__main__":
    main()
