"""A flapping network: the helper's connection is cut again and again at random moments, also
in the middle of a reconnect, while engineers come and go. Every drop is well inside the grace
period, so the helper must ride them all out: the same session, the same shell, a clean end.

The storm is random but seeded: a failure prints its seed, and ``FLAP_SEED=N`` replays the
same sequence of cuts (the timing of the machine still varies)."""

from __future__ import annotations

import asyncio
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent_client import consent_ui as ui
from tests.e2e.test_network_drop import helper_through, session_ids
from tests.harness import BrokerHarness, HelperProc
from tests.netcut import CuttableProxy, Trap
from tests.ptydriver import PtyDriver

#: cuts of the helper's logins: at least this many in all, this many of them while it was
#: connected, and this many by a trap in the middle of a reconnect
CUTS = 12
DROPS = 6
TRAPPED = 4
#: the storm's longest run (it usually takes 10 to 25 s), and how long the helper may take
#: to get back after a cut (a reconnect cut three times in a row waits 0.5 + 1 + 2 + 4 s)
STORM_SECONDS = 50.0
BACK_SECONDS = 40.0
#: long enough that every drop of the storm is inside it
GRACE = 90.0
#: where a resume login is, in bytes through the proxy (both ways together), as measured with
#: ``CuttableProxy.trace()``: a trap at a random offset in one of these cuts the reconnect there
PHASES = {
    "right after the accept": (0, 0),
    "key exchange": (1, 6070),
    "resume login": (6080, 7010),
    "open_session of the control channel": (7020, 7290),
    "reading the resumed message": (7300, 7770),
    "_listen (the forward request)": (7780, 8250),
}
SOMETHING_WRONG = "Something went wrong"
DROPPED_LINE = ui.DROPPED.splitlines()[0].split("{")[0].strip()
RECONNECTED_LINE = ui.RECONNECTED.split("{")[0].strip()


@dataclass
class Storm:
    """What the storm did, for the report when the test fails."""

    seed: int
    #: cuts made, and how many of them cut a login of the helper's (traps come on top)
    cuts: int = 0
    hits: int = 0
    seconds: float = 0.0
    traps: list[str] = field(default_factory=list)
    engineers: dict[str, int] = field(default_factory=dict)
    #: the phases of a reconnect still to be cut this round
    deck: list[str] = field(default_factory=list)

    def tally(self, what: str) -> None:
        self.engineers[what] = self.engineers.get(what, 0) + 1


def seed() -> int:
    chosen = os.environ.get("FLAP_SEED")
    return int(chosen) if chosen else random.SystemRandom().randrange(1, 2**31)


def gap(rng: random.Random) -> float:
    """0.1 to 6 s, mostly short: many cuts in little time, some while a reconnect runs."""
    return 0.1 + 5.9 * rng.random() ** 3


def reconnect_traps(rng: random.Random, deck: list[str]) -> list[tuple[str, Trap]]:
    """One or two cuts of the coming reconnect attempts, at a random moment or in a phase
    drawn from ``deck`` (every phase once, in random order, before any comes again)."""
    traps = []
    for _ in range(rng.randint(1, 2)):
        if rng.random() < 0.2:
            trap = Trap(after_seconds=rng.uniform(0.0, 0.4), silent=rng.random() < 0.5)
            traps.append((f"{trap}", trap))
        else:
            if not deck:
                deck += rng.sample(list(PHASES), len(PHASES))
            phase = deck.pop()
            low, high = PHASES[phase]
            trap = Trap(after_bytes=rng.randint(low, high), silent=rng.random() < 0.5)
            traps.append((f"{phase}: {trap}", trap))
    return traps


def twice_unread(rng: random.Random) -> list[tuple[str, Trap]]:
    """Two attempts in a row cut after the broker sent its new token and before the helper
    read it: the helper still holds only the token it logged in with."""
    phase = "reading the resumed message"
    low, high = PHASES[phase]
    traps = [Trap(after_bytes=rng.randint(low, high), silent=rng.random() < 0.5) for _ in "12"]
    return [(f"{phase}: {trap}", trap) for trap in traps]


