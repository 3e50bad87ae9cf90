"""Write the conformance corpus: ``python tests/conformance/make_corpus.py`` (from the root).

One small log per record type and per kind of damage (FORMAT.md §6), sealed logs included,
each in ``cases/NAME/`` with what ``vigil verify --json`` must say of it. Another
implementation of the format tests itself against these files (README.md here); ours does
in ``tests/test_conformance.py``. The logs are committed; regenerate only on purpose (a
format revision, a new case) and review the diff of every ``expected.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from test_sealing import ONE_SEGMENT, edit_text, forge  # noqa: E402

from vigil import keys as _keys  # noqa: E402
from vigil.auditlog import (  # noqa: E402
    Anchor,
    FlightRecorder,
    ForwardSecureKey,
    LogReader,
    PowerCutDisk,
    RingConfig,
    Sealer,
    format_image,
    fss_generate,
)
from vigil.auditlog import _format as F  # noqa: E402
from vigil.errors import SimulatedPowerCut  # noqa: E402
from vigil.schemas import CallFlags, LifecycleEvent, Outcome, ServedBy, State  # noqa: E402

from conftest import FakeClock  # noqa: E402

CASES = HERE / "cases"
OUT = CASES  # where build_all writes (the test regenerates elsewhere)
LOG_ID = bytes(range(16))
CREATED = 1_700_000_000_000_000_000
RING = RingConfig(size=4096 + 8 * 8192, segment_size=8192, frozen_quota=2)
VOLATILE = ("path", "seconds")  # what differs from run to run; messages are for people
SEG0, AREA = 4096, 1024  # the first segment, and where its records begin


class Recorder(FlightRecorder):
    """The writer, with the OPENED record's pid and host fixed: the corpus is the same bytes
    on every machine (their lengths would move every later record)."""

    def _opened_detail(self, recovery: dict[str, Any]) -> dict[str, Any]:
        return {**super()._opened_detail(recovery), "pid": 4242, "host": "conformance"}


def h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def call(w: FlightRecorder, i: int, **over: Any) -> int:
    fields: dict[str, Any] = {
        "request_id": i.to_bytes(16, "big"),
        "model_digest": h("model"),
        "input_digest": h("in", i),
        "output_digest": h("out", i),
        "state": State.NORMAL,
        "served_by": ServedBy.PRIMARY,
        "outcome": Outcome.OK,
        "latency_ns": 2_000_000 + i,
        "deadline_ns": 20_000_000,
        "payload": bytes([i % 256]) * (i % 5),
    }
    fields.update(over)
    return w.record_inference(**fields)


def writer(
    image: bytes,
    *,
    clock: FakeClock | None = None,
    durability: str = "always",
    disk: dict[str, Any] | None = None,
) -> FlightRecorder:
    return Recorder(
        PowerCutDisk(image, **(disk or {})),
        durability=durability,
        clock=clock or FakeClock(),
        start_flusher=False,
    )


def fresh() -> bytes:
    return format_image(RING, created_ns=CREATED, log_id=LOG_ID)


def closed(w: FlightRecorder) -> bytes:
    w.close()
    return bytes(w._storage.buf)  # type: ignore[attr-defined]


def calls(n: int, start: int = 0) -> bytes:
    w = writer(fresh())
    for i in range(start, start + n):
        call(w, i)
    return closed(w)


# --- record types ---------------------------------------------------------------------------


def every_type() -> bytes:
    """Every unsealed record type, every outcome, served_by and lifecycle event."""
    w = writer(fresh())
    for n, (outcome, served) in enumerate(
        [
            (o, ServedBy.PRIMARY if o in (Outcome.OK, Outcome.SLOW) else ServedBy.FALLBACK)
            for o in Outcome
        ]
    ):
        call(w, n, outcome=outcome, served_by=served, code=4000 + n, flags=n % 16)
    call(w, 50, served_by=ServedBy.LAST_GOOD, answer_age_ns=1_500_000)
    call(w, 51, served_by=ServedBy.CONSTANT, state=State.DEGRADED)
    call(w, 52, served_by=ServedBy.NONE, outcome=Outcome.UNAVAILABLE, state=State.SAFE_STOP)
    for a, b in [
        (State.NORMAL, State.DEGRADED),
        (State.DEGRADED, State.RECOVERING),
        (State.RECOVERING, State.NORMAL),
        (State.NORMAL, State.SAFE_STOP),
    ]:
        w.record_transition(a, b, cause_seq=w.head_seq, reason=f"{a.name} to {b.name}")
    w.record_rejected(
        request_id=b"\x07" * 16, input_digest=h("bad"), code=2101, reason="shape [1, 3]"
    )
    w.annotate("operator", "brake test, müller")
    for event in LifecycleEvent:
        if event not in (LifecycleEvent.OPENED, LifecycleEvent.CLOSED):
            w.record_lifecycle(event, {"dir": "/models/m", "note": event.name.lower()})
    return closed(w)


def two_boots() -> bytes:
    w = writer(fresh())
    for i in range(5):
        call(w, i)
    image = closed(w)
    w = writer(image, clock=FakeClock(boot=b"second-boot-0001", start_ns=CREATED + 10**9))
    for i in range(5, 10):
        call(w, i)
    return closed(w)


# --- format 1.2: deferred output digests and trace context -----------------------------------

TRACE, SPAN = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"), bytes.fromhex("00f067aa0ba902b7")
FOLLOWS = int(CallFlags.DIGEST_FOLLOWS)


def deferring(calls_: int, *, digests: Callable[[int], bool] = lambda i: True) -> FlightRecorder:
    """A 1.2 session: it declares a digest queue of 4, defers every call's output digest and
    appends the OUTPUT_DIGEST of call ``i`` when ``digests(i)``; calls carry a trace context."""
    w = writer(fresh())
    w.annotate("vigil.digester", json.dumps({"max_pending": 4, "threshold": 65536}))
    for i in range(calls_):
        seq = call(w, i, output_digest=bytes(32), flags=FOLLOWS, trace_id=TRACE, span_id=SPAN)
        if digests(i):
            w.record_output_digest(seq, h("out", i), output_bytes=1 << 20, lag_ns=400_000 + i)
    w.record_rejected(
        request_id=b"\x07" * 16,
        input_digest=h("bad"),
        code=2021,
        reason="rate limited",
        trace_id=TRACE,
        span_id=SPAN,
    )
    return w


def crashed(w: FlightRecorder) -> bytes:
    """The log as a SIGKILL leaves it (durability always: every record is on the disk)."""
    return bytes(w._storage.buf)  # type: ignore[attr-defined]


def digest_of_a_plain_record() -> bytes:
    w = deferring(3)
    w.record_output_digest(2, h("x"), output_bytes=8, lag_ns=1)  # seq 2 is the annotation
    return closed(w)


# --- damage ---------------------------------------------------------------------------------


def record_offsets(image: bytes, segment: int = 0) -> list[int]:
    out, pos = [], SEG0 + segment * RING.segment_size + AREA
    end = SEG0 + (segment + 1) * RING.segment_size
    while pos + 4 <= end:
        length = struct.unpack_from("<I", image, pos)[0]
        if length == 0:
            break
        out.append(pos)
        pos += length
    return out


def reseal(buf: bytearray, off: int) -> None:
    length = struct.unpack_from("<I", buf, off)[0]
    end = off + length
    buf[end - 4 : end] = F.CRC.pack(F.crc32c(bytes(buf[off : end - 4])))


def flip(image: bytes, at: Callable[[bytes], int]) -> bytes:
    buf = bytearray(image)
    buf[at(image)] ^= 0x40
    return bytes(buf)


def body_byte_of_record(n: int) -> Callable[[bytes], int]:
    return lambda image: record_offsets(image)[n] + 60


def edited_and_recrc(image: bytes) -> bytes:
    """Change a latency and recompute the record's CRC (not its chain digest)."""
    buf = bytearray(image)
    off = record_offsets(image)[5]
    buf[off + 56 + 120] ^= 0x01
    reseal(buf, off)
    return bytes(buf)


