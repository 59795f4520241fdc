"""The customer's one line, as the broker prints it, on the machine's own /usr/bin/python3 (PEP 668
in force, no asyncssh): in a throwaway home, as an unprivileged user, with pip allowed only a
local folder of wheels. It sets the helper up once in the home, reaches the consent prompt on a
real terminal and lets an engineer in; a second run reuses the setup; a failed install says what
to do, without a traceback. Nothing is written outside the throwaway folders.

The same line also runs on Python 3.9, the oldest the helper supports (macOS's own python3 is
3.9), found in pyenv or on PATH and put first on the customer's PATH as ``python3``; it installs
the older asyncssh pinned for 3.9. pyenv keeps its Pythons under /root, which ``nobody`` cannot
enter, so that case runs as the tester (root) with a throwaway HOME and TMPDIR and passes
``--allow-root`` (the helper refuses root without it); nothing is copied out of /root."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from agent_client.bootstrap import EXIT_ROOT, EXIT_SETUP, READY, ROOT_REFUSED
from agent_client.connect import EXIT_REFUSED
from broker.app import Listening
from broker.serve import banner
from broker.web.helper_download import OLDER_PYTHONS, pip_python, requirements
from tests.e2e.test_files import sftp
from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver
from tests.pythons import find_python

SYSTEM_PYTHON = Path("/usr/bin/python3")
WHEELS_CACHE = Path.home() / ".cache" / "assist-broker-test-wheels"
#: what a customer's setup must not change (and the tester's own home, which is not the customer's)
WATCHED = (
    Path("/usr/lib/python3/dist-packages"),
    Path("/usr/local/lib"),
    Path("/usr/local/bin"),
    Path("/usr/lib/python3.11"),
    Path.home() / ".local" / "share" / "assist-helper",
    Path.home() / ".local" / "state" / "assist-helper",
)
SETUP_SECONDS = 120.0  # a fresh venv and five wheels from a local folder: a few seconds here


class CustomerPython(NamedTuple):
    """The ``python3`` the customer's line runs: where it is, its version, and whether the line
    runs as the tester (root) because ``nobody`` cannot reach that interpreter."""

    path: Path
    version: str
    as_tester: bool


def _version(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


@pytest.fixture(params=["system", "3.9"], ids=["system-python3", "python3.9"])
def customer_python(request: pytest.FixtureRequest) -> CustomerPython:
    if request.param == "system":
        if not SYSTEM_PYTHON.exists():
            pytest.skip("no /usr/bin/python3 on this machine: the customer's python3 is tested")
        return CustomerPython(SYSTEM_PYTHON, _version(SYSTEM_PYTHON), as_tester=False)
    found = find_python(request.param)
    if found is None:
        pytest.skip(f"no Python {request.param} on this machine (looked in pyenv and on PATH)")
    return CustomerPython(found, request.param, as_tester=not _nobody_can_run(found))


def _nobody_can_run(python: Path) -> bool:
    if os.geteuid() != 0:
        return True  # the line runs as the tester anyway
    nobody = pwd.getpwnam("nobody")
    try:
        done = subprocess.run(
            [str(python), "-c", "pass"],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            capture_output=True,
            check=False,
        )
    except PermissionError:  # e.g. under /root (mode 700)
        return False
    return done.returncode == 0


def helper_wheels(python: CustomerPython) -> Path:
    """The wheels the helper installs on that python3 (compiled ones for its version), fetched
    once from the package index (an install step, like pip install in CI) and kept across runs."""
    version = python.version
    pins = OLDER_PYTHONS.get(version) or requirements()
    folder = WHEELS_CACHE / f"py{version}-{'-'.join(pins)}"
    WHEELS_CACHE.mkdir(parents=True, exist_ok=True)
    with (WHEELS_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers share the cache
        if not list(folder.glob("asyncssh-*.whl")):
            partial = Path(tempfile.mkdtemp(dir=WHEELS_CACHE))
            fetch = ["download", "--quiet", "--only-binary", ":all:", "--python-version", version]
            done = subprocess.run(
                [sys.executable, "-m", "pip", *fetch, "--dest", str(partial), *pins],
                capture_output=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                shutil.rmtree(partial)
                said = (done.stderr or done.stdout).decode(errors="replace").strip()
                pytest.skip(f"the package index is unreachable for {pins}: {said[-300:]}")
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
    return folder


@pytest.fixture
def customer() -> Iterator[Path]:
    """A throwaway folder for the customer: ``home``, ``tmp`` (their TMPDIR), ``wheels``."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 on this machine: the customer's python3 is what is tested")
    if not shutil.which("curl"):
        pytest.skip("no curl on this machine: the customer's line downloads with curl")
    root = Path(tempfile.mkdtemp(prefix="assist-customer-"))
    root.chmod(0o755)
    for name in ("home", "tmp", "wheels"):
        (root / name).mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _account(python: CustomerPython | None = None) -> dict[str, Any]:
    """Run the customer's line as an unprivileged user when the tests run as root (so any write
    to the system would fail outright, and the helper needs no --allow-root), unless that user
    cannot run this python3."""
    if os.geteuid() != 0 or (python is not None and python.as_tester):
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _hand_over(root: Path, python: CustomerPython | None = None) -> None:
    account = _account(python)
    if not account:
        return
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, account["user"], account["group"])


