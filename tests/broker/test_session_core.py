"""The session core, driven alone: consent, admission, joins, handoff, drop and resume, the
lifetime. Events in, commands out; no broker, no helper, no clock but the playbook's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from assist_protocol import messages as msg
from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from assist_protocol.scope import ChannelRequest
from broker.session.core import commands as c
from broker.session.core.door import WAITING
from broker.session.core.events import (
    ChannelClosed,
    ChannelRequested,
    Consented,
    ControlOpened,
    Declined,
    EndAsked,
    EndRequested,
    ForwardClosed,
    ForwardRequested,
    HandOver,
    HelperLost,
    JoinAnswered,
    LoginLeft,
    Person,
    RemoveAsked,
    ResumeTried,
    Tick,
    WhoAsked,
)
from broker.session.core.facts import Policy, Redemption, State
from broker.session.core.lifetime import Lifetime, Limits
from broker.session.core.session import SessionCore
from broker.session.core.tokens import ResumeTokens
from tests.broker.playbook import Playbook

pytestmark = pytest.mark.unit

HELPER = 1
KEY = "ssh-ed25519 AAAA"
ALICE = Person("alice", "Alice Issuer")
BOB = Person("bob", "Bob Colleague")
POLICY = Policy(
    limits=Limits(max_duration=7200, idle=3000, warn_before=300),
    grace=60,
    helper_link="reverse",
    join_timeout=120,
    reconnect_wait=30,
)


def facts(scope: str = "shell,exec,sftp-read,port:5432,observe") -> Redemption:
    return Redemption("s-1", 1, 7, "T-7", "Disk full", 3, 1, "alice", "Alice Issuer", scope)


def new_core(
    scope: str = "shell,exec,sftp-read,port:5432,observe", policy: Policy = POLICY
) -> SessionCore:
    secrets = iter(f"secret{n}" for n in range(1, 100))
    return SessionCore(facts(scope), policy, HELPER, ResumeTokens("s-1", lambda: next(secrets)))


def sent(kind: type[msg.Message], **fields: object) -> Callable[[c.Command], bool]:
    def match(cmd: c.Command) -> bool:
        return (
            isinstance(cmd, c.Send)
            and isinstance(cmd.message, kind)
            and all(getattr(cmd.message, k) == v for k, v in fields.items())
        )

    return match


def record(action: str, **details: object) -> Callable[[c.Command], bool]:
    def match(cmd: c.Command) -> bool:
        return (
            isinstance(cmd, c.Record)
            and cmd.action == action
            and all(cmd.details.get(k) == v for k, v in details.items())
        )

    return match


def refused(request: int, words: str, error: str = "denied") -> Callable[[c.Command], bool]:
    def match(cmd: c.Command) -> bool:
        return (
            isinstance(cmd, c.Refuse)
            and cmd.request == request
            and cmd.error == error
            and words in cmd.message
        )

    return match


def held(request: int) -> c.Hold:
    """The engineer who asked is told to wait for the customer."""
    return c.Hold(request, WAITING)


def admitted(request: int, **fields: object) -> Callable[[c.Command], bool]:
    def match(cmd: c.Command) -> bool:
        return (
            isinstance(cmd, c.Admit)
            and cmd.request == request
            and all(getattr(cmd, k) == v for k, v in fields.items())
        )

    return match


def shell(request: int, login: int, who: Person = ALICE, pty: bool = True) -> ChannelRequested:
    return ChannelRequested(request, login, who, ChannelRequest("shell", pty=pty), "shell")


def forward(request: int, host: str, port: int, login: int = 10) -> ChannelRequested:
    what = f"port {port} on {host}"
    return ChannelRequested(
        request, login, ALICE, ChannelRequest("forward", host=host, port=port), what
    )


def running(
    scope: str = "shell,exec,sftp-read,port:5432,observe", policy: Policy = POLICY
) -> Playbook:
    """A session the customer consented to, with the helper's forward up."""
    play = Playbook(new_core(scope, policy))
    limits = policy.limits
    assert (
        play
        >> ControlOpened(HELPER, "relay-key")
        << sent(msg.Hello, scope=scope, link="reverse")
        >> Consented(HELPER, None, KEY, {"user": "carol", "hostname": "pc\x1b[2J"}, "reverse")
        << record("session.consented", requested_scope=scope, helper_link="reverse")
        << sent(msg.Consented, resume="s-1.secret1", grace_seconds=policy.grace)
        >> ForwardRequested(HELPER, 1, FORWARD_HOST, FORWARD_PORT)
        << (lambda cmd: isinstance(cmd, c.Record) and cmd.started)
        << sent(
            msg.Limits,
            seconds=limits.max_duration,
            seconds_left=limits.max_duration,
            idle_seconds=limits.idle,
        )
        << c.Accept(1)
    )
    return play


