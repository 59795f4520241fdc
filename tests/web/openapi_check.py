"""The OpenAPI document must match every answer: each API answer a test gets goes through
:func:`check_answer`, which fails the test when its status is not declared for that operation,
or its body does not match the schema declared for that status and content type.

Sessions made with :func:`checked_session` check every answer they get (an aiohttp trace hook,
so a test's own ``http.get(...)`` is checked without changing how it reads the answer). The
document is the one the broker serves, made from the same declarations
(``broker.web.api.Api.document``). The schemas are a small subset of JSON schema, checked
here: ``$ref``, ``type`` with ``nullable``, ``enum``, ``required``, ``properties`` (an object
that declares properties is closed: an undeclared key is a mismatch), ``items``, ``minimum``,
``maximum`` and ``format: date-time``. A keyword this checker does not know fails the test, so
the document cannot grow past what is checked.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp

from broker.web.api import PREFIX
from broker.web.app import all_operations

KNOWN = {
    "$ref", "type", "nullable", "enum", "required", "properties", "items", "minimum",
    "maximum", "format", "minLength", "maxLength", "default", "description", "x-multiline",
}  # fmt: skip
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "number": (int, float),
}


@functools.cache
def document() -> dict[str, Any]:
    return all_operations().document("checked")


@functools.cache
def _routes() -> list[tuple[str, re.Pattern[str], dict[str, Any]]]:
    routes = []
    for path, ops in document()["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        routes += [(method.upper(), pattern, op) for method, op in ops.items()]
    return routes


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = document()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Fail unless the document declares this answer of ``method path`` (an API path)."""
    if not path.startswith(PREFIX + "/") or path == PREFIX + "/openapi.json":
        return
    found = [op for m, rx, op in _routes() if m == method.upper() and rx.match(path)]
    if not found:
        return  # not an operation (the router's own 404 or 405)
    (op,) = found
    where = f"{method} {path} answered {status}"
    responses = op["responses"]
    assert str(status) in responses, f"{where}, which is not declared ({', '.join(responses)})"
    declared = _resolve(responses[str(status)])
    content = declared.get("content", {})
    assert content_type in content, f"{where} as {content_type}, declared: {', '.join(content)}"
    if content_type == "application/json":
        value = json.loads(body)
        check_value(value, content[content_type]["schema"], f"{where}: body")


def check_value(value: Any, schema: Mapping[str, Any], where: str) -> None:
    schema = _resolve(schema)
    unknown = set(schema) - KNOWN
    assert not unknown, f"{where}: the checker does not know {sorted(unknown)}"
    if value is None:
        assert schema.get("nullable"), f"{where} is null, which is not declared nullable"
        return
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, TYPES[kind]) and (kind == "boolean" or not isinstance(value, bool))
        assert ok, f"{where} is {type(value).__name__} {value!r:.80}, declared {kind}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where} is {value!r}, not one of {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where} is {value}, below {schema['minimum']}"
    if "maximum" in schema:
        assert value <= schema["maximum"], f"{where} is {value}, above {schema['maximum']}"
    if schema.get("format") == "date-time":
        dt.datetime.fromisoformat(value)
    if kind == "array":
        for i, item in enumerate(value):
            check_value(item, schema.get("items", {}), f"{where}[{i}]")
    if kind == "object":
        missing = [name for name in schema.get("required", ()) if name not in value]
        assert not missing, f"{where} lacks {missing}, which are required"
        properties = schema.get("properties")
        if properties is None:
            return  # an open object (such as an event's details)
        extra = sorted(set(value) - set(properties))
        assert not extra, f"{where} has {extra}, which are not declared"
        for name, item in value.items():
            check_value(item, properties[name], f"{where}.{name}")


def _checking() -> aiohttp.TraceConfig:
    async def on_request_end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        response = params.response
        body = b"" if params.method == "HEAD" else await response.read()
        check_answer(params.method, params.url.path, response.status, response.content_type, body)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


def checked_session(**options: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose every API answer is checked against the document."""
    return aiohttp.ClientSession(trace_configs=[_checking()], **options)