def deleted(image: bytes) -> bytes:
    """Remove one record from the middle of a segment, shifting the rest (CRCs intact)."""
    buf = bytearray(image)
    offs = record_offsets(image)
    a, b = offs[4], offs[5]
    end = offs[-1] + struct.unpack_from("<I", image, offs[-1])[0]
    rest = bytes(buf[b:end])
    buf[a : a + len(rest)] = rest
    buf[a + len(rest) : end] = bytes(end - a - len(rest))
    return bytes(buf)


def clock_backwards() -> bytes:
    clock = FakeClock()
    w = writer(fresh(), clock=clock)
    for i in range(6):
        call(w, i)
    clock.mono -= 5_000  # CLOCK_MONOTONIC runs back within one boot: a writer fault
    for i in range(6, 10):
        call(w, i)
    return closed(w)


def torn(seed: int, cut: int) -> bytes:
    """A power cut (the emulator drops unsynced pages at random) at the ``cut``-th sync."""
    disk = {"seed": seed, "cut_at_sync": cut, "schedule": "random"}
    w = writer(fresh(), disk=disk, durability="batch")
    storage = w._storage  # type: ignore[attr-defined]
    try:
        for i in range(200):
            call(w, i)
            if i % 7 == 0:
                w.flush()
    except SimulatedPowerCut:
        pass
    return bytes(storage.disk)


