"""``python -m bench``: the broker against OpenSSH, on loopback, in one run.

Starts the broker path (``assist-broker serve`` + the real helper, recording on; once with
reverse links, the default, and once with ``helper_link=nested`` unless ``--no-nested``) and the
baseline (two throwaway ``sshd``: a target and a ``-J`` jump host), alternates them so that
ratios come from the same minutes, and prints a table (and JSON with ``--json FILE``):

- bulk ``ssh ... 'cat > /dev/null'`` and sftp upload of ``--mib`` MiB: MB/s and ratio;
- setup time of ``ssh ... true`` (median of 10) and ratio;
- keystroke round trip through a PTY (1,000 one-byte echoes): p50/p99 in microseconds;
- broker RSS with N idle helper tunnels (``--tunnels 100,500,1000``) and per tunnel;
- consent code redemptions per second (SQLite; PostgreSQL when one answers on 127.0.0.1:5432);
- recording overhead: bulk with input recording on and off.

Targets (issue 7): bulk >= 0.8x ssh -J; setup <= 0.5x; echo p50 <= 2x and p99 < 1 ms;
1,000 idle tunnels <= 64 MiB broker RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cli_latency, measure
from bench.broker_path import BrokerPath
from bench.openssh import Baseline
from bench.tunnels import active_sessions, idle_tunnels, issue_codes, redemptions_per_second
from broker.store.db import Store

MB = 1_000_000


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {cpus} CPUs ({model}), Python {platform.python_version()}"


def paths(
    args: argparse.Namespace, root: Path
) -> tuple[dict[str, tuple[BrokerPath, str]], Baseline]:
    """The broker with reverse links ("broker"), with nested connections ("nested", unless
    ``--no-nested``), and the baseline."""
    brokers: dict[str, tuple[BrokerPath, str]] = {}
    for name, link in (("broker", "reverse"), ("nested", "nested")):
        if name == "nested" and not args.nested:
            continue
        broker = BrokerPath(root / name, helper_link=link).start()
        ticket = broker.ticket()
        broker.connect_helper(ticket)
        brokers[name] = (broker, ticket)
    return brokers, Baseline.start(root / "openssh")


def relay_figures(
    args: argparse.Namespace,
    brokers: dict[str, tuple[BrokerPath, str]],
    baseline: Baseline,
    data: Path,
) -> dict[str, Any]:
    size = data.stat().st_size
    results: dict[str, Any] = {}
    via = {name: b.ssh_args(ticket) for name, (b, ticket) in brokers.items()}
    sftp = {name: b.sftp_args(ticket) for name, (b, ticket) in brokers.items()}
    via["ssh -J"], sftp["ssh -J"] = baseline.ssh_args(), baseline.sftp_args()
    bulk: dict[str, list[float]] = {name: [] for name in via}
    upload: dict[str, list[float]] = {name: [] for name in via}
    for _ in range(args.rounds):  # alternate: the same minutes for both
        for name in via:
            bulk[name].append(size / measure.bulk(via[name], data) / MB)
            upload[name].append(size / measure.sftp_upload(sftp[name], data) / MB)
    results["bulk_mb_s"] = {name: round(max(v), 1) for name, v in bulk.items()}
    results["sftp_mb_s"] = {name: round(max(v), 1) for name, v in upload.items()}
    results["setup_ms"] = {
        name: round(measure.setup(args_, args.setup_runs) * 1000, 1) for name, args_ in via.items()
    }
    echo: dict[str, list[float]] = {}
    for name, args_ in via.items():
        try:
            echo[name] = measure.pty_echo(args_, args.echoes)
        except EOFError as exc:  # say so, in the output and the figures, and measure again
            print(f"warning: {name}: {exc}; measuring the echo again", file=sys.stderr)
            results.setdefault("echo_retried", {})[name] = str(exc)[:500]
            echo[name] = measure.pty_echo(args_, args.echoes)
    results["echo_us"] = {
        name: {
            "p50": round(statistics.median(v)),
            "p99": round(measure.percentile(v, 99)),
        }
        for name, v in echo.items()
    }
    return results


async def tunnel_figures(root: Path, counts: list[int]) -> dict[str, Any]:
    """Broker RSS with N idle tunnels, on a broker of its own: one that has just relayed the
    bulk runs keeps their buffers in its heap, which would inflate the base."""
    broker = BrokerPath(root / "tunnels").start()
    try:
        return await _tunnel_figures(broker, counts)
    finally:
        broker.stop()


async def _tunnel_figures(broker: BrokerPath, counts: list[int]) -> dict[str, Any]:
    store = Store(f"sqlite+aiosqlite:///{broker.data_dir / 'broker.db'}")
    figures: dict[str, Any] = {}
    await asyncio.sleep(1)  # settled after start
    before = broker.status()["rss_kib"]
    figures["rss_idle_broker_mib"] = round(before / 1024, 1)
    opened: list[Any] = []
    try:
        for count in counts:
            pairs = await issue_codes(store, broker.data_dir, count - len(opened), "bench")
            codes = [code for _, code in pairs]
            opened += await idle_tunnels(broker.ssh_port, codes)
            await asyncio.sleep(1)
            rss = broker.status()["rss_kib"]
            figures[f"tunnels_{count}"] = {
                "rss_mib": round(rss / 1024, 1),
                "kib_per_tunnel": round((rss - before) / count, 1),
            }
    finally:
        for conn in opened:
            conn.close()
        await store.close()
    return figures


async def active_figures(broker: BrokerPath, counts: list[int]) -> dict[str, Any]:
    """Broker RSS and CPU with M recorded sessions echoing at once (a fresh broker each)."""
    import asyncssh

    figures: dict[str, Any] = {}
    for count in counts:
        path = BrokerPath(broker.folder.parent / f"active-{count}").start()
        try:
            assert path.key is not None
            key = asyncssh.read_private_key(path.key)
            before = path.status()
            moved, newcomer = await active_sessions(path.ssh_port, path.data_dir, count, key)
            after = path.status()
            figures[f"sessions_{count}"] = {
                "rss_mib": round(after["rss_kib"] / 1024, 1),
                "kib_per_session": round((after["rss_kib"] - before["rss_kib"]) / count, 1),
                "cpu_s": round(
                    (after["cpu_ticks"] - before["cpu_ticks"]) / os.sysconf("SC_CLK_TCK"), 1
                ),
                "echoed_mb": round(moved / MB, 1),
                "newcomer_s": round(newcomer, 2),
            }
        finally:
            path.stop()
    return figures


async def redemption_figures(root: Path, count: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    urls = {"sqlite": f"sqlite+aiosqlite:///{root / 'codes.db'}"}
    try:
        import asyncpg

        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test", timeout=2)
        await admin.execute("DROP DATABASE IF EXISTS assist_bench")
        await admin.execute("CREATE DATABASE assist_bench")
        await admin.close()
        urls["postgresql"] = "postgresql+asyncpg://postgres@127.0.0.1:5432/assist_bench"
    except Exception as exc:  # no PostgreSQL here: say so in the figures
        figures["postgresql"] = f"skipped: {exc.__class__.__name__}"
    for name, url in urls.items():
        store = Store(url)
        await store.upgrade()
        try:
            rate = await redemptions_per_second(store, root, count)
            figures[name] = round(rate, 1)
        finally:
            await store.close()
    return figures


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def report(results: dict[str, Any]) -> str:
    r = results
    lines = [f"machine: {r['machine']}", ""]
    lines.append(f"{'measure':40} {'broker':>12} {'ssh -J':>12} {'ratio':>8}  target")
    nested = "nested" in r["bulk_mb_s"]
    if nested:
        lines[-1] += "   nested (ratio to ssh -J)"
    rows: list[tuple[str, Any, str]] = [
        ("bulk cat > /dev/null (MB/s)", r["bulk_mb_s"], ">= 0.8"),
        ("sftp upload (MB/s)", r["sftp_mb_s"], ""),
        ("setup ssh true, median (ms)", r["setup_ms"], "<= 0.5"),
        ("PTY echo p50 (us)", {k: v["p50"] for k, v in r["echo_us"].items()}, "<= 2"),
        ("PTY echo p99 (us)", {k: v["p99"] for k, v in r["echo_us"].items()}, "< 1000 us"),
    ]
    for label, values, target in rows:
        broker, base = values["broker"], values["ssh -J"]
        line = f"{label:40} {broker:>12} {base:>12} {ratio(broker, base):>8}  {target:10}"
        if nested:
            line += f" {values['nested']:>8} ({ratio(values['nested'], base)})"
        lines.append(line)
    lines.append("")
    rec = r.get("recording", {})
    if rec:
        lines.append(
            f"bulk with input recording on / off (MB/s): {rec['on']} / {rec['off']} "
            f"(ratio {ratio(rec['on'], rec['off'])})"
        )
    tunnels = r.get("tunnels", {})
    if tunnels:
        lines.append(f"broker RSS with no tunnel: {tunnels['rss_idle_broker_mib']} MiB")
        for key, value in tunnels.items():
            if key.startswith("tunnels_"):
                lines.append(
                    f"  {key[8:]:>5} idle tunnels: {value['rss_mib']} MiB RSS, "
                    f"{value['kib_per_tunnel']} KiB per tunnel (target: 1,000 <= 64 MiB)"
                )
    for key, value in r.get("active", {}).items():
        lines.append(
            f"  {key[9:]:>5} active recorded sessions: {value['rss_mib']} MiB RSS, "
            f"{value['kib_per_session']} KiB per session, {value['cpu_s']} s CPU, "
            f"{value['echoed_mb']} MB echoed in 5 s, a new customer got in in "
            f"{value['newcomer_s']} s (target: 200 < 1 GiB)"
        )
    codes = r.get("redemptions_per_s", {})
    if codes:
        lines.append(f"consent code redemptions per second: {codes}")
    if "cli" in r:
        lines.append(cli_latency.report(r["cli"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="bulk and sftp size (MiB)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations for bulk and sftp")
    parser.add_argument("--setup-runs", type=int, default=10)
    parser.add_argument("--echoes", type=int, default=1000)
    parser.add_argument("--tunnels", default="100,500,1000", help="idle tunnel counts")
    parser.add_argument("--sessions", default="10,50,200", help="active recorded sessions")
    parser.add_argument("--codes", type=int, default=500, help="codes to redeem per store")
    parser.add_argument(
        "--no-nested",
        dest="nested",
        action="store_false",
        help="leave out the broker with nested connections (helper_link=nested)",
    )
    parser.add_argument("--cli-runs", type=int, default=15, help="runs of each CLI command")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="assist-bench-") as folder:
        root = Path(folder)
        data = root / "payload.bin"
        with data.open("wb") as out:
            chunk = os.urandom(1024 * 1024)
            for _ in range(args.mib):
                out.write(chunk)
        brokers, baseline = paths(args, root)
        broker = brokers["broker"][0]
        try:
            results.update(relay_figures(args, brokers, baseline, data))
            counts = [int(n) for n in args.tunnels.split(",") if n.strip()]
            if counts:
                results["tunnels"] = asyncio.run(tunnel_figures(root, counts))
            active = [int(n) for n in args.sessions.split(",") if n.strip()]
            if active:
                results["active"] = asyncio.run(active_figures(broker, active))
        finally:
            for path, _ in brokers.values():
                path.stop()
            baseline.stop()
        unrecorded = BrokerPath(root / "no-input", record_input=False).start()
        try:
            ticket = unrecorded.ticket()
            unrecorded.connect_helper(ticket)
            off = max(
                data.stat().st_size / measure.bulk(unrecorded.ssh_args(ticket), data) / MB
                for _ in range(args.rounds)
            )
        finally:
            unrecorded.stop()
        results["recording"] = {"on": results["bulk_mb_s"]["broker"], "off": round(off, 1)}
        results["redemptions_per_s"] = asyncio.run(redemption_figures(root, args.codes))
    results["cli"] = cli_latency.figures(args.cli_runs)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
