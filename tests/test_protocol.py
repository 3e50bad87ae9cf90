"""The socket protocol's codec (sans-IO): golden bytes, round trips, truncation, trailing
garbage, single-byte corruption, and the property that any bytes decode to a frame or raise
ProtocolError -- never anything else."""

from __future__ import annotations

import contextlib
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil import _diagnostics as D
from vigil.auditlog._crc import crc32c_portable
from vigil.errors import ProtocolError
from vigil.schemas import Outcome, Result, ServedBy, State
from vigil.service import _protocol as P

from conftest import examples

RID = bytes(range(16))

# PING, request id 00..0f, empty body: magic, version 1, type 6, flags 0, id, length 0, CRC
GOLDEN_PING = bytes.fromhex("56474c5001060000000102030405060708090a0b0c0d0e0f000000001b538474")
# INFER of tensor([[1.0, -2.0]]) (float32), request id 0x11 * 16
GOLDEN_INFER = bytes.fromhex(
    "56474c50"
    "01"
    "01"
    "0000" + "11" * 16 + "28000000"
    "5a1c4506"
    "00"
    "00"
    "0100"  # payload: kind TENSOR, reserved, count 1
    "00"  # name length 0
    "01"
    "02"  # dtype float32, ndim 2
    "0100000000000000"
    "0200000000000000"  # shape (1, 2)
    "0800000000000000"  # 8 bytes
    "00"  # padding to offset 32
    "0000803f"
    "000000c0"  # 1.0, -2.0
)


def frame_bytes(ftype: P.FrameType, rid: bytes, body: list[P.Buffer]) -> bytes:
    return b"".join(bytes(b) for b in P.encode_frame(ftype, rid, body))


def code_of(exc: pytest.ExceptionInfo[ProtocolError]) -> str:
    return exc.value.code


def test_golden_frames_encode_and_decode() -> None:
    assert frame_bytes(P.FrameType.PING, RID, []) == GOLDEN_PING
    x = torch.tensor([[1.0, -2.0]])
    assert frame_bytes(P.FrameType.INFER, b"\x11" * 16, P.encode_tensors(x)) == GOLDEN_INFER
    frame = P.decode_frame(GOLDEN_INFER)
    assert (frame.type, frame.request_id) == (P.FrameType.INFER, b"\x11" * 16)
    got = P.decode_tensors(frame.body)
    assert got.dtype is torch.float32 and torch.equal(got, x)


def test_the_crc_is_crc32c_over_header_and_body_as_documented() -> None:
    head, crc = GOLDEN_INFER[:28], struct.unpack_from("<I", GOLDEN_INFER, 28)[0]
    assert crc == crc32c_portable(head + GOLDEN_INFER[32:])  # the independent oracle


@pytest.mark.parametrize("cut", [0, 1, 31, 32, 33, len(GOLDEN_INFER) - 1])
def test_truncated_frames_are_refused(cut: int) -> None:
    with pytest.raises(ProtocolError) as exc:
        P.decode_frame(GOLDEN_INFER[:cut])
    assert code_of(exc) == D.FRAME_TRUNCATED.code


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(ProtocolError) as exc:
        P.decode_frame(GOLDEN_PING + b"\x00")
    assert code_of(exc) == D.BODY_MALFORMED.code


