"""The public surface, the error hierarchy and the diagnostic registry stay consistent."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import vigil
import vigil.auditlog
import vigil.errors
import vigil.schemas
from vigil.schemas import DIAGNOSTICS, lookup

DOCS = Path(__file__).resolve().parent.parent / "docs" / "DIAGNOSTICS.md"


@pytest.mark.parametrize("module", [vigil, vigil.auditlog, vigil.errors, vigil.schemas])
def test_all_names_exist_and_are_public(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)) or len(set(names)) == len(
        names
    )
    for name in names:
        assert hasattr(module, name), name


def test_auditlog_surface_is_what_we_document() -> None:
    assert set(vigil.auditlog.__all__) >= {
        "FlightRecorder",
        "RingConfig",
        "LogReader",
        "LogRecord",
        "VerifyReport",
        "Finding",
        "PowerCutDisk",
        "format_image",
        "crc32c",
    }


def _error_classes() -> list[type[vigil.errors.VigilError]]:
    return [
        obj
        for _, obj in inspect.getmembers(vigil.errors, inspect.isclass)
        if issubclass(obj, vigil.errors.VigilError) and obj is not vigil.errors.VigilError
    ]


def test_every_error_has_a_registered_code() -> None:
    for cls in _error_classes():
        assert cls.diagnostic.code in DIAGNOSTICS, cls
        assert re.fullmatch(r"DIA-\d{4}", cls.diagnostic.code)


def test_error_message_carries_code_and_context() -> None:
    err = vigil.errors.LogCorrupt("bad record", seq=7, offset=4096)
    assert str(err) == "DIA-3020 LOG_CORRUPT: bad record"
    assert (err.seq, err.offset, err.code) == (7, 4096, "DIA-3020")
    assert isinstance(vigil.errors.InvalidArgument("x"), ValueError)


def test_invalid_argument_is_dia_2047_as_in_the_sop() -> None:
    assert vigil.errors.InvalidArgument.diagnostic.code == "DIA-2047"
    assert lookup(2047).name == "INVALID_ARGUMENT"


def test_every_code_is_documented_with_its_name() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for code, diag in DIAGNOSTICS.items():
        assert re.search(rf"^### {code} {diag.name}$", text, re.M), f"{code} not documented"
    documented = set(re.findall(r"^### (DIA-\d{4})", text, re.M))
    assert documented == set(DIAGNOSTICS), "docs list a code the registry does not have"


def test_codes_are_unique_and_stable() -> None:
    numbers = [d.number for d in DIAGNOSTICS.values()]
    assert len(numbers) == len(set(numbers))
    assert lookup("DIA-3101").name == "TORN_TAIL"
    with pytest.raises(KeyError):
        lookup(9999)
