"""No import cycle between any two modules of the project, type-only imports included (the
layers themselves are import-linter's contract in pyproject.toml, run by scripts/test); and the
session core stays free of I/O."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broker", "agent_client", "assist_protocol")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                graph[name] |= named or ({node.module} & modules.keys())
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & modules.keys()
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph(_modules())) == []


def test_the_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: what the session core may not reach, even through another module: event loops, sockets,
#: threads, clocks, processes, files, databases, SSH, HTTP, logging
NOT_IN_THE_CORE = {
    "asyncio", "socket", "selectors", "ssl", "threading", "time", "subprocess", "os",
    "sqlalchemy", "aiosqlite", "asyncpg", "asyncssh", "aiohttp", "structlog", "logging",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def _reach(start: str, modules: dict[str, Path]) -> set[str]:
    """Every module ``start`` imports, directly or through project modules (and their
    packages' ``__init__``), by name."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            module = ".".join(parts[:i])
            if module in modules and module not in seen:
                seen.add(module)
                todo += sorted(_imports(modules[module]))
            elif module not in modules:
                seen.add(module)
    return seen


def test_the_session_core_does_no_io() -> None:
    modules = _modules()
    core = [name for name in modules if name.startswith("broker.session.core")]
    assert "broker.session.core.session" in core
    for name in core:
        reached = _reach(name, modules)
        assert not {r.split(".")[0] for r in reached} & NOT_IN_THE_CORE, name
        project = {r for r in reached if r in modules}
        allowed = ("broker.session.core", "assist_protocol")
        outside = {m for m in project if not m.startswith(allowed)} - {"broker", "broker.session"}
        assert not outside, (name, outside)


def test_the_io_check_would_see_an_event_loop(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from broker.session.core import facts\nimport asyncio\n")
    modules = {**_modules(), "sneaky": sneaky}
    assert "asyncio" in _reach("sneaky", modules)
