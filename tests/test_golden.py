"""Golden files: committed logs must always read back exactly as committed (format stability),
and their bytes must match the specification, checked with independent primitives."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import crcmod.predefined
import pytest

from vigil.auditlog import LogReader

DATA = Path(__file__).resolve().parent / "data"
CRC = crcmod.predefined.mkCrcFun("crc-32c")  # the oracle, not vigil's CRC path


@pytest.mark.parametrize("name", ["golden-v1", "golden-v1-torn", "golden-v1.2"])
def test_golden_logs_decode_and_verify_as_committed(name: str) -> None:
    with LogReader(str(DATA / f"{name}.vigil")) as r:
        rows = [json.loads(json.dumps(rec.to_json(), ensure_ascii=False)) for rec in r.records()]
        report = r.verify()
    expected = [
        json.loads(line) for line in (DATA / f"{name}.jsonl").read_text("utf-8").splitlines()
    ]
    assert rows == expected
    summary = json.loads((DATA / f"{name}.verify.json").read_text())
    assert report.intact == summary["intact"] and report.counts == summary["counts"]
    assert (report.records, report.first_seq, report.last_seq) == (
        summary["records"],
        summary["first_seq"],
        summary["last_seq"],
    )
    got = [{k: v for k, v in f.to_json().items() if k != "message"} for f in report.findings]
    assert got == summary["findings"]


def test_the_format_1_2_golden_log_says_so_and_holds_each_1_2_record() -> None:
    image = (DATA / "golden-v1.2.vigil").read_bytes()
    assert struct.unpack_from("<HH", image, 8) == (1, 2)  # major, minor: rewritten to 1.2
    assert image[0:256] == image[512:768]
    rows = [json.loads(x) for x in (DATA / "golden-v1.2.jsonl").read_text("utf-8").splitlines()]
    kinds = {(r["type"], r.get("flags", 0) & 16, "trace_id" in r) for r in rows}
    assert {("INFERENCE", 16, True), ("INFERENCE", 0, False), ("REJECTED", 0, True)} <= kinds
    assert ("OUTPUT_DIGEST", 0, False) in kinds
    for row in rows:  # the byte offsets of FORMAT.md §5 for the 1.2 bodies
        off = row["offset"] + 56
        if row["type"] == "OUTPUT_DIGEST":
            assert struct.unpack_from("<QQQ", image, off) == (
                row["inference_seq"],
                row["output_bytes"],
                row["lag_ns"],
            )
            assert image[off + 24 : off + 56].hex() == row["output_digest"]
        elif row["type"] == "INFERENCE" and "trace_id" in row:
            assert image[off + 115] == row["flags"]
            assert image[off + 144 : off + 160].hex() == row["trace_id"]
            assert image[off + 160 : off + 168].hex() == row["span_id"]
        elif row["type"] == "REJECTED":
            assert image[off + 56 : off + 72].hex() == row["trace_id"]
            assert image[off + 72 : off + 80].hex() == row["span_id"]


def test_golden_bytes_follow_the_specification() -> None:
    image = (DATA / "golden-v1.vigil").read_bytes()
    for copy in (0, 512):  # two identical superblock copies with a CRC over bytes 0..251
        sb = image[copy : copy + 256]
        assert sb[:8] == b"VIGILLOG"
        assert struct.unpack_from("<I", sb, 252)[0] == CRC(sb[:252])
    assert image[0:256] == image[512:768]
    log_id = image[24:40]
    assert log_id == bytes(range(16))
    seg_size, seg_count = struct.unpack_from("<II", image, 52)
    assert (seg_size, seg_count, len(image)) == (8192, 8, 4096 + 8 * 8192)
    rows = [json.loads(x) for x in (DATA / "golden-v1.jsonl").read_text("utf-8").splitlines()]
    first = rows[0]  # the session's OPENED, kept in a frozen segment while the ring evicts
    assert (first["seq"], first["type"], first["event"]) == (1, "LIFECYCLE", "OPENED")
    (evicted,) = json.loads((DATA / "golden-v1.verify.json").read_text())["findings"]
    lost = range(evicted["seq"], evicted["last_seq"] + 1)  # 31..179 left the ring
    assert [r["seq"] for r in rows] == [n for n in range(1, 371) if n not in lost]
    genesis = hashlib.sha256(b"vigil/chain/v1\x00\x00" + log_id).digest()
    by_seq = {r["seq"]: r for r in rows}
    for row in rows[:50]:
        off = row["offset"]
        length, body_len, _type, _version, seq = struct.unpack_from("<IHBBQ", image, off)
        assert seq == row["seq"] and length == (92 + body_len + 7) & ~7
        assert struct.unpack_from("<I", image, off + length - 4)[0] == CRC(
            image[off : off + length - 4]
        )
        prev = by_seq[seq - 1]["chain"] if seq - 1 in by_seq else None
        if seq == 1:
            prev = genesis.hex()
        if prev is not None:
            digest = hashlib.sha256(
                bytes.fromhex(prev) + image[off : off + length - 36]
            ).hexdigest()
            assert digest == row["chain"] == image[off + length - 36 : off + length - 4].hex()
