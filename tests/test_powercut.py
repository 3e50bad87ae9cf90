"""Emulated power cuts: recovery yields a prefix of what was appended that holds every
acknowledged record and no corrupt one, and the writer carries on -- again and again.

Each case is fully determined by its seed (``pytest -k "seed-123"`` replays it). The fault
model is documented in ``vigil/auditlog/_powercut.py``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, PowerCutDisk, RingConfig, format_image
from vigil.errors import SimulatedPowerCut

from conftest import FakeClock, image_reader

CFG = RingConfig(size=4096 + 8 * 8192, segment_size=8192, frozen_quota=1)


def run_case(seed: int, tmp_path: Path, rounds: int = 4) -> None:
    """Append, cut power (at a random sync or between appends), recover, check; repeat."""
    rng = random.Random(seed)
    durability = rng.choice(["always", "batch"])
    schedule = rng.choice(["random", "linear"])
    image = bytes(format_image(CFG, created_ns=1, log_id=seed.to_bytes(16, "little")))
    texts: dict[int, str] = {}  # what each seq was appended with
    acked = 0
    clock = FakeClock()
    for rnd in range(rounds):
        cut_at = rng.randint(1, 80) if rng.random() < 0.8 else None
        disk = PowerCutDisk(image, seed=seed * 100 + rnd, cut_at_sync=cut_at, schedule=schedule)
        try:
            w = FlightRecorder(disk, durability=durability, clock=clock, start_flusher=False)
            for i in range(rng.randint(10, 300)):
                text = f"{seed}/{rnd}/{i} " + "x" * rng.randint(0, 400)
                texts[w.head_seq + 1] = text
                seq = w.annotate("case", text)
                if durability == "always":
                    acked = seq
                elif rng.random() < 0.1:
                    acked = w.flush()
            image = disk.cut()  # power fails between two appends
        except SimulatedPowerCut:  # power failed inside a sync
            image = bytes(disk.disk)
        where = f"seed {seed} round {rnd} ({durability}, {schedule}, cut at sync {cut_at})"
        with image_reader(tmp_path, image) as r:
            got = list(r.records())
            report = r.verify()
        seqs = [x.seq for x in got]
        last = seqs[-1] if seqs else 0
        # a prefix of what was appended (older records only ever leave by ring eviction)
        assert seqs == list(range(last - len(seqs) + 1, last + 1)), where
        assert last >= acked, f"{where}: lost acknowledged records {last + 1}..{acked}"
        for x in got:
            if x.type_name == "ANNOTATION":
                assert x.body["text"] == texts[x.seq], where  # never a corrupt record
        assert report.intact, (where, report.findings)
        assert set(report.counts) <= {"EVICTED", "TORN_TAIL", "SUPERSEDED", "HEADER_COPY"}
        texts = {k: v for k, v in texts.items() if k <= last}


@pytest.mark.requirement("SR-011")
@pytest.mark.parametrize("seed", range(12), ids=lambda s: f"seed-{s}")
def test_power_cut_recovery(seed: int, tmp_path: Path) -> None:
    run_case(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12, 1012), ids=lambda s: f"seed-{s}")
def test_power_cut_recovery_many(seed: int, tmp_path: Path) -> None:
    run_case(seed, tmp_path)


def test_the_emulator_really_loses_and_tears_writes() -> None:
    image = bytes(format_image(CFG, created_ns=1))
    disk = PowerCutDisk(image, seed=3, schedule="random")
    w = FlightRecorder(disk, durability="none", clock=FakeClock(), start_flusher=False)
    for i in range(200):
        w.annotate("k", "y" * (i % 300))
    dirty = disk.dirty_pages()
    after = disk.cut()
    kinds = {how for how, _ in disk.faults}
    assert len(dirty) > 10
    assert {"whole", "dropped", "torn", "flipped"} <= kinds
    assert after != bytes(disk.buf)  # the page cache did not all make it
    linear = PowerCutDisk(image, seed=3, schedule="linear")
    w = FlightRecorder(linear, durability="none", clock=FakeClock(), start_flusher=False)
    for i in range(200):
        w.annotate("k", "y" * (i % 300))
    linear.cut()
    written = [page for how, page in linear.faults if how == "whole"]
    assert written == sorted(written)  # address order


def test_the_same_seed_replays_the_same_cut() -> None:
    def once() -> bytes:
        image = bytes(format_image(CFG, created_ns=1, log_id=bytes(16)))
        disk = PowerCutDisk(image, seed=11, cut_at_sync=9)
        try:
            w = FlightRecorder(disk, durability="always", clock=FakeClock(), start_flusher=False)
            for i in range(100):
                w.annotate("k", str(i))
        except SimulatedPowerCut:
            pass
        return bytes(disk.disk)

    assert once() == once()