# --- consent ---------------------------------------------------------------------------------


def test_consent_narrows_never_widens_and_escapes_what_the_computer_says() -> None:
    play = Playbook(new_core("shell,exec"))
    assert (
        play
        >> Consented(HELPER, "exec,sftp", KEY, {"hostname": "pc\x07"}, "nested")
        << record("session.consented", granted_scope="exec", helper_link="nested")
        << sent(msg.Consented, scope="exec")
    )
    assert play.core.state is State.ACTIVE
    assert play.core.customer_host == {"hostname": "pc\\x07"}
    assert play >> Consented(HELPER, None, KEY) << sent(msg.Error)  # only once


def test_a_bad_scope_is_answered_and_changes_nothing() -> None:
    play = Playbook(new_core())
    assert play >> Consented(HELPER, "port:99999", KEY) << sent(msg.Error)
    assert play.core.state is State.PENDING


def test_declined_is_recorded_then_ends_with_a_goodbye() -> None:
    play = Playbook(new_core())
    assert (
        play
        >> Declined(HELPER)
        << record("session.declined")
        << c.Goodbye(HELPER, "declined")
        << c.Ended("declined")
    )
    assert play >> EndRequested("admin")  # ends once: the first reason stands
    assert play.core.end_reason == "declined"


def test_the_forward_comes_up_once_and_only_to_the_virtual_address() -> None:
    play = Playbook(new_core())
    assert (
        play
        >> ForwardRequested(HELPER, 1, FORWARD_HOST, FORWARD_PORT)
        << c.Reject(1, "forward_refused")
    )  # not before consent
    play = running()
    assert (
        play
        >> ForwardRequested(HELPER, 2, FORWARD_HOST, FORWARD_PORT)
        << c.Reject(2, "forward_refused")
    )
    assert (
        play >> ForwardRequested(2, 3, FORWARD_HOST, FORWARD_PORT) << c.Reject(3, "forward_refused")
    )  # another connection


def test_closing_the_forward_or_asking_to_end_ends_for_the_customer() -> None:
    play = running()
    assert play >> ForwardClosed(HELPER) << c.Goodbye(HELPER, "customer") << c.Ended("customer")
    play = running()
    assert play >> EndAsked(2)  # not the helper's connection: nothing
    assert play >> EndAsked(HELPER) << c.Goodbye << c.Ended("customer")


# --- admission -------------------------------------------------------------------------------


def test_nothing_opens_before_the_forward_is_up() -> None:
    play = Playbook(new_core())
    assert play >> shell(5, 10) << refused(5, "has not given consent yet")


def test_every_channel_kind_is_admitted_against_the_granted_scope() -> None:
    play = running("shell,sftp-read,port:5432")
    exec_ = ChannelRequested(2, 10, ALICE, ChannelRequest("exec"), "command: id")
    upload = ChannelRequested(3, 10, ALICE, ChannelRequest("sftp", write=True), "file transfer")
    download = ChannelRequested(4, 10, ALICE, ChannelRequest("sftp", write=False), "file transfer")
    assert (
        play
        >> shell(1, 10)
        << admitted(1, customer_host="carol@pc\\x1b[2J", reattach=False)
        >> exec_
        << refused(2, "Refused:", "refused")
        >> upload
        << refused(3, "Refused:", "refused")
        >> download
        << admitted(4)
        >> forward(5, "localhost", 5432)
        << admitted(5)
        >> forward(6, "localhost", 22)
        << refused(6, "Refused:", "refused")
        >> forward(7, "db.internal", 5432)
        << refused(7, "Refused:", "refused")
    )
    refusal = next(cmd for cmd in play.log if isinstance(cmd, c.Refuse))
    assert isinstance(refusal, c.Refuse) and refusal.reason  # said why, for the audit


