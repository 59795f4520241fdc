"""Export bundle -> verify offline (and with stock ssh-keygen) -> tamper -> verify fails, each
way, naming what is wrong; without a trusted key it never says OK."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from broker.cli import main
from broker.evidence import sshsig
from broker.evidence.signing import Signer
from broker.store import chain
from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _write(out: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _forge(
    bundle: Path, out: Path, change: dict[str, bytes], *, manifest: bool, signer: Signer | None
) -> None:
    """Change files; ``manifest``: recompute the manifest's digests too; ``signer``: and sign
    the manifest again with that key."""
    files = _files(bundle)
    files.update(change)
    files = {n: d for n, d in files.items() if d != b"<delete>"}
    if manifest:
        document = json.loads(files["manifest.json"])
        document["files"] = {
            n: hashlib.sha256(d).hexdigest()
            for n, d in files.items()
            if n not in ("manifest.json", "manifest.json.sig")
        }
        files["manifest.json"] = json.dumps(document, indent=2).encode()
    if signer is not None:
        files["manifest.json.sig"] = signer.sshsig(
            files["manifest.json"], sshsig.BUNDLE_NAMESPACE
        ).encode()
    _write(out, files)


def _digest_only(line: dict) -> dict:
    fields = {k: line[k] for k in ("seq", "ticket_id", "session_id", "actor", "action", "details")}
    encoded = chain.canonical(time=dt.datetime.fromisoformat(line["time"]), **fields)
    return {k: line[k] for k in ("seq", "prev_hash", "hash", "ticket_id")} | {
        "digest": chain.digest(encoded)
    }


def _recompute(lines: list[dict], start: int) -> list[dict]:
    """A careful forger's chain: every hash from ``start`` on computed again."""
    prev = lines[start - 1]["hash"] if start else lines[0]["prev_hash"]
    out = [dict(line) for line in lines]
    for line in out[start:]:
        digest = line.get("digest") or _digest_only(line)["digest"]
        line["prev_hash"] = prev
        line["hash"] = prev = chain.link(prev, line["ticket_id"], digest)
    return out


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in lines).encode()


