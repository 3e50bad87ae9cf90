"""Hot reload: verified, warmed up, probed, swapped atomically; every record names its model."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vigil import keys as _keys
from vigil.auditlog import FlightRecorder, LogReader
from vigil.errors import ConfigError, KeyFileError
from vigil.fsm import Policy
from vigil.model import WEIGHTS, save_model_dir
from vigil.schemas import CallFlags, LifecycleEvent, RecordType, ServedBy
from vigil.supervisor import KnownAnswer, ModelReloader, ReloadStatus, Supervisor, load_signed_model

X0 = torch.zeros(1, 4)  # the known-answer input: every version answers zeros
X1 = torch.ones(1, 4)  # any other input: version k answers x + k
SECOND = 1_000_000_000


class Offset(nn.Module):
    """``x + bias`` for a non-zero row, zeros for a zero row: outputs name the version."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias * (x != 0).any(dim=-1, keepdim=True)


def build(config: dict[str, Any]) -> nn.Module:
    return Offset()


def plausible(module: nn.Module) -> bool:
    """The caller's probe: a version adds less than 50."""
    return bool((module(X1) - X1).abs().max() < 50)


@pytest.fixture(scope="module")
def key() -> _keys.PrivateKey:
    return _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)


class Versions:
    """Signed model directories, and a symlink ``current`` the reloader watches."""

    def __init__(self, root: Path, key: _keys.PrivateKey) -> None:
        self.root, self.key = root, key
        self.link = root / "current"
        self.digest: dict[str, bytes] = {}

    def make(self, version: str, bias: float) -> Path:
        d = self.root / f"v{version}"
        state = {"bias": torch.full((4,), bias)}
        self.digest[version] = save_model_dir(
            d, state, name="offset", version=version, config={}, key=self.key
        )
        return d

    def point(self, target: Path) -> None:
        """Publish atomically: re-point the symlink with one rename."""
        tmp = self.root / "current.new"
        tmp.symlink_to(target)
        os.replace(tmp, self.link)


@pytest.fixture
def versions(tmp_path: Path, key: _keys.PrivateKey) -> Versions:
    v = Versions(tmp_path, key)
    v.point(v.make("1", 1.0))
    return v


def lifecycle(path: Path) -> list[tuple[LifecycleEvent, dict[str, Any]]]:
    with LogReader(path) as reader:
        return [
            (r.body["event"], json.loads(r.body["detail"]))
            for r in reader.records(types=[RecordType.LIFECYCLE])
            if r.body["event"] not in (LifecycleEvent.OPENED, LifecycleEvent.CLOSED)
        ]


def inference(path: Path) -> dict[int, Any]:
    with LogReader(path) as reader:
        return {r.seq: r.body for r in reader.records(types=[RecordType.INFERENCE])}


_OPEN: list[FlightRecorder] = []  # recorders handed to a Supervisor, which does not own them


@pytest.fixture(autouse=True)
def _close_recorders() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()  # safe after the test closed it itself


def supervised(versions: Versions, log_path: Path, **options: Any) -> Supervisor:
    recorder = FlightRecorder.create(log_path)
    _OPEN.append(recorder)
    loaded = load_signed_model(versions.link, versions.key.public, build, log=recorder)
    options.setdefault("isolation", "inline")
    return Supervisor(loaded.module, model_digest=loaded.digest, log=recorder, **options)