def test_a_watch_needs_a_shell_and_names_whose_it_is() -> None:
    play = running()
    watch = ChannelRequested(2, 11, BOB, ChannelRequest("observe"), "")
    assert play >> watch << refused(2, "No shell is open", "not_found")
    assert play >> shell(3, 10) << admitted(3)
    shell_channel = play.last(c.Admit).channel
    watch = ChannelRequested(4, 11, BOB, ChannelRequest("observe"), "")
    assert play >> watch << sent(msg.Join, what="watch alice's shell") << held(4)
    question = play.last(c.Send).message.id
    assert (
        play
        >> JoinAnswered(HELPER, question, True, False)
        << record("session.join_allowed", engineer="bob", what="watch alice's shell")
        << admitted(4, watched=shell_channel, watched_engineer="alice")
    )
    assert play >> ChannelClosed(shell_channel)
    assert (
        play
        >> ChannelRequested(5, 11, BOB, ChannelRequest("observe"), "")
        << refused(5, "No shell is open", "not_found")
    )


# --- joins -----------------------------------------------------------------------------------


def test_the_issuer_needs_no_question_a_colleague_does_once_per_login() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert (
        play
        >> shell(2, 11, BOB)
        << sent(msg.Join, engineer=msg.Person("bob", BOB.display))
        << held(2)
    )
    question = play.last(c.Send).message.id
    # same login, same question: waits for the same answer (and is told so)
    assert play >> shell(3, 11, BOB) << held(3)
    assert (
        play
        >> JoinAnswered(HELPER, question, True, False)
        << record("session.join_allowed", always=False)
        << admitted(2)
        << admitted(3)
    )
    assert play >> shell(4, 11, BOB) << admitted(4)  # the login is in
    assert play >> shell(5, 12, BOB) << sent(msg.Join) << held(5)  # a new login of Bob's asks again
    assert (
        play
        >> WhoAsked(HELPER)
        << sent(
            msg.Engineers,
            engineers=[msg.Person("alice", ALICE.display), msg.Person("bob", BOB.display)],
        )
    )


def test_allowed_for_the_rest_of_the_session_asks_no_more() -> None:
    play = running()
    assert play >> shell(1, 11, BOB) << sent(msg.Join) << held(1)
    assert (
        play
        >> JoinAnswered(HELPER, play.last(c.Send).message.id, True, True)
        << record("session.join_allowed", always=True)
        << admitted(1)
    )
    assert play >> shell(2, 12, BOB) << admitted(2)


def test_declined_and_unanswered_joins_are_refused_and_recorded() -> None:
    play = running()
    assert play >> shell(1, 11, BOB) << sent(msg.Join) << held(1)
    assert (
        play
        >> JoinAnswered(HELPER, play.last(c.Send).message.id, False, False)
        << record("session.join_declined")
        << refused(1, "did not let you join T-7 (shell)")
    )
    assert play >> shell(2, 11, BOB) << sent(msg.Join) << held(2)
    assert play.at(1000 + 119) >> Tick()
    assert (
        play.at(1000 + 121)
        >> Tick()
        << record("session.join_declined", always=False)  # no answer in time is a no
        << refused(2, "did not let you join")
    )
    assert play >> JoinAnswered(HELPER, 999, True, True)  # unknown question: nothing


def test_a_join_that_waits_asks_for_a_wake_at_its_deadline() -> None:
    play = running()
    play.wake = True
    assert play >> shell(1, 11, BOB) << sent(msg.Join) << held(1) << c.Wake(1000 + 120)


def test_an_answer_from_a_replaced_connection_counts_for_nothing() -> None:
    play = running()
    assert play >> shell(1, 11, BOB) << sent(msg.Join) << held(1)
    question = play.last(c.Send).message.id
    assert play >> JoinAnswered(2, question, True, True)
    assert question in play.core.door.questions


# --- removals and handoff --------------------------------------------------------------------


def test_the_customer_removes_an_engineer_who_must_ask_again() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert_removed(play, "alice", ALICE, 10)
    assert play >> shell(2, 10) << refused(2, "no longer part of the session")
    assert play >> shell(3, 13) << sent(msg.Join) << held(3)  # a new login asks the customer again


def assert_removed(play: Playbook, typed: str, who: Person, login: int) -> None:
    """The customer types ``typed``; ``who`` (one login) is let go, and the customer reads
    the name they know."""
    assert (
        play
        >> RemoveAsked(HELPER, typed)
        << sent(msg.Removed, engineer=who.name)
        << c.Disconnect(login, "removed")
        << record("session.engineer_removed", engineer=who.name, connections=1)
        << sent(msg.Notice, message=f"Removed {who.display}.")
    )


