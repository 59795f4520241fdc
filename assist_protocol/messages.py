"""Every control message, declared once, as a typed class with its fields.

The control channel carries one JSON object per line; ``"type"`` names the message. :func:`encode`
turns a message into its line, :func:`decode` a line into a message, checking every field's type
(a field a message does not declare is ignored, so a newer peer may add some; a missing or
mistyped one is a :class:`ProtocolError`).

Broker -> helper: :class:`Hello`, :class:`Consented`, :class:`Resumed`, :class:`Limits`,
:class:`Join`, :class:`Engineers`, :class:`Removed`, :class:`Link`, :class:`Notice`,
:class:`Error`, :class:`Ended`.

Helper -> broker: :class:`Consent`, :class:`Decline`, :class:`JoinAnswer`, :class:`Who`,
:class:`Remove`, :class:`LinkFailed`, :class:`End`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

from assist_protocol.constants import PROTOCOL_VERSION


class ProtocolError(ValueError):
    """A line that is not a message this protocol knows, or a field of the wrong type."""


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


M = TypeVar("M", bound=Message)
_TYPES: dict[str, type[Message]] = {}
_FIELD_TYPES: dict[type, dict[str, Any]] = {}  # each class's, evaluated once


def message(kind: str) -> typing.Callable[[type[M]], type[M]]:
    """Declare a message class under its ``"type"``."""

    def register(cls: type[M]) -> type[M]:
        cls.TYPE = kind
        _TYPES[kind] = cls
        return cls

    return register


@dataclass(frozen=True)
class Person:
    """An engineer as the customer reads them: account name and display name."""

    name: str
    display: str


@dataclass(frozen=True)
class TicketFacts:
    key: str
    title: str
    severity: int


# --- broker -> helper ------------------------------------------------------------------------


@message("hello")
@dataclass(frozen=True)
class Hello(Message):
    """Who asks, for what: the consent question's facts; the key the broker logs in with."""

    session: str
    ticket: TicketFacts
    engineer: Person
    scope: str
    scope_text: str
    relay_key: str
    #: how the broker reaches the helper's server: "reverse" links or "nested"
    link: str = "nested"
    protocol: int = PROTOCOL_VERSION


@message("consented")
@dataclass(frozen=True)
class Consented(Message):
    scope: str
    scope_text: str
    #: the helper's way back after a network drop (never the code again)
    resume: str
    grace_seconds: float


@message("resumed")
@dataclass(frozen=True)
class Resumed(Message):
    session: str
    scope: str
    relay_key: str
    gap_seconds: float
    #: the next way back; the token just used stays valid until the forward is up
    resume: str


@message("limits")
@dataclass(frozen=True)
class Limits(Message):
    seconds: int
    seconds_left: int
    idle_seconds: int


@message("join")
@dataclass(frozen=True)
class Join(Message):
    """Another engineer wants in: the customer's yes, no or always."""

    id: int
    engineer: Person
    what: str


@message("engineers")
@dataclass(frozen=True)
class Engineers(Message):
    engineers: list[Person] = field(default_factory=list)


@message("removed")
@dataclass(frozen=True)
class Removed(Message):
    """An engineer was removed: the helper hangs up their waiting shells."""

    engineer: str


@message("link")
@dataclass(frozen=True)
class Link(Message):
    """Dial a reverse link and present this nonce."""

    nonce: str


@message("notice")
@dataclass(frozen=True)
class Notice(Message):
    message: str


@message("error")
@dataclass(frozen=True)
class Error(Message):
    message: str


@message("ended")
@dataclass(frozen=True)
class Ended(Message):
    reason: str
    message: str
    receipt: dict[str, Any] | None = None
    #: the receipt in words, for helpers that do not write it themselves
    receipt_text: str | None = None


# --- helper -> broker ------------------------------------------------------------------------


