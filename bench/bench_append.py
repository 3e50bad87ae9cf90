"""Append throughput and per-call latency of the flight recorder, against baselines and peers.

Every case writes one ~200-byte record per call. ``vigil-none`` / ``-batch`` / ``-always``:
``FlightRecorder.record_inference`` (one sealed INFERENCE record, 240 bytes) per durability
mode; ``vigil-none-lap2``: ``none`` on a ring already written once by this process (pages
mapped and dirty: no page faults). ``raw-mmap`` (baseline A, the floor): a record-sized slice
assignment into a file-backed mmap. ``pack+crc+sha`` (baseline B, what the writer aims to
approach): ``struct.pack_into`` of the same 23 fields, SHA-256 chain and CRC32C into a
file-backed mmap, no lock, no checks. ``sqlite-wal-many`` / ``-row``: SQLite, WAL mode,
synchronous=normal, a commit per 1000 rows, by ``executemany`` or an ``execute`` per row.
``logging-file``: a ``logging.FileHandler`` writing a 200-character line per record.
``vigil-none-many`` / ``-batch-many``: ``FlightRecorder.record_inferences``, 1000 rows a call
(the rows built in the call, as the sqlite case builds its own), the batch API.

Each case runs a warm-up, a throughput pass (untimed loop; records/s from the total) and a
latency pass (each call timed with ``perf_counter_ns``, timer overhead included). Cases run
round-robin over ``--repeats`` so drift hits them alike. The table shows medians over repeats;
"x none" is the median of per-repeat ratios to ``vigil-none``: on a noisy machine trust the
ratios, not the absolute numbers. The throughput pass is also timed in the appending thread's
CPU time (``cpu rec/s``), which a shared machine's other tenants disturb much less. Nothing
here asserts on timing.

    python bench/bench_append.py [--quick] [--repeats 5] [--records 200000] [--dir DIR]
        [--cases vigil-none-many,sqlite-wal-many,logging-file]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import mmap
import os
import shutil
import sqlite3
import statistics
import struct
import tempfile
import time

from vigil.auditlog import FlightRecorder, LogReader, RingConfig, crc32c

RID, MD, IND, OUTD = bytes(range(16)), b"m" * 32, b"i" * 32, b"o" * 32
# Record header (format 1.0 with durable_seq), INFERENCE body and payload length: the same 23
# fields the writer packs. Baselines write records as long as vigil's (measured at start).
PACK = struct.Struct("<LHBBQQQQQq" + "16s32s32s32sBBBBH2xQQQ" + "H")
RECORD = (PACK.size + 36 + 7) & ~7


def vigil_record_size(workdir: str) -> int:
    """Bytes one INFERENCE record takes in vigil's log (offset difference of two records)."""
    path = os.path.join(workdir, "probe")
    call, close, _ = vigil_case("none")(path, 4 << 20)
    call(), call(), close()
    with LogReader(path) as r:
        a, b = [x.offset for x in r.records() if x.type_name == "INFERENCE"]
    os.unlink(path)
    return b - a


