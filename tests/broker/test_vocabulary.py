"""The audit vocabulary: every action the code writes is declared, and the README lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker import vocabulary
from broker.store import queries as q
from broker.store.db import Store

ROOT = Path(__file__).resolve().parents[2]
#: dotted names in the code that are not audit actions: a logger, and file names
NOT_ACTIONS = {"broker.channel"}
EXTENSIONS = {"id", "html", "json", "jsonl", "toml", "lock", "py", "txt", "log", "key", "sig"}
PREFIXES = {a.split(".")[0] for a in vocabulary.ACTIONS}


def test_every_action_written_in_the_code_is_declared() -> None:
    """A static look, so that a path no test exercises is held to the vocabulary too."""
    found: dict[str, str] = {}
    for path in (ROOT / "broker").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for name in re.findall(r'"([a-z]+\.[a-z_]+)"', path.read_text()):
            prefix, _, rest = name.partition(".")
            if prefix in PREFIXES and rest not in EXTENSIONS and name not in NOT_ACTIONS:
                found.setdefault(name, str(path.relative_to(ROOT)))
    undeclared = {n: where for n, where in found.items() if n not in vocabulary.ACTIONS}
    assert undeclared == {}


async def test_the_writer_refuses_an_undeclared_action_or_field(store: Store) -> None:
    async with store.begin() as db:
        with pytest.raises(vocabulary.Undeclared, match=r"'ticket\.deleted' is not declared"):
            await q.append_audit(db, action="ticket.deleted", actor="x")
        with pytest.raises(vocabulary.Undeclared, match="declares no detail field 'colour'"):
            await q.append_audit(db, action="web.logout", actor="x", details={"colour": 1})
    async with store.read() as db:
        assert list(await q.list_audit(db)) == []


def test_the_readme_lists_every_action() -> None:
    readme = (ROOT / "README.md").read_text()
    assert vocabulary.markdown() in readme, "run: python -m broker.vocabulary"