async def cut(proxy: CuttableProxy, rng: random.Random, storm: Storm) -> None:
    """One cut of whatever the helper has open now: both ends notice, or only the helper
    (the broker's side stays open and silent, as when a laptop changes networks). Traps are
    set only when none wait: each attempt they cut costs the helper its backoff (doubling to
    10 s), so more in a row would make the test slow, not harder. The first ones cut a
    resume twice before the helper read its new token."""
    if rng.random() < 0.5 and not proxy.armed:
        traps = reconnect_traps(rng, storm.deck) if storm.traps else twice_unread(rng)
        proxy.trap(*(trap for _, trap in traps))
        storm.traps += [label for label, _ in traps]
    storm.cuts += 1
    if rng.random() < 0.5:
        storm.hits += proxy.cut_client_side()
        return
    storm.hits += proxy.down()
    await asyncio.sleep(rng.uniform(0.05, 0.6))  # the network stays away a moment
    proxy.up()


def alive(helper: HelperProc) -> None:
    assert helper.proc.returncode is None, "the helper stopped during the storm"
    assert SOMETHING_WRONG not in helper.text


async def engineers_come_and_go(
    harness: BrokerHarness,
    ticket: str,
    keys: dict[str, Path],
    rng: random.Random,
    stop: asyncio.Event,
    storm: Storm,
) -> None:
    """Commands by alice and short shells by bob, one after another, until told to stop.
    A command that meets a drop may fail; none may hang."""
    number = 0
    while not stop.is_set():
        number += 1
        if rng.random() < 0.6:
            try:
                result = await harness.ssh(keys["alice"], ticket, f"echo ok-{number}", timeout=40)
            except TimeoutError:
                storm.tally("command timed out")
            else:
                good = result.status == 0 and result.stdout == f"ok-{number}\n".encode()
                storm.tally("command ran" if good else "command failed")
        else:
            shell = PtyDriver()
            await shell.start(harness.ssh_args(keys["bob"], ticket, "-tt"))
            try:
                shell.type(f"echo bob-{number}-$((6*7)); exit\n".encode())
                status = await shell.wait(timeout=40)
                ran = f"bob-{number}-42".encode() in shell.output
                storm.tally("shell ran" if status == 0 and ran else "shell failed")
            except TimeoutError:
                storm.tally("shell timed out")
            finally:
                shell.close()
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(0.1, 1.5))
        except TimeoutError:
            pass


def is_back(harness: BrokerHarness, helper: HelperProc) -> bool:
    """The helper is connected again, and the broker knows it (its forward is up)."""
    (live,) = harness.broker.manager.live()
    noticed, returned = helper.count(DROPPED_LINE), helper.count(RECONNECTED_LINE)
    return live.forwarded and live.dropped_at is None and noticed == returned


async def back(harness: BrokerHarness, helper: HelperProc, timeout: float = BACK_SECONDS) -> None:
    async def settled() -> None:
        while not is_back(harness, helper):
            alive(helper)
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(settled(), timeout)
    except TimeoutError:
        raise AssertionError("the helper did not come back in time") from None


def summary(storm: Storm, proxy: CuttableProxy) -> str:
    return (
        f"{storm.cuts} cuts in {storm.seconds:.1f} s ({storm.hits} hit a login), "
        f"{proxy.sprung} of these traps sprung: "
        f"{storm.traps}; engineers: {storm.engineers}"
    )


def report(storm: Storm, helper: HelperProc | None, proxy: CuttableProxy, log: Path) -> str:
    parts = [
        f"FLAP_SEED={storm.seed} replays this storm's cuts.",
        summary(storm, proxy),
        "--- proxy ---",
        *proxy.history,
        proxy.trace(),
        "--- helper output ---",
        helper.text if helper is not None else "(not started)",
        f"--- {log} ---",
        log.read_text() if log.exists() else "(no log: nothing unexpected was logged)",
    ]
    return "\n".join(parts)


