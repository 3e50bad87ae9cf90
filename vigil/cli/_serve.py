"""``vigil serve --config FILE``: run the supervisor as a service (docs/SERVICE.md).

``--check`` validates the configuration and exits (0 valid, 2 invalid) without starting
anything (it does read the known-answer file, verifying a signed model directory for it).
Otherwise the command serves until SIGTERM, drains, and exits 0 (1 when calls were still in
flight when the drain timed out); a start-up failure exits 2 with its DIA code.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Add the ``serve`` command to ``sub`` (the top-level subparsers)."""
    serve = sub.add_parser(
        "serve", help="serve a model over a Unix socket: worker processes, metrics, systemd"
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    serve.add_argument("--check", action="store_true", help="validate the configuration and exit")
    serve.set_defaults(run=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from vigil.service._config import ServeConfig  # noqa: PLC0415 - torch only when serving
    from vigil.service._service import Service  # noqa: PLC0415

    config = ServeConfig.load(args.config)
    if args.check:
        notes = config.check_paths(strict=False)  # what is there and wrong is refused
        known = config.known_answer()  # reads and verifies the file, as the service would
        extra = "" if known is None else f"; known answer {tuple(known[0].input.shape)} read"
        print(f"{args.config}: valid{extra}")
        for note in notes:  # not an error: the file may be checked before deployment
            print(f"  note: {note}")
        return 0
    return Service(config).run()