def test_every_single_byte_corruption_is_detected() -> None:
    for i in range(len(GOLDEN_INFER)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(GOLDEN_INFER)
            bad[i] ^= flip
            with pytest.raises(ProtocolError):
                P.decode_frame(bytes(bad))


def test_header_checks_come_before_the_body() -> None:
    def header(**kw: int | bytes) -> bytes:
        f = {"magic": P.MAGIC, "version": 1, "type": 1, "flags": 0, "length": 0}
        f.update(kw)  # type: ignore[arg-type]
        return P.HEADER.pack(f["magic"], f["version"], f["type"], f["flags"], RID, f["length"], 0)

    cases = [
        (header(magic=b"GET "), D.BAD_MAGIC),
        (header(version=2), D.PROTOCOL_VERSION),
        (header(type=99), D.FRAME_TYPE),
        (header(type=int(P.FrameType.RESULT)), D.FRAME_TYPE),  # a response sent to a server
        (header(flags=2), D.FRAME_TYPE),  # a reserved bit
        (header(flags=3), D.FRAME_TYPE),  # CONTEXT with a reserved bit
        (header(type=int(P.FrameType.PING), flags=1), D.FRAME_TYPE),  # CONTEXT: INFER only
        (header(length=1025), D.FRAME_TOO_LARGE),
        (header(type=int(P.FrameType.PING), length=8), D.BODY_MALFORMED),  # theirs is empty
        (header(type=int(P.FrameType.HEALTH), length=1 << 20), D.BODY_MALFORMED),
    ]
    for data, diagnostic in cases:
        with pytest.raises(ProtocolError) as exc:
            P.parse_header(data, max_body=1024, expect=P.REQUESTS)
        assert code_of(exc) == diagnostic.code, data
    with pytest.raises(ProtocolError) as exc:
        P.parse_header(header(version=7), max_body=1024, expect=P.REQUESTS)
    assert "version 7" in exc.value.message and "version 1" in exc.value.message
    assert (exc.value.theirs, exc.value.ours) == (7, 1)


def test_the_codes_that_lose_the_stream() -> None:
    assert {D.TENSOR_SPEC.code, D.BODY_MALFORMED.code}.isdisjoint(P.FATAL)
    assert D.FRAME_CRC.code in P.FATAL


@pytest.mark.parametrize("dtype", [d for d, _ in P.DTYPES.values()])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (2, 3), (1, 1, 1, 1, 1, 1, 1, 5)])
def test_every_dtype_and_shape_round_trips(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = (torch.arange(max(1, int(torch.tensor(shape).prod())) if shape else 1) % 2).to(dtype)
    x = x[: int(torch.tensor(shape).prod()) if shape else 1].reshape(shape)
    body = b"".join(bytes(b) for b in P.encode_tensors(x))
    got = P.decode_tensors(bytearray(body))
    assert got.dtype is dtype and got.shape == x.shape and torch.equal(got, x)


def test_mappings_sequences_and_alignment_round_trip() -> None:
    value = {
        "a": torch.ones(3, dtype=torch.int8),  # 3 bytes: the next tensor needs padding
        "ü" * 100: torch.randn(2, 2, dtype=torch.float64),
        "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
    }
    body = bytearray(b"".join(bytes(b) for b in P.encode_tensors(value, offset=5)))
    got = P.decode_tensors(bytearray(5) + body, 5)
    assert list(got) == list(value)
    assert all(torch.equal(got[k], value[k]) for k in value)
    seq = (torch.ones(1), torch.zeros(2, dtype=torch.int64))
    got_seq = P.decode_tensors(bytearray(b"".join(bytes(b) for b in P.encode_tensors(seq))))
    assert isinstance(got_seq, tuple) and all(map(torch.equal, got_seq, seq))


def test_decoded_tensors_share_the_received_buffer() -> None:
    body = bytearray(b"".join(bytes(b) for b in P.encode_tensors(torch.zeros(4))))
    t = P.decode_tensors(body)
    body[-4:] = struct.pack("<f", 7.0)
    assert t[-1].item() == 7.0  # no copy was made


def test_non_contiguous_and_grad_tensors_are_sent_as_values() -> None:
    x = torch.arange(12.0, requires_grad=True).reshape(3, 4).t()
    got = P.decode_tensors(bytearray(b"".join(bytes(b) for b in P.encode_tensors(x))))
    assert torch.equal(got, x.detach())


def _payload(
    code: int, shape: tuple[int, ...], nbytes: int, data: bytes, name: bytes = b""
) -> bytes:
    meta = bytes([0, 0, 1, 0, len(name)]) + name + bytes([code, len(shape)])
    meta += struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<Q", nbytes)
    return meta + bytes(-len(meta) % 8) + data


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (_payload(42, (2,), 8, bytes(8)), "unknown dtype code 42"),
        (_payload(1, (2,), 4, bytes(4)), "needs 8 bytes"),
        (_payload(1, (2,), 8, bytes(4)), "fewer present"),
        (_payload(1, (1,) * 9, 4, bytes(4)), "9 dims"),
        (_payload(1, (2**40, 0), 0, b""), "exceeds"),
        (_payload(1, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1), 0, b""), "spans"),
        (_payload(9, (2**32 - 1, 2**32 - 1, 0), 0, b""), "spans"),
        (_payload(10, (2,), 2, b"\x01\x02"), "bool byte"),
        (_payload(1, (1,), 4, bytes(4)) + b"x", "after the last tensor"),
        (_payload(1, (1,), 4, bytes(4), name=b"x"), "name"),
        (b"\x00\x00\x02\x00", "2 tensors in a TENSOR payload"),
        (b"\x07\x00\x01\x00", "kind 7"),
        (b"\x01\x00", "no tensor payload header"),
    ],
)
def test_bad_tensor_specs_are_refused_with_dia_7108(payload: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        P.decode_tensors(payload)
    assert code_of(exc) == D.TENSOR_SPEC.code
    assert words in exc.value.message


def test_padding_must_be_zero_and_names_unique() -> None:
    good = bytearray(_payload(1, (1,), 4, bytes(4)))
    good[23] = 1  # the padding byte before the data (offset 24)
    with pytest.raises(ProtocolError, match="padding"):
        P.decode_tensors(good)
    one = _payload(1, (1,), 4, bytes(4), name=b"a")[4:]
    twice = bytes([1, 0, 2, 0]) + one + one  # each entry at offset 4 mod 8, as encoded
    with pytest.raises(ProtocolError, match="twice"):
        P.decode_tensors(twice)


def test_values_that_cannot_be_sent_are_refused() -> None:
    for value in (3.0, [torch.ones(1), "x"], {"": torch.ones(1)}, {1: torch.ones(1)}):
        with pytest.raises(ProtocolError) as exc:
            P.encode_tensors(value)
        assert code_of(exc) == D.TENSOR_SPEC.code
    with pytest.raises(ProtocolError, match="complex64"):
        P.encode_tensors(torch.ones(1, dtype=torch.complex64))
    with pytest.raises(ProtocolError, match="9 dims"):
        P.encode_tensors(torch.ones((1,) * 9))


def test_result_error_and_health_bodies_round_trip() -> None:
    sent = Result(
        {"y": torch.ones(2)},
        State.DEGRADED,
        ServedBy.FALLBACK,
        Outcome.TIMEOUT,
        2**40,
        D.DEADLINE_MISSED,
        "no answer within 5.0 ms",
        0,
        123,
        RID,
    )
    body = P.encode_result(sent)
    info = P.decode_result(bytearray(b"".join(bytes(b) for b in body)), RID)
    assert info[1:] == sent[1:]  # the same type on both sides, field for field
    assert info.code is D.DEADLINE_MISSED  # the registry's own object
    unknown = P.decode_result(
        b"".join(P.encode_result(sent._replace(code=D.Diagnostic("DIA-9876", "X", "", ""))))
    )
    assert (unknown.code.code, unknown.code.name) == ("DIA-9876", "UNKNOWN")  # kept, not dropped
    assert torch.equal(info.output["y"], torch.ones(2))
    err = P.encode_error(P.ErrorClass.UNAVAILABLE, "DIA-4009", "none", detail={"state": "X"})
    assert P.decode_error(b"".join(err)) == P.ErrorInfo(
        P.ErrorClass.UNAVAILABLE, False, "DIA-4009", "none", {"state": "X"}
    )
    health = P.decode_health(b"".join(P.encode_health(True, "NORMAL", {"calls": 3})))
    assert health == {"ready": True, "state": "NORMAL", "detail": {"calls": 3}}


def test_bad_bodies_are_refused() -> None:
    good_err = b"".join(P.encode_error(P.ErrorClass.PROTOCOL, "DIA-7101", "m"))
    for bad in (good_err[:-1], good_err + b"x", b"\x09" + good_err[1:], b""):
        with pytest.raises(ProtocolError):
            P.decode_error(bad)
    with pytest.raises(ProtocolError, match="JSON"):
        P.decode_health(b"\x01\x00\x01\x00\x00\x00{")
    result = bytearray(
        b"".join(
            bytes(b)
            for b in P.encode_result(
                Result(torch.ones(1), State(1), ServedBy(1), Outcome(0), 1, None, "", 0, 0, RID)
            )
        )
    )
    result[1] = 77  # state
    with pytest.raises(ProtocolError, match="77"):
        P.decode_result(result)


@pytest.mark.requirement("SR-013")
@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_frame_or_a_protocol_error(data: bytes) -> None:
    try:
        frame = P.decode_frame(data)
    except ProtocolError:
        return
    assert frame.type in P.FrameType


@settings(max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=120),
    st.sampled_from([P.decode_tensors, P.decode_result, P.decode_error, P.decode_health]),
)
def test_any_body_decodes_or_raises_a_protocol_error(data: bytes, decode: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)  # type: ignore[operator]


