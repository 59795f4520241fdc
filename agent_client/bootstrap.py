"""The one-file helper sets itself up, once, with no root and no system package touched.

When this ``python3`` cannot import asyncssh, the helper makes a private virtual environment
in the customer's data dir with ``python3 -m venv --without-pip`` (Debian and Ubuntu ship
ensurepip in a separate package a customer may lack; the venv module is always there), installs
the pinned asyncssh into it with the pip that travels inside the download (pip runs from a zip),
and runs itself again with that environment's Python. A second run finds the environment ready.
pip picks the right compiled cryptography wheel for this computer from PyPI, and honours
``PIP_INDEX_URL`` / ``PIP_FIND_LINKS`` / ``PIP_NO_INDEX`` for a mirror.

This runs before anything that needs asyncssh, on whatever ``python3`` the customer has, so it
is standard library only and parses on old Pythons (to say plainly that they are too old).
Every failure is one plain message and a non-zero exit, never a traceback; pip's own output
goes to the helper's log.
"""

from __future__ import annotations

import json
import os
import pkgutil
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from agent_client.places import data_dir, log_path
from assist_protocol.safetext import visible

MINIMUM = (3, 9)
EXIT_SETUP = 4  # the helper could not set itself up (nothing was connected)
#: set for the run in the new environment: set up once, never in a loop
AGAIN = "ASSIST_HELPER_SET_UP"
#: written last into the environment: it is complete, for this Python and these packages
READY = "assist-helper.json"
#: where the download keeps pip (a folder on sys.path only for the install)
PIP_FOLDER = "_pip"
RUN_PIP = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from pip._internal.cli.main import main; sys.exit(main())"
)

SETTING_UP = "Setting up the helper in {where} (one time, about 25 MB)..."
SET_UP = "Done. (Delete that folder to remove it.)"
TOO_OLD = (
    "The helper needs Python 3.9 or newer, and this python3 is {version}.\n"
    "Install a newer Python (from python.org, or e.g. 'brew install python' on a Mac), then run\n"
    "the same command again."
)
NO_VENV = (
    "Could not make the helper's own Python environment in {where}.\n"
    "Python said: {said}\n"
    "Check that your home folder has about 25 MB free. If Python says the venv module is\n"
    "missing, ask your administrator to install python3-venv. Then run the same command again."
)
NO_PACKAGES = (
    "Could not install the helper's one dependency, {requires}, into {where}.\n"
    "pip said: {said}\n"
    "Check that this computer can reach https://pypi.org (or set PIP_INDEX_URL to your\n"
    "package mirror), then run the same command again. The details are in {log}"
)
STILL_MISSING = (
    "The helper set up {where} but still cannot load asyncssh there. Delete that folder and run\n"
    "the same command again. The details are in {log}"
)
STOPPED = "Stopped. The helper was not set up; nothing was left behind."


UNSAFE = (
    "The helper will not set itself up in {where}: another user could change what is there.\n"
    "Make that folder your own and writable only by you, then run the same command again."
)
ROOT_REFUSED = (
    "The helper is running as root, the administrator account. Through it, the engineer would\n"
    "have full control of this computer. Run it as your normal user instead. If you really\n"
    "want to give full control, run it again with --allow-root."
)
EXIT_ROOT = 2  # as the helper's other refusals before it connects


class SetupFailed(Exception):
    """The message for the customer."""


def archive() -> Path:
    """The downloaded file this module was loaded from."""
    return Path(os.path.abspath(__file__)).parent.parent


def _defaults() -> dict[str, Any]:
    return dict(json.loads(pkgutil.get_data("agent_client", "defaults.json") or b"{}"))


def requirements() -> list[str]:
    """The pinned packages the broker built into the download (``defaults.json``): those for
    this Python's version when the broker named some (an older asyncssh for 3.9), else its own."""
    defaults = _defaults()
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    by_python = defaults.get("requires_by_python") or {}
    requires = by_python.get(here) or defaults.get("requires") or ["asyncssh"]
    return [str(item) for item in requires]


def carried_pip_runs_here() -> bool:
    """Whether the pip inside the download runs on this Python (the broker's pip may need a
    newer one; the download says which, ``pip_python``). Python 3.9 cannot read pip's CA
    bundle from inside a zip either. Otherwise the environment gets the pip of this Python's
    own ensurepip (macOS's python3 has it)."""
    floor = tuple(int(part) for part in str(_defaults().get("pip_python", "3.10")).split("."))
    return sys.version_info >= max(floor, (3, 10))