def _env(root: Path, wheels: Path, python: Path = SYSTEM_PYTHON) -> dict[str, str]:
    """A customer's environment from scratch: none of the test venv (no VIRTUAL_ENV, no .venv
    on PATH), ``python`` first on PATH as ``python3``, pip limited to a local folder (and none of
    this machine's pip.conf mirrors)."""
    bin_dir = root / "bin"
    if python != SYSTEM_PYTHON:
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "python3").symlink_to(python)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_CONFIG_FILE": os.devnull,
    }


def _the_line(harness: BrokerHarness) -> str:
    """The customer's line exactly as ``assist-broker serve`` prints it for this broker."""
    listening = Listening(
        "127.0.0.1", harness.port, harness.fingerprint, "127.0.0.1", harness.http_port
    )
    lines = banner(harness.settings, listening, "http").splitlines()
    line = lines[lines.index(next(x for x in lines if x.startswith("A customer runs"))) + 1]
    assert f"http://127.0.0.1:{harness.http_port}/helper" in line
    return line.strip()


def _close(terminal: PtyDriver) -> None:
    """Close the terminal and end what still runs on it: the shell and the helper it started
    (the shell leads its own process group)."""
    if terminal.proc is not None:  # the helper may outlive the shell
        with contextlib.suppress(ProcessLookupError):
            os.killpg(terminal.proc.pid, signal.SIGKILL)
    terminal.close()


def _stamps(*more: Path) -> dict[Path, int | None]:
    watched = (*WATCHED, *more)
    return {path: path.stat().st_mtime_ns if path.exists() else None for path in watched}


def _site_packages(python: Path) -> list[Path]:
    """Where that python3 installs packages (what the customer's setup must leave alone)."""
    done = subprocess.run(
        [str(python), "-c", "import site; print('\\n'.join(site.getsitepackages()))"],
        capture_output=True,
        check=True,
    )
    return [Path(line) for line in done.stdout.decode().splitlines() if line]


