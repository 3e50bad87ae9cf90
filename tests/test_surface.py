"""The public surface, the error hierarchy and the diagnostic registry stay consistent."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

import vigil
import vigil.auditlog
import vigil.errors
import vigil.schemas
from vigil.schemas import DIAGNOSTICS, lookup

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "DIAGNOSTICS.md"


def _public_modules() -> list[str]:
    """Every module of the package whose dotted path has no private (``_``) part."""
    found = [info.name for info in pkgutil.walk_packages(vigil.__path__, "vigil.")]
    return sorted(
        ["vigil"] + [n for n in found if not any(p.startswith("_") for p in n.split("."))]
    )


def _private_modules_of(name: str) -> list[str]:
    """A package's private implementation modules (``vigil.auditlog._writer``...)."""
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        return []
    return [i.name for i in pkgutil.iter_modules(module.__path__, f"{name}.") if "._" in i.name]


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
        "vigil.fleet",
        "vigil.fleet.spark",
        "vigil.fsm",
        "vigil.keys",
        "vigil.model",
        "vigil.runtime",
        "vigil.schemas",
        "vigil.service",
        "vigil.supervisor",
        "vigil.testing",
        "vigil.testing.pytest_plugin",
        "vigil.workers",
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
    with warnings.catch_warnings():  # the deprecated vigil.runtime warns on every name
        warnings.simplefilter("ignore", DeprecationWarning)
        for n in names:
            assert getattr(module, n, None) is not None, n
    own = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "") in (name, *_private_modules_of(name))
        and not (n.startswith("pytest_") and name.endswith("pytest_plugin"))
    }
    assert own <= set(names), sorted(own - set(names))


def test_the_old_runtime_names_still_resolve_with_a_warning() -> None:
    import vigil.runtime
    import vigil.service
    import vigil.supervisor

    with pytest.warns(DeprecationWarning, match=r"moved to vigil\.supervisor\.Supervisor"):
        assert vigil.runtime.Supervisor is vigil.supervisor.Supervisor
    with pytest.warns(DeprecationWarning, match="vigil.service.Client"):
        assert vigil.runtime.Client is vigil.service.Client
    with pytest.raises(AttributeError):
        vigil.runtime.NoSuchName  # noqa: B018


_DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_IMPORT = re.compile(
    r"^\s*(?:from (vigil[\w.]*) import (\([^)]*\)|[^#\n]+)|import (vigil[\w.]*))", re.M
)


def _documented_imports() -> list[tuple[str, str, str]]:
    """(doc, module, names) for every ``vigil`` import in the docs' Python code blocks."""
    return [
        (doc.name, m.group(1) or m.group(3), (m.group(2) or "").strip())
        for doc in _DOC_FILES
        for block in re.findall(r"```python\n(.*?)```", doc.read_text("utf-8"), re.S)
        for m in _IMPORT.finditer(block)
    ]


def test_every_documented_import_works_and_is_public() -> None:
    imports = _documented_imports()
    assert len(imports) > 10  # the scan finds the examples
    for doc, module, names in imports:
        assert not any(p.startswith("_") for p in module.split(".")), (doc, module)
        assert module != "vigil.runtime", (doc, "the deprecated shim")
        mod = importlib.import_module(module)
        for name in re.sub(r"#[^\n]*", "", names).strip("()").split(","):
            if name.strip():
                base = name.split()[0]
                assert not base.startswith("_"), (doc, module, name)
                assert hasattr(mod, base), (doc, module, name)


def test_the_client_imports_nothing_it_does_not_use() -> None:
    """``from vigil.service import Client`` pulls none of the service's dependencies."""
    code = (
        "import sys; from vigil.service import Client; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'prometheus_client','sdnotify','transitions','cryptography','safetensors','torch',"
        "'matplotlib'} or m in {'vigil.supervisor','vigil.workers','vigil.service._service'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""


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


def test_error_families() -> None:
    """One ``except`` per concern: the worker family, the service family, apart."""
    e = vigil.errors
    for cls in (e.WorkerLost, e.WorkerTimeout, e.WorkerBusy, e.WorkerUnavailable):
        assert issubclass(cls, e.WorkerError), cls
    assert issubclass(e.RemoteModelError, e.WorkerError)
    assert issubclass(e.ServiceBusy, e.ServiceUnreachable)
    assert issubclass(e.ServiceUnreachable, e.ServiceError)
    assert not issubclass(e.ServiceUnreachable, e.ProtocolError)
    assert not issubclass(e.WorkerError, (e.ServiceError, e.ProtocolError, e.InvalidInput))


def test_no_code_is_written_as_a_string_outside_the_registry() -> None:
    """Codes come from ``vigil._diagnostics`` by name, never as a ``"DIA-..."`` literal."""
    offenders = []
    for path in sorted((ROOT / "vigil").rglob("*.py")):
        if path.name == "_diagnostics.py":
            continue
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"[\"']DIA-\d{4}", code):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


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


def test_replay_does_not_import_torch(tmp_path: Path) -> None:
    """``vigil replay`` reads records and runs the state machine: torch's import (~3 s and
    ~200 MB here) is not part of it, though ``vigil.supervisor`` exports torch's users too."""
    from vigil.auditlog import FlightRecorder, RingConfig

    path = tmp_path / "log.vigil"
    with FlightRecorder.create(path, RingConfig(size=4096 + 4 * 16384, segment_size=16384)):
        pass
    code = (
        "import sys; from vigil.cli import main; rc = main(['replay', sys.argv[1]]); "
        "print(rc, 'torch' in sys.modules, 'vigil.supervisor._supervisor' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.stdout.strip().splitlines()[-1] == "3 False False", out  # nothing to check
    import vigil.supervisor

    assert vigil.supervisor.Supervisor.__module__ == "vigil.supervisor._supervisor"
    assert set(dir(vigil.supervisor)) >= set(vigil.supervisor.__all__)
