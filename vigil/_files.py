"""Opening the files vigil reads: regular files only, and never a blocking open.

``open()`` of a named pipe blocks until a writer appears, and a read of a device may never
end; an auditor's ``vigil verify --pubkey FIFO`` would hang forever. Every file vigil reads
on a user's behalf (logs, keys, seeds, anchors) is opened here: non-blocking, checked to be a
regular file with ``fstat`` on the open descriptor (no race with a rename), then read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from vigil.errors import NotARegularFile, UsageError

_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words ("a named pipe", "a directory", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def refuse_non_regular(path: str, what: str) -> None:
    """Raise :class:`NotARegularFile` when ``path`` exists and is not a regular file (checked
    before work that would be wasted if the file is then refused)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    _check_mode(st, path, what)


def check_regular(fd: int, path: str, what: str) -> os.stat_result:
    """``fstat`` of ``fd``; raises :class:`NotARegularFile` unless it is a regular file."""
    st = os.fstat(fd)
    _check_mode(st, path, what)
    return st


def _check_mode(st: os.stat_result, path: str, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = kind_of(st.st_mode)
        raise NotARegularFile(
            f"{path}: is {kind}, not a regular file; give the path of the {what} itself "
            "(nothing was read)",
            path=path,
            kind=kind,
        )


def open_regular(
    path: str, what: str, flags: int = os.O_RDONLY, mode: int = 0o666, *, follow: bool = True
) -> int:
    """Open ``path`` without blocking and refuse anything but a regular file (and, with
    ``follow=False``, a symbolic link, whatever it points at).

    Raises:
        OSError: the open failed (the caller wraps it in its own error family).
        NotARegularFile: DIA-1010.
    """
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if not follow and exc.errno == errno.ELOOP:
            raise NotARegularFile(
                f"{path}: is a symbolic link, not a regular file; give the {what} itself "
                "(nothing was read)",
                path=path,
                kind="a symbolic link",
            ) from None
        raise
    try:
        check_regular(fd, path, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small(path: str, what: str, limit: int) -> bytes:
    """A small regular file the user named (an anchor, a configuration): its bytes.

    Raises:
        UsageError: DIA-1002, it cannot be read or is larger than ``limit`` bytes.
        NotARegularFile: DIA-1010.
    """
    try:
        data, _ = read_regular(path, what, limit + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > limit:
        raise UsageError(f"{path}: over {limit} bytes; not a {what}")
    return data


def read_regular(
    path: str, what: str, limit: int, *, follow: bool = True
) -> tuple[bytes, os.stat_result]:
    """The first ``limit`` bytes of a regular file (at most; a key file is small) and its stat.

    Raises:
        OSError: the open or read failed.
        NotARegularFile: DIA-1010.
    """
    fd = open_regular(path, what, follow=follow)
    try:
        st = os.fstat(fd)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
