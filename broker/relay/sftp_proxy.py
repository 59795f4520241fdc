"""SFTP terminated at the broker: an SFTP server whose every operation goes to an SFTP client on
the nested connection to the helper, so that each operation is seen and audited.

Audited: ``sftp.open`` (path, flags), ``sftp.close`` (bytes read and written, and the SHA-256 of a
file read or written whole), ``sftp.list``, ``sftp.rename``, ``sftp.remove``, ``sftp.mkdir``,
``sftp.rmdir``, ``sftp.setstat``, ``sftp.symlink``, ``sftp.link`` and ``sftp.denied``.
With ``read_only`` (scope ``sftp-read``) every change is refused.

Every method of :class:`asyncssh.SFTPServer` that touches a file system is overridden here: the
base class would act on the *broker's* own files. A test checks that none is left out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

#: the operations that change something on the customer's side
WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC

Audit = Callable[[str, dict[str, Any]], Awaitable[None]]


def describe_flags(pflags: int) -> str:
    names = [
        ("read", asyncssh.FXF_READ),
        ("write", asyncssh.FXF_WRITE),
        ("append", asyncssh.FXF_APPEND),
        ("create", asyncssh.FXF_CREAT),
        ("truncate", asyncssh.FXF_TRUNC),
        ("exclusive", asyncssh.FXF_EXCL),
    ]
    return ",".join(name for name, bit in names if pflags & bit) or "none"


def _text(path: bytes) -> str:
    return os.fsdecode(path)


class ProxyFile:
    """An open file on the customer's side, with byte counts and running hashes.

    A hash is kept while reads (or writes) go strictly in order from offset 0; it counts as the
    hash of the whole file when the reads reached the end, or when the writes cover the file's
    final size."""

    def __init__(self, path: bytes, pflags: int, remote: asyncssh.SFTPClientFile) -> None:
        self.path = path
        self.pflags = pflags
        self.remote = remote
        self.bytes_read = 0
        self.bytes_written = 0
        self._read_hash: Any = hashlib.sha256()
        self._read_next: int | None = 0
        self._read_eof = False
        self._write_hash: Any = hashlib.sha256()
        self._write_next: int | None = 0

    def read_seen(self, offset: int, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._read_next == offset:
            if data:
                self._read_hash.update(data)
                self._read_next = offset + len(data)
            else:
                self._read_eof = True
        elif data:
            self._read_next = None

    def write_seen(self, offset: int, data: bytes) -> None:
        self.bytes_written += len(data)
        if self._write_next == offset:
            self._write_hash.update(data)
            self._write_next = offset + len(data)
        else:
            self._write_next = None

    def read_digest(self, size: int | None = None) -> str | None:
        """The hash of the whole file, when the reads went in order to its end: a read that
        came back empty, or ``size`` reached (scp reads exactly the size, never past it)."""
        reached = self._read_eof or (size is not None and size == self._read_next)
        if reached and self._read_next is not None:
            return str(self._read_hash.hexdigest())
        return None

    @property
    def read_in_order(self) -> bool:
        return bool(self.bytes_read) and self._read_next is not None and not self._read_eof

    def write_digest(self, final_size: int | None) -> str | None:
        if self.bytes_written and self._write_next is not None and final_size == self._write_next:
            return str(self._write_hash.hexdigest())
        return None


class SFTPProxy(asyncssh.SFTPServer):
    """One engineer's SFTP (or scp) channel, relayed to the helper's SFTP server."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        client: asyncssh.SFTPClient | None,
        audit: Audit,
        *,
        read_only: bool,
        granted: str,
    ) -> None:
        super().__init__(chan)
        self._client = client
        self.audit = audit
        self.read_only = read_only
        self.granted = granted
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def client(self) -> asyncssh.SFTPClient:
        """The helper's SFTP server; without one (a refused channel) every operation fails."""
        if self._client is None:
            raise asyncssh.SFTPPermissionDenied("File transfer was refused for this channel.")
        return self._client

    async def _deny_if_read_only(self, op: str, path: bytes) -> None:
        if self.read_only:
            reason = f"changes are not in the consent (granted: {self.granted})"
            await self.audit("sftp.denied", {"op": op, "path": _text(path), "reason": reason})
            raise asyncssh.SFTPPermissionDenied(f"Refused: {reason}")

    async def _change(
        self, action: str, detail: dict[str, Any], operation: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Audit first, then act (fail closed: no change without its record); a failure on the
        customer's side is audited too."""
        await self.audit(action, detail)
        try:
            return await operation()
        except asyncssh.SFTPError as exc:
            await self.audit("sftp.failed", {"op": action, **detail, "error": exc.reason})
            raise

    def format_user(self, uid: int | None) -> str:
        return str(uid) if uid is not None else ""  # the broker's own user names mean nothing

    def format_group(self, gid: int | None) -> str:
        return str(gid) if gid is not None else ""

    # --- files -----------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> ProxyFile:
        if pflags & WRITE_FLAGS:
            await self._deny_if_read_only("open", path)
        detail = {"path": _text(path), "flags": describe_flags(pflags)}
        remote = await self._change(
            "sftp.open", detail, lambda: self.client.open(path, pflags, attrs, encoding=None)
        )
        assert isinstance(remote, asyncssh.SFTPClientFile)
        return ProxyFile(path, pflags, remote)

    async def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs
    ) -> ProxyFile:
        raise asyncssh.SFTPOpUnsupported("SFTP version 5 and 6 opens are not supported")

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, ProxyFile)
        data = cast(bytes, await file_obj.remote.read(size, offset))  # opened with encoding=None
        file_obj.read_seen(offset, data)
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, ProxyFile)
        written = await file_obj.remote.write(cast(Any, data), offset)
        file_obj.write_seen(offset, data)
        return written

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, ProxyFile)
        final_size: int | None = None
        if file_obj.bytes_written or file_obj.read_in_order:
            try:
                final_size = (await file_obj.remote.stat()).size
            except asyncssh.SFTPError:
                final_size = None
        await file_obj.remote.close()
        self.bytes_read += file_obj.bytes_read
        self.bytes_written += file_obj.bytes_written
        detail: dict[str, Any] = {
            "path": _text(file_obj.path),
            "bytes_read": file_obj.bytes_read,
            "bytes_written": file_obj.bytes_written,
        }
        read_digest = file_obj.read_digest(final_size if not file_obj.bytes_written else None)
        write_digest = file_obj.write_digest(final_size)
        if write_digest:
            detail.update(sha256=write_digest, whole=True, size=final_size)
        elif read_digest and file_obj.bytes_read:
            detail.update(sha256=read_digest, whole=True, size=file_obj.bytes_read)
        else:
            detail["whole"] = False
        await self.audit("sftp.close", detail)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        assert isinstance(file_obj, ProxyFile)
        return await file_obj.remote.stat()

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        assert isinstance(file_obj, ProxyFile)
        await self._deny_if_read_only("fsetstat", file_obj.path)
        await self._change(
            "sftp.setstat",
            {"path": _text(file_obj.path), **_attrs(attrs)},
            lambda: file_obj.remote.setstat(attrs),
        )

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        assert isinstance(file_obj, ProxyFile)
        return await file_obj.remote.statvfs()

    async def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, ProxyFile)
        await file_obj.remote.fsync()

    async def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPOpUnsupported("byte-range locks are not supported")

    async def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPOpUnsupported("byte-range locks are not supported")

    # --- paths -----------------------------------------------------------------------------

    def map_path(self, path: bytes) -> bytes:
        return path  # paths are the customer's, passed on unchanged

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    async def realpath(self, path: bytes) -> bytes:
        result = await self.client.realpath(path)
        return result if isinstance(result, bytes) else os.fsencode(result)

    async def stat(self, path: bytes) -> SFTPAttrs:
        return await self.client.stat(path)

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self.client.lstat(path)

    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        return await self.client.statvfs(path)

    async def readlink(self, path: bytes) -> bytes:
        result = await self.client.readlink(path)
        return result if isinstance(result, bytes) else os.fsencode(result)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        await self.audit("sftp.list", {"path": _text(path)})
        async for name in self.client.scandir(path):
            yield name

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._deny_if_read_only("setstat", path)
        await self._change(
            "sftp.setstat",
            {"path": _text(path), **_attrs(attrs)},
            lambda: self.client.setstat(path, attrs),
        )

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._deny_if_read_only("setstat", path)
        await self._change(
            "sftp.setstat",
            {"path": _text(path), **_attrs(attrs)},
            lambda: self.client.setstat(path, attrs, follow_symlinks=False),
        )

    async def remove(self, path: bytes) -> None:
        await self._deny_if_read_only("remove", path)
        await self._change("sftp.remove", {"path": _text(path)}, lambda: self.client.remove(path))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._deny_if_read_only("rename", oldpath)
        await self._change(
            "sftp.rename",
            {"from": _text(oldpath), "to": _text(newpath)},
            lambda: self.client.rename(oldpath, newpath),
        )

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._deny_if_read_only("rename", oldpath)
        await self._change(
            "sftp.rename",
            {"from": _text(oldpath), "to": _text(newpath)},
            lambda: self.client.posix_rename(oldpath, newpath),
        )

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._deny_if_read_only("mkdir", path)
        await self._change(
            "sftp.mkdir", {"path": _text(path)}, lambda: self.client.mkdir(path, attrs)
        )

    async def rmdir(self, path: bytes) -> None:
        await self._deny_if_read_only("rmdir", path)
        await self._change("sftp.rmdir", {"path": _text(path)}, lambda: self.client.rmdir(path))

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        await self._deny_if_read_only("symlink", newpath)
        await self._change(
            "sftp.symlink",
            {"target": _text(oldpath), "path": _text(newpath)},
            lambda: self.client.symlink(oldpath, newpath),
        )

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        await self._deny_if_read_only("link", newpath)
        await self._change(
            "sftp.link",
            {"target": _text(oldpath), "path": _text(newpath)},
            lambda: self.client.link(oldpath, newpath),
        )

    def exit(self) -> None:
        if self._client is not None:
            self._client.exit()


def _attrs(attrs: SFTPAttrs) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if attrs.permissions is not None:
        shown["mode"] = oct(attrs.permissions & 0o7777)
    for name in ("size", "uid", "gid", "atime", "mtime"):
        value = getattr(attrs, name)
        if value is not None:
            shown[name] = value
    return shown
