"""The broker <-> helper protocol: every message round-trips, a wrong one is refused with why,
and the helper is made of agent_client and assist_protocol only."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from assist_protocol import messages as msg

ROOT = Path(__file__).resolve().parents[2]

EXAMPLES: list[msg.Message] = [
    msg.Hello(
        session="s-1",
        ticket=msg.TicketFacts("T-1", "Mail queue stuck", 2),
        engineer=msg.Person("alice", "Alice Smith"),
        scope="shell,exec",
        scope_text="open a shell and run commands",
        relay_key="ssh-ed25519 AAAA",
        link="reverse",
    ),
    msg.Consented("shell", "open a shell", "s-1.secret", 120.0),
    msg.Resumed("s-1", "shell", "ssh-ed25519 AAAA", 3.5, "s-1.next"),
    msg.Limits(7200, 7100, 1800),
    msg.Join(7, msg.Person("bob", "Bob Jones"), "shell"),
    msg.Engineers([msg.Person("alice", "Alice Smith"), msg.Person("bob", "Bob Jones")]),
    msg.Removed("bob"),
    msg.Link("nonce"),
    msg.Notice("Bob Jones was removed."),
    msg.Error("not understood"),
    msg.Ended("customer", "The customer ended the session.", {"ticket": "T-1"}, "text"),
    msg.Consent("ssh-ed25519 AAAA", "shell", {"hostname": "pc"}, "reverse"),
    msg.Decline(),
    msg.JoinAnswer(7, True, True),
    msg.Who(),
    msg.Remove("bob"),
    msg.LinkFailed("nonce", "refused"),
    msg.End(),
]


def test_every_message_round_trips() -> None:
    declared = {*msg.BROKER_TO_HELPER, *msg.HELPER_TO_BROKER}
    assert {type(m) for m in EXAMPLES} == declared  # every declared message has an example
    assert len(declared) == 18
    for example in EXAMPLES:
        line = msg.encode(example)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert msg.decode(line) == example


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type": "shutdown"}', "unknown message type 'shutdown'"),
        (
            b'{"type": "join", "engineer": {"name": "a", "display": "A"}, "what": "x"}',
            "join.id is missing",
        ),
        (b'{"type": "join_answer", "id": 1, "allow": "yes"}', "join_answer.allow must be a bool"),
        (
            b'{"type": "limits", "seconds": true, "seconds_left": 1, "idle_seconds": 1}',
            "must be an int",
        ),
        (
            b'{"type": "engineers", "engineers": [{"name": "a"}]}',
            "engineers.engineers[0].display is missing",
        ),
    ],
)
def test_a_wrong_message_is_refused_with_why(line: bytes, error: str) -> None:
    with pytest.raises(msg.ProtocolError, match=error.replace("[", r"\[").replace("]", r"\]")):
        msg.decode(line)


def test_fields_a_newer_peer_adds_are_ignored() -> None:
    assert msg.decode(b'{"type": "link", "nonce": "n", "colour": "blue"}') == msg.Link("n")


def test_every_field_has_a_type_the_decoder_reads() -> None:
    for cls in (*msg.BROKER_TO_HELPER, *msg.HELPER_TO_BROKER):
        for name, kind in typing.get_type_hints(cls).items():
            if name in {f.name for f in dataclasses.fields(cls)}:
                assert kind is not typing.Any, (cls, name)


def test_the_helper_imports_nothing_of_the_broker() -> None:
    """The /helper download is agent_client and assist_protocol; the protocol is the standard
    library only."""
    for package, allowed in (
        ("agent_client", {"agent_client", "assist_protocol", "asyncssh"}),
        ("assist_protocol", {"assist_protocol"}),
    ):
        for path in (ROOT / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                for name in names:
                    top = name.split(".")[0]
                    assert top in allowed or top in _stdlib(), (path.name, name)


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}
