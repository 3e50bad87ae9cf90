"""The connection table's eviction policy, driven by a fake clock (sans-IO)."""

from __future__ import annotations

from vigil.service._slots import Evict, Slot, choose, slowest_body

KW = {"grace_s": 1.0, "min_rate": 1000.0}


def _table(*slots: Slot) -> list[tuple[str, Slot]]:
    return [(f"c{n}", s) for n, s in enumerate(slots)]


def test_a_table_with_room_admits_without_closing_anyone() -> None:
    assert choose(_table(Slot(None, 0.0)), 2, 5.0, **KW) == (True, None, None)


def test_the_connection_idle_the_longest_makes_room() -> None:
    a, b, c = Slot(None, 3.0), Slot(None, 1.0), Slot(None, 2.0)
    assert choose(_table(a, b, c), 3, 9.0, **KW) == (True, "c1", Evict.IDLE)
    b.evicted = True  # already on its way out: neither counted nor chosen again
    assert choose(_table(a, b, c), 3, 9.0, **KW) == (True, None, None)


def test_serving_and_fast_bodies_are_never_closed() -> None:
    serving, fast = Slot(None, 0.0), Slot(None, 0.0)
    serving.start_body(1.0)
    serving.end_body()
    fast.start_body(1.0)
    fast.arrived(5000, 2.5)  # 5000 bytes in 2 s, the last 0.5 s ago: over 1000 bytes/s
    assert choose(_table(serving, fast), 2, 3.0, **KW) == (False, None, None)


def test_the_slowest_body_past_its_grace_makes_room() -> None:
    young, slow, slower = Slot(None, 0.0), Slot(None, 0.0), Slot(None, 0.0)
    young.start_body(9.5)  # 0.5 s in: within its grace, however slow
    slow.start_body(0.0)
    slow.received = 5000  # 500 bytes/s
    slower.start_body(5.0)
    slower.received = 100  # 20 bytes/s
    assert choose(_table(young, slow, slower), 3, 10.0, **KW) == (True, "c2", Evict.SLOW_BODY)
    idle = Slot(None, 9.9)  # an idle one goes first, however recent
    assert choose(_table(young, slow, idle), 3, 10.0, **KW) == (True, "c2", Evict.IDLE)


def test_back_to_idle_after_an_answer() -> None:
    s = Slot(None, 0.0)
    s.start_body(1.0)
    s.end_body()
    s.to_idle(7.0)
    assert (s.busy, s.body_since, s.idle_since) == (False, None, 7.0)


def test_a_body_that_stalled_for_its_grace_makes_room_however_fast_it_began() -> None:
    """Most of a body at once, then nothing: its average rate stays high for a long time
    (4 MiB in 0.01 s stays over 1 MiB/s for 4 s), yet it holds its slot and its bytes."""
    stalled, steady = Slot(None, 0.0), Slot(None, 0.0)
    stalled.start_body(1.0)
    stalled.arrived(1_000_000, 1.01)  # then nothing
    steady.start_body(1.0)
    steady.arrived(1500, 1.9)  # 1500 bytes/s, its last bytes just in
    table = _table(steady, stalled)
    assert slowest_body(table, 2.0, **KW) is None  # stalled 0.99 s: within its grace
    assert choose(table, 2, 2.0, **KW) == (False, None, None)
    steady.arrived(4500, 3.9)
    assert slowest_body(table, 4.0, **KW) == "c1"  # stalled 2.99 s
    assert choose(table, 2, 4.0, **KW) == (True, "c1", Evict.SLOW_BODY)
    stalled.evicted = True  # on its way out: never chosen twice
    assert slowest_body(table, 4.0, **KW) is None
