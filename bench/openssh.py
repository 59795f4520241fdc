"""The baseline: two OpenSSH ``sshd`` on loopback high ports, each with its own temporary config
and host key, one as the target and one as the ``-J`` jump host. No systemd; they stop with
the bench."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Sshd:
    folder: Path
    client_key: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sshd:
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "host_ed25519"
        keygen(host_key)
        authorized = self.folder / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        for _ in range(5):  # the free port may be taken before sshd binds it: pick another
            config = self.folder / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"Port {self.port}",
                        "ListenAddress 127.0.0.1",
                        f"HostKey {host_key}",
                        f"AuthorizedKeysFile {authorized}",
                        f"PidFile {self.folder / 'sshd.pid'}",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "PermitRootLogin prohibit-password",
                        "AllowTcpForwarding yes",
                        "Subsystem sftp internal-sftp",
                        "LogLevel ERROR",
                        "",
                    ]
                )
            )
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                        time.sleep(0.1)
                        if self.proc.poll() is None:  # ours, not another process's
                            return self
                time.sleep(0.05)
            self.stop()
            self.port = free_port()
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def ssh_options(key: Path) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]


@dataclass
class Baseline:
    """``ssh -J jump target``, the way engineers reach machines without the broker."""

    folder: Path
    key: Path
    target: Sshd
    jump: Sshd

    @classmethod
    def start(cls, folder: Path) -> Baseline:
        key = folder / "client_ed25519"
        folder.mkdir(parents=True, exist_ok=True)
        keygen(key)
        target = Sshd(folder / "target", key).start()
        jump = Sshd(folder / "jump", key).start()
        return cls(folder, key, target, jump)

    def _via_jump(self) -> list[str]:
        """Options for the target leg; the jump leg gets the same ones through ProxyCommand
        (``-J`` cannot carry ``-F``/``-i``; it runs ``ssh -W`` just like this)."""
        user = os.environ.get("USER") or "root"
        options = ssh_options(self.key)
        proxy = " ".join(
            ["ssh", *options, "-p", str(self.jump.port), "-W", "%h:%p", f"{user}@127.0.0.1"]
        )
        return [*options, "-o", f"ProxyCommand={proxy}"]

    def ssh_args(self, *extra: str) -> list[str]:
        user = os.environ.get("USER") or "root"
        return ["ssh", *extra, *self._via_jump(), "-p", str(self.target.port), f"{user}@127.0.0.1"]

    def sftp_args(self) -> list[str]:
        user = os.environ.get("USER") or "root"
        return ["sftp", *self._via_jump(), "-P", str(self.target.port), f"{user}@127.0.0.1"]

    def stop(self) -> None:
        self.target.stop()
        self.jump.stop()
