"""W3C trace context on the socket protocol: the traceparent parser (golden values, every rule
of the specification, any text), the INFER frame's context block (round trips, truncation,
garbage), and the ids arriving at the supervisor through real sockets."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vigil import _diagnostics as D
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import InvalidInput, ProtocolError
from vigil.schemas import RecordType
from vigil.service import _protocol as P
from vigil.service._client import Client
from vigil.service._server import SocketServer
from vigil.service._trace import TraceContext, extract, extract_state, parse, parse_state
from vigil.supervisor import Supervisor

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01"
RING = RingConfig(size=4096 + 16 * 32768, segment_size=32768)


# --- the parser --------------------------------------------------------------------------


def test_a_version_00_value_parses_to_its_bytes() -> None:
    ctx = parse(GOOD)
    assert ctx == TraceContext(0, bytes.fromhex(TRACE), bytes.fromhex(SPAN), 1)
    assert ctx.sampled and ctx.header() == GOOD
    assert parse(GOOD.encode()) == ctx
    assert not parse(GOOD[:-2] + "00").sampled


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (GOOD[:-1], "54 characters"),
        (GOOD + "0", "exactly 55"),
        (GOOD + "-00", "exactly 55"),  # version 00 has no more fields
        (GOOD.upper(), "lower-case hex"),
        (GOOD.replace("4bf9", "4BF9"), "lower-case hex"),
        (GOOD.replace("4bf9", "4bg9"), "lower-case hex"),
        ("ff" + GOOD[2:], "version ff"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace-id is all zeros"),
        (f"00-{TRACE}-{'0' * 16}-01", "parent-id is all zeros"),
        (GOOD.replace("-", "_"), "lower-case hex"),
        (f"0-{TRACE}-{SPAN}-01x", "lower-case hex"),
        ("cc" + GOOD[2:] + "x", "followed by '-'"),  # a later version: a dash or the end
        ("", "0 characters"),
        ("00-" + "a" * 600, "characters"),
    ],
)
def test_every_rule_of_the_specification_is_enforced(value: str, why: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse(value)
    assert exc.value.diagnostic is D.TRACEPARENT_INVALID and why in exc.value.message
    assert extract(value)[0] is None and extract(value)[1] is not None  # the receiver's rule


def test_a_later_version_is_read_as_version_00_and_its_extra_fields_left_alone() -> None:
    later = "cc" + GOOD[2:] + "-what-comes-next"
    ctx = parse(later)
    assert ctx.version == 0xCC and ctx.trace_id == bytes.fromhex(TRACE) and ctx.flags == 1
    assert parse("cc" + GOOD[2:]).version == 0xCC  # the end of the string is fine too


def test_no_value_is_no_context_and_no_complaint() -> None:
    assert extract(None) == (None, None)


def test_bytes_that_are_not_ascii_or_not_text_are_refused_with_the_code() -> None:
    for value in (b"\xff" * 55, 42, None):
        with pytest.raises(InvalidInput) as exc:
            parse(value)  # type: ignore[arg-type]
        assert exc.value.diagnostic is D.TRACEPARENT_INVALID


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_any_value_gives_a_context_or_the_code_never_another_exception(value: Any) -> None:
    ctx, why = extract(value)
    if ctx is None:
        assert why is not None and why.diagnostic is D.TRACEPARENT_INVALID
    else:
        assert len(ctx.trace_id) == 16 and any(ctx.trace_id) and any(ctx.parent_id)


# --- tracestate ----------------------------------------------------------------------------


def test_a_tracestate_is_read_as_the_w3c_list_of_key_value_members() -> None:
    value = " congo=t61rcWkgMzE,, rojo=00f067aa0ba902b7\t,fw529a3039@dt=%2F x  ,"
    assert parse_state(value) == (
        ("congo", "t61rcWkgMzE"),
        ("rojo", "00f067aa0ba902b7"),
        ("fw529a3039@dt", "%2F x"),
    )
    assert parse_state("") == () and parse_state(" , ") == ()
    assert parse_state(",".join(f"k{i}=v" for i in range(32)))[-1] == ("k31", "v")
    assert extract_state(None) == ((), None)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("Congo=1", "W3C grammar"),  # keys are lower case
        ("congo", "W3C grammar"),
        ("congo=", "W3C grammar"),
        ("congo=a=b", "W3C grammar"),
        ("congo=é", "W3C grammar"),
        ("k" * 257 + "=v", "W3C grammar"),
        ("k=" + "v" * 257, "W3C grammar"),
        ("a@" + "b" * 15 + "=v", "W3C grammar"),  # a system id of at most 14
        ("a=1,b=2,a=3", "appears twice"),
        (",".join(f"k{i}=v" for i in range(33)), "more than 32"),
        ("a=b," * 20_000, "characters, over"),
    ],
)
def test_an_invalid_tracestate_is_refused_whole(value: str, why: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_state(value)
    assert exc.value.diagnostic is D.TRACESTATE_INVALID and why in exc.value.message
    assert extract_state(value)[0] == () and extract_state(value)[1] is not None


def test_a_long_tracestate_is_cut_to_512_characters_long_members_first() -> None:
    big = ("big", "b" * 200)  # 204 characters: over 128, cut first
    small = [(f"k{i:02d}", "v" * 46) for i in range(12)]  # 50 characters each
    members = [small[0], big, *small[1:]]
    got = parse_state(",".join(f"{k}={v}" for k, v in members))
    # 12 x 50 + 11 commas = 611 without the big one: then cut from the end, to 10 (509)
    assert got == tuple(small[:10])
    assert len(",".join(f"{k}={v}" for k, v in got)) <= 512


@given(st.text(max_size=600))
def test_any_tracestate_gives_members_within_bounds_or_the_code(value: str) -> None:
    members: tuple[tuple[str, str], ...] = ()
    try:
        members = parse_state(value)
    except InvalidInput as exc:
        code = exc.diagnostic
    else:
        code = D.TRACESTATE_INVALID
    assert code is D.TRACESTATE_INVALID
    assert len(members) <= 32
    assert len(",".join(f"{k}={v}" for k, v in members)) <= 512


# --- the context block --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "cls"), [(GOOD, None), (None, "gold"), (GOOD, "tenant-ü"), (None, None)]
)
def test_the_context_block_round_trips_and_keeps_the_tensors_aligned(
    tp: str | None, cls: str | None
) -> None:
    block = P.encode_context(tp, cls)
    assert len(block) % 8 == 0
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    body = b"".join(bytes(b) for b in [block, *P.encode_tensors(x, offset=len(block))])
    ctx, offset = P.decode_context(body)
    assert ctx == P.Context(tp, cls) and offset == len(block)
    assert torch.equal(P.decode_tensors(bytearray(body), offset), x)


def test_a_bad_context_block_is_refused_with_its_code() -> None:
    block = P.encode_context(GOOD, "gold")
    cases = [
        b"",
        block[:10],  # ends inside the traceparent
        bytes([0, 65]) + b"x" * 70,  # a class longer than 64 bytes
        bytes([1, 0, 0xFF]) + bytes(5),  # not ASCII
        bytes([0, 1, 0xFF]) + bytes(5),  # not UTF-8
        bytes([1, 0]) + b"a" + b"\x01" + bytes(4),  # padding not zero
    ]
    for data in cases:
        with pytest.raises(ProtocolError) as exc:
            P.decode_context(data)
        assert exc.value.diagnostic is D.FRAME_CONTEXT_INVALID, data
    for tp, cls in (("é", None), ("a" * 256, None), (None, "x" * 65), ("", None), (None, "")):
        with pytest.raises(ProtocolError) as exc:
            P.encode_context(tp, cls)
        assert exc.value.diagnostic is D.FRAME_CONTEXT_INVALID


@given(st.binary(max_size=300))
def test_any_context_block_gives_a_context_or_the_code(data: bytes) -> None:
    try:
        ctx, offset = P.decode_context(data)
    except ProtocolError as exc:
        code = exc.diagnostic
    else:
        code = None
        assert offset % 8 == 0 and offset <= len(data)
        assert ctx.rate_class is None or len(ctx.rate_class.encode()) <= P.MAX_CLASS
    assert code in (None, D.FRAME_CONTEXT_INVALID)


# --- through real sockets -----------------------------------------------------------------


class Spy(Supervisor):
    """A real supervisor that remembers the trace keywords each call brought."""

    seen: list[dict[str, Any]]

    def infer(self, x: Any, **kw: Any) -> Any:
        self.seen.append({k: v for k, v in kw.items() if k != "request_id"})
        return super().infer(x, **kw)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Spy, SocketServer, str]]:
    d = Path(tempfile.mkdtemp(prefix="vgt-"))
    sup = Spy(lambda x: x * 2, log=str(tmp_path / "f.vlog"), isolation="inline", ring=RING)
    sup.seen = []
    server = SocketServer(sup, d / "s.sock", read_timeout_s=5.0)
    server.start()
    yield sup, server, str(d / "s.sock")
    server.stop(5.0)
    sup.close()
    shutil.rmtree(d, ignore_errors=True)


def test_the_trace_ids_reach_the_supervisor_and_bad_ones_restart_the_trace(
    served: tuple[Spy, SocketServer, str],
) -> None:
    sup, server, path = served
    x = torch.ones(2)
    with Client(path, timeout_s=10.0) as c:
        r = c.infer(x, traceparent=GOOD)
        assert torch.equal(r.output, x * 2)
        c.infer(x)  # an old client's frame: no context block, no flag
        c.infer(x, rate_class="gold")  # a context block without a traceparent
        with pytest.raises(InvalidInput) as exc:  # the client refuses before sending
            c.infer(x, traceparent=GOOD.upper())
        assert exc.value.diagnostic is D.TRACEPARENT_INVALID
        # a hand-made frame whose traceparent is bad: served, as a call without one
        block = P.encode_context("00-" + "0" * 32 + f"-{SPAN}-01", None)
        body = [block, *P.encode_tensors(x, offset=len(block))]
        frame = c._call(
            P.FrameType.INFER, P.ZERO_ID, body, P.FrameType.RESULT, flags=P.FLAG_CONTEXT
        )
        assert torch.equal(P.decode_result(frame.body).output, x * 2)
    assert sup.seen == [
        {"trace_id": bytes.fromhex(TRACE), "span_id": bytes.fromhex(SPAN)},
        {},
        {},
        {},
    ]
    assert server.statistics()["traceparent_ignored"] == 1


def test_a_bad_context_block_is_answered_and_the_connection_serves_on(
    served: tuple[Spy, SocketServer, str],
) -> None:
    sup, _, path = served
    with Client(path, timeout_s=10.0) as c:
        with pytest.raises(ProtocolError) as exc:
            c._call(
                P.FrameType.INFER,
                P.ZERO_ID,
                [bytes([9, 0])],
                P.FrameType.RESULT,
                flags=P.FLAG_CONTEXT,
            )
        assert exc.value.diagnostic is D.FRAME_CONTEXT_INVALID
        assert torch.equal(c.infer(torch.ones(1)).output, torch.full((1,), 2.0))
    assert sup.seen == [{}]
    sup.close()
    with LogReader(sup.log.path) as r:
        kinds = [rec.type for rec in r.records()]
    assert kinds.count(RecordType.INFERENCE) == 1 and RecordType.REJECTED not in kinds


def test_the_context_block_golden_bytes() -> None:
    golden = bytes([55, 4]) + GOOD.encode() + b"gold" + bytes(3)  # 61 bytes, padded to 64
    assert P.encode_context(GOOD, "gold") == golden
    assert P.decode_context(golden) == (P.Context(GOOD, "gold"), 64)
    assert P.encode_context(None, None) == bytes(8)  # both lengths 0, padded
    head = P.encode_frame(P.FrameType.INFER, bytes(16), [golden], flags=P.FLAG_CONTEXT)[0]
    assert bytes(head[4:8]) == b"\x01\x01\x01\x00"  # version 1, INFER, flags 0x0001 (LE)
