"""``assist-broker``: the admin and engineer command line.

This entry module imports only the standard library and the broker's light modules: the
grammar (broker.cli_parser), the settings and the errors. A command's own modules, with the
database, SSH and crypto libraries, are imported once it is known which command runs, so
``--help`` and a mistyped option answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from assist_protocol.safetext import visible
from broker.cli_parser import build_parser
from broker.config import Settings, load_settings
from broker.errors import BrokerError

#: exit statuses (documented in ``--help`` and the README; broker.cli_parser.EXIT_CODES)
EXIT_FILE = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def _fail(message: str) -> None:
    print(f"assist-broker: {visible(message, keep_newlines=True)}", file=sys.stderr)


def _where(settings: Settings | None) -> str:
    if settings is None:
        return "the database"
    from broker import render

    return f"the database {render.safe_url(settings.db_url)}"


def _execute(args: argparse.Namespace, settings: Settings) -> Any:
    import asyncio

    from broker.logsetup import configure_logging

    configure_logging(
        settings.log_level if args.command == "serve" else "warning", settings.log_format
    )
    if args.command == "serve":
        from broker.serve import serve

        return asyncio.run(serve(settings))
    if args.command == "audit" and args.action == "verify" and args.bundle:
        from broker.cli_evidence import verify_bundle_file

        return verify_bundle_file(args.bundle, args.pubkey, args.allowed_signers)
    from broker.cli_commands import run

    return asyncio.run(run(args, settings))


def _output(args: argparse.Namespace, result: Any) -> None:
    if isinstance(result, dict) and result.pop("_quiet", False) and not args.json:
        return
    if args.json:
        text = json.dumps(result, indent=2, default=str)
    else:
        from broker import render

        text = render.human(args.command, getattr(args, "action", None), result)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # keys, database and recordings are for the broker's user only
    args = build_parser().parse_args(argv)  # a bad argument: usage and exit 2, no traceback
    flags = {
        "data_dir": args.data_dir,
        "config": args.config,
        "ssh_listen": getattr(args, "ssh_listen", None),
        "http_listen": getattr(args, "http_listen", None),
        "log_level": getattr(args, "log_level", None),
    }
    settings: Settings | None = None
    try:
        settings = load_settings(flags)
        result = _execute(args, settings)
        if args.command == "serve":
            return int(result)
        _output(args, result)
    except BrokerError as exc:
        _fail(exc.message)
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (``| head``): what it read is what it wanted. Quiet, and
        # nothing more written to the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    except OSError as exc:
        what = f"the file {exc.filename}" if exc.filename else _where(settings)
        _fail(f"cannot use {what}: {exc.strerror or exc}")
        return EXIT_FILE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError):
            raise
        _fail(f"cannot use {_where(settings)}: {exc.orig}")
        return EXIT_FILE
    return 0
