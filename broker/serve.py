"""``assist-broker serve``: run until Ctrl-C or SIGTERM, then shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

from broker.app import Broker, Listening
from broker.config import Settings
from broker.resources import raise_fd_limit
from broker.web.helper_download import customer_line


def _shown(settings: Settings, host: str) -> str:
    """The host as customers and engineers reach it (the public name for a wildcard)."""
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    return settings.advertised_host if settings.public_host or wildcard else host


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def banner(settings: Settings, listening: Listening, scheme: str, descriptors: int = 0) -> str:
    shown = _shown(settings, listening.ssh_host)
    address = _hostport(shown, listening.ssh_port)
    fingerprint = listening.fingerprint
    http = f"{scheme}://{_hostport(listening.http_host, listening.http_port)}"
    download = f"{scheme}://{_hostport(_shown(settings, listening.http_host), listening.http_port)}"
    return "\n".join(
        [
            f"assist-broker is listening for SSH on {listening.ssh_host}:{listening.ssh_port}",
            f"Web UI and API for auditors: {http}/ (API: {http}/api/v1/openapi.json)",
            f"data dir: {settings.data_dir.resolve()}",
            f"host key fingerprint: {fingerprint}",
            "",
            "A customer runs (one line: it downloads the helper, which asks for the code):",
            f"  {customer_line(download)}",
            "or, with assist-helper installed:",
            f"  assist-helper connect --broker {address} --fingerprint {fingerprint}",
            "An engineer runs:",
            f"  ssh -p {listening.ssh_port} TICKET@{shown}",
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
            banner(settings, listening, scheme, descriptors),
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
