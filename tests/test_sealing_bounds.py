"""What a signed checkpoint commits to, and no more: the tail after the last checkpoint is an
expected unsealed tail only within the interval that checkpoint signs (``every_records`` and
``every_ms``); and a forward-secure tag under an epoch label that no valid checkpoint leads to
is not reported as authenticating its stretch."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from test_sealing import (
    check,
    edit_text,
    forge,
    keys,
    keys_from,
    kinds,
    retag,
    sealed_log,
    stolen_state,
)

from vigil.auditlog import FlightRecorder, FssSeed, LogReader, RingConfig, Sealer
from vigil.auditlog import _writer as W
from vigil.cli import main
from vigil.schemas import LifecycleEvent

from conftest import FakeClock

__all__ = ["keys"]  # the fixture, shared with test_sealing

MS = 1_000_000
RING = RingConfig(size=4096 + 4 * (256 << 10), segment_size=256 << 10)


def sealed_writer(path: Path, keys: dict[str, object], clock: FakeClock) -> FlightRecorder:
    sealer = Sealer(keys["key"], every_records=4096, every_ms=1000)  # type: ignore[arg-type]
    return FlightRecorder.create(path, RING, sealer=sealer, clock=clock, durability="batch")


def unable_to_seal(w: FlightRecorder) -> None:
    """From now on, appends are what someone without the key writes: valid CRCs and chain
    digests, no checkpoint."""
    w._cp_due_seq = w._cp_due_ns = W._NEVER


def test_a_tail_longer_than_the_signed_time_interval_is_unsealed(
    tmp_path: Path, keys: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """3000 records spanning 6 s of writer time after a checkpoint that signs every_ms=1000:
    fewer than every_records, so only the time bound catches them."""
    log = tmp_path / "log"
    clock = FakeClock()
    w = sealed_writer(log, keys, clock)
    w.annotate("note", "sealed")
    w.checkpoint()
    unable_to_seal(w)
    for i in range(3000):
        clock.advance(2 * MS)
        w.annotate("forged", f"record {i}")
    w._drop()  # no closing checkpoint: it looks like a crash
    report = check(log, public_key=keys["key"].public)  # type: ignore[attr-defined]
    assert not report.intact and kinds(report) == {"UNSEALED"}
    finding = next(f for f in report.findings if f.kind == "UNSEALED")
    assert finding.code == "DIA-3305" and finding.last_seq == report.last_seq
    assert "1000 ms" in finding.message
    capsys.readouterr()
    pub = tmp_path / "dev.pub"
    keys["key"].public.save(pub)  # type: ignore[attr-defined]
    assert main(["verify", str(log), "--pubkey", str(pub)]) == 1
    assert "DIA-3305" in capsys.readouterr().out


def test_a_crash_tail_within_the_signed_interval_is_expected(
    tmp_path: Path, keys: dict[str, object]
) -> None:
    """The writer seals at the first append past the deadline; a crash between that append
    and its checkpoint leaves one late record, the tail's last: still an expected tail."""
    log = tmp_path / "log"
    clock = FakeClock()
    w = sealed_writer(log, keys, clock)
    for i in range(50):  # an honest writer: time checkpoints every ~1000 ms
        clock.advance(90 * MS)
        w.annotate("note", f"record {i}")

    def crash(*_: object) -> int:
        raise KeyboardInterrupt  # the process dies right after the late record's commit

    w._checkpoint_locked = crash  # type: ignore[method-assign]
    clock.advance(5000 * MS)
    with pytest.raises(KeyboardInterrupt):
        w.annotate("note", "late")
    w._drop()
    report = check(log, public_key=keys["key"].public)  # type: ignore[attr-defined]
    assert report.intact, report.findings
    assert [f.kind for f in report.findings] == ["UNSEALED_TAIL"]
    assert report.findings[0].last_seq == report.last_seq


