"""A writer process for the batch crash tests: appends batches of self-checking INFERENCE
records with ``record_inferences`` until it is killed.

Usage: python _batch_crash_writer.py PATH DURABILITY TOKEN BATCH [KILL_AT]. Creates PATH if
missing. After each batch it prints ``<last seq> <durable_seq>`` and flushes stdout. With
KILL_AT, the first batch's row iterator SIGKILLs the process when row KILL_AT is asked for:
a crash inside ``record_inferences``, between two of its records, at a known row.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Iterator

from vigil.auditlog import FlightRecorder, InferenceRow, RingConfig

CONFIG = RingConfig(size=4096 + 16 * 16384, segment_size=16384)


def payload_for(token: str, batch: int, row: int) -> bytes:
    """Self-checking content: a reader can tell which row of which batch a record holds."""
    tag = f"{token}:{batch}:{row}"
    return (tag + ":" + hashlib.sha256(tag.encode()).hexdigest()[: 8 + row % 24]).encode()


def rows(token: str, batch: int, count: int, kill_at: int | None) -> Iterator[InferenceRow]:
    for row in range(count):
        if row == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        digest = hashlib.sha256(f"{batch}:{row}".encode()).digest()
        yield InferenceRow(
            bytes(16),
            digest,
            digest,
            digest,
            1,
            1,
            0,
            1000 + row,
            10**7,
            payload=payload_for(token, batch, row),
        )


def main() -> None:
    path, durability, token, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else None
    if os.path.exists(path):
        w = FlightRecorder.open(path, durability=durability, batch_interval=0.002)
    else:
        w = FlightRecorder.create(path, CONFIG, durability=durability, batch_interval=0.002)
    out = sys.stdout
    batch = 0
    while True:
        seqs = w.record_inferences(rows(token, batch, size, kill_at))
        out.write(f"{seqs[-1]} {w.durable_seq}\n")
        out.flush()
        batch += 1


if __name__ == "__main__":
    main()
