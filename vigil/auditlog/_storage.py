"""Where the ring's bytes live: a memory-mapped file, or an emulated disk in tests.

The writer needs three things from storage: a writable buffer it can ``struct.pack_into`` and
slice-assign (an ``mmap`` in production), ``sync(offset, length)`` that makes that range
durable, and ``close()``. :class:`FileStorage` provides them for a real file; the power-cut
emulator (:mod:`vigil.auditlog._powercut`) provides them over two bytearrays.

The file is allocated and zero-filled once, at creation: a hole in a mapped file turns a
full disk into SIGBUS on a store, and on ext4 the first sync of a fallocated-but-unwritten
extent costs a journal commit (measured ~5 ms here, against ~0.13 ms for a written one).
On Linux ``sync`` is ``fdatasync`` (which writes back pages dirtied through the mapping and,
unlike ``mmap.flush`` in CPython 3.11, releases the GIL while it waits).

A file truncated under the mapping (by another process: ``logrotate copytruncate``, an
operator) turns the next store into the lost pages into SIGBUS, which Python cannot survive
(its handler returns to the faulting store). :meth:`FileStorage.check` compares the file's size
with the mapping's, so that the writer can stop storing before that happens (an ``fstat``,
~1-2 µs here: the writer calls it where a syscall is already paid, see its docstring).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from vigil import _diagnostics as codes
from vigil.errors import LogIOError, LogLocked, NotAVigilLog

_ZERO_CHUNK = 1 << 20
P = ParamSpec("P")
T = TypeVar("T")


class Storage(Protocol):
    """The writer's view of its storage."""

    @property
    def buf(self) -> mmap.mmap | bytearray: ...

    @property
    def size(self) -> int: ...

    def sync(self, offset: int, length: int) -> None: ...

    def close(self) -> None: ...


class FileStorage:
    """A log file opened for writing: exclusively locked, fully mapped, shared.

    Use :meth:`create` or :meth:`open`; both raise :class:`~vigil.errors.LogIOError` for OS
    failures and :class:`~vigil.errors.LogLocked` when another writer holds the file.
    """

    def __init__(self, path: str, fd: int, mm: mmap.mmap) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm

    @property
    def buf(self) -> mmap.mmap:
        return self._mm

    @property
    def size(self) -> int:
        return len(self._mm)

    @classmethod
    def create(cls, path: str, size: int, header: bytes) -> FileStorage:
        """Create ``path`` (which must not exist), ``size`` bytes, ``header`` at offset 0.

        The file is written under a temporary name and renamed into place after an fsync,
        so a crash during creation never leaves a half-initialised log at ``path``.
        """
        tmp = f"{path}.creating-{os.getpid()}"
        if os.path.exists(path):
            raise LogIOError(
                f"{path}: already exists; open it, or remove it to start a new log",
                path=path,
                errno=errno.EEXIST,
            )
        fd = _os_call(path, "create", os.open, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _lock(path, fd)
            _os_call(path, "allocate", _allocate, fd, size)
            _os_call(path, "write", os.pwrite, fd, header, 0)
            _os_call(path, "sync", os.fsync, fd)
            _publish(tmp, path)
            _fsync_dir(path)
            mm = _os_call(path, "map", mmap.mmap, fd, size)
        except BaseException:
            os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return cls(path, fd, mm)

    @classmethod
    def open(cls, path: str) -> FileStorage:
        """Open an existing log for writing, taking the exclusive writer lock."""
        fd = _os_call(path, "open", os.open, path, os.O_RDWR)
        try:
            _lock(path, fd)
            size = _os_call(path, "stat", os.fstat, fd).st_size
            mm = _map(path, fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm)

    def sync(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` durable (on Linux: every dirty page of the file)."""
        if sys.platform.startswith("linux"):
            _os_call(self.path, "fdatasync", os.fdatasync, self._fd)
        else:
            start = offset - offset % mmap.PAGESIZE
            _os_call(self.path, "msync", self._mm.flush, start, length + offset - start)

    def check(self) -> None:
        """Raise :class:`~vigil.errors.LogIOError` (DIA-3040) when the file is now shorter
        than the mapping: a store past its end would raise SIGBUS."""
        size = _os_call(self.path, "stat", os.fstat, self._fd).st_size
        if size < len(self._mm):
            raise LogIOError(
                f"{self.path}: the file shrank under the writer to {size} bytes (mapped: "
                f"{len(self._mm)}); it was truncated: no more records can be stored",
                diagnostic=codes.LOG_STORAGE_SHRUNK,
                path=self.path,
                size=size,
                mapped=len(self._mm),
            )

    def close(self) -> None:
        """Unmap, unlock and close. The caller syncs first if it wants durability."""
        try:
            self._mm.close()
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock


def _publish(tmp: str, path: str) -> None:
    """Give the finished file its name: atomic, and never replaces an existing file."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise LogIOError(
            f"{path}: already exists; open it, or remove it to start a new log",
            path=path,
            errno=errno.EEXIST,
        ) from None
    except OSError as exc:
        raise LogIOError(
            f"{path}: create failed: {exc.strerror}", path=path, errno=exc.errno
        ) from exc
    os.unlink(tmp)


def _allocate(fd: int, size: int) -> None:
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)  # fail now with ENOSPC, not later with SIGBUS
    zeros = bytes(_ZERO_CHUNK)
    for off in range(0, size, _ZERO_CHUNK):
        n = min(_ZERO_CHUNK, size - off)
        os.pwrite(fd, zeros[:n] if n < _ZERO_CHUNK else zeros, off)


def _map(path: str, fd: int, size: int) -> mmap.mmap:
    if size == 0:
        raise NotAVigilLog(f"{path}: file is empty; not a flight log", path=path)
    return _os_call(path, "map", mmap.mmap, fd, size)


def _lock(path: str, fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LogLocked(
            f"{path}: another writer holds this flight log; only one writer at a time "
            "(readers may open it read-only)",
            path=path,
        ) from None
    except OSError as exc:
        raise LogIOError(
            f"{path}: cannot lock: {exc.strerror}", path=path, errno=exc.errno
        ) from exc


def is_locked(path: str) -> bool:
    """True when a writer currently holds ``path`` (probes with a shared, non-blocking lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _fsync_dir(path: str) -> None:
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _os_call(path: str, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        raise LogIOError(
            f"{path}: {what} failed: {exc.strerror or exc}", path=path, errno=exc.errno
        ) from exc
