"""Shared plumbing of the coverage-guided fuzz harnesses (``fuzz_*.py``, run with atheris).

Each harness module defines ``one_input(data: bytes) -> None``: it feeds ``data`` to one parser
and returns when the parser gave a valid result or raised a :class:`~vigil.errors.VigilError`;
anything else (another exception, a wrong result) propagates, and the fuzzer saves the input
as ``crash-*``. The default test run imports the same modules (without atheris) and replays
every corpus file through ``one_input`` (``tests/test_fuzz_corpus.py``).

Run as a script, a harness instruments the ``vigil`` package for coverage, caps the address
space (``VIGIL_FUZZ_AS_MB``, default 6144 MiB: torch alone maps ~2-3 GiB) so that a memory bomb
fails as an exception instead of taking the machine down, and passes the remaining arguments
to libFuzzer, adding ``-timeout=10`` (seconds per input) and ``-print_final_stats=1`` (the
execution count at the end) unless given.

By default a run keeps going after a finding (libFuzzer's ``-fork`` mode does not work with
atheris): each input that raises something other than a VigilError is saved once per distinct
failure (exception type and innermost vigil frame) as ``<findings>/<signature>``, where
``<findings>`` is ``$VIGIL_FUZZ_FINDINGS`` or ``./fuzz-findings``, and its traceback is printed.
Pass ``--stop`` to stop at the first one instead (libFuzzer then writes ``crash-*``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"

_DEFAULTS = ("-timeout=10", "-print_final_stats=1", "-rss_limit_mb=0")


@contextlib.contextmanager
def instrumenting(module_name: str) -> Iterator[None]:
    """Instrument the ``vigil`` imports made inside this block, when the harness runs as the
    fuzzer (``module_name == "__main__"``); a no-op under pytest."""
    if module_name != "__main__":
        yield
        return
    import atheris

    with atheris.instrument_imports(include=["vigil"]):
        yield


def cap_memory(megabytes: int | None = None) -> None:
    """Cap the address space so a runaway allocation raises instead of swapping."""
    mb = megabytes if megabytes is not None else int(os.environ.get("VIGIL_FUZZ_AS_MB", "6144"))
    limit = mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(one_input: Callable[[bytes], None]) -> None:
    """Run ``one_input`` under atheris with the arguments of this process."""
    import atheris

    args = [a for a in sys.argv if a != "--stop"]
    if len(args) == len(sys.argv):
        one_input = _keep_going(one_input)
    for default in _DEFAULTS:
        flag = default.split("=", 1)[0] + "="
        if not any(a.startswith(flag) for a in args[1:]):
            args.insert(1, default)
    cap_memory()
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def scratch_dir() -> Path:
    """A private scratch directory, in memory where the machine has /dev/shm."""
    import atexit
    import shutil
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="vigil-fuzz-", dir=base))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame in vigil (else the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/vigil/" in f.filename] or frames[-1:]
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def _keep_going(one_input: Callable[[bytes], None]) -> Callable[[bytes], None]:
    folder = Path(os.environ.get("VIGIL_FUZZ_FINDINGS", "fuzz-findings"))
    seen: set[str] = set()

    def guarded(data: bytes) -> None:
        try:
            one_input(data)
        except Exception as exc:  # a finding: record it once, keep fuzzing
            sig = _signature(exc)
            if sig in seen:
                return
            seen.add(sig)
            folder.mkdir(parents=True, exist_ok=True)
            name = sig.replace("@", "-").replace(":", "-")
            name += "-" + hashlib.sha1(data).hexdigest()[:8]
            (folder / name).write_bytes(data)
            print(f"\n=== FINDING {len(seen)}: {sig} -> {folder / name}", file=sys.stderr)
            traceback.print_exc()

    return guarded
