"""The evidence commands: audit pubkey / verify / export and recording play / export."""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.errors import BrokerError, NotFound
from broker.evidence import retention
from broker.evidence.bundle import export_bundle, verify_bundle
from broker.evidence.playback import play
from broker.evidence.signing import Signer, load_public
from broker.evidence.verify import Report, verify_store
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Channel


async def cmd_audit_pubkey(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    signer = Signer.load(settings.data_dir)
    return {"key_id": signer.key_id, "public_key": signer.public_pem}


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    ticket_id = None
    if args.ticket:
        async with store.read() as db:
            ticket_id = (await q.get_ticket(db, args.ticket)).id
    report = await verify_store(
        store, Signer.load(settings.data_dir).public, settings.data_dir, ticket_id
    )
    return _result(report)


def _result(report: Report) -> dict[str, Any]:
    """A passed check for the command line; a failed one is an error naming the first break."""
    if not report.ok:
        raise BrokerError(report.summary(), code="verify_failed")
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
    return await export_bundle(
        store, Signer.load(settings.data_dir), settings.data_dir, args.ticket, Path(args.out)
    )


def verify_bundle_file(bundle: str, pubkey: str | None) -> dict[str, Any]:
    try:
        trusted = load_public(Path(pubkey).read_text()) if pubkey else None
        report = verify_bundle(Path(bundle), trusted)
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        raise BrokerError(f"cannot read the bundle {bundle}: {exc}", code="verify_failed") from None
    return _result(report)


async def _recording(store: Store, settings: Settings, channel_id: int, how: str) -> Path:
    async with store.begin() as db:
        channel = await db.get(Channel, channel_id)
        if channel is None or channel.recording_path is None:
            raise NotFound(f"Channel {channel_id} has no recording.")
        session = await q.get_session(db, channel.session_id)
        await q.append_audit(
            db,
            action="recording.viewed",
            actor="cli",
            ticket_id=session.ticket_id,
            session_id=session.id,
            details={"channel_id": channel_id, "how": how},
        )
    return settings.data_dir / channel.recording_path


async def cmd_recording_play(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    path = await _recording(store, settings, args.channel, "play")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    played = await play(path, write, speed=args.speed, idle=args.idle)
    return {"channel": args.channel, "played": played, "_quiet": True}


async def cmd_recording_export(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    path = await _recording(store, settings, args.channel, "export")
    Path(args.out).write_bytes(path.read_bytes())  # noqa: ASYNC240 - one local file
    return f"Wrote {args.out}."


async def cmd_audit_prune(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    days = retention.policy(settings.extra)
    pruned = await retention.prune(store, settings.data_dir, days, dry_run=args.dry_run)
    verb = "Would delete" if args.dry_run else "Deleted"
    return {
        "pruned": pruned,
        "dry_run": args.dry_run,
        "summary": f"{verb} {len(pruned)} recordings past retention; their hashes stay.",
    }
