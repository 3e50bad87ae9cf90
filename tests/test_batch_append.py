"""``FlightRecorder.record_inferences``: a batch of INFERENCE records under one lock, in one
pass, with one durability action -- the same records as N ``record_inference`` calls, and
the same crash safety (a crash mid-batch leaves a prefix of the batch, never a torn middle)."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _batch_crash_writer import payload_for

from vigil import keys as _keys
from vigil.auditlog import (
    FlightRecorder,
    ForwardSecureKey,
    FssSeed,
    InferenceRow,
    LogReader,
    RingConfig,
    Sealer,
    fss_generate,
)
from vigil.errors import InvalidArgument, LogClosed, RecordTooLarge

from conftest import FakeClock

WRITER = str(Path(__file__).with_name("_batch_crash_writer.py"))
SMALL = RingConfig(size=4096 + 16 * 16384, segment_size=16384)


def row(i: int, payload: bytes = b"") -> InferenceRow:
    d = bytes([i % 256]) * 32
    return InferenceRow(
        i.to_bytes(16, "little"), d, d[::-1], d, 1, 2, 0, 1000 + i, 10**7,
        code=i % 3, answer_age_ns=i, flags=i % 2, payload=payload,
    )  # fmt: skip


def inference_bodies(path: Path) -> list[dict[str, object]]:
    with LogReader(path) as r:
        report = r.verify()
        assert report.intact, report.findings
        return [x.body for x in r.records() if x.type_name == "INFERENCE"]


def test_a_batch_appends_the_records_n_single_appends_would(tmp_path: Path) -> None:
    rows = [row(i, bytes(i % 40)) for i in range(300)]  # ~75 KB: several segment switches
    with FlightRecorder.create(
        tmp_path / "one.vigil", SMALL, durability="none", clock=FakeClock(step_ns=0)
    ) as one:
        singles = [one.record_inference(**r._asdict()) for r in rows]
    with FlightRecorder.create(
        tmp_path / "many.vigil", SMALL, durability="none", clock=FakeClock(step_ns=0)
    ) as many:
        seqs = many.record_inferences(rows)
        assert many.statistics().segment_switches >= 3
        assert many.record_inferences([]) == range(seqs[-1] + 1, seqs[-1] + 1)
        tail = many.record_inferences(iter([tuple(rows[7])]))  # a plain tuple, an iterator
    assert list(seqs) == singles
    assert tail == range(singles[-1] + 1, singles[-1] + 2)
    got = inference_bodies(tmp_path / "many.vigil")
    assert got[:-1] == inference_bodies(tmp_path / "one.vigil")
    assert got[-1] == got[7]


def test_under_always_a_batch_is_durable_on_return_with_one_sync(tmp_path: Path) -> None:
    with FlightRecorder.create(tmp_path / "a.vigil", SMALL, durability="always") as w:
        before = w.statistics()
        seqs = w.record_inferences(row(i) for i in range(20))  # fits the head segment
        after = w.statistics()
        assert w.durable_seq == seqs[-1]
        assert after.syncs - before.syncs == 1
        assert after.segment_switches == before.segment_switches
        big = w.record_inferences(row(i) for i in range(200))  # switches: 2 syncs each
        end = w.statistics()
        switches = end.segment_switches - after.segment_switches
        assert switches >= 2 and w.durable_seq == big[-1]
        assert end.syncs - after.syncs == 2 * switches + 1
    assert len(inference_bodies(tmp_path / "a.vigil")) == 220


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (row(3)._replace(request_id=bytes(15)), InvalidArgument),
        (row(3)._replace(latency_ns=-1), InvalidArgument),
        (tuple(row(3))[:9], InvalidArgument),
        (row(3, bytes(70_000)), RecordTooLarge),
    ],
    ids=["short-id", "negative", "nine-fields", "huge-payload"],
)
def test_a_bad_row_keeps_the_rows_before_it_and_the_log_goes_on(
    tmp_path: Path, bad: object, error: type[Exception]
) -> None:
    with FlightRecorder.create(tmp_path / "b.vigil", SMALL, durability="always") as w:
        first = w.head_seq + 1
        with pytest.raises(error) as info:
            w.record_inferences([row(0), row(1), row(2), bad, row(4)])
        assert f"seqs {first}..{first + 2} of the batch were appended" in str(info.value)
        assert w.durable_seq == first + 2  # what was appended is durable, as N appends were
        assert w.record_inferences([row(5)]) == range(first + 3, first + 4)
    bodies = inference_bodies(tmp_path / "b.vigil")
    assert [b["latency_ns"] for b in bodies] == [1000, 1001, 1002, 1005]


def test_a_closed_recorder_refuses_a_batch(tmp_path: Path) -> None:
    w = FlightRecorder.create(tmp_path / "c.vigil", SMALL)
    w.close()
    with pytest.raises(LogClosed):
        w.record_inferences([row(0)])


def run_writer(path: Path, durability: str, token: str, size: int, *extra: str) -> str:
    return subprocess.Popen(  # type: ignore[return-value]
        [sys.executable, WRITER, str(path), durability, token, str(size), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def rows_of(path: Path, token: str) -> list[tuple[int, int]]:
    """``(batch, row)`` of every INFERENCE record ``token``'s writer appended, in log order,
    each checked against what was written."""
    out = []
    for body in inference_bodies(path):
        text = bytes(body["payload"]).decode()  # type: ignore[arg-type]
        if text.startswith(token + ":"):
            _, b, r, _ = text.split(":")
            assert text.encode() == payload_for(token, int(b), int(r))
            out.append((int(b), int(r)))
    return out


@pytest.mark.parametrize("kill_at", [1, 37, 150])
def test_sigkill_inside_a_batch_leaves_exactly_its_first_rows(tmp_path: Path, kill_at: int) -> None:
    """The batch's row iterator SIGKILLs the writer when row ``kill_at`` is asked for: the
    rows before it were sealed one by one, so all of them are there, and nothing after."""
    path = tmp_path / "k.vigil"
    child = run_writer(path, "none", "k", 200, str(kill_at))
    _, err = child.communicate(timeout=120)  # type: ignore[attr-defined]
    assert child.returncode == -signal.SIGKILL, err  # type: ignore[attr-defined]
    assert rows_of(path, "k") == [(0, r) for r in range(kill_at)]
    with FlightRecorder.open(path) as w:  # recovery, and the log goes on
        w.record_inferences([row(0)])
    assert len(rows_of(path, "k")) == kill_at


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_a_random_moment_of_batches_leaves_a_prefix(tmp_path: Path, seed: int) -> None:
    """Killed from outside at a random moment (mid-record, most likely, the writer spends its
    time inside batches): every batch whose call returned is whole, the last one is a prefix
    of its rows, and verify finds the log intact."""
    rng = random.Random(seed)
    path = tmp_path / "r.vigil"
    for rnd in range(2):
        durability = rng.choice(["none", "batch", "always"])
        token = f"s{seed}r{rnd}"
        child = run_writer(path, durability, token, 97)
        returned = -1
        for _ in range(rng.randint(1, 40)):
            line = child.stdout.readline()  # type: ignore[attr-defined]
            assert line, child.stderr.read()  # type: ignore[attr-defined]
            returned += 1
        child.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        child.wait()  # type: ignore[attr-defined]
        child.stdout.close()  # type: ignore[attr-defined]
        child.stderr.close()  # type: ignore[attr-defined]
        got = rows_of(path, token)  # the ring may have evicted the oldest batches
        assert got, (seed, rnd, durability)
        flat = [b * 97 + r for b, r in got]
        where = (seed, rnd, durability, got[0], got[-1])
        assert flat == list(range(flat[0], flat[0] + len(flat))), where  # no gap, no tear
        assert flat[-1] >= (returned + 1) * 97 - 1, where  # every returned batch is whole


@pytest.mark.parametrize("durability", ["always", "batch"])
def test_a_checkpoint_due_during_a_batch_is_sealed_after_it_and_verifies(
    tmp_path: Path, durability: str
) -> None:
    """With a sealer every 10 records, a batch of 35 gets its checkpoints where 35 single
    appends would (the verifier refuses a longer unsealed run: records escaped sealing), and
    signatures and forward-secure tags verify."""
    key = _keys.generate()
    fss_generate(tmp_path / "state", tmp_path / "seed")
    sealer = Sealer(key, fss=ForwardSecureKey(tmp_path / "state"), every_records=10, every_ms=0)
    path = tmp_path / "s.vigil"
    with FlightRecorder.create(path, SMALL, sealer=sealer, durability=durability) as w:
        seqs = w.record_inferences(row(i) for i in range(35))
        more = w.record_inferences(row(i) for i in range(3))
    with LogReader(path) as r:
        report = r.verify(public_key=key.public, fss_seed=FssSeed.load(tmp_path / "seed"))
        recs = list(r.records())
    assert report.intact and not report.findings, report.findings
    cps = [x for x in recs if x.type_name == "CHECKPOINT"]
    inside = [x for x in cps if seqs[0] < x.seq <= more[-1]]
    assert len(inside) == 3  # after 10 records each time (its own seq counts in the next 10)
    mine = [x.seq for x in recs if x.type_name == "INFERENCE"]
    assert len(mine) == 38 and mine[-1] == more[-1]
    for cp in inside:
        assert cp.body["covered_seq"] == cp.seq - 1
    gaps = [b.seq - a.seq for a, b in itertools.pairwise(cps)]
    assert max(gaps) <= 10 + 1
