"""The conformance corpus (tests/conformance/): what another implementation of the format
tests itself against. Each committed log must verify exactly as its ``expected.json`` says,
through the CLI an auditor runs, and the generator must still produce the same verdicts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from vigil.cli import main

CORPUS = Path(__file__).resolve().parent / "conformance"
CASES = sorted(p.name for p in (CORPUS / "cases").iterdir() if p.is_dir())
VOLATILE = ("path", "seconds")


def verify_json(committed: Path, args: list[str], tmp: Path) -> tuple[dict[str, Any], int]:
    case = Path(shutil.copytree(committed, tmp / committed.name))
    seed = case / "device.fss-seed"
    if seed.exists():  # git keeps no file modes but x: vigil refuses a seed others may read
        seed.chmod(0o600)
    out = io.StringIO()
    cwd = Path.cwd()
    os.chdir(case)  # the case's key, seed and anchor are named relative to it
    try:
        with contextlib.redirect_stdout(out):
            code = main(["verify", "log.vigil", "--json", *args])
    finally:
        os.chdir(cwd)
    report = json.loads(out.getvalue())
    for key in VOLATILE:
        report.pop(key, None)
    for finding in report["findings"]:
        finding.pop("message", None)
    return report, code


def test_the_corpus_covers_every_finding_kind_and_record_type() -> None:
    kinds: set[str] = set()
    for name in CASES:
        kinds |= set(json.loads((CORPUS / "cases" / name / "expected.json").read_text())["counts"])
    # the writer-fault and media kinds, and the sealing kinds an auditor meets first
    assert kinds >= {
        "TORN_TAIL", "MEDIA_CORRUPTION", "TAMPERING", "GAP", "EVICTED", "CLOCK", "SUPERSEDED",
        "HEADER_COPY", "FILE_SIZE", "SEAL_INVALID", "WRONG_KEY", "UNSEALED_TAIL", "ANCHOR",
        "DIGEST_PENDING", "DIGEST_MISSING", "DIGEST_UNEXPECTED",
    }  # fmt: skip
    assert {"intact-every-type", "sealed-ed25519", "sealed-p384"} <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_each_case_verifies_as_committed(name: str, tmp_path: Path) -> None:
    case = CORPUS / "cases" / name
    meta = json.loads((case / "case.json").read_text())
    report, code = verify_json(case, meta["verify_args"], tmp_path)
    assert report == json.loads((case / "expected.json").read_text())
    assert code == meta["exit"]


@pytest.mark.parametrize("name", CASES)
def test_each_case_dumps_as_committed(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    case = CORPUS / "cases" / name
    assert main(["dump", str(case / "log.vigil"), "--format", "jsonl"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = (case / "records.jsonl").read_text("utf-8").splitlines()
    assert got == [json.loads(line) for line in lines]


def test_the_generator_still_produces_the_committed_verdicts(tmp_path: Path) -> None:
    sys.path.insert(0, str(CORPUS))
    try:
        import make_corpus
    finally:
        sys.path.remove(str(CORPUS))
    with contextlib.redirect_stdout(io.StringIO()):
        make_corpus.build_all(tmp_path / "secrets", tmp_path / "cases")
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == CASES
    for name in CASES:
        fresh = json.loads((tmp_path / "cases" / name / "expected.json").read_text())
        committed = json.loads((CORPUS / "cases" / name / "expected.json").read_text())
        assert _verdict(fresh) == _verdict(committed), name


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    """What must not change when the corpus is written again: all but the log and key ids,
    new each run (the generator fixes the OPENED record's pid and host, so sizes and offsets
    are the same on every machine)."""
    out = {k: v for k, v in report.items() if k != "log_id"}
    if out.get("seals"):
        out["seals"] = {k: v for k, v in out["seals"].items() if k != "key_id"}
    return out