def test_records_after_a_late_one_or_an_opened_one_are_unsealed(
    tmp_path: Path, keys: dict[str, object]
) -> None:
    """One late record and one more after it: the writer would have sealed between them."""
    log = tmp_path / "log"
    clock = FakeClock()
    w = sealed_writer(log, keys, clock)
    w.annotate("note", "first")
    clock.advance(100 * MS)
    w.annotate("note", "second")
    unable_to_seal(w)
    clock.advance(1500 * MS)
    w.annotate("forged", "late")
    w.annotate("forged", "after the late one")
    w._drop()
    report = check(log, public_key=keys["key"].public)  # type: ignore[attr-defined]
    assert kinds(report) == {"UNSEALED"}, report.findings
    # a forged OPENED record does not restart the clock: its writer would have sealed at once
    log2 = tmp_path / "log2"
    w = sealed_writer(log2, keys, FakeClock())
    unable_to_seal(w)
    w._lifecycle(LifecycleEvent.OPENED, {"forged": True})
    w.annotate("forged", "after the OPENED one")
    w._drop()
    report = check(log2, public_key=keys["key"].public)  # type: ignore[attr-defined]
    assert kinds(report) == {"UNSEALED"}, report.findings
    assert "OPENED" in report.findings[-1].message


def test_the_honest_writer_never_trips_the_time_bound(
    tmp_path: Path, keys: dict[str, object]
) -> None:
    """Irregular time steps, crashes at every point of a run, reopened by the next writer."""
    log = tmp_path / "log"
    clock = FakeClock()
    steps = [1, 700, 999, 1000, 1001, 3, 2500, 10, 400, 600]
    for run in range(4):
        opener = FlightRecorder.create if run == 0 else FlightRecorder.open
        sealer = Sealer(keys["key"], every_records=7, every_ms=1000)  # type: ignore[arg-type]
        w = (
            opener(log, RING, sealer=sealer, clock=clock)
            if run == 0
            else opener(log, sealer=sealer, clock=clock)
        )
        for i, ms in enumerate(steps * (run + 1)):
            clock.advance(ms * MS)
            w.annotate("note", f"run {run} record {i}")
        w._drop()
        report = check(log, public_key=keys["key"].public)  # type: ignore[attr-defined]
        assert report.intact, report.findings


def test_a_relabelled_forgery_lists_no_stretch_as_valid(
    tmp_path: Path, keys: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """CVE-2023-31439's shape: the thief rewrites a record and relabels every epoch into the
    reach of the key it stole. The first checkpoint shows the gap; the later ones carry
    tags that verify under their labels, which proves nothing: none is called valid."""
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)
    with LogReader(log) as r:
        edited = [x.seq for x in r.records() if x.body.get("text") == "record 10"]
    epoch0, key0 = stolen_state(keys)
    derive = keys_from(epoch0, key0)

    def relabel(body: bytearray, log_id: bytes) -> None:
        epoch = struct.unpack_from("<Q", body, 32)[0]
        struct.pack_into("<Q", body, 32, epoch + epoch0)
        retag(derive)(body, log_id)

    forge(log, edit_text(10), fix_checkpoint=relabel)
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))  # type: ignore[arg-type]
    assert not report.intact and "EPOCH_GAP" in kinds(report)
    seals = report.seals
    assert [s for s in seals.stretches if s[4]] == []  # nothing valid ...
    assert seals.authenticated == 0 and seals.authenticated_through is None
    covering = [s for s in seals.stretches if s[1] <= edited[0] <= s[2]]
    assert covering and not covering[0][4]  # ... least of all the edited record's stretch
    capsys.readouterr()
    assert main(["verify", str(log), "--fss-seed", str(keys["seed"]), "--checkpoints"]) == 1
    out = capsys.readouterr().out
    assert " valid" not in out.replace("checkpoints valid", "") and "INVALID" in out
    assert "sealing: 0/" in out


def test_a_valid_epoch_chain_still_authenticates_every_stretch(
    tmp_path: Path, keys: dict[str, object]
) -> None:
    """The control: the same log untouched, checked by tags alone."""
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))  # type: ignore[arg-type]
    assert report.intact and all(s[4] for s in report.seals.stretches)
    assert report.seals.authenticated == report.seals.checkpoints


def test_without_a_key_no_stretch_is_called_valid(
    tmp_path: Path, keys: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """Consistent is not authenticated: a forger without any key makes a consistent log."""
    log = tmp_path / "log"
    sealed_log(log, keys)
    report = check(log)
    assert report.intact and report.seals.stretches
    assert not any(s[4] for s in report.seals.stretches)
    capsys.readouterr()
    assert main(["verify", str(log), "--checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "not authenticated (no key)" in out and " valid" not in out
