"""The OpenAPI document matches the routes, and schemathesis, fuzzing the API from that
document with real tokens, finds no server error and no answer the document does not declare."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest

from broker.web.app import all_operations
from tests.harness import BrokerHarness
from tests.web.openapi_check import document as checked_document


async def test_openapi_document_matches_the_routes(harness: BrokerHarness) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{harness.base_url}/api/v1/openapi.json") as response,
    ):
        assert response.status == 200
        document = await response.json()
    # the document every API test checks its answers against (tests/web/openapi_check.py)
    assert document == {**checked_document(), "info": document["info"]}
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    assert harness.broker._http is not None
    app = harness.broker._http.app
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
        and not route.resource.canonical.endswith("openapi.json")
    }
    assert documented == routed
    assert len(routed) == len(all_operations().operations) >= 20
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["operationId"], (method, path)
            assert "Roles: " in op["description"]
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}


#: the schemathesis next to this Python (a venv's bin/ is not on PATH when pytest runs from it)
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
    "schemathesis"
)


CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


async def schemathesis(url: str, token: str, *selection: str) -> str:
    assert SCHEMATHESIS is not None
    # Its own folder: schemathesis keeps a cache of past crashes (.schemathesis/) in the
    # working directory and replays them, which would make one run depend on another.
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as folder:
        return await _schemathesis(folder, url, token, *selection)


async def _schemathesis(folder: str, url: str, token: str, *selection: str) -> str:
    assert SCHEMATHESIS is not None
    proc = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "run",
        url,
        "--checks",
        # and the document matches every answer: its status, content type and body
        ",".join(CHECKS),
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--seed",
        "1",
        "--generation-with-security-parameters",
        "false",
        "--header",
        f"Authorization: Bearer {token}",
        *selection,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
        cwd=folder,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 280)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "Server error" not in text
    assert "401 Unauthorized (" not in text, text[-3000:]  # it really got in
    passed = re.search(r"(\d+) generated, (\d+) passed", text)
    assert passed is not None, text[-2000:]
    return text


#: operations that can take away the fuzzer's own access (revoke its token, disable its
#: account): fuzzed last, in a run of their own
SELF_DESTRUCTIVE = ("revoke_token", "update_account")


@pytest.mark.skipif(
    SCHEMATHESIS is None, reason="schemathesis is not installed (pip install -e .[test])"
)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["admin", "engineer"])
async def test_schemathesis_finds_no_server_error(harness: BrokerHarness, role: str) -> None:
    await harness.engineer("alice", "Alice Smith")
    name = "alice" if role == "engineer" else "root"
    await harness.ticket()
    url = f"{harness.base_url}/api/v1/openapi.json"
    excluded = [arg for op in SELF_DESTRUCTIVE for arg in ("--exclude-operation-id", op)]
    await schemathesis(url, await harness.token(name, role), *excluded)
    included = [arg for op in SELF_DESTRUCTIVE for arg in ("--include-operation-id", op)]
    text = await schemathesis(url, await harness.token(name, role), *included)
    assert "Tested: 2" in text or role == "engineer"
