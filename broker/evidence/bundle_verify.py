"""Checking an export bundle on its own (see broker.evidence.bundle for what it holds).

What an outside auditor re-implements, in this order: the manifest's SSHSIG by a key they trust
(``ssh-keygen -Y verify -n assist-broker-bundle``); every file against the manifest; the chain
from the first event's ``prev_hash`` (broker.store.chain); the checkpoints' signatures and
their own chain; a checkpoint signing exactly the last event; the ticket's events all there in
full from its creation on; each recording against its ``recording.closed`` event.

Without a trusted key the checks still run against the key the bundle names, but the result is
never OK: it says which key signed and that nobody checked that key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.evidence import sshsig
from broker.evidence.bundle import FORMAT
from broker.evidence.facts import ticket_facts
from broker.evidence.verify import ChainEvent, Checkpoint, Report, check_chain

#: the largest file a bundle may hold, and all of them together (a bundle is read in memory)
MAX_MEMBER = 1 << 30
MAX_TOTAL = 2 << 30
#: the files a bundle holds besides its recordings
NAMES = (
    "ticket.json",
    "events.jsonl",
    "checkpoints.json",
    "checkpoint.txt",
    "checkpoint.txt.sig",
    "signer.pub",
    "manifest.json",
    "manifest.json.sig",
)


def _chain_event(line: dict[str, Any]) -> ChainEvent:
    if "digest" in line:
        return ChainEvent(
            line["seq"],
            line["prev_hash"],
            line["hash"],
            ticket_id=line["ticket_id"],
            given_digest=line["digest"],
        )
    fields = {k: line[k] for k in ("seq", "ticket_id", "session_id", "actor", "action", "details")}
    fields["time"] = dt.datetime.fromisoformat(line["time"])
    return ChainEvent(
        line["seq"],
        line["prev_hash"],
        line["hash"],
        ticket_id=line["ticket_id"],
        action=line["action"],
        fields=fields,
    )


def _completeness(lines: list[dict[str, Any]], ticket_id: int, names: set[str]) -> list[str]:
    """The ticket's events are all there in full, from its creation on, with every recording."""
    problems = []
    first = lines[0] if lines else {}
    if first.get("action") != "ticket.created" or first.get("ticket_id") != ticket_id:
        problems.append("the bundle does not start with the ticket's creation")
    for line in lines:
        if line.get("ticket_id") == ticket_id and "digest" in line:
            problems.append(f"event {line['seq']} of this ticket is left out of the bundle")
    kept = {
        Path(str(d.get("path"))).name
        for d in (
            line.get("details", {}) for line in lines if line.get("action") == "recording.closed"
        )
    }
    kept -= {
        Path(str(line.get("details", {}).get("path"))).name
        for line in lines
        if line.get("action") == "recording.pruned"
    }
    for name in sorted(kept - names):
        problems.append(f"the recording {name} named in the chain is missing from the bundle")
    return problems


