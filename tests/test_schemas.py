"""The construct declarations are the source of truth; the struct fast paths must match them
byte for byte, and the documented offsets must be the real ones."""

from __future__ import annotations

import construct as cs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import InvalidArgument
from vigil.schemas import BODIES, Layout, Outcome, RecordType, State
from vigil.schemas import _records as R

LAYOUTS = [R.SUPERBLOCK, R.SEGMENT_HEADER, R.RECORD_HEADER, R.RECORD_TRAILER, *BODIES.values()]

_INT_RANGES = {
    "b": (-(2**7), 2**7 - 1),
    "B": (0, 2**8 - 1),
    "h": (-(2**15), 2**15 - 1),
    "H": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "I": (0, 2**32 - 1),
    "l": (-(2**31), 2**31 - 1),
    "L": (0, 2**32 - 1),
    "q": (-(2**63), 2**63 - 1),
    "Q": (0, 2**64 - 1),
}


def _field_strategies(layout: Layout) -> dict[str, st.SearchStrategy[object]]:
    out: dict[str, st.SearchStrategy[object]] = {}
    for name, sub in ((s.name, s.subcon) for s in layout.declaration.subcons if s.name):
        if name in layout.consts:
            continue
        if isinstance(sub, cs.StringEncoded):
            limit = 2 ** (8 * sub.subcon.lengthfield.sizeof()) - 1
            out[name] = st.text(max_size=min(limit // 4, 40))
        elif isinstance(sub, cs.Prefixed):
            out[name] = st.binary(max_size=64)
        elif isinstance(sub, cs.Bytes):
            out[name] = st.binary(min_size=sub.length, max_size=sub.length)
        else:
            fmt = (sub.subcon if isinstance(sub, cs.Enum) else sub).fmtstr[1]
            lo, hi = _INT_RANGES[fmt]
            out[name] = st.integers(lo, hi)
    return out


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
@given(data=st.data())
def test_fast_path_matches_construct_byte_for_byte(layout: Layout, data: st.DataObject) -> None:
    values = data.draw(st.fixed_dictionaries(_field_strategies(layout)))
    fast = layout.pack(values)
    assert fast == layout.declaration.build(values)
    decoded = layout.unpack(fast)
    parsed = layout.declaration.parse(fast)
    for key, value in values.items():
        assert decoded[key] == value
        got = parsed[key]
        assert (int(got) if key in layout.enums else got) == value


def test_documented_sizes_and_offsets() -> None:
    assert R.SUPERBLOCK.fixed_size == 256
    assert R.SEGMENT_HEADER.fixed_size == 128
    assert R.HEADER_SIZE == 56 and R.TRAILER_SIZE == 36
    # offsets written in the declarations' comments (and docs/FORMAT.md)
    for decl, name, offset in [
        (R.Superblock, "segment_size", 52),
        (R.Superblock, "segments_offset", 64),
        (R.Superblock, "key_id", 80),
        (R.Superblock, "crc", 252),
        (R.SegmentHeader, "generation", 16),
        (R.SegmentHeader, "first_seq", 40),
        (R.SegmentHeader, "start_chain", 80),
        (R.SegmentHeader, "crc", 124),
        (R.RecordHeader, "seq", 8),
        (R.RecordHeader, "lap", 16),
        (R.RecordHeader, "durable_seq", 24),
        (R.RecordHeader, "real_ns", 48),
    ]:
        before = cs.Struct(*decl.subcons[: [s.name for s in decl.subcons].index(name)])
        assert before.sizeof() == offset, (name, before.sizeof())


def test_whole_record_declaration_parses_what_the_layouts_build() -> None:
    body = BODIES[RecordType.ANNOTATION].pack({"key": "k", "text": "hello"})
    n = (92 + len(body) + 7) & ~7
    header = R.RECORD_HEADER.pack(
        {
            "length": n,
            "body_len": len(body),
            "type": RecordType.ANNOTATION,
            "body_version": 1,
            "seq": 9,
            "lap": 3,
            "durable_seq": 8,
            "boot_id": 1,
            "mono_ns": 2,
            "real_ns": -5,
        }
    )
    raw = header + body + bytes(n - 92 - len(body)) + b"c" * 32 + b"\x01\x02\x03\x04"
    rec = R.Record.parse(raw)
    assert (rec.seq, rec.lap, rec.real_ns, rec.body, rec.chain) == (9, 3, -5, body, b"c" * 32)
    assert rec.crc == 0x04030201


def test_enums_decode_to_members_and_unknown_values_stay_ints() -> None:
    layout = BODIES[RecordType.TRANSITION]
    raw = layout.pack(
        {"from_state": 1, "to_state": 200, "code": 0, "cause_seq": 0, "at_ns": 0, "reason": ""}
    )
    out = layout.unpack(raw)
    assert out["from_state"] is State.NORMAL
    assert out["to_state"] == 200 and not isinstance(out["to_state"], State)
    assert Outcome(3) is Outcome.ERROR


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"key": "k"}, "missing field"),
        ({"key": 5, "text": ""}, "must be str"),
        ({"key": "k" * 256, "text": ""}, "limit 255"),
    ],
)
def test_pack_refuses_bad_values(values: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match) as info:
        BODIES[RecordType.ANNOTATION].pack(values)
    assert info.value.code == "DIA-2047"