def ensure_asyncssh(argv: list[str]) -> None:
    """Return when asyncssh can be imported. Otherwise set up the helper's own environment
    (once) and run the helper again in it (no return), or say what failed and exit.

    Root is refused first (before anything is installed or run as root), and every Python this
    starts runs isolated (``-I``) in the helper's own folder: a module planted in the folder the
    customer downloaded to, or a PYTHON* variable, is never imported."""
    if sys.version_info < MINIMUM:
        _stop(TOO_OLD.format(version=visible(platform.python_version())))
    if os.geteuid() == 0 and "--allow-root" not in argv:
        print(ROOT_REFUSED, flush=True)
        raise SystemExit(EXIT_ROOT)
    try:
        import asyncssh  # noqa: F401
    except ImportError:
        pass
    else:
        os.environ.pop(AGAIN, None)  # not for the shells the helper starts
        return
    venv = data_dir() / "venv"
    unsafe = _not_private(data_dir())
    if unsafe is not None:
        _stop(UNSAFE.format(where=visible(unsafe)))
    if os.environ.get(AGAIN):
        _stop(STILL_MISSING.format(where=visible(venv), log=visible(log_path())))
    python = venv / "bin" / "python3"
    if not _ready(venv):
        try:
            _set_up(venv)
        except SetupFailed as failed:
            shutil.rmtree(venv, ignore_errors=True)
            _stop(str(failed))
        except KeyboardInterrupt:
            shutil.rmtree(venv, ignore_errors=True)
            _stop(STOPPED)
    # the same program again, in its own environment (stdin stays the customer's terminal)
    env = {**os.environ, AGAIN: "1"}
    os.execve(python, [str(python), "-I", str(archive()), *argv], env)  # noqa: S606 - no shell


def _not_private(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents up to the home folder that another user could
    change (not ours, or writable by group or others), else None. The helper runs what it
    installed there, so nobody else may be able to write it."""
    home = Path.home()
    for path in (folder, *folder.parents):
        try:
            found = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(found.st_mode) and path != home:
            return path
        if found.st_uid not in (os.geteuid(), 0) or found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return path
        if path == home:
            return None
    return None


def _stop(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(EXIT_SETUP)


def _stamp() -> dict[str, object]:
    """What the environment was made for: this Python (by path and version), these packages."""
    return {
        "python": os.path.realpath(sys.executable),
        "version": platform.python_version(),
        "requires": requirements(),
    }


def _ready(venv: Path) -> bool:
    try:
        stamp = json.loads((venv / READY).read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp == _stamp() and (venv / "bin" / "python3").exists())


def _set_up(venv: Path) -> None:
    print(SETTING_UP.format(where=visible(venv.parent)), flush=True)
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one, or one for another Python
    venv.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    requires = requirements()
    log = log_path()
    with log.open("a") as out:
        out.write(f"--- setting up {venv} for {' '.join(requires)}\n")
        out.flush()
        carried = carried_pip_runs_here()
        without = ["--without-pip"] if carried else []
        made = _run([sys.executable, "-I", "-m", "venv", *without, str(venv)], out)
        if made is not None:
            raise SetupFailed(NO_VENV.format(where=visible(venv), said=made))
        python = str(venv / "bin" / "python3")
        pip = [python, "-I", "-c", RUN_PIP, str(archive() / PIP_FOLDER)]
        if not carried:
            pip = [python, "-I", "-m", "pip"]
        options = ["install", "--only-binary", ":all:", "--no-cache-dir", "--no-input"]
        quiet = ["--disable-pip-version-check", "--progress-bar", "off"]
        said = _run([*pip, *options, *quiet, *requires], out)
        if said is not None:
            raise SetupFailed(
                NO_PACKAGES.format(
                    requires=visible(", ".join(requires)),
                    where=visible(venv),
                    said=said,
                    log=visible(log),
                )
            )
    (venv / READY).write_text(json.dumps(_stamp()))
    print(SET_UP, flush=True)


def _run(argv: list[str], out: TextIO) -> str | None:
    """Run one step with its output into the log; None when it worked, else the last thing it
    said (an ``ERROR:`` line when there is one), made safe to show."""
    try:
        done = subprocess.run(
            argv,
            cwd=data_dir(),  # never the folder the download sits in (see ensure_asyncssh)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    except OSError as exc:
        out.write(f"{argv[0]}: {exc}\n")
        return visible(exc.strerror or exc)
    text = done.stdout.decode("utf-8", "replace")
    out.write(text)
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    last = (errors or lines or [f"exit status {done.returncode}"])[-1]
    return visible(last, 300)
