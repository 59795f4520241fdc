"""``assist-helper``: the customer's side. ``assist-helper connect CODE --broker HOST:PORT
--fingerprint SHA256:...`` lets a support engineer in, after you say yes, until you press Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from agent_client.connect import EXIT_REFUSED, Helper, Options
from agent_client.consent_ui import Console


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assist-helper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connect = sub.add_parser("connect", help="let a support engineer in, with your consent")
    connect.add_argument("code", help="the consent code the engineer gave you, e.g. 123-456-789")
    connect.add_argument("--broker", required=True, help="HOST:PORT of the support broker")
    connect.add_argument("--fingerprint", help="the broker's key fingerprint (SHA256:...)")
    connect.add_argument("--scope", help="allow less than asked, e.g. --scope exec")
    connect.add_argument("--yes", action="store_true", help="answer yes without asking")
    connect.add_argument("--verbose", action="store_true", help="show connection details")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host, sep, port = args.broker.rpartition(":")
    if not sep or not port.isdigit():
        print(
            "--broker must look like HOST:PORT, for example broker.example.com:2222",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    options = Options(
        code=args.code,
        host=host.strip("[]"),
        port=int(port),
        fingerprint=args.fingerprint,
        yes=args.yes,
        scope=args.scope,
    )
    try:
        return asyncio.run(Helper(options, Console()).run())
    except KeyboardInterrupt:
        print("\nStopped. Nobody was given access to this computer.", flush=True)
        return EXIT_REFUSED
