"""The ``vigil`` command: demo, verify, dump, replay and inspect flight logs; keygen and
anchor for sealed logs; ``vigil model`` for signed model artifacts.

Exit codes are part of the interface: 0 success (for ``verify``: the log is intact; for
``replay``: every transition agrees with the recorded policy), 1 an integrity failure
(``verify`` found damage or tampering, ``replay`` a disagreement; the log's superblock or
size is corrupt), 2 a usage or I/O error (bad arguments, missing file, not a vigil log), 3
``replay`` inconclusive (records it needs do not decode, or it checked nothing) and, for
``export``, some logs could not be exported (the others were). Errors are printed to stderr
with their diagnostic code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from vigil import __version__
from vigil.cli import _commands, _fleet, _model, _seal, _serve
from vigil.errors import (
    LogGeometryError,
    SuperblockCorrupt,
    UsageError,
    VigilError,
)

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3

__all__ = ["EXIT_INCONCLUSIVE", "EXIT_INTEGRITY", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``vigil`` (exposed for documentation and tests)."""
    p = _Parser(prog="vigil", description="Safety supervisor and flight recorder for inference.")
    p.add_argument("--version", action="version", version=f"vigil {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    _commands.add_parsers(sub)
    _seal.add_parsers(sub)
    _model.add_parser(sub)
    _serve.add_parser(sub)
    _fleet.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vigil`` command; return its exit code."""
    try:
        if argv is None and sys.stdout is None:  # a program started with stdout closed (a
            # caller passing argv may silence it on purpose: redirect_stdout(None))
            raise UsageError("standard output is closed; nothing the command says would be seen")
        args = build_parser().parse_args(argv)
        code: int = args.run(args)
        if sys.stdout is not None:  # a full disk or a closed descriptor surfaces here
            sys.stdout.flush()
    except (SuperblockCorrupt, LogGeometryError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        code = EXIT_INTEGRITY
    except VigilError as exc:  # UsageError among them
        print(f"vigil: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except BrokenPipeError:  # `vigil dump ... | head`
        sys.stderr.close()
        code = EXIT_OK
    except OSError as exc:  # writing the output failed (ENOSPC, EBADF): an I/O error, not 1
        with contextlib.suppress(OSError):
            print(f"vigil: DIA-1002 USAGE: I/O error: {exc}", file=sys.stderr)
        with contextlib.suppress(OSError, ValueError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  - nothing more is written at exit
        code = EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
