"""The runner: one live session's core (:mod:`broker.session.core`) put to work.

The SSH edge reports what happens as core events (:meth:`LiveSession.step`, or
:meth:`LiveSession.ask` when it waits for a verdict); the runner hands each to the core and
carries out the commands it returns, in order: messages to the helper, audit rows through the
manager, engineers let go, verdicts to whoever waits, the timer for the next moment that
matters. One event at a time per session: the audit rows come out in the order decided.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from assist_protocol import messages as msg
from assist_protocol.scope import Scope
from broker.errors import BrokerError, Denied, NotFound
from broker.session.core import commands as c
from broker.session.core import events as e
from broker.session.core.facts import Redemption, State
from broker.session.core.session import SessionCore

log = structlog.get_logger(__name__)

_ids = itertools.count(1)


def new_id() -> int:
    """A number for a helper connection, an engineer login or a request (unique per process)."""
    return next(_ids)


class HelperPort(Protocol):
    """A helper's connection, as the runner uses it."""

    def send(self, message: msg.Message) -> None: ...

    def hang_up(self) -> None: ...

    def goodbye(self, reason: str) -> None: ...


class LoginPort(Protocol):
    """An engineer's login, as the runner uses it."""

    def session_ended(self, reason: str, message: str | None = None) -> None: ...


class Keeper(Protocol):
    """Where the session's record goes (the manager)."""

    async def write(self, live: LiveSession, record: c.Record) -> None: ...

    async def finish(self, live: LiveSession, reason: str) -> None: ...


_ERRORS: dict[str, type[BrokerError]] = {"not_found": NotFound}


def refusal_error(verdict: c.Refuse) -> BrokerError:
    """The error an engineer reads for a refused channel."""
    if verdict.error == "refused":
        return Denied(verdict.message, code="refused")
    return _ERRORS.get(verdict.error, Denied)(verdict.message)