@pytest.mark.requirement("SR-008")
def test_check_now_swaps_good_versions_and_refuses_bad_ones(versions, key, tmp_path):
    log = tmp_path / "log"
    sup = supervised(versions, log)
    reloader = ModelReloader(sup, versions.link, key.public, build, check=plausible, warmup=[X1])
    assert reloader.check_now().status is ReloadStatus.CURRENT  # v1 serves already
    assert reloader.check_now().status is ReloadStatus.UNCHANGED
    versions.point(versions.make("2", 2.0))
    swapped = reloader.check_now()
    assert (swapped.status, swapped.old_digest) == (ReloadStatus.SWAPPED, versions.digest["1"])
    assert sup.model_digest == versions.digest["2"]
    assert torch.equal(sup.infer(X1).output, X1 + 2)

    tampered = versions.make("3", 3.0)
    data = bytearray((tampered / WEIGHTS).read_bytes())
    data[-1] ^= 0x40
    (tampered / WEIGHTS).write_bytes(bytes(data))
    unsigned = versions.make("4", 4.0)
    (unsigned / "manifest.sig").unlink()
    bad = [
        (versions.make("nan", float("nan")), "DIA-5120"),
        (versions.make("99", 99.0), "DIA-5121"),
        (tampered, "DIA-5106"),
        (unsigned, "DIA-5101"),
    ]
    for target, code in bad:
        versions.point(target)
        result = reloader.check_now()
        assert (result.status, result.code) == (ReloadStatus.REFUSED, code), result.reason
        assert reloader.check_now().status is ReloadStatus.UNCHANGED  # refused once, not again
        res = sup.infer(X1)
        assert res.served_by is ServedBy.PRIMARY and torch.equal(res.output, X1 + 2)
    versions.point(versions.root / "v2")
    assert reloader.check_now().status is ReloadStatus.CURRENT  # not swapped again
    assert reloader.statistics().swaps == 1 and reloader.statistics().refusals == 4
    sup.close()

    events = lifecycle(log)
    assert [e for e, _ in events] == [
        LifecycleEvent.MODEL_LOADED,
        LifecycleEvent.MODEL_SWAPPED,
        *[LifecycleEvent.RELOAD_FAILED] * 4,
    ]
    loaded, swap = events[0][1], events[1][1]
    assert loaded["model_digest"] == versions.digest["1"].hex()
    assert (loaded["name"], loaded["version"], loaded["key_id"]) == (
        "offset",
        "1",
        key.key_id.hex(),
    )
    assert (swap["old_digest"], swap["model_digest"], swap["version"]) == (
        versions.digest["1"].hex(),
        versions.digest["2"].hex(),
        "2",
    )
    assert [d["code"] for _, d in events[2:]] == [code for _, code in bad]
    for _, detail in events[2:]:
        assert detail["serving_digest"] == versions.digest["2"].hex() and detail["reason"]
    assert events[2][1]["model_digest"] == versions.digest["nan"].hex()  # it verified
    assert {d["model_digest"] for d in inference(log).values()} == {versions.digest["2"]}


def test_the_known_answer_is_the_second_gate(versions, key, tmp_path):
    sup = supervised(versions, tmp_path / "log")
    probe = KnownAnswer(X1, X1 + 1)
    reloader = ModelReloader(sup, versions.link, key.public, build, known_answer=probe)
    reloader.check_now()
    versions.point(versions.make("1b", 1.0))  # same weights, new version: a new digest
    assert reloader.check_now().status is ReloadStatus.SWAPPED
    versions.point(versions.make("2", 2.0))  # validly signed, answers differently
    refused = reloader.check_now()
    assert (refused.status, refused.code) == (ReloadStatus.REFUSED, "DIA-5121")
    assert sup.model_digest == versions.digest["1b"]
    sup.close()


@pytest.mark.parametrize("isolation", ["thread", "inline"])
def test_a_call_in_flight_during_a_swap_records_the_model_that_ran_it(
    versions, tmp_path, isolation
):
    entered, release = threading.Event(), threading.Event()

    def blocking(x: torch.Tensor) -> torch.Tensor:
        entered.set()
        assert release.wait(10)
        return x + 100

    log = tmp_path / "log"
    sup = Supervisor(blocking, log=log, isolation=isolation, deadline_ns=30 * SECOND)
    old = sup.model_digest
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(sup.infer(X1)))
    caller.start()
    assert entered.wait(10)
    new_model = Offset()
    new_model.bias.fill_(7.0)
    assert sup.swap_primary(new_model, b"\x07" * 32) == old
    after = sup.infer(X1)  # a call that began after the swap runs the new model
    release.set()
    caller.join(10)
    sup.close()
    records = inference(log)
    assert torch.equal(results[0].output, X1 + 100)
    assert records[results[0].seq]["model_digest"] == old
    assert torch.equal(after.output, X1 + 7)
    assert records[after.seq]["model_digest"] == b"\x07" * 32
    with LogReader(log) as reader:
        swap_seq = next(
            r.seq
            for r in reader.records(types=[RecordType.LIFECYCLE])
            if r.body["event"] is LifecycleEvent.MODEL_SWAPPED
        )
    assert swap_seq < after.seq


