"""The evidence commands: audit pubkey / verify / export and recording play / export."""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.errors import BrokerError
from broker.evidence import retention
from broker.evidence.bundle import export_bundle
from broker.evidence.bundle_verify import read_allowed_signers, verify_bundle
from broker.evidence.playback import play
from broker.evidence.recordings import recording_file, recording_of
from broker.evidence.signing import Signer, load_public
from broker.evidence.verify import Report, verify_store
from broker.store import queries as q
from broker.store.db import Store

#: exit status of a bundle check that found nothing wrong but had no trusted key to check with
EXIT_UNCHECKED = 4


async def cmd_audit_pubkey(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    signer = Signer.load(settings.data_dir)
    if args.allowed_signers:
        Path(args.allowed_signers).write_text(signer.allowed_signers + "\n")  # noqa: ASYNC240
    return {
        "key_id": signer.key_id,
        "public_key": signer.public_pem,
        "openssh": signer.openssh_public,
        "allowed_signers": signer.allowed_signers,
    }


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    ticket_id = None
    if args.ticket:
        async with store.read() as db:
            ticket_id = (await q.get_ticket(db, args.ticket)).id
    report = await verify_store(
        store,
        Signer.load(settings.data_dir).public,
        settings.data_dir,
        ticket_id,
        window=settings.checkpoint_window,
        recordings=settings.recordings,
    )
    return _result(report)


class Unchecked(BrokerError):
    """Nothing wrong was found, but nobody checked the key that signed."""

    code = "unchecked"
    exit_status = EXIT_UNCHECKED


def _result(report: Report) -> dict[str, Any]:
    """A passed check for the command line; a failed one is an error naming the first break."""
    if report.problems:
        raise BrokerError(report.summary(), code="verify_failed")
    if report.untrusted:
        raise Unchecked(report.summary())
    return {
        "ok": True,
        "summary": report.summary(),
        "events": report.events,
        "checkpoints": report.checkpoints,
        "recordings": report.recordings,
        "head": report.head,
        "key_id": report.key_id,
    }


async def cmd_audit_export(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.begin() as db:
        ticket = await q.get_ticket(db, args.ticket)
        await q.append_audit(
            db,
            action="bundle.exported",
            actor="cli",
            ticket_id=ticket.id,
            details={"via": "cli", "out": Path(args.out).name[:200]},
        )
    return await export_bundle(
        store,
        Signer.load(settings.data_dir),
        settings.data_dir,
        args.ticket,
        Path(args.out),
        recordings=settings.recordings,
    )


def _trusted_keys(pubkey: str | None, allowed_signers: str | None) -> list[Any]:
    """The keys the auditor trusts: a PEM or OpenSSH public key file, or an allowed_signers
    file."""
    keys = []
    if pubkey:
        text = Path(pubkey).read_text()
        found = read_allowed_signers(text) if "ssh-ed25519" in text else [load_public(text)]
        if not found:
            raise ValueError(f"{pubkey} holds no Ed25519 public key")
        keys += found
    if allowed_signers:
        found = read_allowed_signers(Path(allowed_signers).read_text())
        if not found:
            raise ValueError(f"{allowed_signers} holds no ssh-ed25519 key")
        keys += found
    return keys


def verify_bundle_file(
    bundle: str, pubkey: str | None, allowed_signers: str | None = None
) -> dict[str, Any]:
    try:
        trusted = _trusted_keys(pubkey, allowed_signers)
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot read the trusted key: {exc}", code="verify_failed") from None
    try:
        report = verify_bundle(Path(bundle), trusted)
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError) as exc:
        raise BrokerError(f"cannot read the bundle {bundle}: {exc}", code="verify_failed") from None
    return _result(report)


async def _recording(store: Store, settings: Settings, channel_id: int, how: str) -> Path:
    async with store.begin() as db:
        ref = await recording_of(db, channel_id)
        path = recording_file(settings.data_dir, settings.recordings, ref)
        await q.append_audit(
            db,
            action="recording.viewed",
            actor="cli",
            ticket_id=ref.ticket_id,
            session_id=ref.session_id,
            details={"channel_id": channel_id, "how": how},
        )
    return path


async def cmd_recording_play(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    path = await _recording(store, settings, args.channel, "play")

    output: list[str] = []

    def write(text: str) -> None:
        if args.json:  # the output goes into the JSON, not onto the terminal
            output.append(text)
            return
        sys.stdout.write(text)
        sys.stdout.flush()

    played = await play(path, write, speed=args.speed, idle=args.idle)
    if args.json:
        return {"channel": args.channel, "played": played, "output": "".join(output)}
    return {"channel": args.channel, "played": played, "_quiet": True}


async def cmd_recording_export(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    path = await _recording(store, settings, args.channel, "export")
    Path(args.out).write_bytes(path.read_bytes())  # noqa: ASYNC240 - one local file
    return {"channel": args.channel, "out": args.out}


async def cmd_audit_prune(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    days = retention.policy(settings.extra)
    pruned = await retention.prune(
        store, settings.data_dir, days, dry_run=args.dry_run, recordings=settings.recordings
    )
    verb = "Would delete" if args.dry_run else "Deleted"
    return {
        "pruned": pruned,
        "dry_run": args.dry_run,
        "summary": f"{verb} {len(pruned)} recordings past retention; their hashes stay.",
    }


HANDLERS = {
    ("audit", "pubkey"): cmd_audit_pubkey,
    ("audit", "verify"): cmd_audit_verify,
    ("audit", "export"): cmd_audit_export,
    ("audit", "prune"): cmd_audit_prune,
    ("recording", "play"): cmd_recording_play,
    ("recording", "export"): cmd_recording_export,
}