def allow_join(play: Playbook, request: int, login: int, person: Person) -> None:
    """``person``'s login asks for a shell; the customer is asked and says yes."""
    assert play >> shell(request, login, person) << sent(msg.Join) << held(request)
    question = play.last(c.Send).message.id
    assert (
        play
        >> JoinAnswered(HELPER, question, True, False)
        << record("session.join_allowed")
        << admitted(request)
    )


def test_the_customer_removes_an_engineer_by_the_name_they_see() -> None:
    """The display name, as the customer reads it (any case and spacing), is as good as the
    login name; the audit names the login."""
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    allow_join(play, 2, 11, BOB)
    assert_removed(play, "  bob  COLLEAGUE ", BOB, 11)
    assert play.core.door.joined == {10}


def test_a_display_name_two_engineers_share_is_not_guessed() -> None:
    play = running()
    twin = Person("bob2", BOB.display)
    allow_join(play, 1, 11, BOB)
    allow_join(play, 2, 12, twin)
    assert (
        play
        >> RemoveAsked(HELPER, BOB.display)
        << sent(
            msg.Notice,
            message="Two or more engineers are called Bob Colleague: remove one by login "
            "name (bob, bob2).",
        )
    )
    assert play.core.door.joined == {11, 12}


def test_removing_nobody_is_audited_only_a_few_times() -> None:
    play = running()
    for _ in range(POLICY.idle_removals_audited):
        assert (
            play
            >> RemoveAsked(HELPER, "mallory")
            << sent(msg.Removed)
            << record("session.engineer_removed", connections=0)
            << sent(msg.Notice, message="mallory is not connected.")
        )
    assert play >> RemoveAsked(HELPER, "mallory") << sent(msg.Removed) << sent(msg.Notice)


def test_a_handoff_lets_the_others_go_and_the_new_engineer_asks_first() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert (
        play
        >> HandOver(BOB, "admin")
        << sent(msg.Removed, engineer="alice")
        << c.Disconnect(10, "handoff")
        << sent(msg.Notice)
        << record("session.handoff", to="bob", previous=["alice"], disconnected=["alice"])
    )
    assert play >> shell(2, 14) << refused(2, "handed over to bob")
    assert play >> shell(3, 11, BOB) << sent(msg.Join) << held(3)
    assert (
        play
        >> JoinAnswered(HELPER, play.last(c.Send).message.id, True, False)
        << record("session.join_allowed")
        << admitted(3)
    )


def test_a_handoff_while_the_customer_answers_wins() -> None:
    play = running()
    assert play >> shell(1, 11, BOB) << sent(msg.Join) << held(1)
    question = play.last(c.Send).message.id
    assert (
        play
        >> HandOver(Person("dave", "Dave"), "admin")
        << sent(msg.Notice)
        << record("session.handoff", disconnected=[])
    )
    assert play >> JoinAnswered(HELPER, question, True, True) << refused(1, "handed over to dave")


# --- drop and resume -------------------------------------------------------------------------


def test_a_drop_lets_engineers_go_waits_its_grace_then_ends() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert (
        play.at(2000)
        >> HelperLost(HELPER)
        << (lambda cmd: isinstance(cmd, c.Disconnect) and "dropped" in (cmd.message or ""))
        << record("session.disconnected", grace_seconds=60)
    )
    assert play.core.door.cut_shells["alice"] == 1
    assert play.at(2059) >> Tick()
    assert play.core.state is State.ACTIVE
    assert play.at(2060) >> Tick() << c.Ended("network")  # nobody to say goodbye to
    assert not play.core.tokens.any