def test_pack_refuses_integer_overflow() -> None:
    with pytest.raises(InvalidArgument, match="TRANSITION"):
        BODIES[RecordType.TRANSITION].pack(
            {
                "from_state": 1,
                "to_state": 2,
                "code": 70000,
                "cause_seq": 0,
                "at_ns": 0,
                "reason": "",
            }
        )


def test_unpack_refuses_truncated_trailing_and_bad_utf8() -> None:
    layout = BODIES[RecordType.ANNOTATION]
    raw = layout.pack({"key": "key", "text": "text"})
    for cut in range(len(raw)):
        with pytest.raises(InvalidArgument):
            layout.unpack(raw[:cut])
    with pytest.raises(InvalidArgument, match="trailing"):
        layout.unpack(raw + b"x")
    assert layout.unpack(raw + b"x", strict_size=False)["text"] == "text"
    bad = bytes([3]) + b"\xff\xfe\xfd" + bytes([0, 0])
    with pytest.raises(InvalidArgument, match="UTF-8"):
        layout.unpack(bad)


def test_const_mismatch_is_refused() -> None:
    raw = bytearray(
        R.SUPERBLOCK.pack(
            {
                "major": 1,
                "minor": 0,
                "flags": 0,
                "revision": 1,
                "log_id": bytes(16),
                "created_ns": 0,
                "sector_size": 512,
                "segment_size": 8192,
                "segment_count": 2,
                "frozen_quota": 0,
                "segments_offset": 4096,
                "header_area": 1024,
                "crc_alg": 1,
                "hash_alg": 1,
                "key_id": bytes(32),
                "crc": 0,
            }
        )
    )
    raw[0] ^= 1
    with pytest.raises(InvalidArgument, match="magic"):
        R.SUPERBLOCK.unpack(bytes(raw))


@pytest.mark.parametrize(
    "decl",
    [
        cs.Struct("x" / cs.Float64l),
        cs.Struct("x" / cs.Int32ub),
        cs.Struct("x" / cs.Bytes(cs.this.n)),
        cs.Struct("t" / cs.PascalString(cs.Int8ul, "utf8"), "x" / cs.Int8ul),
        cs.Struct("t" / cs.PascalString(cs.Int8ul, "ascii")),
    ],
)
def test_derivation_refuses_what_it_cannot_reproduce(decl: cs.Struct) -> None:
    with pytest.raises(TypeError):
        Layout("test", decl)