@pytest.mark.parametrize("link", ["reverse", "nested"])
async def test_a_flapping_network_does_not_stop_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    storm = Storm(seed())
    rng, engineer_rng = random.Random(storm.seed), random.Random(storm.seed + 1)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the helper's log goes here
    log = tmp_path / "state" / "assist-helper" / "helper.log"
    harness = await BrokerHarness(tmp_path, session_grace=GRACE, helper_link=link).start()
    proxy = await CuttableProxy(harness.port).start()
    helper: HelperProc | None = None
    try:
        ticket = await harness.ticket()
        keys = {
            "alice": await harness.engineer(),
            "bob": await harness.engineer("bob", "Bob Jones"),
        }
        helper = await helper_through(harness, proxy, ticket)
        (session,) = await session_ids(harness, ticket)

        # alice's shell, opened before the storm: the first drop parks it on the customer's
        # side, and after the storm the same ssh command gets the very same shell back
        before = PtyDriver()
        await before.start(harness.ssh_args(keys["alice"], ticket, "-tt"))
        before.type(b"export MARK=kept-$((6*7)); echo set-$MARK pid-$$\n")
        shell_pid = int((await before.expect(rb"set-kept-42 pid-(\d+)")).group(1))

        stop = asyncio.Event()
        coming = asyncio.create_task(
            engineers_come_and_go(harness, ticket, keys, engineer_rng, stop, storm)
        )
        loop = asyncio.get_running_loop()
        ends = loop.time() + STORM_SECONDS
        try:
            while (
                storm.hits + proxy.sprung < CUTS
                or helper.count(DROPPED_LINE) < DROPS
                or proxy.sprung < TRAPPED
            ):
                assert loop.time() < ends, "the storm took too long"
                await cut(proxy, rng, storm)
                alive(helper)
                if rng.random() < 0.7:  # mostly the next cut comes once the helper is back
                    await back(harness, helper)
                await asyncio.sleep(gap(rng))  # and then at a random moment
                alive(helper)
        except BaseException:
            coming.cancel()  # the helper may be gone: nobody waits for the engineers then
            raise
        finally:
            storm.seconds = loop.time() - ends + STORM_SECONDS
            stop.set()
            proxy.up()
            proxy.disarm()
        await asyncio.wait_for(coming, 60)
        assert await before.wait() == 255  # the drop cut alice's ssh; her shell was parked
        before.close()

        await back(harness, helper)
        done = await harness.ssh(keys["alice"], ticket, "echo done-$((6*7))")
        assert (done.status, done.stdout) == (0, b"done-42\n")

        after = PtyDriver()
        await after.start(harness.ssh_args(keys["alice"], ticket, "-tt"))
        await after.expect(rb"\[assist\] The connection dropped for \d+ s; your shell kept running")
        after.type(b"echo again-$MARK pid-$$\n")
        await after.expect(rf"again-kept-42 pid-{shell_pid}".encode())  # the very same shell

        helper.interrupt()
        assert await helper.finish() == 0
        await after.wait()
        after.close()
        assert SOMETHING_WRONG not in helper.text and not log.exists()
        ended = await harness.wait_audit(ticket, "session.ended")
        assert ended["reason"] == "customer"
        assert await session_ids(harness, ticket) == {session}  # one session throughout
        actions = [name for name, _ in await harness.audit(ticket)]
        reconnects = len(re.findall(re.escape(RECONNECTED_LINE), helper.text))
        assert actions.count("session.resumed") >= reconnects >= DROPS
        assert actions.count("session.disconnected") >= reconnects
        print(f"FLAP_SEED={storm.seed}: {summary(storm, proxy)}")
    except BaseException:
        print(report(storm, helper, proxy, log))
        raise
    finally:
        await proxy.close()
        await harness.stop()