def test_back_within_the_grace_the_shell_reattaches() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert play.at(2000) >> HelperLost(HELPER) << c.Disconnect << record("session.disconnected")
    assert (
        play.at(2010)
        >> ResumeTried(2, 7, "wrong", "10.0.0.9")
        << c.Reject(7, "wrong_token")
        >> ResumeTried(2, 8, "secret1", "10.0.0.9")
        << record("session.resume_accepted", source="10.0.0.9", gap_seconds=10.0)
        << c.Accept(8)
        >> ControlOpened(2, "relay-key")
        << sent(msg.Resumed, resume="s-1.secret2", gap_seconds=10.0)
        >> ForwardRequested(2, 9, FORWARD_HOST, FORWARD_PORT)
        << record("session.resumed", gap_seconds=10.0)
        << sent(msg.Limits, seconds_left=7200 - 1010)
        << c.Accept(9)
    )
    assert play >> shell(3, 16) << admitted(3, reattach=True)
    assert play >> shell(4, 16) << admitted(4, reattach=False)  # one shell was cut, one back
    assert not play.core.tokens.valid("secret1") and play.core.tokens.valid("secret2")


def test_a_request_during_a_drop_waits_for_the_helper() -> None:
    play = running()
    assert play.at(2000) >> HelperLost(HELPER) << record("session.disconnected")
    assert play >> shell(1, 20)  # waits
    assert play >> shell(2, 21)
    assert play.at(2031) >> Tick() << refused(1, "dropped and is not back yet") << refused(2, "")
    assert play >> shell(3, 20)
    assert (
        play.at(2040)
        >> ResumeTried(2, 8, "secret1", "x")
        << record("session.resume_accepted")
        << c.Accept(8)
    )
    assert (
        play
        >> ForwardRequested(2, 9, FORWARD_HOST, FORWARD_PORT)
        << record("session.resumed")
        << sent(msg.Limits)
        << admitted(3)
        << c.Accept(9)
    )


def test_a_resume_replaces_a_connection_not_yet_noticed_dead() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert play >> shell(2, 11, BOB) << sent(msg.Join) << held(2)
    assert (
        play.at(2000)
        >> ResumeTried(2, 5, "secret1", "x")
        << record("session.join_unanswered", engineer="bob")
        << refused(2, "dropped before they answered")
        << c.Disconnect
        << record("session.disconnected")
        << c.HangUp(HELPER)
        << record("session.resume_accepted", gap_seconds=0.0)
        << c.Accept(5)
    )
    assert play >> HelperLost(HELPER)  # the old one, noticed at last: changes nothing
    assert play.core.helper == 2 and play.core.state is State.ACTIVE


def test_a_resumed_connection_lost_before_its_forward_leaves_the_grace_running() -> None:
    play = running()
    assert play.at(2000) >> HelperLost(HELPER) << record("session.disconnected")
    for conn, request in ((2, 5), (3, 6), (4, 7)):  # each cut before the forward is up
        assert (
            play
            >> ResumeTried(conn, request, "secret1", "x")
            << record("session.resume_accepted")
            << c.Accept(request)
        )
        assert play >> ControlOpened(conn, "k") << sent(msg.Resumed)  # token lost in transit
        assert play >> HelperLost(conn)  # no second disconnected: the first grace runs
    assert play.core.tokens.valid("secret1")  # the token the helper holds still works
    assert play.at(2060) >> Tick() << c.Ended("network")


def test_a_drop_right_after_a_return_gets_its_own_grace() -> None:
    play = running()
    assert play.at(2000) >> HelperLost(HELPER) << record("session.disconnected")
    assert (
        play.at(2050)
        >> ResumeTried(2, 5, "secret1", "x")
        << record("session.resume_accepted")
        << c.Accept(5)
    )
    assert (
        play
        >> ForwardRequested(2, 6, FORWARD_HOST, FORWARD_PORT)
        << record("session.resumed")
        << sent(msg.Limits)
        << c.Accept(6)
    )
    assert play >> HelperLost(2) << record("session.disconnected")
    assert play.at(2061) >> Tick()  # the first drop's deadline is past: this drop has its own
    assert play.core.state is State.ACTIVE
    assert play.at(2110) >> Tick() << c.Ended("network")


def test_a_session_that_dropped_before_it_started_starts_when_the_helper_is_back() -> None:
    """Consented, then the connection died unnoticed before the forward came up: the helper
    resumes and brings it up; the session starts then, with its time limits."""
    play = Playbook(new_core())
    assert (
        play >> Consented(HELPER, None, KEY) << record("session.consented") << sent(msg.Consented)
    )
    assert (
        play.at(1005)
        >> ResumeTried(2, 5, "secret1", "x")
        << record("session.disconnected")
        << c.HangUp(HELPER)
        << record("session.resume_accepted", gap_seconds=0.0)
        << c.Accept(5)
    )
    assert (
        play.at(1010)
        >> ForwardRequested(2, 6, FORWARD_HOST, FORWARD_PORT)
        << record("session.resumed", gap_seconds=5.0)
        << (lambda cmd: isinstance(cmd, c.Record) and cmd.started)
        << sent(msg.Limits, seconds_left=7200)
        << c.Accept(6)
    )
    assert play.core.lifetime is not None and play.core.next_wake() == 1010 + 3000


