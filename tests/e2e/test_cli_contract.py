"""The command line's promises, on a real data dir with real SQLite: options before or after
the command's name, no traceback for a closed pipe, a missing file or a bad argument, and the
exit codes of ``--help``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


def cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert "Traceback" not in done.stdout, done.stdout


def test_options_before_the_command_are_kept_and_make_no_second_store(tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    made = cli(
        "--data-dir", str(data), "--json", "ticket", "create", "--title", "x", "--severity", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["key"] == "T-1"
    shown = cli("--data-dir", str(data), "--json", "ticket", "show", "T-1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["title"] == "x"
    mixed = cli("--json", "ticket", "list", "--data-dir", str(data), cwd=tmp_path)
    assert [t["key"] for t in json.loads(mixed.stdout)] == ["T-1"]
    between = cli("ticket", "--data-dir", str(data), "show", "T-1", cwd=tmp_path)
    assert between.returncode == 0 and between.stdout.startswith("T-1  Severity 2"), between
    assert not (tmp_path / "var").exists(), "a second store appeared in the current directory"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    assert cli("ticket", "create", "--title", "x", "--severity", "3", cwd=tmp_path).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "ticket", "list"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes (`| head -0`)
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert err == "", err


@pytest.fixture(scope="module")
def with_a_ticket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("cli")
    assert cli("ticket", "create", "--title", "x", "--severity", "3", cwd=where).returncode == 0
    return where


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        # a file named on the command line that is not there
        (
            ["account", "add", "bob", "--role", "engineer", "--ssh-key", "missing.pub"],
            2,
            "cannot read the key file missing.pub",
        ),
        (["--config", "missing.toml", "ticket", "list"], 2, "missing.toml does not exist"),
        (["audit", "verify", "--bundle", "missing.tar"], 1, "missing.tar"),
        (
            ["audit", "pubkey", "--allowed-signers", "no/such/dir/allowed"],
            3,
            "cannot use the file no/such/dir/allowed",
        ),
        # bad arguments and values
        (["ticket", "create", "--title", "x", "--severity", "9"], 2, "invalid choice"),
        (["recording", "play", "abc"], 2, "invalid int value"),
        (["ticket", "frobnicate"], 2, "invalid choice"),
        (["code", "issue", "T-1", "--engineer", "alice", "--ttl", "soon"], 2, "--ttl"),
        # things that are not there, or not allowed
        (["ticket", "show", "T-9"], 1, "There is no ticket T-9."),
        (["session", "show", "nope"], 1, "There is no session nope."),
        (["code", "revoke", "99"], 1, "There is no consent code 99."),
        (["ticket", "assign", "T-1", "nobody"], 1, "There is no account nobody."),
    ],
)
def test_errors_are_one_plain_line_with_the_documented_status(
    with_a_ticket: Path, args: list[str], status: int, says: str
) -> None:
    done = cli(*args, cwd=with_a_ticket)
    no_traceback(done)
    assert done.returncode == status, done
    assert says in done.stderr, done.stderr
    assert done.stdout == ""


def test_an_unusable_data_dir_exits_3(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    done = cli("--data-dir", str(tmp_path / "afile"), "ticket", "list", cwd=tmp_path)
    no_traceback(done)
    assert done.returncode == 3, done
    assert done.stderr.startswith("assist-broker: cannot use ")


def test_a_read_on_a_missing_data_dir_refuses_and_a_write_says_it_created_one(
    tmp_path: Path,
) -> None:
    listed = cli("ticket", "list", cwd=tmp_path)
    assert listed.returncode == 1 and "There is no data dir" in listed.stderr, listed
    assert not (tmp_path / "var").exists()
    made = cli("ticket", "create", "--title", "x", "--severity", "3", cwd=tmp_path)
    assert made.returncode == 0 and made.stdout == "T-1\n"
    assert made.stderr == f"assist-broker: created a new data dir {tmp_path / 'var'}\n"
    again = cli("ticket", "create", "--title", "y", "--severity", "3", cwd=tmp_path)
    assert again.stderr == ""
