"""The public surface, the error hierarchy and the diagnostic registry stay consistent."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path

import pytest

import vigil
import vigil.auditlog
import vigil.errors
import vigil.schemas
from vigil.schemas import DIAGNOSTICS, lookup

DOCS = Path(__file__).resolve().parent.parent / "docs" / "DIAGNOSTICS.md"


def _public_modules() -> list[str]:
    """Every module of the package whose dotted path has no private (``_``) part."""
    found = [info.name for info in pkgutil.walk_packages(vigil.__path__, "vigil.")]
    return sorted(
        ["vigil"] + [n for n in found if not any(p.startswith("_") for p in n.split("."))]
    )


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions and the rest."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_the_public_modules_are_the_ones_we_know() -> None:
    """A new public module must be added here on purpose (and so get the checks below)."""
    assert set(_public_modules()) == {
        "vigil",
        "vigil.auditlog",
        "vigil.cli",
        "vigil.errors",
        "vigil.fsm",
        "vigil.model",
        "vigil.runtime",
        "vigil.runtime.pytest_plugin",
        "vigil.schemas",
    }


@pytest.mark.parametrize("name", _public_modules())
def test_public_names_are_exactly_all(name: str) -> None:
    """``__all__`` is sorted, unique, resolvable, and holds every public name the module
    defines itself (names it merely imports from elsewhere, like ``typing.Any``, are not its
    surface; pytest finds a plugin's ``pytest_*`` hooks by name)."""
    module = importlib.import_module(name)
    names = module.__all__
    assert names == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    for n in names:
        assert getattr(module, n, None) is not None, n
    package = name if hasattr(module, "__path__") else name.rpartition(".")[0]
    own = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith((f"{package}.", name))
        and not (n.startswith("pytest_") and name.endswith("pytest_plugin"))
    }
    assert own <= set(names), sorted(own - set(names))


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