class LiveSession:
    def __init__(
        self, core: SessionCore, keeper: Keeper, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.core = core
        self._keeper = keeper
        self._clock = clock
        self._helpers: dict[int, HelperPort] = {}
        self._logins: dict[int, LoginPort] = {}
        #: what each admitted channel is (an observer finds the shell it watches here)
        self._channels: dict[int, object] = {}
        self._verdicts: dict[int, asyncio.Future[c.Verdict]] = {}
        #: how to tell whoever waits for a verdict why it takes a while (``Hold``)
        self._told: dict[int, Callable[[str], None]] = {}
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: set once the session ended and its end was recorded (or failed to be)
        self.ended = asyncio.Event()

    # --- what the rest of the broker reads -------------------------------------------------

    @property
    def id(self) -> str:
        return self.core.id

    @property
    def ticket_key(self) -> str:
        return self.core.ticket_key

    @property
    def redemption(self) -> Redemption:
        return self.core.facts

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def granted(self) -> Scope | None:
        return self.core.granted

    @property
    def helper_host_key(self) -> str | None:
        return self.core.helper_host_key

    @property
    def helper_link(self) -> str:
        return self.core.helper_link

    @property
    def customer_host(self) -> dict[str, str]:
        return self.core.customer_host

    @property
    def forwarded(self) -> bool:
        return self.core.forwarded

    @property
    def dropped_at(self) -> float | None:
        return self.core.dropped_at

    @property
    def end_reason(self) -> str | None:
        return self.core.end_reason

    def gap(self) -> float:
        return self.core.gap(self._clock())

    def touch(self) -> None:
        """Engineer activity: the idle timeout starts again."""
        self.core.touch(self._clock())

    # --- the edges register what the commands reach -----------------------------------------

    def attach_helper(self, conn: int, port: HelperPort) -> None:
        self._helpers[conn] = port

    def detach_helper(self, conn: int) -> None:
        self._helpers.pop(conn, None)

    def attach_login(self, login: int, port: LoginPort) -> None:
        self._logins[login] = port

    def bind_channel(self, channel: int, what: object) -> None:
        self._channels[channel] = what

    def channel(self, channel: int) -> object | None:
        return self._channels.get(channel)

    # --- events in ---------------------------------------------------------------------------

    async def step(self, event: e.Event) -> list[c.Command]:
        """Hand ``event`` to the core and carry out what it says; returns the commands.

        A step runs to its end even when its caller is cancelled (a helper's login cut short,
        say): the core has already moved on, and half the commands would leave it ahead of
        what was done."""
        task = asyncio.ensure_future(self._step(event))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    async def _step(self, event: e.Event) -> list[c.Command]:
        async with self._lock:
            try:
                commands = self.core.handle(event, self._clock())
            except Exception:
                self._schedule(self.core.next_wake())  # whatever went wrong, time goes on
                raise
            try:
                await self._run(commands)
            finally:
                self._forget(event)
            return commands

    def step_soon(self, event: e.Event) -> None:
        """:meth:`step`, from a hook that cannot wait (a failure is logged)."""
        self._spawn(self._logged(event))

    async def _logged(self, event: e.Event) -> None:
        try:
            await self.step(event)
        except Exception as exc:
            log.warning("session_step_failed", session=self.id, error=repr(exc))

    async def ask(
        self,
        event: e.ChannelRequested | e.ForwardRequested | e.ResumeTried,
        told: Callable[[str], None] | None = None,
    ) -> c.Verdict:
        """Step ``event`` and wait for its verdict (a join waits for the customer, a channel
        for a dropped helper to come back: the core answers every request in the end).
        ``told`` gets what the asker should read meanwhile (a ``Hold``)."""
        verdict: asyncio.Future[c.Verdict] = asyncio.get_running_loop().create_future()
        self._verdicts[event.request] = verdict
        if told is not None:
            self._told[event.request] = told
        try:
            await self.step(event)
            return await verdict
        finally:
            self._verdicts.pop(event.request, None)
            self._told.pop(event.request, None)

    def _forget(self, event: e.Event) -> None:
        if isinstance(event, e.HelperLost):
            self._helpers.pop(event.conn, None)
        elif isinstance(event, e.LoginLeft):
            self._logins.pop(event.login, None)
        elif isinstance(event, e.ChannelClosed):
            self._channels.pop(event.channel, None)

    # --- commands out ------------------------------------------------------------------------

    async def _run(self, commands: list[c.Command]) -> None:
        # The timer first: a record that fails (the store is down) must not stop the clock.
        for wake in commands:
            if isinstance(wake, c.Wake):
                self._schedule(wake.at)
        commands = [command for command in commands if not isinstance(command, c.Wake)]
        for index, command in enumerate(commands):
            try:
                await self._do(command)
            except Exception as exc:
                await self._failed(commands[index + 1 :], exc)
                raise

    async def _failed(self, rest: list[c.Command], exc: Exception) -> None:
        """A command failed (an audit row the store did not take): what it records must not
        happen, and the session must not go on unaudited. What waits for a verdict learns
        why it never came; the session ends (``store_unavailable``); the commands that let
        people go are still carried out, each on its own."""
        log.error("session_command_failed", session=self.id, error=repr(exc))
        for later in rest:
            if isinstance(later, c.Verdict):
                self._fail(later.request, exc)
        closing = (c.Disconnect, c.HangUp, c.Goodbye, c.Ended)
        commands: list[c.Command] = [cmd for cmd in rest if isinstance(cmd, closing)]
        commands += self.core.handle(e.EndRequested("store_unavailable"), self._clock())
        for command in commands:
            try:
                if isinstance(command, c.Wake):
                    self._schedule(command.at)
                else:
                    await self._do(command)
            except Exception as again:
                log.error("session_command_failed", session=self.id, error=repr(again))

    async def _do(self, command: c.Command) -> None:
        if isinstance(command, c.Send):
            helper = self._helpers.get(command.conn)
            if helper is not None:
                helper.send(command.message)
        elif isinstance(command, c.Record):
            await self._keeper.write(self, command)
        elif isinstance(command, c.Verdict):
            waiter = self._verdicts.get(command.request)
            if waiter is not None and not waiter.done():
                waiter.set_result(command)
        elif isinstance(command, c.Hold):
            told = self._told.get(command.request)
            if told is not None:
                told(command.message)
        elif isinstance(command, c.Disconnect):
            login = self._logins.get(command.login)
            if login is not None:
                login.session_ended(command.reason, command.message)
        elif isinstance(command, c.HangUp):
            helper = self._helpers.get(command.conn)
            if helper is not None:
                helper.hang_up()
        elif isinstance(command, c.Goodbye):
            helper = self._helpers.get(command.conn)
            if helper is not None:
                helper.goodbye(command.reason)
        elif isinstance(command, c.Ended):
            self._schedule(None)
            try:
                await self._keeper.finish(self, command.reason)
            finally:
                self.ended.set()  # once recorded (or not: the store may be down)
        else:  # pragma: no cover - a command the runner does not know is a bug
            raise TypeError(f"unknown command {command!r}")

    def _fail(self, request: int, exc: BaseException) -> None:
        waiter = self._verdicts.get(request)
        if waiter is not None and not waiter.done():
            if isinstance(exc, Exception):
                waiter.set_exception(exc)
            else:
                waiter.cancel()

    def _schedule(self, at: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if at is not None:
            delay = max(0.0, at - self._clock()) + 0.001
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self.step_soon, e.Tick())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # seen: its caller, if it still waits, gets it too