@pytest.mark.parametrize("isolation", ["thread", "inline"])
def test_reloads_under_concurrent_load_lose_no_call_and_mislabel_none(
    versions, key, tmp_path, isolation
):
    """4 threads call without pause while three versions are published, one of them bad;
    known-answer probes run too. Every call is served by the primary, and every record names
    the digest of the version whose output the caller received."""
    log = tmp_path / "log"
    sup = supervised(
        versions,
        log,
        isolation=isolation,
        deadline_ns=30 * SECOND,
        known_answer=KnownAnswer(X0, torch.zeros(1, 4)),
        policy=Policy(probe_interval_ns=1_000_000),
    )
    reloader = ModelReloader(sup, versions.link, key.public, build, check=plausible, warmup=[X1])
    staged = [
        (versions.make("2", 2.0), ReloadStatus.SWAPPED),
        (versions.make("bad", float("nan")), ReloadStatus.REFUSED),
        (versions.make("3", 3.0), ReloadStatus.SWAPPED),
    ]
    threads = 4
    calls = threading.Semaphore(0)  # one release per completed call
    stop = threading.Event()  # set once calls were served after the last swap
    progress = threading.Condition()
    start = threading.Barrier(threads + 1)
    seen: list[list[tuple[int, float]]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []

    def work(i: int) -> None:
        start.wait()
        x = X1 * (i + 1)
        try:
            while not stop.is_set():
                res = sup.infer(x)
                assert res.served_by is ServedBy.PRIMARY, res
                offsets = (res.output - x).unique()
                assert offsets.numel() == 1, res.output
                with progress:
                    seen[i].append((res.seq, float(offsets)))
                    progress.notify_all()
                calls.release()
        except BaseException as exc:
            failures.append(exc)
            raise

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    start.wait()
    results = []
    for target, expected in staged:  # a reload after every 100 calls: calls on each side
        for _ in range(100):
            assert calls.acquire(timeout=30)
        versions.point(target)
        result = reloader.check_now()
        assert result.status is expected, result
        results.append(result)
    # calls after the last swap too, however long the reloads took (the semaphore may hold
    # releases from before it): every thread completes two more calls, so one began after it
    after = [len(part) + 2 for part in seen]
    with progress:
        assert progress.wait_for(
            lambda: all(len(p) >= n for p, n in zip(seen, after, strict=True)), 30
        )
    stop.set()
    for t in workers:
        t.join(60)
    sup.close()

    assert not failures
    version_of = {versions.digest[v]: float(v) for v in ("1", "2", "3")}
    records = inference(log)
    answered = [pair for part in seen for pair in part]
    assert len(answered) >= 300 + 2 * threads  # 100 between reloads, 2 each after the last
    assert len({seq for seq, _ in answered}) == len(answered)
    for seq, offset in answered:
        assert version_of[records[seq]["model_digest"]] == offset
    probes = [r for r in records.values() if r["flags"] & CallFlags.KNOWN_ANSWER]
    assert probes, "the known-answer probe never ran"
    assert {r["model_digest"] for r in records.values()} <= set(version_of)
    assert {offset for _, offset in answered} == {1.0, 2.0, 3.0}
    assert results[1].code == "DIA-5120"


def test_the_watching_thread_swaps_without_being_asked(versions, key, tmp_path):
    sup = supervised(versions, tmp_path / "log")
    with ModelReloader(
        sup, versions.link, key.public, build, check=plausible, warmup=[X1], interval=0.001
    ).start() as reloader:
        versions.point(versions.make("2", 2.0))
        done = reloader.statistics().checks
        assert reloader.wait_checks(done + 2, timeout=30)  # one whole check after the publish
        assert sup.model_digest == versions.digest["2"]
        assert torch.equal(sup.infer(X1).output, X1 + 2)
    sup.close()


def test_the_reloader_needs_a_probe_and_a_p384_key(versions, key, tmp_path):
    sup = supervised(versions, tmp_path / "log")
    with pytest.raises(ConfigError):
        ModelReloader(sup, versions.link, key.public, build)
    with pytest.raises(ConfigError):
        ModelReloader(sup, versions.link, key.public, build, check=plausible)  # no warm-up
    ed = _keys.generate(_keys.KeyAlgorithm.ED25519).public
    with pytest.raises(KeyFileError):
        ModelReloader(sup, versions.link, ed, build, check=plausible, warmup=[X1])
    sup.close()
