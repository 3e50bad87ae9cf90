"""A writer process for the crash tests: appends self-checking records until it is killed.

Usage: python _crash_writer.py PATH DURABILITY TOKEN. Creates PATH if missing. After each
append it prints ``<seq> <durable_seq>`` and flushes stdout, so the parent knows what had been
returned (and acknowledged durable) when it sent SIGKILL.
"""

from __future__ import annotations

import hashlib
import os
import sys

from vigil.auditlog import FlightRecorder, RingConfig

CONFIG = RingConfig(size=4096 + 16 * 16384, segment_size=16384)


def text_for(token: str, n: int) -> str:
    """Self-checking content: a reader can tell whether the record holds what was written."""
    tag = f"{token}:{n}"
    return tag + ":" + hashlib.sha256(tag.encode()).hexdigest() * (1 + n % 4)


def main() -> None:
    path, durability, token = sys.argv[1], sys.argv[2], sys.argv[3]
    if os.path.exists(path):
        w = FlightRecorder.open(path, durability=durability, batch_interval=0.002)
    else:
        w = FlightRecorder.create(path, CONFIG, durability=durability, batch_interval=0.002)
    out = sys.stdout
    n = 0
    while True:
        n += 1
        seq = w.annotate("crash-test", text_for(token, n))
        out.write(f"{seq} {w.durable_seq}\n")
        out.flush()


if __name__ == "__main__":
    main()