@settings(max_examples=examples(300))
@given(st.integers(0, len(GOLDEN_INFER) - 1), st.integers(1, 255), st.binary(max_size=8))
def test_mutated_golden_frames_never_decode_silently(pos: int, flip: int, tail: bytes) -> None:
    bad = bytearray(GOLDEN_INFER)
    bad[pos] ^= flip
    with pytest.raises(ProtocolError):
        P.decode_frame(bytes(bad) + tail)


def test_a_payload_prefix_with_a_valid_structure_fuzzes_cleanly() -> None:
    base = _payload(1, (2, 2), 16, bytes(16), name=b"")
    for cut in range(len(base)):
        with pytest.raises(ProtocolError):
            P.decode_tensors(base[:cut])


_EDGE_DIMS = st.sampled_from([0, 1, 2, 3, 7, 2**16, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1])


@settings(max_examples=400)
@given(
    st.integers(0, 12),
    st.lists(_EDGE_DIMS, max_size=9),
    st.one_of(st.just(-1), st.integers(0, 64), st.sampled_from([2**32 - 1, 2**63, 2**64 - 1])),
    st.binary(max_size=64),
)
def test_any_tensor_entry_header_decodes_or_raises_a_protocol_error(
    code: int, shape: list[int], nbytes: int, data: bytes
) -> None:
    """Entry headers built from edge values (zero dims beside huge ones, sizes that overflow
    int64): torch never sees one that it cannot lay out, so nothing but DIA-7108 escapes."""
    dims = [min(d, 2**64 - 1) for d in shape]
    size = P.DTYPES.get(code, (None, 1))[1]
    announced = nbytes if nbytes >= 0 else min(2**64 - 1, size * _product(dims))
    payload = _payload(code, tuple(dims), announced, data)
    with contextlib.suppress(ProtocolError):  # DIA-7108 or a value; nothing else
        P.decode_tensors(payload)


def _product(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n
