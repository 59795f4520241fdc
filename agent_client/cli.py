"""``assist-helper``: the customer's side. ``assist-helper connect --broker HOST:PORT
--fingerprint SHA256:...`` asks for the consent code and lets a support engineer in, after you
say yes, until you press Ctrl-C. (The code may also follow ``connect``, for scripts.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import resources

from agent_client.bootstrap import ROOT_REFUSED
from agent_client.connect import EXIT_REFUSED, Helper, Options
from agent_client.consent_ui import NEED_FINGERPRINT
from agent_client.console import Console
from agent_client.places import log_path
from assist_protocol.codeformat import MALFORMED, code_digits
from assist_protocol.constants import DEFAULT_SSH_PORT

ROOT_WARNING = (
    "Warning: running as root (--allow-root). The engineer will have full control of this computer."
)
UNEXPECTED = (
    "Something went wrong in the helper, so it stopped. Nobody can reach this computer through\n"
    "it now. The details for the support desk are in {log}"
)
EXIT_FAILED = 3
CODE_PROMPT = "Consent code (the engineer gave it to you, like 123-456-789): "
NO_CODE = "No consent code was given. Ask the engineer for one, then run the helper again."


def ask_code() -> str | None:
    """The code, typed on the terminal (or one line of standard input), never from argv where
    every local user can read it in /proc. Read byte by byte from the descriptor, so that
    nothing after the line is taken from the customer's later answers."""
    fd = sys.stdin.fileno()
    if os.isatty(fd):
        sys.stdout.write(CODE_PROMPT)
        sys.stdout.flush()
    line = bytearray()
    while len(line) < 200:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            break
        line += byte
    code = line.decode("utf-8", "replace").strip()
    return code or None


def _defaults() -> dict[str, str]:
    """The broker's address and fingerprint, built into a helper downloaded from /helper."""
    try:
        text = (resources.files("agent_client") / "defaults.json").read_text()
    except (FileNotFoundError, OSError):
        return {}
    values = json.loads(text)
    return {k: str(v) for k, v in values.items() if k in ("broker", "fingerprint")}


DEFAULTS = _defaults()


def broker_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[IPv6]:PORT``, or a host alone on the broker's default port (2222)."""
    text = text.strip()
    if (text.startswith("[") and text.endswith("]")) or ":" not in text:
        host, port = text, str(DEFAULT_SSH_PORT)
    else:
        host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assist-helper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connect = sub.add_parser("connect", help="let a support engineer in, with your consent")
    connect.add_argument(
        "code",
        nargs="?",
        help="the consent code (leave it out to be asked for it: other users of this computer "
        "can read a program's arguments)",
    )
    connect.add_argument(
        "--broker",
        default=DEFAULTS.get("broker"),
        help=f"HOST:PORT of the support broker (the port is {DEFAULT_SSH_PORT} if left out)",
    )
    connect.add_argument(
        "--fingerprint",
        default=DEFAULTS.get("fingerprint"),
        help="the broker's key fingerprint (SHA256:...)",
    )
    connect.add_argument("--scope", help="allow less than asked, e.g. --scope exec")
    connect.add_argument("--yes", action="store_true", help="answer yes without asking")
    connect.add_argument("--receipt", help="save the session's receipt to this JSON file")
    connect.add_argument("--verbose", action="store_true", help="show connection details")
    connect.add_argument(
        "--allow-root", action="store_true", help="run even as root (gives full control)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.broker:
        print(
            "Which support broker? Add --broker HOST:PORT (the engineer has it).", file=sys.stderr
        )
        return EXIT_REFUSED
    address = broker_address(args.broker)
    if address is None:
        print(
            "--broker must look like HOST or HOST:PORT, for example broker.example.com:2222",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    host, port = address
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    if os.geteuid() == 0:
        if not args.allow_root:
            print(ROOT_REFUSED, flush=True)
            return EXIT_REFUSED
        print(ROOT_WARNING, flush=True)
    if not args.fingerprint:  # before the customer types a code for nothing
        print(NEED_FINGERPRINT, flush=True)
        return EXIT_REFUSED
    try:
        code = args.code or ask_code()
    except KeyboardInterrupt:
        code = None
    if code is None:
        print(NO_CODE, file=sys.stderr)
        return EXIT_REFUSED
    if code_digits(code) is None:  # never sent: it cannot be a code, and it is no guess
        print(MALFORMED, flush=True)
        return EXIT_REFUSED
    options = Options(
        code=code,
        host=host,
        port=port,
        fingerprint=args.fingerprint,
        yes=args.yes,
        scope=args.scope,
        receipt=args.receipt,
    )
    try:
        return asyncio.run(_connect(options))
    except KeyboardInterrupt:
        print("\nStopped. Nobody was given access to this computer.", flush=True)
        return EXIT_REFUSED
    except Exception:  # unexpected: a short word for the customer, the details in a file
        log = log_path()
        with log.open("a") as out:
            out.write(traceback.format_exc())
        print(UNEXPECTED.format(log=log), flush=True)
        return EXIT_FAILED


async def _connect(options: Options) -> int:
    """The helper, made inside the running loop: on Python 3.9 an asyncio.Event binds to the
    loop current when it is made, and asyncio.run starts a new one."""
    return await Helper(options, Console()).run()
