"""The consent scope and the one decision function (pure, no sockets)."""

from __future__ import annotations

import pytest

from assist_protocol.scope import ChannelRequest, Scope, ScopeError, decide


def test_scope_text_is_canonical() -> None:
    scope = Scope.parse(" exec, SHELL ,port:32000,port:db.local:5432 ")
    assert str(scope) == "shell,exec,port:db.local:5432,port:32000"
    assert Scope.parse(str(scope)) == scope


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the scope is empty"),
        ("root", "unknown scope item 'root'"),
        ("port:0", "needs a port number from 1 to 65535"),
        ("port:70000", "needs a port number"),
        ("port:x", "needs a port number"),
    ],
)
def test_bad_scope_is_named(text: str, message: str) -> None:
    with pytest.raises(ScopeError, match=message):
        Scope.parse(text)


def test_customer_can_narrow_but_never_widen() -> None:
    asked = Scope.parse("shell,exec,port:32000")
    assert str(asked.narrowed_to(Scope.parse("exec"))) == "exec"
    assert str(asked.narrowed_to(Scope.parse("exec,sftp,port:22"))) == "exec"
    with pytest.raises(ScopeError):
        asked.narrowed_to(Scope.parse("sftp"))
    assert str(Scope.parse("sftp").narrowed_to(Scope.parse("sftp-read"))) == "sftp-read"


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ("shell", "open a shell"),
        ("shell,exec", "open a shell and run commands"),
        ("exec,port:8080", "run commands and connect to port 8080"),
        ("sftp,sftp-read", "copy, change and delete files"),
        ("sftp-read", "read and copy files (no changes)"),
        ("shell,exec,sftp", "open a shell, run commands and copy, change and delete files"),
    ],
)
def test_scope_in_plain_words(scope: str, words: str) -> None:
    assert Scope.parse(scope).describe() == words


@pytest.mark.parametrize(
    ("asked", "wanted", "beyond"),
    [
        ("shell,exec,sftp", "exec", None),
        ("shell,exec,sftp", "exec,sftp-read", None),
        ("shell,exec", "exec,sftp,port:5432", "sftp,port:5432"),
        ("sftp-read", "sftp", "sftp"),
    ],
)
def test_what_a_narrower_scope_names_beyond_the_request(
    asked: str, wanted: str, beyond: str | None
) -> None:
    extra = Scope.parse(asked).beyond(Scope.parse(wanted))
    assert (str(extra) if extra else None) == beyond


@pytest.mark.parametrize(
    ("scope", "request_", "allowed"),
    [
        ("shell", ChannelRequest("shell", pty=True), True),
        ("shell", ChannelRequest("exec"), False),
        ("exec", ChannelRequest("shell", pty=True), False),
        ("exec", ChannelRequest("exec", pty=True), True),
        ("shell,exec", ChannelRequest("subsystem", subsystem="sftp"), False),
        ("shell,exec", ChannelRequest("forward", host="localhost", port=22), False),
        ("port:32000", ChannelRequest("forward", host="localhost", port=32000), True),
        ("port:32000", ChannelRequest("forward", host="127.0.0.1", port=32000), True),
        ("port:32000", ChannelRequest("forward", host="10.0.0.5", port=32000), False),
        ("port:db:5432", ChannelRequest("forward", host="db", port=5432), True),
        ("port:db:5432", ChannelRequest("forward", host="localhost", port=5432), False),
        ("shell,exec,sftp,port:1", ChannelRequest("x11"), False),
    ],
)
def test_decide_denies_by_default(scope: str, request_: ChannelRequest, allowed: bool) -> None:
    decision = decide(Scope.parse(scope), request_)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason  # every refusal says why
