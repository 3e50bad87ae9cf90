"""The off-path digest in ``/metrics``: its lag histogram and its counters, read from the
digester's own statistics at scrape time (issue 16)."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from vigil.service._metrics import Health, HealthServer, ServiceMetrics
from vigil.supervisor import Supervisor

from conftest import SMALL, FakeClock

BIG = torch.arange(32 * 1024, dtype=torch.float32)  # 128 KiB: above the 64 KiB threshold
MS = 1_000_000


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Supervisor, HealthServer]]:
    sup = Supervisor(
        lambda x: BIG + x[0],
        log=str(tmp_path / "flight.vigil"),
        ring=SMALL,
        clock=FakeClock(step_ns=MS),  # every clock reading 1 ms later: lags of a few ms
        isolation="inline",
        durability="none",
        digest_queue=2,
    )
    metrics = ServiceMetrics(sup)
    server = HealthServer("127.0.0.1", 0, metrics, lambda: Health.of(sup, ready=True))
    try:
        yield sup, server
    finally:
        server.close()
        sup.close()


def scrape(server: HealthServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def get(s: dict[Any, float], name: str, **labels: str) -> float | None:
    return s.get((name, tuple(sorted(labels.items()))))


def gate(sup: Supervisor) -> threading.Event:
    """Hold the digester before it hashes, until the event is set."""
    held, digester = threading.Event(), sup._digester
    assert digester is not None
    inner = digester._digest

    def wait_then_hash(value: Any) -> bytes:
        assert held.wait(60)
        return inner(value)

    digester._digest = wait_then_hash
    return held


def test_the_lag_histogram_and_counters_follow_the_digester(
    served: tuple[Supervisor, HealthServer],
) -> None:
    sup, server = served
    x = torch.ones(1)
    for _ in range(3):  # one at a time: the queue (2) is never full
        sup.infer(x)
        assert sup.wait_digested(60)
    d = sup.statistics().digester
    assert d is not None and d.digested == 3
    s = scrape(server)
    assert get(s, "vigil_digest_deferred_total") == 3.0
    assert get(s, "vigil_digest_recorded_total") == 3.0
    assert get(s, "vigil_digest_inline_when_full_total") == 0.0
    assert get(s, "vigil_digest_failed_total") == 0.0
    assert get(s, "vigil_digest_pending") == 0.0
    assert get(s, "vigil_digest_queue_bound") == 2.0
    assert get(s, "vigil_digest_lag_seconds_count") == 3.0
    assert get(s, "vigil_digest_lag_seconds_sum") == pytest.approx(d.lag_sum_ns / 1e9)
    assert d.lag_sum_ns >= 3 * MS  # each lag spans clock readings of 1 ms
    buckets = [get(s, "vigil_digest_lag_seconds_bucket", le=repr(b)) for b in d.lag_bounds_s]
    assert buckets == sorted(buckets)  # cumulative
    cumulative = [float(sum(d.lag_buckets[: i + 1])) for i in range(len(d.lag_bounds_s))]
    assert buckets == cumulative
    assert get(s, "vigil_digest_lag_seconds_bucket", le="+Inf") == 3.0
    assert get(s, "vigil_digest_lag_seconds_bucket", le="0.0005") == 0.0  # no lag under 1 ms
    assert get(s, "vigil_scrape_errors_total", part="digester") is None


def test_a_full_queue_shows_as_outputs_hashed_inline_and_pending(
    served: tuple[Supervisor, HealthServer],
) -> None:
    sup, server = served
    held = gate(sup)
    x = torch.ones(1)
    for _ in range(5):  # 2 outstanding (the bound), then the callers hash inline
        sup.infer(x)
    s = scrape(server)
    assert get(s, "vigil_digest_deferred_total") == 2.0
    assert get(s, "vigil_digest_inline_when_full_total") == 3.0
    assert get(s, "vigil_digest_pending") == 2.0
    assert get(s, "vigil_digest_recorded_total") == 0.0
    assert get(s, "vigil_digest_lag_seconds_count") == 0.0
    held.set()
    assert sup.wait_digested(60)
    s = scrape(server)
    assert get(s, "vigil_digest_recorded_total") == 2.0
    assert get(s, "vigil_digest_lag_seconds_count") == 2.0
    assert get(s, "vigil_digest_pending") == 0.0


def test_a_supervisor_that_hashes_everything_inline_has_no_digest_series(tmp_path: Path) -> None:
    sup = Supervisor(
        lambda x: BIG + x[0],
        log=str(tmp_path / "flight.vigil"),
        ring=SMALL,
        isolation="inline",
        durability="none",
        digest_threshold=0,
    )
    try:
        sup.infer(torch.ones(1))
        text = ServiceMetrics(sup).generate().decode()
    finally:
        sup.close()
    assert "vigil_calls_total 1.0" in text
    assert "vigil_digest" not in text