def _keygen_verify(signers: Path, namespace: str, data: bytes, sig: bytes, tmp: Path) -> int:
    (tmp / "sig").write_bytes(sig)
    return subprocess.run(
        [
            *("ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "assist-broker-audit"),
            *("-n", namespace, "-s", str(tmp / "sig")),
        ],
        input=data,
        capture_output=True,
        check=False,
    ).returncode


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``assist-broker audit verify --bundle ...`` in this process (it needs no database)."""
    capsys.readouterr()
    status = main(["audit", "verify", "--bundle", *args])
    out, err = capsys.readouterr()
    return status, out, err


async def test_bundle_verifies_offline_and_catches_tampering(
    harness: BrokerHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket = await harness.ticket()
    other = await harness.ticket(title="Another customer")
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    await harness.connected_helper(other)
    assert (await harness.ssh(key, ticket, "echo evidence")).stdout == b"evidence\n"
    assert (await harness.ssh(key, other, "echo private-to-other")).status == 0
    helper.interrupt()
    await helper.finish()
    await harness.wait_audit(ticket, "session.ended")
    await harness.wait_audit(ticket, "recording.closed")
    bundle = harness.tmp / "t1.bundle"

    exported = await cli(harness, "audit", "export", "--ticket", ticket, "--out", str(bundle))
    assert exported.status == 0, exported.stderr
    files = _files(bundle)
    assert {
        "ticket.json",
        "events.jsonl",
        "checkpoints.json",
        "checkpoint.txt",
        "checkpoint.txt.sig",
        "signer.pub",
        "manifest.json",
        "manifest.json.sig",
    } <= set(files)
    assert any(n.startswith("recordings/") for n in files)
    events = files["events.jsonl"].decode()
    assert "private-to-other" not in events and '"action"' in events  # others: digests only

    pubkey = harness.tmp / "pub.pem"
    signers = harness.tmp / "allowed_signers"
    published = await cli(harness, "audit", "pubkey", "--json", "--allowed-signers", str(signers))
    pubkey.write_text(json.loads(published.stdout)["public_key"])
    for trust in (("--pubkey", str(pubkey)), ("--allowed-signers", str(signers))):
        good = await cli(harness, "audit", "verify", "--bundle", str(bundle), *trust)
        assert good.status == 0, good.stderr
        assert good.stdout.startswith(b"OK: ") and b"1 recordings match" in good.stdout

    # Stock OpenSSH checks the manifest and the checkpoint with the same allowed_signers file.
    tmp = harness.tmp
    ns_bundle, ns_point = sshsig.BUNDLE_NAMESPACE, sshsig.CHECKPOINT_NAMESPACE
    manifest, manifest_sig = files["manifest.json"], files["manifest.json.sig"]
    assert _keygen_verify(signers, ns_bundle, manifest, manifest_sig, tmp) == 0
    assert _keygen_verify(signers, ns_bundle, manifest + b" ", manifest_sig, tmp) != 0
    point, point_sig = files["checkpoint.txt"], files["checkpoint.txt.sig"]
    assert _keygen_verify(signers, ns_point, point, point_sig, tmp) == 0
    assert _keygen_verify(signers, ns_bundle, point, point_sig, tmp) != 0  # wrong namespace

    # Without a key of their own an auditor never reads OK.
    unchecked = await cli(harness, "audit", "verify", "--bundle", str(bundle))
    signer = Signer.load(harness.settings.data_dir)
    assert unchecked.status == 4, unchecked.stderr
    assert unchecked.stderr.decode().startswith("assist-broker: NOT CHECKED: ")
    assert f"signed by {signer.key_id}, but that key was not checked" in unchecked.stderr.decode()
    assert b"OK" not in unchecked.stdout

    lines = [json.loads(line) for line in events.splitlines()]
    recording = next(n for n in files if n.startswith("recordings/"))
    closed = next(i for i, e in enumerate(lines) if e.get("action") == "channel.closed")
    rewritten = [dict(e) for e in lines]
    rewritten[closed] = {**lines[closed], "details": {**lines[closed]["details"], "exit_status": 1}}
    checkpoints = json.loads(files["checkpoints.json"])
    ticket_json = json.loads(files["ticket.json"])
    forger = Signer.load(harness.tmp / "forger")

    # (change, recompute the manifest, re-sign with, expected words)
    attacks = {
        "deleted tail": (
            {"events.jsonl": _jsonl(lines[:-3])},
            True,
            None,
            "manifest.json: the signature is not valid",
        ),
        "deleted checkpoints": (
            {"checkpoints.json": b"[]"},
            False,
            None,
            "checkpoints.json: its SHA-256 does not match the manifest",
        ),
        "recomputed chain": (
            {"events.jsonl": _jsonl(_recompute(rewritten, closed))},
            True,
            None,
            "manifest.json: the signature is not valid",
        ),
        "cut short at an earlier checkpoint": (
            {
                "events.jsonl": _jsonl(lines[: len(lines) // 2]),
                "checkpoints.json": json.dumps(checkpoints[:1]).encode(),
            },
            True,
            None,
            "manifest.json: the signature is not valid",
        ),
        "ticket.json changed": (
            {"ticket.json": json.dumps({**ticket_json, "title": "Nothing happened"}).encode()},
            False,
            None,
            "ticket.json: its SHA-256 does not match the manifest",
        ),
        "ticket.json changed, manifest forged": (
            {"ticket.json": json.dumps({**ticket_json, "title": "Nothing happened"}).encode()},
            True,
            None,
            "manifest.json: the signature is not valid",
        ),
        "re-signed by another key": (
            {"events.jsonl": _jsonl(_recompute(rewritten, closed))},
            True,
            forger,
            f"signed by {forger.key_id}, which is not a key you trust",
        ),
    }
    for name, (change, fix, resign, expected) in attacks.items():
        forged = harness.tmp / f"{name}.bundle"
        _forge(bundle, forged, change, manifest=fix, signer=resign)
        status, _, err = _verify(capsys, str(forged), "--pubkey", str(pubkey))
        assert status == 1 and expected in err, (name, err)
        status, out, err = _verify(capsys, str(forged))
        assert status != 0 and "OK" not in out, name

    # Defence in depth: even a manifest signed with the broker's own key (as if the broker had
    # been made to sign) does not carry an inconsistent bundle through.
    flipped = bytearray(files[recording])
    flipped[-5] ^= 1
    own_hidden = [_digest_only(e) if e.get("action") == "channel.opened" else e for e in lines]
    inner = {
        "own event hidden as another's": (
            {"events.jsonl": _jsonl(own_hidden)},
            "of this ticket is left out of the bundle",
        ),
        "recording removed": ({recording: b"<delete>"}, "missing from the bundle"),
        "recording changed": (
            {recording: bytes(flipped)},
            f"{recording}: its SHA-256 does not match the audit chain",
        ),
        "event changed": (
            {"events.jsonl": _jsonl(rewritten)},
            "(channel.closed): its content does not match its hash",
        ),
        "checkpoint signature swapped": (
            {"checkpoint.txt.sig": files["manifest.json.sig"]},
            "no valid signature covers the last event",
        ),
    }
    for name, (change, expected) in inner.items():
        forged = harness.tmp / f"inner {name}.bundle"
        _forge(bundle, forged, change, manifest=True, signer=signer)
        status, _, err = _verify(capsys, str(forged), "--pubkey", str(pubkey))
        assert status == 1 and expected in err, (name, err)


async def test_malformed_bundles_get_a_verdict_never_ok(
    harness: BrokerHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links, duplicates, strange names, a manifest of the wrong shape, too much data: each is
    a named refusal (exit 1), not a traceback and never OK."""
    ticket = await harness.ticket()
    bundle = harness.tmp / "b.tar"
    exported = await cli(harness, "audit", "export", "--ticket", ticket, "--out", str(bundle))
    assert exported.status == 0, exported.stderr
    files = _files(bundle)
    pem = harness.tmp / "pub.pem"
    pem.write_text(Signer.load(harness.settings.data_dir).public_pem)

    def with_link(out: Path) -> None:
        _write(out, files)
        with tarfile.open(out, "a") as tar:
            link = tarfile.TarInfo("events.jsonl")
            link.type, link.linkname = tarfile.SYMTYPE, "/tmp/evil"
            tar.addfile(link)

    cases = {
        "a link": (with_link, "is not a plain file"),
        "a duplicate": (
            lambda out: (_write(out, files), _append(out, "ticket.json", b"{}")),
            "is in the bundle twice",
        ),
        "a strange name": (
            lambda out: _write(out, {**files, "../../etc/x": b"x"}),
            "is not a file a bundle holds",
        ),
        "a manifest list": (
            lambda out: _write(out, {**files, "manifest.json": b"[]"}),
            "older bundles have no signed manifest",
        ),
    }
    for name, (make, expected) in cases.items():
        out = harness.tmp / f"{name}.tar"
        make(out)
        status, stdout, err = _verify(capsys, str(out), "--pubkey", str(pem))
        assert status == 1 and expected in err and "OK" not in stdout, (name, err)
    monkeypatch.setattr("broker.evidence.bundle_verify.MAX_TOTAL", 1000)
    status, _, err = _verify(capsys, str(bundle), "--pubkey", str(pem))
    assert status == 1 and "too large to check" in err


def _append(out: Path, name: str, data: bytes) -> None:
    with tarfile.open(out, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
