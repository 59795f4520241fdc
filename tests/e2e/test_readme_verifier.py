"""An outside auditor's check of a bundle, written from the README's numbered steps alone
(nothing of broker.evidence is used): it must pass on a real bundle and fail on a changed one."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def readme_verify(files: dict[str, bytes], allowed_signers: Path, tmp: Path) -> str | None:
    """None if the bundle checks out by the README's four steps, else what failed."""
    manifest = json.loads(files["manifest.json"])
    for name, digest in manifest["files"].items():  # step 1
        if sha256(files[name]) != digest:
            return f"step 1: {name}"
    prev, last = None, None
    recorded = {}
    for line in files["events.jsonl"].decode().splitlines():  # step 2
        event = json.loads(line)
        if "digest" in event:
            digest = event["digest"]
        else:
            whole = {k: event[k] for k in ("seq", "time", "ticket_id", "session_id", "actor")}
            whole |= {k: event[k] for k in ("action", "details")}
            canonical = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest = sha256(canonical.encode())
            if event["action"] == "recording.closed":
                recorded[Path(event["details"]["path"]).name] = event["details"]["sha256"]
        ticket = "" if event["ticket_id"] is None else str(event["ticket_id"])
        if prev is not None and event["prev_hash"] != prev:
            return f"step 2: prev_hash of {event['seq']}"
        if sha256(f"{event['prev_hash']}|{ticket}|{digest}".encode()) != event["hash"]:
            return f"step 2: hash of {event['seq']}"
        prev, last = event["hash"], event
    assert last is not None
    point = files["checkpoint.txt"].decode()  # step 3
    if f"seq={last['seq']}\n" not in point or f"hash={last['hash']}\n" not in point:
        return "step 3: the checkpoint does not name the last event"
    (tmp / "cp.sig").write_bytes(files["checkpoint.txt.sig"])
    keygen = subprocess.run(
        [
            *("ssh-keygen", "-Y", "verify", "-f", str(allowed_signers)),
            *(
                "-I",
                "assist-broker-audit",
                "-n",
                "assist-broker-checkpoint",
                "-s",
                str(tmp / "cp.sig"),
            ),
        ],
        input=files["checkpoint.txt"],
        capture_output=True,
        check=False,
    )
    if keygen.returncode != 0:
        return "step 3: the signature"
    for name, data in files.items():  # step 4
        if name.startswith("recordings/") and sha256(data) != recorded.get(Path(name).name):
            return f"step 4: {name}"
    return None


async def test_a_bundle_checks_out_by_the_readme_alone(harness: BrokerHarness) -> None:
    ticket = await harness.ticket(title="Drucker — ünïcödé")
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    await harness.connected_helper(await harness.ticket(title="someone else"))
    assert (await harness.ssh(key, ticket, "echo 'grüße'")).status == 0
    helper.interrupt()
    await helper.finish()
    await harness.wait_audit(ticket, "recording.closed")
    bundle, signers = harness.tmp / "b.tar", harness.tmp / "allowed_signers"
    assert (await cli(harness, "audit", "pubkey", "--allowed-signers", str(signers))).status == 0
    exported = await cli(harness, "audit", "export", "--ticket", ticket, "--out", str(bundle))
    assert exported.status == 0, exported.stderr
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert readme_verify(files, signers, harness.tmp) is None
    lines = files["events.jsonl"].decode().splitlines()
    changed = [json.loads(x) for x in lines]
    own = next(e for e in changed if e.get("action") == "channel.opened")
    own["details"]["command"] = "true"
    forged = {**files, "events.jsonl": "".join(json.dumps(e) + "\n" for e in changed).encode()}
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["events.jsonl"] = sha256(forged["events.jsonl"])
    forged["manifest.json"] = json.dumps(manifest).encode()
    assert (readme_verify(forged, signers, harness.tmp) or "").startswith("step 2: hash of")