def wrapped(n: int = 700) -> bytes:
    return calls(n)


def zero_page(image: bytes, segment: int) -> bytes:
    buf = bytearray(image)
    base = SEG0 + segment * RING.segment_size
    buf[base : base + 4096] = bytes(4096)
    return bytes(buf)


def head_segment(image: bytes) -> int:
    path = OUT / ".probe.vigil"
    path.write_bytes(image)
    try:
        with LogReader(str(path)) as r:
            *_, last = r.records()
            return int(last.segment)
    finally:
        path.unlink()


def zero_newest_page(image: bytes) -> bytes:
    return zero_page(image, head_segment(image))


def header_copy_b_damaged(image: bytes) -> bytes:
    buf = bytearray(image)
    buf[SEG0 + 512 + 20] ^= 0xFF  # copy B of segment 0's header
    return bytes(buf)


def superblock_copy_damaged(image: bytes) -> bytes:
    buf = bytearray(image)
    buf[512 + 100] ^= 0xFF
    return bytes(buf)


# --- sealed logs ------------------------------------------------------------------------------


class Keys:
    """One device's keys for the sealed cases (written next to each case that needs them)."""

    def __init__(self, scratch: Path, algorithm: _keys.KeyAlgorithm) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.key = _keys.generate(algorithm)
        self.state, self.seed = scratch / "device.fss-state", scratch / "device.fss-seed"
        for p in (self.state, self.seed):
            p.unlink(missing_ok=True)
        fss_generate(self.state, self.seed)

    def sealer(self, every: int = 20) -> Sealer:
        return Sealer(self.key, fss=ForwardSecureKey(self.state), every_records=every, every_ms=0)

    def give(self, case: Path) -> list[str]:
        self.key.public.save(case / "device.pub")
        shutil.copy(self.seed, case / "device.fss-seed")
        (case / "device.fss-seed").chmod(0o600)
        return ["--pubkey", "device.pub", "--fss-seed", "device.fss-seed"]


def sealed(path: Path, keys: Keys, n: int = 60) -> None:
    with Recorder.create(path, ONE_SEGMENT, sealer=keys.sealer(), clock=FakeClock()) as w:
        for i in range(n):
            w.annotate("note", f"record {i}")
        w.checkpoint()


# --- the corpus -------------------------------------------------------------------------------