@message("consent")
@dataclass(frozen=True)
class Consent(Message):
    """The customer said yes, to ``scope`` (none: all that was asked); the helper's ephemeral
    host key and what it says of its computer."""

    host_key: str
    scope: str | None = None
    host: dict[str, str] = field(default_factory=dict)
    link: str = "nested"
    protocol: int = PROTOCOL_VERSION


@message("decline")
@dataclass(frozen=True)
class Decline(Message):
    pass


@message("join_answer")
@dataclass(frozen=True)
class JoinAnswer(Message):
    id: int
    allow: bool
    always: bool = False


@message("who")
@dataclass(frozen=True)
class Who(Message):
    pass


@message("remove")
@dataclass(frozen=True)
class Remove(Message):
    engineer: str


@message("link_failed")
@dataclass(frozen=True)
class LinkFailed(Message):
    nonce: str
    reason: str = ""


@message("end")
@dataclass(frozen=True)
class End(Message):
    pass


BROKER_TO_HELPER = (
    Hello,
    Consented,
    Resumed,
    Limits,
    Join,
    Engineers,
    Removed,
    Link,
    Notice,
    Error,
    Ended,
)
HELPER_TO_BROKER = (Consent, Decline, JoinAnswer, Who, Remove, LinkFailed, End)


# --- lines -----------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The message as one line (JSON, no spaces, a newline at the end)."""
    body = {"type": msg.TYPE, **dataclasses.asdict(msg)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    """The message of one line; :class:`ProtocolError` saying what is wrong otherwise."""
    try:
        body = json.loads(line)
    except ValueError:
        raise ProtocolError("not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("not a JSON object")
    cls = _TYPES.get(body.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {str(body.get('type'))[:40]!r}")
    built: Message = _build(cls, body, cls.TYPE)
    return built


def _build(cls: type[Any], body: dict[str, Any], where: str) -> Any:
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        if spec.name not in body:
            has_default = (
                spec.default is not dataclasses.MISSING
                or spec.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                raise ProtocolError(f"{where}.{spec.name} is missing")
            continue
        values[spec.name] = _value(hints[spec.name], body[spec.name], f"{where}.{spec.name}")
    return cls(**values)


def _field_types(cls: type[Any]) -> dict[str, Any]:
    """Each field's declared type, evaluated. The declarations are strings (postponed
    annotations) such as ``str | None``, which Python 3.9 cannot evaluate: spelled as
    ``Union[str, None]`` first, they evaluate the same on every Python the helper runs on."""
    if cls not in _FIELD_TYPES:
        spelled = {spec.name: _as_union(str(spec.type)) for spec in dataclasses.fields(cls)}
        holder = type("Fields", (), {"__annotations__": spelled})
        names = {**vars(sys.modules[cls.__module__]), "Union": Union}
        _FIELD_TYPES[cls] = typing.get_type_hints(holder, globalns=names)
    return _FIELD_TYPES[cls]


def _as_union(text: str) -> str:
    """``a | b[c | d]`` as ``Union[a, b[Union[c, d]]]`` (the text of one declaration)."""
    parts = _split(text, "|")
    if len(parts) > 1:
        return f"Union[{', '.join(_as_union(part) for part in parts)}]"
    text = text.strip()
    if "[" not in text or not text.endswith("]"):
        return text
    head, _, inner = text[:-1].partition("[")
    return f"{head}[{', '.join(_as_union(part) for part in _split(inner, ','))}]"


def _split(text: str, sep: str) -> list[str]:
    """``text`` cut at each ``sep`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _value(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Union:
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _value(inner, value, where)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object")
        return _build(kind, value, where)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list")
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, value_type = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object")
        if value_type is Any:
            return dict(value)
        return {str(k): _value(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where} must be a number")
        return float(value)
    if kind in (str, int, bool):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{where} must be a{'n' if kind is int else ''} {kind.__name__}")
        return value
    raise ProtocolError(f"{where}: cannot read a {kind}")  # pragma: no cover - a declaration bug
