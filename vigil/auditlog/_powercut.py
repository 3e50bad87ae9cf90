"""An emulated disk that loses power: prove that a flight log survives power cuts.

In the manner of littlefs's emulated block device, :class:`PowerCutDisk` keeps two images:
``buf``, the volatile page cache the writer stores into, and ``disk``, what the medium
holds. ``sync(offset, length)`` copies the dirty pages of that range to ``disk``. A power cut
-- scheduled at the N-th sync, or triggered by the test at any moment with :meth:`cut` --
writes back only *some* of the pages dirtied since they were last synced (the kernel may
write back any dirty page at any time), each of them possibly faulty:

* ``random`` schedule: every dirty page independently reaches the disk whole, not at all
  (a dropped write), torn (a random subset of its 512-byte sectors), or whole but with one
  flipped bit in one of the bytes the write changed;
* ``linear`` schedule: dirty pages are written back in address order and power fails after a
  random number of them, the page in flight torn at a sector boundary.

The fault model is that of a medium whose atomic unit is the 512-byte sector: a sector holds
either its old or its new bytes, except that one in-flight write may carry a flipped bit in
the bytes it changed. Bytes that a write does not change are never damaged (no storage
design can keep acknowledged data whose sectors are destroyed by later writes).

Every choice comes from ``random.Random(seed)``, so a failing case replays exactly from its
seed. The disk image after the cut is :attr:`disk`; open a new :class:`PowerCutDisk` on it to
recover, append and cut again.
"""

from __future__ import annotations

import random
import threading

from vigil.errors import InvalidArgument, SimulatedPowerCut

PAGE = 4096
SECTOR = 512


class PowerCutDisk:
    """Storage for :class:`~vigil.auditlog.FlightRecorder` with emulated power loss.

    Args:
        image: the initial disk contents (e.g. a freshly created log file's bytes).
        seed: seeds every random choice.
        cut_at_sync: cut power during the N-th call to :meth:`sync` (1-based); None: never.
        schedule: ``"random"`` or ``"linear"`` (see the module docstring).
    """

    def __init__(
        self,
        image: bytes | bytearray,
        *,
        seed: int = 0,
        cut_at_sync: int | None = None,
        schedule: str = "random",
    ) -> None:
        if schedule not in ("random", "linear"):
            raise InvalidArgument(f"schedule={schedule!r}: choose random or linear")
        if len(image) % PAGE:
            raise InvalidArgument(f"image size {len(image)} is not a multiple of {PAGE}")
        self.disk = bytearray(image)
        self._buf = bytearray(image)
        self.rng = random.Random(seed)
        self.cut_at_sync = cut_at_sync
        self.schedule = schedule
        self.syncs = 0
        self.dead = False
        self.faults: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    @property
    def buf(self) -> bytearray:
        return self._buf

    @property
    def size(self) -> int:
        return len(self._buf)

    def dirty_pages(self, lo: int = 0, hi: int | None = None) -> list[int]:
        """Offsets of the pages in ``[lo, hi)`` whose cached bytes differ from the disk."""
        hi = len(self._buf) if hi is None else hi
        start = lo - lo % PAGE
        return [
            p for p in range(start, hi, PAGE) if self._buf[p : p + PAGE] != self.disk[p : p + PAGE]
        ]

    def sync(self, offset: int, length: int) -> None:
        """Write back the dirty pages of ``[offset, offset+length)``, or lose power.

        Raises:
            SimulatedPowerCut: this is the scheduled sync (or power already failed).
        """
        with self._lock:
            if self.dead:
                raise SimulatedPowerCut("the emulated disk has no power")
            self.syncs += 1
            if self.cut_at_sync is not None and self.syncs >= self.cut_at_sync:
                self._cut()
                raise SimulatedPowerCut(f"power cut during sync {self.syncs}")
            for p in self.dirty_pages(offset, offset + length):
                self.disk[p : p + PAGE] = self._buf[p : p + PAGE]

    def cut(self) -> bytes:
        """Lose power now; return the disk image that survives."""
        with self._lock:
            if not self.dead:
                self._cut()
            return bytes(self.disk)

    def _cut(self) -> None:
        self.dead = True
        pages = self.dirty_pages()
        if self.schedule == "linear":
            done = self.rng.randint(0, len(pages))
            for p in pages[:done]:
                self._write(p, "whole")
            if done < len(pages):
                self._write(pages[done], "torn")
            return
        for p in pages:
            self._write(p, self.rng.choice(("whole", "dropped", "torn", "flipped")))

    def _write(self, page: int, how: str) -> None:
        self.faults.append((how, page))
        new = self._buf[page : page + PAGE]
        if how == "dropped":
            return
        if how == "whole":
            self.disk[page : page + PAGE] = new
        elif how == "torn":
            for s in range(0, PAGE, SECTOR):
                if self.rng.random() < 0.5:
                    self.disk[page + s : page + s + SECTOR] = new[s : s + SECTOR]
        else:  # flipped: one bit wrong in one of the bytes this write changes
            changed = [i for i in range(PAGE) if new[i] != self.disk[page + i]]
            self.disk[page : page + PAGE] = new
            i = self.rng.choice(changed)
            self.disk[page + i] ^= 1 << self.rng.randrange(8)

    def close(self) -> None:
        """Nothing to release; the images stay readable."""
