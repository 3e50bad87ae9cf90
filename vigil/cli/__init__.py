"""The ``vigil`` command: demo, verify, dump, replay and inspect flight logs; keygen and
anchor for sealed logs; ``vigil model`` for signed model artifacts.

Exit codes are part of the interface: 0 success (for ``verify``: the log is intact; for
``replay``: every transition agrees with the recorded policy), 1 an integrity failure
(``verify`` found damage or tampering, ``replay`` a disagreement; the log's superblock or
size is corrupt), 2 a usage or I/O error (bad arguments, missing file, not a vigil log); ``export``
adds 3: some logs could not be exported (the others were). Errors are printed to stderr with
their diagnostic code.
"""

from __future__ import annotations

import argparse
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

__all__ = ["EXIT_INTEGRITY", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``vigil`` (exposed for documentation and tests)."""
    p = _Parser(prog="vigil", description="Safety supervisor and flight recorder for inference.")
    p.add_argument("--version", action="version", version=f"vigil {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo", help="run the supervisor through every state; verify and replay its log"
    )
    demo.add_argument("--out", default="vigil-demo", help="output directory (default: %(default)s)")
    demo.add_argument(
        "--calls", type=int, default=2000, help="inference calls (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=7, help="workload seed (default: %(default)s)")

    demo.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the reference workload runs (default: %(default)s)",
    )
    demo.add_argument(
        "--preset",
        default="tiny",
        choices=("tiny", "gpu"),
        help="the reference decoder's size: tiny (CPU, ~0.2 M parameters) or gpu "
        "(~156 M, bfloat16; for --device cuda) (default: %(default)s)",
    )
    demo.set_defaults(run=_commands.demo)

    verify = sub.add_parser("verify", help="check a log's integrity; exit 0 intact, 1 not")
    verify.add_argument("path")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--max-findings",
        type=int,
        default=1000,
        help="findings to list; the rest are counted (default: %(default)s)",
    )
    _seal.add_verify_options(verify)
    verify.set_defaults(run=_commands.verify)

    dump = sub.add_parser("dump", help="print a log's records in sequence order")
    dump.add_argument("path")
    dump.add_argument("--format", choices=("jsonl", "table"), default="table")
    dump.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="T",
        help="only records of this type (repeatable): " + ", ".join(_commands.TYPE_NAMES),
    )
    dump.add_argument(
        "--since", help="first record: a sequence number or an ISO-8601 time (inclusive)"
    )
    dump.add_argument(
        "--until", help="last record: a sequence number or an ISO-8601 time (inclusive)"
    )
    dump.set_defaults(run=_commands.dump)

    replay = sub.add_parser(
        "replay", help="re-derive every state change from the recorded calls and policy"
    )
    replay.add_argument("path")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(run=_commands.replay)

    inspect = sub.add_parser("inspect", help="show geometry, head, records, segments and wear")
    inspect.add_argument("path")
    inspect.add_argument("--json", action="store_true", help="print as JSON")
    inspect.set_defaults(run=_commands.inspect)
    _seal.add_parsers(sub)
    _model.add_parser(sub)
    _serve.add_parser(sub)
    _fleet.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vigil`` command; return its exit code."""
    try:
        args = build_parser().parse_args(argv)
        code: int = args.run(args)
    except UsageError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SuperblockCorrupt, LogGeometryError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except VigilError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `vigil dump ... | head`
        sys.stderr.close()
        return EXIT_OK
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
