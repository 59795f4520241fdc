"""A live session's resume tokens, without I/O: valid while the session runs, rotated on each
resume, the previous one kept only until the helper's forward is up again."""

from __future__ import annotations

from broker.session.consent import Redemption
from broker.session.model import LiveSession


def live() -> LiveSession:
    facts = Redemption("s-1", 1, 1, "T-1", "Disk full", 2, 1, "alice", "Alice", "shell")
    session = LiveSession(facts)
    session.consent(None, "ssh-ed25519 AAAA")
    return session


def secret(token: str) -> str:
    session, _, value = token.partition(".")
    assert session == "s-1"
    return value


def test_tokens_rotate_and_the_spent_one_dies_when_the_helper_is_back() -> None:
    session = live()
    first = secret(session.new_resume_token())
    assert session.resume_allowed(first)
    assert not session.resume_allowed(first + "x") and not session.resume_allowed("")
    second = secret(session.new_resume_token())  # sent with "resumed"
    assert session.resume_allowed(first) and session.resume_allowed(second)
    session.confirm_token()  # the forward is up again
    assert not session.resume_allowed(first) and session.resume_allowed(second)
    session.end("customer")
    assert not session.resume_allowed(second)


def test_a_second_drop_keeps_the_first_ones_time() -> None:
    session = live()
    session.drop()
    first = session.dropped_at
    session.drop()
    assert session.dropped_at == first and not session.forwarded
    assert not session.connected.is_set()
