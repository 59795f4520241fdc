"""The HTTP API's frame: each operation is declared once (path, roles, parameters, body schema)
and that one declaration both installs the aiohttp route and writes the OpenAPI document, so
the two cannot drift apart. Parameters and bodies are checked here against their schemas; a
handler sees only values that passed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from broker import fields
from broker.credentials import Principal
from broker.errors import BrokerError, Invalid
from broker.ops import Actor
from broker.store import queries as q
from broker.web.deps import DEPS, PRINCIPAL, Deps

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
#: ids are 32-bit in PostgreSQL; no number the API takes is larger
MAX_INT = 2**31 - 1


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


STATUS = {
    "not_found": 404,
    "invalid": 400,
    "denied": 403,
    "conflict": 409,
    "config": 400,
    "chain_broken": 409,
    "error": 409,
}


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@dataclass(frozen=True)
class Param:
    name: str
    where: str = "query"  # query | path
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False
    description: str = ""


@dataclass
class Call:
    """What a handler gets: who asks, the checked parameters and body, the broker's parts."""

    request: web.Request
    principal: Principal
    params: dict[str, Any]
    body: dict[str, Any]

    @property
    def deps(self) -> Deps:
        return self.request.app[DEPS]

    @property
    def actor(self) -> Actor:
        """The account asking, as the operations (broker.ops) take it."""
        p = self.principal
        return Actor(p.actor, p.role, p.account_id, p.via)

    async def audit(
        self,
        db: AsyncSession,
        action: str,
        details: dict[str, Any],
        *,
        ticket_id: int | None = None,
        session_id: str | None = None,
    ) -> None:
        """An audit event in ``db``'s transaction, with the account asking as its actor."""
        await q.append_audit(
            db,
            action=action,
            actor=self.principal.actor,
            ticket_id=ticket_id,
            session_id=session_id,
            details=details,
        )


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[str, ...]
    params: tuple[Param, ...]
    body: Mapping[str, Any] | None
    response: Mapping[str, Any]
    produces: str
    tag: str
    #: the status of a success: 200, or 201 for what the call creates
    status: int = 200


class Api:
    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def op(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        roles: tuple[str, ...],
        tag: str,
        params: tuple[Param, ...] = (),
        body: Mapping[str, Any] | None = None,
        response: Mapping[str, Any] | None = None,
        produces: str = "application/json",
        status: int = 200,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method.upper(),
                    path,
                    handler,
                    summary,
                    roles,
                    params,
                    body,
                    response or {"type": "object"},
                    produces,
                    tag,
                    status,
                )
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for operation in self.operations:
            app.router.add_route(operation.method, PREFIX + operation.path, _wrap(operation))

    def document(self, version: str) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            entry: dict[str, Any] = {
                "operationId": op.handler.__name__,
                "summary": op.summary,
                "tags": [op.tag],
                "description": f"Roles: {', '.join(op.roles)}.",
                "parameters": [
                    {
                        "name": p.name,
                        "in": p.where,
                        "required": p.required or p.where == "path",
                        "schema": dict(p.schema),
                        "description": p.description,
                    }
                    for p in op.params
                ],
                "responses": {
                    str(op.status): {
                        "description": "Created" if op.status == 201 else "OK",
                        "content": {op.produces: {"schema": dict(op.response)}},
                    },
                    **{
                        str(code): {"$ref": f"#/components/responses/{name}"}
                        for code, name in ((400, "Invalid"), (401, "Unauthorized"))
                    },
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "409": {"$ref": "#/components/responses/Conflict"},
                },
            }
            if op.produces != "application/json":
                entry["responses"]["206"] = {
                    "description": "Part of the content (Range)",
                    "content": {op.produces: {"schema": dict(op.response)}},
                }
                entry["responses"]["416"] = {"$ref": "#/components/responses/Invalid"}
            if op.body is not None:
                entry["responses"]["408"] = {"$ref": "#/components/responses/TooSlow"}
                entry["responses"]["413"] = {"$ref": "#/components/responses/TooLarge"}
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": dict(op.body)}},
                }
            paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = entry
        error = {"$ref": "#/components/schemas/Error"}
        responses = {
            name: {"description": text, "content": {"application/json": {"schema": error}}}
            for name, text in (
                ("Invalid", "The request is not valid"),
                ("Unauthorized", "No valid token or login"),
                ("Forbidden", "The account's role does not allow this"),
                ("NotFound", "No such thing"),
                ("Conflict", "The state of things does not allow it (such as a broken chain)"),
                ("TooSlow", "The request's body did not arrive in time"),
                ("TooLarge", "The request's body is too large"),
            )
        }
        return {
            "openapi": "3.0.3",
            "info": {"title": "assist-broker", "version": version},
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "token": {"type": "http", "scheme": "bearer"},
                    "login": {"type": "apiKey", "in": "cookie", "name": "assist_login"},
                },
                "schemas": {
                    "Error": {
                        "type": "object",
                        "required": ["error", "status"],
                        "properties": {
                            "error": {"type": "string"},
                            "status": {"type": "integer"},
                        },
                    }
                },
                "responses": responses,
            },
            "security": [{"token": []}, {"login": []}],
        }