def test_lost_before_consent_ends_for_network_with_a_goodbye() -> None:
    play = Playbook(new_core())
    assert play >> HelperLost(HELPER) << c.Goodbye(HELPER, "network") << c.Ended("network")


def test_no_resume_once_ended() -> None:
    play = running()
    assert play >> EndRequested("admin") << c.Goodbye(HELPER, "admin") << c.Ended("admin")
    assert play >> ResumeTried(2, 5, "secret1", "x") << c.Reject(5, "wrong_token")


def test_the_end_answers_everyone_who_waits() -> None:
    play = running()
    assert play >> shell(1, 10) << admitted(1)
    assert play >> shell(2, 11, BOB) << sent(msg.Join) << held(2)
    assert (
        play
        >> EndRequested("sink_failed")
        << record("session.join_unanswered", engineer="bob", why="the session ended")
        << refused(2, "has ended")
        << c.Disconnect(10, "sink_failed")
        << c.Goodbye(HELPER, "sink_failed")
        << c.Ended("sink_failed")
    )
    assert play >> shell(3, 10) << refused(3, "No customer is connected", "not_found")


def test_a_login_that_leaves_stops_waiting() -> None:
    play = running()
    assert play.at(2000) >> HelperLost(HELPER) << record("session.disconnected")
    assert play >> shell(1, 20)
    assert play >> LoginLeft(20) << refused(1, "You left.")


# --- the lifetime ----------------------------------------------------------------------------


LIFE = Policy(limits=Limits(max_duration=3600, idle=600, warn_before=300))


def test_the_customer_is_warned_then_the_session_times_out() -> None:
    play = running(policy=LIFE)
    assert play.last(c.Wake) == c.Wake(1000 + 600)  # idle comes first; the limit at 4600
    assert play.at(1000 + 599) >> Tick()
    assert play.at(1000 + 600) >> Tick() << c.Goodbye(HELPER, "idle") << c.Ended("idle")
    assert play.last(c.Wake) == c.Wake(None)
    play = running(policy=LIFE)
    for minute in range(1, 55):
        play.core.touch(1000 + minute * 60)
    assert (
        play.at(1000 + 3300)
        >> Tick()
        << sent(msg.Notice, message="The session will end in 5 minutes (its time limit).")
    )
    assert play.at(1000 + 3301) >> Tick()  # warned once
    play.core.touch(1000 + 3500)
    assert play.at(1000 + 3600) >> Tick() << c.Goodbye << c.Ended("timeout")


def test_lifetime_decides_what_is_due_from_the_time_it_is_given() -> None:
    life = Lifetime(Limits(max_duration=60, idle=20, warn_before=10), started=100.0)
    assert life.due(100.0) is None and life.next_at() == 120.0  # idle comes first
    life.touch(115.0)
    assert life.due(115.0) is None
    life.touch(151.0)
    assert life.due(151.0) == "warn" and life.due(151.0) is None  # warned once
    life.touch(160.0)
    assert life.due(160.0) == "timeout"
    life = Lifetime(Limits(max_duration=60, idle=20, warn_before=10), started=100.0)
    assert life.due(130.0) == "idle"
    severe = Limits.for_severity(1, normal=10, severe=99, idle=1, warn_before=1)
    assert severe.max_duration == 99
    assert Limits.for_severity(3, normal=10, severe=99, idle=1, warn_before=1).max_duration == 10


def test_resume_tokens_rotate_and_the_spent_one_dies_when_the_helper_is_back() -> None:
    tokens = ResumeTokens("s-1")
    first = tokens.issue().partition(".")[2]
    assert tokens.valid(first) and not tokens.valid(first + "x") and not tokens.valid("")
    second = tokens.issue().partition(".")[2]  # sent with "resumed"
    assert tokens.valid(first) and tokens.valid(second)
    tokens.confirm()  # the forward is up again
    assert not tokens.valid(first) and tokens.valid(second)
    tokens.revoke()
    assert not tokens.valid(second)