def expected(path: Path, args: list[str], cwd: Path) -> tuple[dict[str, Any], int]:
    """What ``vigil verify --json ARGS`` says, without what varies between runs."""
    from vigil.cli import _seal

    parser = __import__("argparse").ArgumentParser()
    parser.add_argument("--pubkey")
    parser.add_argument("--fss-seed")
    parser.add_argument("--anchor")
    ns = parser.parse_args(
        [
            a if not a.startswith("device") and not a.startswith("anchor") else str(cwd / a)
            for a in args
        ]
    )
    with LogReader(str(path)) as r:
        report = r.verify(**_seal.verify_options(ns))
    out = report.to_json()
    for key in VOLATILE:
        out.pop(key, None)
    for f in out["findings"]:
        f.pop("message", None)
    return out, 0 if report.intact else 1


def write_case(name: str, what: str, build: Callable[[Path], list[str]]) -> None:
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    case.mkdir(parents=True)
    args = build(case)
    result, exit_code = expected(case / "log.vigil", args, case)
    (case / "expected.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    with LogReader(str(case / "log.vigil")) as r, open(case / "records.jsonl", "w") as f:
        for rec in r.records():  # what `vigil dump --format jsonl` prints
            f.write(json.dumps(rec.to_json(), sort_keys=True, ensure_ascii=False) + "\n")
    meta = {"what": what, "verify_args": args, "exit": exit_code}
    (case / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{name}: exit {exit_code}, {result['counts']}")


def image_case(image: Callable[[], bytes]) -> Callable[[Path], list[str]]:
    def build(case: Path) -> list[str]:
        (case / "log.vigil").write_bytes(image())
        return []

    return build


def sealed_case(
    scratch: Path,
    algorithm: _keys.KeyAlgorithm,
    damage: Callable[[Path], None] | None = None,
    *,
    other_key: bool = False,
    anchor_then: Callable[[Path], None] | None = None,
) -> Callable[[Path], list[str]]:
    def build(case: Path) -> list[str]:
        keys = Keys(scratch / case.name, algorithm)
        log = case / "log.vigil"
        sealed(log, keys)
        args = keys.give(case)
        if anchor_then is not None:
            from vigil.cli import main

            main(["anchor", str(log), "--out", str(case / "anchor.json")])  # as an auditor
            assert Anchor.load(case / "anchor.json").seq > 0
            anchor_then(log)
            args += ["--anchor", "anchor.json"]
        if damage is not None:
            damage(log)
        if other_key:
            (case / "device.pub").unlink()
            _keys.generate(algorithm).public.save(case / "device.pub")
        return args

    return build


def cut_tail(n: int) -> Callable[[Path], None]:
    def cut(log: Path) -> None:
        forge(log, lambda recs: recs[:-n])

    return cut


def build_all(scratch: Path, out: Path = CASES) -> None:
    """Write every case under ``out``; ``scratch`` holds the devices' secrets."""
    global OUT  # noqa: PLW0603 - one corpus at a time
    OUT = out
    out.mkdir(parents=True, exist_ok=True)
    ed, p384 = _keys.KeyAlgorithm.ED25519, _keys.KeyAlgorithm.ECDSA_P384
    write_case(
        "intact-every-type", "every record type and enum value; INTACT", image_case(every_type)
    )
    write_case(
        "intact-two-boots", "two writer sessions on two boots; INTACT", image_case(two_boots)
    )
    write_case(
        "wrapped-evicted",
        "a ring that wrapped: the oldest records EVICTED (expected)",
        image_case(wrapped),
    )
    write_case(
        "torn-tail", "a power cut mid-write: TORN_TAIL (expected)", image_case(lambda: torn(6, 17))
    )
    write_case(
        "torn-superseded",
        "a power cut that left a segment's later records behind "
        "the tear: TORN_TAIL and SUPERSEDED (expected)",
        image_case(lambda: torn(1, 5)),
    )
    write_case(
        "media-corruption",
        "one body byte flipped: MEDIA_CORRUPTION",
        image_case(lambda: flip(calls(20), body_byte_of_record(5))),
    )
    write_case(
        "tampering-crc-recomputed",
        "a field edited and its CRC recomputed: TAMPERING",
        image_case(lambda: edited_and_recrc(calls(20))),
    )
    write_case(
        "tampering-record-deleted",
        "a record cut out of a segment: TAMPERING",
        image_case(lambda: deleted(calls(20))),
    )
    write_case(
        "clock-backwards",
        "CLOCK_MONOTONIC ran back within one boot: CLOCK",
        image_case(clock_backwards),
    )
    write_case(
        "header-copy-damaged",
        "copy B of a segment header damaged: HEADER_COPY (expected)",
        image_case(lambda: header_copy_b_damaged(calls(20))),
    )
    write_case(
        "superblock-copy-damaged",
        "superblock copy 2 damaged: MEDIA_CORRUPTION",
        image_case(lambda: superblock_copy_damaged(calls(20))),
    )
    write_case(
        "truncated",
        "the file cut short of its geometry: FILE_SIZE",
        image_case(lambda: calls(20)[: 4096 + 3 * 8192]),
    )
    write_case(
        "appended",
        "bytes appended past the geometry: FILE_SIZE",
        image_case(lambda: calls(20) + b"\x00" * 4096),
    )
    write_case(
        "zeroed-oldest-page",
        "the oldest segment's first 4 KiB zeroed: records lost, not evicted",
        image_case(lambda: zero_page(calls(150), 0)),
    )
    write_case(
        "zeroed-newest-page",
        "the newest segment's first 4 KiB zeroed, records after "
        "them survive: MEDIA_CORRUPTION names the lost ones",
        image_case(lambda: zero_newest_page(calls(166))),
    )
    write_case(
        "zeroed-newest-records",
        "the newest segment's only records zeroed with its "
        "header: reads as a clean end (a documented limit, FORMAT.md §6: only a seal "
        "and an anchor can tell)",
        image_case(lambda: zero_newest_page(calls(150))),
    )
    write_case(
        "v12-deferred-digests-traced",
        "format 1.2: every output digest deferred to an OUTPUT_DIGEST record, INFERENCE and "
        "REJECTED bodies with a W3C trace context (body_version 2); INTACT",
        image_case(lambda: closed(deferring(6))),
    )
    write_case(
        "v12-digests-pending-at-crash",
        "format 1.2: killed with 2 digests still queued (the declared bound is 4): "
        "DIGEST_PENDING (expected)",
        image_case(lambda: crashed(deferring(6, digests=lambda i: i < 4))),
    )
    write_case(
        "v12-digest-missing",
        "format 1.2: one call's digest absent though later ones were written: DIGEST_MISSING",
        image_case(lambda: closed(deferring(6, digests=lambda i: i != 2))),
    )
    write_case(
        "v12-digest-unexpected",
        "format 1.2: an OUTPUT_DIGEST naming a record that deferred nothing: DIGEST_UNEXPECTED",
        image_case(digest_of_a_plain_record),
    )
    write_case(
        "sealed-ed25519",
        "sealed, Ed25519 + forward-secure tags; authenticated",
        sealed_case(scratch, ed),
    )
    write_case(
        "sealed-p384",
        "sealed, ECDSA P-384 + forward-secure tags; authenticated",
        sealed_case(scratch, p384),
    )
    write_case(
        "sealed-edited",
        "a sealed log's record edited, chain and CRCs recomputed: SEAL_INVALID",
        sealed_case(scratch, ed, lambda log: forge(log, edit_text(3))),
    )
    write_case(
        "sealed-wrong-key",
        "verified with another device's key: WRONG_KEY",
        sealed_case(scratch, ed, other_key=True),
    )
    write_case(
        "sealed-cut-before-anchor",
        "records cut off after an anchor was taken: ANCHOR",
        sealed_case(scratch, ed, anchor_then=cut_tail(25)),
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build_all(Path(tmp))