def zero_file(path: str, size: int) -> tuple[int, mmap.mmap]:
    """A zero-filled, fsynced, shared-mapped file, as ``FlightRecorder.create`` prepares it.

    Then one byte per MiB is read through the mapping, as the writer's open reads the segment
    headers: each 4 KiB page then takes its own write fault, as in vigil (and as after any
    writeback). Unread, a first write would map a whole large folio at once.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.posix_fallocate(fd, 0, size)
    zeros = bytes(1 << 20)
    for off in range(0, size, len(zeros)):
        os.pwrite(fd, zeros[: size - off], off)
    os.fsync(fd)
    mm = mmap.mmap(fd, size)
    sum(mm[off] for off in range(0, size, 1 << 20))
    return fd, mm


# fmt: off
# (kept dense: the vigil call and baseline B pass the same keyword arguments)
def vigil_case(durability: str, laps: int = 0):
    def setup(path: str, size: int):
        w = FlightRecorder.create(path, RingConfig(size=size), durability=durability)

        def call() -> None:
            w.record_inference(request_id=RID, model_digest=MD, input_digest=IND,
                               output_digest=OUTD, state=1, served_by=1, outcome=0,
                               latency_ns=123_456, deadline_ns=10_000_000)
        for _ in range(laps * size // RECORD):
            call()
        return call, w.close, 1
    return setup


def vigil_many_case(durability: str):
    """``record_inferences``: 1000 rows a call (built in the call, as sqlite's are)."""
    def setup(path: str, size: int):
        w = FlightRecorder.create(path, RingConfig(size=size), durability=durability)
        many, rows = w.record_inferences, itertools.repeat

        def call() -> None:
            many([(RID, MD, IND, OUTD, 1, 1, 0, 123_456, 10_000_000, 0, 0, 0, b"")
                  for _ in rows(None, 1000)])
        return call, w.close, 1000
    return setup


def raw_mmap(path: str, size: int):
    fd, mm = zero_file(path, size)
    rec, cur, limit = bytes(range(256))[:RECORD], [4096], size - 2 * RECORD

    def call() -> None:
        pos = cur[0]
        mm[pos : pos + RECORD] = rec
        cur[0] = pos + RECORD if pos < limit else 4096
    return call, lambda: (mm.close(), os.close(fd)), 1


def pack_crc_sha(path: str, size: int):
    fd, mm = zero_file(path, size)
    view, pack, sha, crc_pack = memoryview(mm), PACK.pack_into, hashlib.sha256, struct.pack_into
    cur, limit = [4096, 1, sha(b"genesis").digest()], size - 2 * RECORD  # pos, seq, chain
    mono, real = time.monotonic_ns, time.time_ns

    def append(*, request_id, model_digest, input_digest, output_digest, state, served_by,
               outcome, latency_ns, deadline_ns) -> None:
        pos, seq, chain = cur
        pack(mm, pos, RECORD, 146, 2, 1, seq, 1, 0, 7, mono(), real(), request_id, model_digest,
             input_digest, output_digest, state, served_by, outcome, 0, 0, latency_ns,
             deadline_ns, 0, 0)
        h = sha(chain)
        h.update(view[pos : pos + RECORD - 36])
        chain = h.digest()
        view[pos + RECORD - 36 : pos + RECORD - 4] = chain
        crc_pack("<I", mm, pos + RECORD - 4, crc32c(view[pos : pos + RECORD - 4]))
        cur[:] = (pos + RECORD if pos < limit else 4096), seq + 1, chain

    def call() -> None:
        append(request_id=RID, model_digest=MD, input_digest=IND, output_digest=OUTD, state=1,
               served_by=1, outcome=0, latency_ns=123_456, deadline_ns=10_000_000)
    return call, lambda: (view.release(), mm.close(), os.close(fd)), 1


def sqlite_case(batched: bool):
    def setup(path: str, size: int):
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=normal")
        db.execute("create table log (type integer, mono_ns integer, real_ns integer, body blob)")
        blob, mono, real = bytes(200), time.monotonic_ns, time.time_ns
        sql = "insert into log values (?, ?, ?, ?)"
        if batched:
            def call() -> None:
                rows = [(2, mono(), real(), blob) for _ in range(1000)]
                db.execute("begin")
                db.executemany(sql, rows)
                db.execute("commit")
            return call, db.close, 1000
        count = itertools.count()
        db.execute("begin")

        def call() -> None:
            db.execute(sql, (2, mono(), real(), blob))
            if next(count) % 1000 == 999:
                db.execute("commit")
                db.execute("begin")
        return call, lambda: (db.execute("commit"), db.close()), 1
    return setup


def logging_file(path: str, size: int):
    log = logging.getLogger("bench.append")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    rid, model, seq = RID.hex(), MD.hex()[:32], itertools.count()

    def call() -> None:  # a 200-character line with the asctime prefix
        log.info("inference seq=%d req=%s model=%s state=%d served_by=%d outcome=%d "
                 "latency_ns=%d deadline_ns=%d", next(seq), rid, model, 1, 1, 0, 123_456,
                 10_000_000)
    return call, lambda: (log.removeHandler(handler), handler.close()), 1
# fmt: on


def run_case(setup, workdir: str, name: str, n: int, size: int) -> dict[str, float]:
    call, close, per_call = setup(os.path.join(workdir, name), size)
    calls = max(n // per_call, 1)
    try:
        for _ in range(min(calls, 1000)):  # warm-up
            call()
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in itertools.repeat(None, calls):
            call()
        rate = calls * per_call / (time.perf_counter() - t0)
        cpu = calls * per_call / (time.thread_time() - c0)
        lat, clock = [0] * calls, time.perf_counter_ns
        for i in range(calls):
            t = clock()
            call()
            lat[i] = clock() - t
    finally:
        close()
        for leftover in os.listdir(workdir):
            os.unlink(os.path.join(workdir, leftover))
    lat.sort()
    pct = {f"p{q}": lat[min(int(q / 100 * calls), calls - 1)] / 1000 for q in (50, 99, 99.9)}
    return {"rate": rate, "cpu": cpu, "batch": per_call, **pct}


CASES = {
    "vigil-none": vigil_case("none"),
    "vigil-none-lap2": vigil_case("none", laps=1),
    "vigil-batch": vigil_case("batch"),
    "vigil-none-many": vigil_many_case("none"),
    "vigil-batch-many": vigil_many_case("batch"),
    "raw-mmap": raw_mmap,
    "pack+crc+sha": pack_crc_sha,
    "sqlite-wal-many": sqlite_case(batched=True),
    "sqlite-wal-row": sqlite_case(batched=False),
    "logging-file": logging_file,
    "vigil-always": vigil_case("always"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few records, 1 repeat")
    ap.add_argument("--records", type=int, default=200_000, help="records per pass")
    ap.add_argument("--always-records", type=int, default=2000, help="records per pass, always")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ring", type=int, default=64 << 20, help="ring / mmap file size in bytes")
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"), help="scratch directory")
    ap.add_argument("--cases", help="comma-separated subset of the cases (vigil-none always runs)")
    a = ap.parse_args()
    chosen = set(a.cases.split(",")) | {"vigil-none"} if a.cases else set(CASES)
    if chosen - set(CASES):
        ap.error(f"unknown cases {sorted(chosen - set(CASES))}; choose from {list(CASES)}")
    cases = {name: setup for name, setup in CASES.items() if name in chosen}
    if a.quick:
        a.records, a.always_records, a.repeats, a.ring = 3000, 50, 1, 4 << 20
    workdir = tempfile.mkdtemp(prefix="vigil-bench-append-", dir=a.dir)
    global RECORD
    own, RECORD = RECORD, vigil_record_size(workdir)
    timer = min(-time.perf_counter_ns() + time.perf_counter_ns() for _ in range(10000))
    print(f"append: {a.records} records per pass ({a.always_records} for vigil-always), "
          f"{a.repeats} repeats, {a.ring >> 20} MiB ring, in {workdir}")  # fmt: skip
    print(f"vigil INFERENCE record: {RECORD} bytes; baselines write as many ({own} needed)")
    print(f"back-to-back perf_counter_ns: {timer} ns (included in every latency below)")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    try:
        for rep in range(a.repeats):
            for name, setup in cases.items():
                n = a.always_records if name == "vigil-always" else a.records
                results[name].append(run_case(setup, workdir, name, n, a.ring))
            print(f"  repeat {rep + 1}/{a.repeats} done", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def ratio(name: str, base: str = "vigil-none", key: str = "rate") -> float:
        pairs = zip(results[name], results[base], strict=True)
        return statistics.median(x[key] / y[key] for x, y in pairs)

    print(f"\n{'case':<16} {'records/s':>10} {'spread':>7} {'x none':>7} {'cpu rec/s':>10} "
          f"{'x none':>7} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")  # fmt: skip
    for name in cases:
        rates = [r["rate"] for r in results[name]]
        spread = (max(rates) - min(rates)) / statistics.median(rates) * 100
        lat = " ".join(f"{med(name, q):>{w}.2f}" for q, w in (("p50", 8), ("p99", 8), ("p99.9", 9)))
        if results[name][0]["batch"] > 1:
            lat = f"  (one 1000-row call: p50 {med(name, 'p50'):.0f} us)"
        cpu = f"{med(name, 'cpu'):>10,.0f} {ratio(name, key='cpu'):>7.3f}"
        wall = f"{med(name, 'rate'):>10,.0f} {spread:>6.0f}% {ratio(name):>7.3f}"
        print(f"{name:<16} {wall} {cpu} {lat}")
    print("spread: (max - min) / median of records/s over the repeats; "
          "x none: median of per-repeat ratios to vigil-none;\ncpu rec/s: records per second "
          "of the appending thread's CPU time (time.thread_time: blind to time the thread\n"
          "waited for a CPU on a shared machine, and to other threads' work, e.g. the batch "
          "flusher's)")  # fmt: skip

    def vs(name: str, base: str, key: str = "rate") -> float:  # name over base, within the run
        return ratio(name, key=key) / ratio(base, key=key)

    targets = [  # (label, cases it needs, value, goal; a negative goal is an upper bound)
        ("vigil-none-many / sqlite-wal-many >= 1", ("vigil-none-many", "sqlite-wal-many"), 1.0),
        ("vigil-none-many / logging-file >= 5", ("vigil-none-many", "logging-file"), 5.0),
        ("vigil-none / sqlite-wal-many >= 1", ("vigil-none", "sqlite-wal-many"), 1.0),
        ("vigil-none / logging-file >= 5", ("vigil-none", "logging-file"), 5.0),
        ("vigil-batch / vigil-none >= 0.8", ("vigil-batch", "vigil-none"), 0.8),
    ]
    print("\ntargets (ratios within this run):")
    for label, (name, base), goal in targets:
        if name in cases and base in cases:
            value = vs(name, base)
            cpu = vs(name, base, "cpu")
            print(f"  {'PASS' if value >= goal else 'MISS'}  {label}: {value:.2f}  "
                  f"(CPU time: {cpu:.2f}, {'PASS' if cpu >= goal else 'MISS'})")  # fmt: skip
    p99 = med("vigil-none", "p99")
    print(f"  {'PASS' if p99 <= 10 else 'MISS'}  vigil-none p99 <= 10 us: {p99:.2f}")
    infos = [("vigil-batch-many", "sqlite-wal-many"), ("vigil-none-many", "vigil-none")]
    infos += [("vigil-none", name) for name in ("raw-mmap", "pack+crc+sha", "sqlite-wal-row")]
    for name, base in infos:
        if name in cases and base in cases:
            print(f"  info  {name} / {base} = {vs(name, base):.3f}")
    if "vigil-none-lap2" in cases:
        print(f"  info  vigil-none-lap2 p99 = {med('vigil-none-lap2', 'p99'):.2f} us")


if __name__ == "__main__":
    main()