def read_allowed_signers(text: str) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of an OpenSSH allowed_signers file (other key types are skipped)."""
    keys: list[Ed25519PublicKey] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for kind, data in itertools.pairwise(words):
            if kind != "ssh-ed25519":
                continue
            try:
                blob = base64.b64decode(data, validate=True)
            except binascii.Error:
                continue
            if blob.startswith(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20") and len(blob) == 51:
                keys.append(Ed25519PublicKey.from_public_bytes(blob[-32:]))
    return keys


def _files(path: Path) -> dict[str, bytes]:
    """Every member, each a plain file with a plain name, once: what an auditor extracts with
    ``tar -x`` is then exactly what was checked (a symbolic link or a second member of the
    same name would make the two differ)."""
    with tarfile.open(path) as tar:
        files: dict[str, bytes] = {}
        total = 0
        for member in tar.getmembers():
            name = member.name
            if not member.isfile():
                raise ValueError(f"{name!r} is not a plain file (bundles hold files only)")
            if name in files:
                raise ValueError(f"{name!r} is in the bundle twice")
            plain = name in NAMES or (
                name.startswith("recordings/") and "/" not in name[11:] and name.endswith(".cast")
            )
            if not plain or ".." in name:
                raise ValueError(f"{name!r} is not a file a bundle holds")
            total += member.size
            if member.size > MAX_MEMBER or total > MAX_TOTAL:
                raise ValueError(f"{name!r} makes the bundle too large to check")
            handle = tar.extractfile(member)
            if handle is not None:
                files[name] = handle.read()
    return files


def _signer(manifest_sig: str, trusted: Sequence[Ed25519PublicKey]) -> tuple[Ed25519PublicKey, str]:
    """The key to check against: a trusted key named by the signature, else (untrusted) the
    signature's own key; and that key's fingerprint."""
    sig = sshsig.parse(manifest_sig)
    for key in trusted:
        if sshsig.public_blob(key) == sig.public_blob:
            return key, sig.fingerprint
    if trusted:
        raise ValueError(
            f"the bundle was signed by {sig.fingerprint}, which is not a key you trust"
        )
    blob = sig.public_blob
    if not (blob.startswith(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20") and len(blob) == 51):
        raise ValueError("the bundle was signed with a key that is not Ed25519")
    return Ed25519PublicKey.from_public_bytes(blob[-32:]), sig.fingerprint


def verify_bundle(path: Path, trusted: Sequence[Ed25519PublicKey] = ()) -> Report:
    """Check a bundle on its own against the keys in ``trusted`` (the broker's audit key, from
    ``assist-broker audit pubkey``); with none given, the result is at best NOT CHECKED."""
    report = Report(untrusted=not trusted)
    try:
        files = _files(path)
    except ValueError as exc:
        report.problems.append(str(exc))
        return report
    manifest_bytes = files.get("manifest.json", b"")
    try:
        manifest = json.loads(manifest_bytes or b"{}")
    except ValueError:
        manifest = {}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        manifest = manifest if isinstance(manifest, dict) else {}
        report.problems.append(
            f"the bundle's format is {manifest.get('format')!r}, not {FORMAT!r}: "
            "older bundles have no signed manifest; export the ticket again"
        )
        return report
    try:
        public, report.key_id = _signer(files.get("manifest.json.sig", b"").decode(), trusted)
    except ValueError as exc:
        report.problems.append(f"manifest.json.sig: {exc}")
        return report
    why = sshsig.problem(
        manifest_bytes, files["manifest.json.sig"].decode(), sshsig.BUNDLE_NAMESPACE, public
    )
    if why is not None:
        report.problems.append(f"manifest.json: the signature is not valid: {why}")
        return report
    listed = manifest.get("files", {})
    if not isinstance(listed, dict):
        report.problems.append("manifest.json lists no files")
        return report
    for name, digest in listed.items():
        if name not in files:
            report.problems.append(f"{name} is listed in the manifest but missing")
        elif hashlib.sha256(files[name]).hexdigest() != digest:
            report.problems.append(f"{name}: its SHA-256 does not match the manifest")
    extra = set(files) - set(listed) - {"manifest.json", "manifest.json.sig"}
    if extra:
        report.problems.append(f"files not in the manifest: {', '.join(sorted(extra))}")
    if report.problems:
        return report
    try:
        _check_contents(report, files, manifest, public)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # signed by the trusted key, yet not made the way this code makes bundles
        report.problems.append(f"the bundle's contents are malformed ({type(exc).__name__})")
    return report


def _check_contents(
    report: Report, files: dict[str, bytes], manifest: dict[str, Any], public: Ed25519PublicKey
) -> None:
    lines = [json.loads(line) for line in files["events.jsonl"].decode().splitlines()]
    if not lines:
        report.problems.append("the bundle holds no events")
        return
    events = [_chain_event(line) for line in lines]
    points = [
        Checkpoint(p["seq"], p["hash"], p.get("signature", ""), p.get("message"), p.get("sshsig"))
        for p in json.loads(files["checkpoints.json"])
    ]
    first, last = manifest["events"]["first"], manifest["events"]["last"]
    if (events[0].seq, events[0].hash) != (first["seq"], first["hash"]) or (
        events[-1].seq,
        events[-1].hash,
    ) != (last["seq"], last["hash"]):
        report.problems.append("events.jsonl does not run from the manifest's first to last event")
        return
    problems, head, signed = check_chain(
        events,
        points,
        public,
        first_seq=events[0].seq,
        first_prev=events[0].prev_hash,
        first_checkpoint_prev=None,
    )
    report.problems += problems
    report.events, report.checkpoints, report.head = len(events), len(points), head
    if problems:
        return
    named = manifest["checkpoint"]
    final = points[-1] if points else None
    if (
        final is None
        or signed != events[-1].seq
        or (final.seq, final.hash, final.digest) != (named["seq"], named["hash"], named["digest"])
        or files["checkpoint.txt"].decode() != final.message
        or files["checkpoint.txt.sig"].decode() != final.sshsig
    ):
        report.problems.append("no valid signature covers the last event of the bundle")
        return
    ticket = json.loads(files["ticket.json"])
    ticket_id = manifest["ticket"].get("id")
    if ticket.get("id") != ticket_id or ticket.get("key") != manifest["ticket"].get("key"):
        report.problems.append("ticket.json names another ticket than the signed manifest")
        return
    chained = json.loads(json.dumps(ticket_facts(int(ticket_id), lines)))
    if ticket != chained:
        differ = sorted(k for k in set(ticket) | set(chained) if ticket.get(k) != chained.get(k))
        report.problems.append(
            f"ticket.json does not say what the chained events say ({', '.join(differ)})"
        )
        return
    recordings = {Path(n).name for n in files if n.startswith("recordings/")}
    report.problems += _completeness(lines, int(manifest["ticket"]["id"]), recordings)
    recorded = {
        Path(str(line["details"].get("path"))).name: line["details"]
        for line in lines
        if line.get("action") == "recording.closed" and "details" in line
    }
    for name, data in files.items():
        if not name.startswith("recordings/"):
            continue
        entry = recorded.get(Path(name).name)
        if entry is None:
            report.problems.append(f"{name}: no recording.closed event names it")
        elif hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            report.problems.append(f"{name}: its SHA-256 does not match the audit chain")
        report.recordings += 1
