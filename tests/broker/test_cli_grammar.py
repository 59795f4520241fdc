"""The command line's grammar: every option explained, no markup in the help, the exit codes
documented, one handler per command, and an entry module that loads no heavy library."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

from broker import cli_commands, cli_parser
from broker.ops import tickets
from broker.store import queries as q


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path; the leaves are the commands."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from leaves(child, (*path, name))


def commands() -> set[tuple[str, str | None]]:
    found = set()
    for path, parser in leaves(cli_parser.build_parser()):
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            found.add((path[0], path[1] if len(path) > 1 else None))
    return found


def test_every_option_and_argument_has_a_help_line_without_markup() -> None:
    missing, markup = [], []
    for path, parser in leaves(cli_parser.build_parser()):
        texts = [parser.description or "", parser.epilog or ""]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip():
                missing.append(f"{' '.join(path)} {name}")
            texts.append(action.help or "")
        markup += [f"{' '.join(path)}: {t}" for t in texts if "``" in t or ":func:" in t]
    assert not missing, missing
    assert not markup, markup


def test_help_ends_with_the_exit_codes() -> None:
    text = cli_parser.build_parser().format_help()
    assert "exit status:" in text
    for status in ("0 ", "1 ", "2 ", "3 ", "4 ", "130", "141"):
        assert f"\n  {status}" in text, status


def test_every_command_has_one_handler_and_every_handler_a_command() -> None:
    handled = set(cli_commands.HANDLERS) | set(cli_commands.ELSEWHERE)
    assert not set(cli_commands.HANDLERS) & set(cli_commands.ELSEWHERE)
    assert commands() - {("serve", None)} == handled
    for command in handled:  # each names a coroutine that exists
        assert callable(cli_commands.handler(command)), command


def test_the_grammar_names_the_same_roles_and_statuses_as_the_store() -> None:
    assert cli_parser.ROLES == q.ROLES
    assert cli_parser.STATUSES == tickets.STATUSES


def test_the_entry_module_loads_no_heavy_library() -> None:
    """``assist-broker --help`` is quick because the entry imports none of these (a
    structural check; the time itself is a figure of ``python -m bench``)."""
    heavy = ("asyncssh", "sqlalchemy", "aiohttp", "cryptography", "structlog", "argon2")
    probe = f"import sys, broker.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_readme_documents_the_same_exit_codes_the_code_uses() -> None:
    import re
    from pathlib import Path

    from broker import cli, errors
    from broker.cli_evidence import EXIT_UNCHECKED

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| exit status | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    in_help = {int(n) for n in re.findall(r"^  (\d+) ", cli_parser.EXIT_CODES, flags=re.M)}
    used = {
        0,
        errors.NotFound("").exit_status,
        errors.Denied("").exit_status,
        errors.Invalid("").exit_status,
        errors.ConfigError("").exit_status,
        2,  # argparse's usage errors
        cli.EXIT_FILE,
        EXIT_UNCHECKED,
        cli.EXIT_INTERRUPTED,
        cli.EXIT_PIPE_CLOSED,
    }
    assert documented == in_help == used
