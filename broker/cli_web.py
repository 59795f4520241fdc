"""Command-line steps for web access: passwords, API tokens, and a self-signed certificate
for HTTPS (``assist-broker certs``)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import ipaddress
import sys
from pathlib import Path
from typing import Any

from broker import credentials as access
from broker import ops
from broker.config import Settings, parse_duration
from broker.errors import Invalid
from broker.keys import write_private
from broker.ops import COMMAND_LINE
from broker.ops.control import ViaBroker
from broker.store.db import Store


async def cmd_account_password(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    if args.password_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = getpass.getpass(f"New password for {args.name}: ")
        if getpass.getpass("Again: ") != secret:
            raise Invalid("the two passwords differ; nothing was changed")
    access.hash_password(secret)  # too short: said before anything is written
    change = await ops.accounts.update(
        store, COMMAND_LINE, args.name, control=ViaBroker(store), password=secret
    )
    return {
        "account": change.account.name,
        "password": "set",
        "web_logins_ended": change.details["other_web_logins_ended"],
        "login_tokens_revoked": change.details["login_tokens_revoked"],
    }


async def cmd_account_disable(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    """Disable or enable an account. Disabling ends its browser logins here and asks the
    running broker to end its SSH logins at once."""
    disable = args.action == "disable"
    change = await ops.accounts.update(
        store, COMMAND_LINE, args.name, control=ViaBroker(store), disabled=disable
    )
    result: dict[str, Any] = {"account": change.account.name, "disabled": disable}
    if disable:
        ended = change.details.get("ssh_logins_ended")
        result["ssh_logins_ended"] = (
            "no broker answered (none is running with this database)" if ended is None else ended
        )
    return result


async def cmd_token_create(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    lifetime = dt.timedelta(seconds=parse_duration(args.expires, what="--expires"))
    secret, token, account = await ops.accounts.create_token(
        store, COMMAND_LINE, account=args.name, label=args.label, lifetime=lifetime
    )
    assert token.expires_at is not None
    return {
        "id": token.id,
        "account": account.name,
        "token": secret,
        "expires_at": token.expires_at.isoformat(),
    }


async def cmd_token_list(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    tokens = await ops.accounts.tokens(store, COMMAND_LINE, args.name)
    return [
        {
            "id": t.id,
            "label": t.name,
            "expires_at": t.expires_at.isoformat() if t.expires_at else "never",
            "revoked": t.revoked_at is not None,
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else "never",
        }
        for t in tokens
    ]


async def cmd_token_revoke(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    token = await ops.accounts.revoke_token(store, COMMAND_LINE, args.id)
    return {"id": token.id, "revoked": True}


def make_certificate(folder: Path, hosts: list[str], days: int) -> tuple[Path, Path]:
    """A self-signed certificate and its key (P-256), for tests and first steps."""
    from cryptography import x509  # here: only this command needs X.509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "http_cert.pem", folder / "http_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return cert_path, key_path


async def cmd_certs(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    hosts = args.host or ["localhost", "127.0.0.1"]
    cert, key = make_certificate(settings.data_dir, hosts, args.days)
    return {
        "certificate": str(cert),
        "key": str(key),
        "hosts": hosts,
        "settings": f'http_tls_cert = "{cert}"\nhttp_tls_key = "{key}"',
    }


HANDLERS = {
    ("account", "password"): cmd_account_password,
    ("account", "disable"): cmd_account_disable,
    ("account", "enable"): cmd_account_disable,
    ("token", "create"): cmd_token_create,
    ("token", "list"): cmd_token_list,
    ("token", "revoke"): cmd_token_revoke,
    ("certs", None): cmd_certs,
}