def _wrap(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = request.get(PRINCIPAL)
        if principal is None:
            return error_response(401, "Log in, or send an API token: Authorization: Bearer ...")
        if principal.role not in op.roles:
            return error_response(
                403,
                f"Your role ({principal.role}) may not do this; it needs {' or '.join(op.roles)}.",
            )
        try:
            params = _params(op, request)
            body = await _body(op, request)
            return await op.handler(Call(request, principal, params, body))
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except BrokerError as exc:
            return error_response(STATUS.get(exc.code, 400), exc.message)

    handle.__name__ = op.handler.__name__
    return handle


def _params(op: Operation, request: web.Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in op.params:
        raw = request.match_info.get(param.name) if param.where == "path" else None
        if param.where == "query":
            raw = request.query.get(param.name)
        if raw is None or raw == "":
            if param.required:
                raise ApiError(400, f"{param.name} is required")
            values[param.name] = param.schema.get("default")
            continue
        values[param.name] = convert(param.name, raw, param.schema)
    return values


async def _body(op: Operation, request: web.Request) -> dict[str, Any]:
    if op.body is None:
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(400, f"the body may be at most {MAX_BODY} bytes")
    raw = await request.read()  # read already, in time (broker.web.auth.body_in_time)
    if len(raw) > MAX_BODY:
        raise ApiError(400, f"the body may be at most {MAX_BODY} bytes")
    try:
        value = json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "the body must be JSON") from None
    check("body", value, op.body)
    return dict(value)


def convert(name: str, raw: str, schema: Mapping[str, Any]) -> Any:
    """A query or path value, as its schema's type."""
    kind = schema.get("type", "string")
    value: Any = raw
    if kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be a whole number") from None
    elif schema.get("format") == "date-time":
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, f"{name} must be a date and time (ISO 8601)") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
    check(name, value if kind != "string" or "format" not in schema else raw, schema)
    return value


def check(name: str, value: Any, schema: Mapping[str, Any]) -> None:
    """A small JSON-schema subset: type, enum, bounds, lengths, required, properties."""
    kind = schema.get("type")
    types: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "string": (str,),
        "integer": (int,),
        "boolean": (bool,),
        "array": (list,),
    }
    if kind is not None:
        expected = types[kind]
        if not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool)):
            raise ApiError(400, f"{name} must be a{'n' if kind[0] in 'aeio' else ''} {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise ApiError(400, f"{name} must be one of {', '.join(map(str, schema['enum']))}")
    if kind == "integer":
        if not -MAX_INT <= value <= MAX_INT:
            raise ApiError(400, f"{name} is too large")
        if "minimum" in schema and value < schema["minimum"]:
            raise ApiError(400, f"{name} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ApiError(400, f"{name} must be at most {schema['maximum']}")
    if kind == "string":
        if schema.get("format") != "password":  # what people type is shown later: no controls
            try:
                fields.plain(value, name, multiline=bool(schema.get("x-multiline")))
            except Invalid as exc:
                raise ApiError(400, exc.message) from None
        if len(value) < schema.get("minLength", 0):
            raise ApiError(400, f"{name} must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ApiError(400, f"{name} may have at most {schema['maxLength']} characters")
    if kind == "array":
        for i, item in enumerate(value):
            check(f"{name}[{i}]", item, schema.get("items", {}))
    if kind == "object":
        for required in schema.get("required", ()):
            if required not in value:
                raise ApiError(400, f"{name}.{required} is required")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key not in properties:
                raise ApiError(400, f"{name}.{key} is not known")
            check(f"{name}.{key}", item, properties[key])
