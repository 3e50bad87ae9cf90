"""The writer's ring index (heaps, incremental run) makes exactly the choices of the naive
O(segments) policy it replaced, for any sequence of segment starts, freezes and unfreezes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.auditlog._format import SegmentInfo
from vigil.auditlog._ring import RingIndex

from conftest import examples


def naive_choose(segs: list[SegmentInfo], head: SegmentInfo | None) -> SegmentInfo | None:
    free = [s for s in segs if s.status in ("empty", "unreadable") and s is not head]
    if free:
        return min(free, key=lambda s: (s.wear, s.index))
    used = [s for s in segs if s.live and not s.frozen and s is not head]
    return min(used, key=lambda s: (s.generation, s.index)) if used else None


def naive_retained_from(
    segs: list[SegmentInfo], evicting: SegmentInfo, new_gen: int, nxt: int
) -> int:
    by_gen = {s.generation: s for s in segs if s.live and s is not evicting}
    first, g = nxt, new_gen - 1
    while g in by_gen:
        first, g = by_gen[g].first_seq, g - 1
    return first


@settings(max_examples=examples(300), deadline=None)
@given(
    st.integers(2, 12),
    st.lists(st.sampled_from(["corrupt"]), max_size=2),
    st.lists(
        st.tuples(
            st.sampled_from(["start", "freeze", "unfreeze"]), st.integers(0, 11), st.integers(1, 50)
        ),
        max_size=200,
    ),
)
def test_ring_index_matches_the_naive_policy(
    n: int, corrupt: list[str], ops: list[tuple[str, int, int]]
) -> None:
    segs = [SegmentInfo(index=i, status="empty") for i in range(n)]
    for k, _ in enumerate(corrupt):
        segs[k % n].status, segs[k % n].wear = "unreadable", 3
    ring = RingIndex(segs)
    head: SegmentInfo | None = None
    next_seq, frozen_quota = 1, max(0, n - 2)
    for op, which, records in ops:
        seg = segs[which % n]
        if op == "freeze" and seg.live and sum(s.frozen for s in segs) < frozen_quota:
            seg.frozen = True
        elif op == "unfreeze":
            seg.frozen = False
        elif op == "start":
            want = naive_choose(segs, head)
            got = ring.choose(head)
            assert got is want
            if got is None:
                continue
            assert ring.retained_from(got, next_seq) == naive_retained_from(
                segs, got, ring.max_gen + 1, next_seq
            )
            evicted = got.generation if got.live else None
            got.status, got.generation, got.wear = "valid", ring.max_gen + 1, got.wear + 1
            got.first_seq, got.frozen = next_seq, False
            ring.started(got, evicted)
            head, next_seq = got, next_seq + records