async def test_the_one_line_sets_up_once_and_lets_the_engineer_in(
    harness: BrokerHarness, customer_python: CustomerPython, customer: Path
) -> None:
    python = customer_python
    shutil.copytree(helper_wheels(python), customer / "wheels", dirs_exist_ok=True)
    home = customer / "home"
    (home / "note.txt").write_text("from the customer's home\n")
    # planted where the customer downloads (a shared folder, say): never imported by the setup
    planted = customer / "tmp" / "planted"
    for name in ("optparse", "venv", "encodings", "pip"):
        (home / f"{name}.py").write_text(f"open({str(planted)!r}, 'a').write('{name} ')\n")
    env, account = _env(customer, customer / "wheels", python.path), _account(python)
    _hand_over(customer, python)
    lacks = subprocess.run(
        ["python3", "-c", "import asyncssh"], env=env, capture_output=True, check=False
    )
    if lacks.returncode == 0:
        pytest.skip(f"{python.path} has asyncssh already: there is nothing to set up")
    line = _the_line(harness) + (" --allow-root" if python.as_tester and os.geteuid() == 0 else "")
    system = _site_packages(python.path)
    before = _stamps(*system)
    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket, scope="sftp")  # (nobody's login shell is nologin)

    first = PtyDriver()
    try:
        await first.start(["/bin/sh", "-c", line], env=env, cwd=home, **account)
        await first.expect(rb"Setting up the helper in [^\r\n]*/home/\.local/share/assist-helper ")
        await first.expect(rb"Consent code \(the engineer gave it to you", timeout=SETUP_SECONDS)
        first.type(code.encode() + b"\n")
        await first.expect(rb"Allow\? \[y/N\] ")
        first.type(b"y\n")
        await first.expect(rb"Press q")
        fetched = harness.tmp / "note.txt"
        got = await sftp(harness, key, ticket, f"get {home}/note.txt {fetched}\n")
        assert got.status == 0, (got.stderr, bytes(first.output))
        assert fetched.read_text() == "from the customer's home\n"
        first.type(b"q")
        assert await first.wait(30) == 0
    finally:
        _close(first)
    assert b"Traceback" not in first.output and first.output.count(b"Setting up") == 1
    venv = home / ".local" / "share" / "assist-helper" / "venv"
    assert list(venv.glob(f"lib/python{python.version}/site-packages/asyncssh/__init__.py"))
    # made without pip (Debian ships ensurepip apart, in python3-venv) where the carried pip
    # runs; an older Python (3.9) gets its own ensurepip's
    carried = tuple(map(int, python.version.split("."))) >= max(
        tuple(map(int, pip_python().split("."))), (3, 10)
    )
    assert bool(list(venv.glob("lib/python3*/site-packages/pip"))) is not carried
    assert not planted.exists(), planted.read_text()
    ready = (venv / READY).stat().st_mtime_ns
    assert _stamps(*system) == before  # nothing of the system, nor of the tester's home, changed

    again = PtyDriver()  # the same line once more: no setup, straight to the question
    try:
        await again.start(["/bin/sh", "-c", line], env=env, cwd=home, **account)
        await again.expect(rb"Consent code \(the engineer gave it to you")
        again.type(b"\x04")  # the customer gives up: Ctrl-D
        await again.expect(rb"No consent code was given")
        assert await again.wait(30) == EXIT_REFUSED
    finally:
        _close(again)
    assert b"Setting up" not in again.output
    assert (venv / READY).stat().st_mtime_ns == ready
    assert _stamps(*system) == before


async def test_a_failed_setup_says_what_to_do(harness: BrokerHarness, customer: Path) -> None:
    """No package to be had (an empty folder instead of the index): a plain message, a non-zero
    exit, no traceback, and no half-made environment left for the next run to trip on."""
    _hand_over(customer)
    before = _stamps()
    status, text = await _run_line(harness, customer, **_account())
    assert status == EXIT_SETUP, text
    assert "Traceback" not in text
    assert "Could not install the helper's one dependency, asyncssh==" in text
    assert "pip said: ERROR: No matching distribution found for asyncssh==" in text
    assert "Check that this computer can reach https://pypi.org" in text
    assert not (customer / "home" / ".local" / "share" / "assist-helper" / "venv").exists()
    assert _stamps() == before


async def _run_line(harness: BrokerHarness, customer: Path, **account: Any) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        _the_line(harness),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_env(customer, customer / "wheels"),
        cwd=customer / "home",
        **account,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), SETUP_SECONDS)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_root_is_refused_before_anything_is_installed(
    harness: BrokerHarness, customer: Path
) -> None:
    """Run as root (without --allow-root), the helper refuses before it sets anything up: no
    pip runs as root, no environment is made that root would then run."""
    if os.geteuid() != 0:
        pytest.skip("the tests do not run as root here")
    status, text = await _run_line(harness, customer)
    assert status == EXIT_ROOT and ROOT_REFUSED in text, text
    assert "Setting up" not in text
    assert not (customer / "home" / ".local" / "share" / "assist-helper").exists()


async def test_a_folder_others_can_change_is_not_used(
    harness: BrokerHarness, customer: Path
) -> None:
    """The helper's folder writable by others (another user could swap what it runs): refused
    with a plain message, nothing installed there."""
    shared = customer / "home" / ".local" / "share" / "assist-helper"
    shared.mkdir(parents=True)
    _hand_over(customer)
    shared.chmod(0o777)
    status, text = await _run_line(harness, customer, **_account())
    assert status == EXIT_SETUP, text
    assert "another user could change what is there" in text and "Traceback" not in text
    assert not (shared / "venv").exists()
