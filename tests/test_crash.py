"""Real crashes: a writer process is SIGKILLed mid-append; the log reopens, verifies, holds
every record whose append had returned, and the next writer carries on (crash after crash)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.auditlog import FlightRecorder, LogReader

from _crash_writer import text_for

WRITER = str(Path(__file__).with_name("_crash_writer.py"))


def crash_rounds(path: str, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    returned = durable = 0
    for rnd in range(rounds):
        durability = rng.choice(["none", "batch", "always"])
        token = f"s{seed}r{rnd}"
        child = subprocess.Popen(
            [sys.executable, WRITER, path, durability, token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 3000)):  # kill at a random moment of the stream
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"writer died on its own: {child.stderr.read()}")
            seq, dur = map(int, line.split())
            returned, durable = seq, dur
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        where = f"seed {seed} round {rnd} ({durability})"
        with LogReader(path) as r:
            got = list(r.records())
            report = r.verify()
        assert report.intact, (where, report.findings)
        seqs = [x.seq for x in got]
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), where
        # SIGKILL keeps the page cache: every append that had returned is there
        assert seqs[-1] >= returned >= durable, where
        mine = [x for x in got if x.type_name == "ANNOTATION" and x.body["text"].startswith(token)]
        for x in mine:
            n = int(x.body["text"].split(":")[1])
            assert x.body["text"] == text_for(token, n), where
        assert mine, where
        with FlightRecorder.open(path) as w:  # recovery, then a clean close
            assert w.head_seq >= returned + 1
    with LogReader(path) as r:
        final = r.verify()
    assert final.intact and set(final.counts) <= {"EVICTED"}, final.findings


@pytest.mark.requirement("SR-011")
@pytest.mark.parametrize("seed", range(3))
def test_sigkill_mid_append(seed: int, tmp_path: Path) -> None:
    crash_rounds(str(tmp_path / "crash.vigil"), seed, rounds=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 53))
def test_sigkill_mid_append_many(seed: int, tmp_path: Path) -> None:
    crash_rounds(str(tmp_path / "crash.vigil"), seed, rounds=3)
