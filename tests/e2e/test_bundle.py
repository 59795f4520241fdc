"""Export bundle -> verify offline -> tamper -> verify fails, each way."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness


def _rewrite(bundle: Path, out: Path, change: dict[str, bytes], fix_manifest: bool) -> None:
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files.update(change)
    files = {n: d for n, d in files.items() if d != b"<delete>"}
    if fix_manifest:  # a careful forger also recomputes the manifest
        manifest = json.loads(files["manifest.json"])
        manifest["files"] = {
            n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != "manifest.json"
        }
        files["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


async def test_bundle_verifies_offline_and_catches_tampering(harness: BrokerHarness) -> None:
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
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        events = tar.extractfile("events.jsonl").read().decode()  # type: ignore[union-attr]
    assert {
        "ticket.json",
        "events.jsonl",
        "checkpoints.json",
        "pubkey.pem",
        "manifest.json",
    } <= names
    assert any(n.startswith("recordings/") for n in names)
    assert "private-to-other" not in events and '"action"' in events  # others: digests only

    pubkey = harness.tmp / "pub.pem"
    pubkey.write_text(
        json.loads((await cli(harness, "audit", "pubkey", "--json")).stdout)["public_key"]
    )
    good = await cli(harness, "audit", "verify", "--bundle", str(bundle), "--pubkey", str(pubkey))
    assert good.status == 0, good.stderr
    assert good.stdout.startswith(b"OK: ") and b"1 recordings match" in good.stdout

    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    recording = next(n for n in files if n.startswith("recordings/"))
    flipped = bytearray(files[recording])
    flipped[-5] ^= 1
    lines = files["events.jsonl"].decode().splitlines()
    edited = [json.loads(line) for line in lines]
    own = next(e for e in edited if e.get("action") == "channel.closed")
    own["details"]["exit_status"] = 1
    forged_events = "".join(json.dumps(e) + "\n" for e in edited).encode()

    from broker.evidence import chain

    def digest_only(line: dict) -> dict:
        import datetime as dt

        fields = {
            k: line[k] for k in ("seq", "ticket_id", "session_id", "actor", "action", "details")
        }
        encoded = chain.canonical(time=dt.datetime.fromisoformat(line["time"]), **fields)
        return {k: line[k] for k in ("seq", "prev_hash", "hash", "ticket_id")} | {
            "digest": chain.digest(encoded)
        }

    originals = [json.loads(line) for line in lines]
    hidden = [digest_only(e) if e.get("action") == "channel.opened" else e for e in originals]
    hidden_events = "".join(json.dumps(e) + "\n" for e in hidden).encode()
    shortened = "".join(json.dumps(e) + "\n" for e in originals[1:]).encode()

    cases = {
        "own event hidden as another's": (
            {"events.jsonl": hidden_events},
            True,
            "of this ticket is left out of the bundle",
        ),
        "recording removed, manifest forged": (
            {recording: b"<delete>"},
            True,
            "named in the chain is missing from the bundle",
        ),
        "leading events dropped": (
            {"events.jsonl": shortened},
            True,
            "the bundle does not start with the ticket's creation",
        ),
        "recording, manifest kept": (
            {recording: bytes(flipped)},
            False,
            f"{recording}: its SHA-256 does not match the manifest",
        ),
        "recording, manifest forged": (
            {recording: bytes(flipped)},
            True,
            f"{recording}: its SHA-256 does not match the audit chain",
        ),
        "event, manifest forged": (
            {"events.jsonl": forged_events},
            True,
            "(channel.closed): its content does not match its hash",
        ),
    }
    for name, (change, fix, expected) in cases.items():
        forged = harness.tmp / f"{name}.bundle"
        _rewrite(bundle, forged, change, fix)
        result = await cli(harness, "audit", "verify", "--bundle", str(forged))
        assert result.status == 1, name
        assert expected in result.stderr.decode(), (name, result.stderr)

    # A forger with their own key: the bundle checks against itself, not against ours.
    from broker.evidence.signing import Signer

    forger = Signer.load(harness.tmp / "forger")
    _rewrite(
        bundle, harness.tmp / "rekeyed.bundle", {"pubkey.pem": forger.public_pem.encode()}, True
    )
    rekeyed = await cli(
        harness,
        "audit",
        "verify",
        "--bundle",
        str(harness.tmp / "rekeyed.bundle"),
        "--pubkey",
        str(pubkey),
    )
    assert rekeyed.status == 0  # still signed by our key: the bundle's own pubkey is not trusted
    mine = await cli(harness, "audit", "verify", "--bundle", str(harness.tmp / "rekeyed.bundle"))
    assert mine.status == 1 and b"the signature is not valid" in mine.stderr
