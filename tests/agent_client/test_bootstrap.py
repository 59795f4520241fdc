"""The one-file helper's setup runs first, on whatever python3 the customer has: it must load
on an old Python (to say plainly that it is too old) and need nothing but the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import agent_client

ROOT = Path(agent_client.__file__).parent.parent
#: what the zipapp's __main__ loads before the version check
FIRST = ("agent_client/bootstrap.py",)
OURS = ("agent_client", "assist_protocol")


def _closure() -> dict[str, ast.Module]:
    """The modules of this project that bootstrap loads, transitively (packages included)."""
    seen: dict[str, ast.Module] = {}
    todo = [*FIRST, "agent_client/__init__.py"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        tree = ast.parse((ROOT / name).read_text(), feature_version=(3, 8))
        seen[name] = tree
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                if top in OURS:
                    path = node.module.replace(".", "/")
                    package = f"{path}/__init__.py"
                    todo += [package] if (ROOT / package).exists() else [f"{path}.py"]
                    todo.append(f"{top}/__init__.py")
    return seen


def test_the_setup_parses_on_python_3_8() -> None:
    names = set(_closure())  # ast.parse(feature_version=(3, 8)) raises on newer syntax
    assert {"agent_client/places.py", "assist_protocol/safetext.py"} <= names


def test_the_setup_needs_only_the_standard_library() -> None:
    for name, tree in _closure().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top == "asyncssh" and name == "agent_client/bootstrap.py":
                    continue  # the one it tries, to know whether to set up
                assert top in sys.stdlib_module_names or top in OURS, (name, top)
