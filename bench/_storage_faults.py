"""The log's storage failing under a running supervisor: I/O errors on sync, the file truncated.

:class:`EIODisk` is a real log file (:class:`~vigil.auditlog.FileStorage`) whose ``fdatasync``
fails with EIO once armed -- injected at the storage layer, through the same ``_os_call`` path
a real EIO takes (a real one needs a failing block device: dm-error, root). A truncation is
real: ``os.truncate`` on the file under the writer's mapping.

:func:`real_eio_filesystem` gives a *real* EIO from the kernel: a small ext4 file system on a
loop device, mounted, then shut down with the ``EXT4_IOC_SHUTDOWN`` ioctl (what ``xfs_io -c
shutdown`` and ``fstests`` use): from then on ``fdatasync``, ``msync`` and ``pwrite`` on its
files fail with EIO in the kernel's own paths, as they do when the disk under a file system
fails. It needs root (mount, loop devices) and ``mkfs.ext4``; this kernel has no
device-mapper, so no dm-error/dm-flakey (an EIO from the block layer itself).

Run as a script it is the child of the truncation tests (tests/test_safety_storage.py), where a
store into the lost pages would kill the process with SIGBUS::

    python bench/_storage_faults.py DURABILITY PATH

serves one call, prints ``ready``, waits for a line on stdin (the parent truncates the file
before sending it), waits for the writer to find the truncation when DURABILITY is ``batch``,
calls once more and prints what it got as JSON; exit status 0 unless the process died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from vigil.auditlog import FileStorage, FlightRecorder, RingConfig
from vigil.auditlog._storage import _os_call
from vigil.errors import VigilError
from vigil.supervisor import Constant, Supervisor

RING = RingConfig(size=4096 + 8 * 65536, segment_size=65536)


def _eio(fd: int) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


class EIODisk(FileStorage):
    """A log file whose sync fails with EIO once :attr:`armed` (every sync after that)."""

    armed = False

    def sync(self, offset: int, length: int) -> None:
        if self.armed:
            _os_call(self.path, "fdatasync", _eio, self._fd)
        super().sync(offset, length)


def eio_recorder(path: str, durability: str, **options: Any) -> tuple[FlightRecorder, EIODisk]:
    """A new log at ``path`` on an :class:`EIODisk` (disarmed)."""
    FlightRecorder.create(path, RING).close()
    disk = EIODisk.open(path)
    try:
        return FlightRecorder(disk, path=path, durability=durability, **options), disk
    except BaseException:
        disk.close()
        raise


_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # stop now: no journal flush (a disk that just failed)


class RealEIOUnavailable(RuntimeError):
    """The file system could not be built or mounted here (the reason is the message)."""


def real_eio_available() -> str | None:
    """None when :func:`real_eio_filesystem` can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (mount, loop devices)"
    missing = [t for t in ("mkfs.ext4", "mount", "umount") if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if not os.path.exists("/dev/loop-control"):
        return "needs loop devices (/dev/loop-control)"
    return None


@contextlib.contextmanager
def real_eio_filesystem(
    workdir: str, size_mb: int = 64
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A fresh ext4 file system mounted under ``workdir``; yields its mount point and a
    function that shuts it down (every later sync of its files fails with a real EIO).
    Unmounted (and its loop device freed) on exit."""
    image, mnt = os.path.join(workdir, "eio.img"), os.path.join(workdir, "mnt")
    os.makedirs(mnt, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:  # a container without mounts
        os.unlink(image)
        why = (getattr(exc, "stderr", None) or b"").decode(errors="replace").strip()
        raise RealEIOUnavailable(why or str(exc)) from exc

    def shutdown() -> None:
        fd = os.open(mnt, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, struct.pack("I", _EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    try:
        yield mnt, shutdown
    finally:
        subprocess.run(["umount", mnt], check=True, capture_output=True)  # frees the loop
        os.unlink(image)


def describe(exc: BaseException) -> dict[str, Any]:
    cause = exc.__cause__
    return {
        "error": type(exc).__name__,
        "code": exc.diagnostic.name if isinstance(exc, VigilError) else None,
        "cause": cause.diagnostic.name if isinstance(cause, VigilError) else None,
    }


def _child(durability: str, path: str) -> int:
    calls = []

    def model(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x * 2

    sup = Supervisor(
        model,
        log=path,
        isolation="inline",
        fallback=Constant(torch.zeros(1, 4)),
        ring=RING,
        durability=durability,
    )
    x = torch.ones(1, 4)
    sup.infer(x)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic_ns()
    out: dict[str, Any] = {}
    if durability == "batch":
        out["found"] = sup.log.wait_failed(10)
        out["found_ms"] = (time.monotonic_ns() - t0) / 1e6
    try:
        r = sup.infer(x)
        out["served_by"] = r.served_by.name
    except VigilError as exc:
        out.update(describe(exc))
    out["model_calls"] = len(calls)
    sup.close()  # a failed recorder lets go without a CLOSED record (it cannot store one)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
