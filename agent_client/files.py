"""The helper's SFTP server: the customer's files, as the customer's user, relative paths from
their home directory. With the ``sftp-read`` scope every change is refused here too."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs

from agent_client.server_util import user_shell


class CustomerSFTPServer(asyncssh.SFTPServer):
    def __init__(
        self, chan: Any, opened: Callable[[str, bool], None] = lambda _path, _write: None
    ) -> None:
        super().__init__(chan)
        self.home = os.fsencode(user_shell()[1])
        #: tells the customer's screen which file is being read or written
        self.opened = opened

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        self.opened(os.fsdecode(path), bool(pflags & WRITE_FLAGS))
        return super().open(path, pflags, attrs)

    def map_path(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            path = posixpath.join(self.home, path)
        return posixpath.normpath(path) if path != b"/" else path

    def reverse_map_path(self, path: bytes) -> bytes:
        return path


def _refuse() -> None:
    raise asyncssh.SFTPPermissionDenied(
        "Refused by the customer's helper: changes are not in the consent (sftp-read)"
    )


WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


class ReadOnlySFTPServer(CustomerSFTPServer):
    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        if pflags & WRITE_FLAGS:
            _refuse()
        return super().open(path, pflags, attrs)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> object:
        _refuse()
        return None

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        _refuse()

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        _refuse()

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        _refuse()

    def remove(self, path: bytes) -> None:
        _refuse()

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        _refuse()

    def rmdir(self, path: bytes) -> None:
        _refuse()

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        _refuse()

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        _refuse()
        return 0
