"""``assist-broker serve``: run until Ctrl-C or SIGTERM, then shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

from broker.app import Broker
from broker.config import Settings
from broker.resources import raise_fd_limit


def banner(
    settings: Settings, host: str, port: int, fingerprint: str, http: str, descriptors: int = 0
) -> str:
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    shown = settings.advertised_host if settings.public_host or wildcard else host
    address = f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"
    return "\n".join(
        [
            f"assist-broker is listening for SSH on {host}:{port}",
            f"Web UI and API for auditors: {http}/ (API: {http}/api/v1/openapi.json)",
            f"data dir: {settings.data_dir.resolve()}",
            f"host key fingerprint: {fingerprint}",
            "",
            "A customer runs:",
            f"  assist-helper connect --broker {address} --fingerprint {fingerprint}",
            "An engineer runs:",
            f"  ssh -p {port} TICKET@{shown}",
            "",
            f"open files allowed: {descriptors}",
            "Press Ctrl-C to stop.",
        ]
    )


async def serve(settings: Settings) -> int:
    descriptors = raise_fd_limit()
    broker = Broker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        listening = await broker.start()
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's generations, so a full collection does not walk it mid-session.
        gc.freeze()
        scheme = "https" if settings.http_tls_cert else "http"
        print(
            banner(
                settings,
                listening.ssh_host,
                listening.ssh_port,
                listening.fingerprint,
                f"{scheme}://{listening.http_host}:{listening.http_port}",
                descriptors,
            ),
            flush=True,
        )
        await stop.wait()
        print("Stopping: ending every open session ...", file=sys.stderr, flush=True)
    finally:
        await broker.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("assist-broker stopped.", flush=True)
    return 0
