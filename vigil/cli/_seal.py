"""``vigil keygen`` and ``vigil anchor``; the key options of ``vigil verify``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vigil import keys as _keys
from vigil._files import open_regular, refuse_non_regular
from vigil.auditlog import Anchor, FssSeed, LogReader, fss_generate
from vigil.errors import UsageError
from vigil.schemas import _records as R
from vigil.schemas._enums import RecordType


def add_parsers(sub: Any) -> None:
    """Add ``keygen`` and ``anchor`` to the ``vigil`` command."""
    keygen = sub.add_parser(
        "keygen",
        help="create the device's log-sealing key (and forward-secure sealing files)",
        description="Writes PREFIX.key (private, 0600: stays on the device) and PREFIX.pub "
        "(for auditors). With --fss also PREFIX.fss-state (device, 0600) and PREFIX.fss-seed "
        "(the auditor's secret, 0600: move it OFF the device). Never overwrites a file.",
    )
    keygen.add_argument("prefix", help="path prefix of the files to write")
    keygen.add_argument(
        "--algorithm",
        default="ed25519",
        choices=("ed25519", "p384"),
        help="signature algorithm (default: %(default)s)",
    )
    keygen.add_argument(
        "--fss", action="store_true", help="also create forward-secure sealing state and seed"
    )
    keygen.add_argument(
        "--no-signing-key", action="store_true", help="with --fss: forward-secure sealing only"
    )
    keygen.set_defaults(run=keygen_command)

    anchor = sub.add_parser(
        "anchor",
        help="print the log's newest checkpoint, to keep elsewhere (`verify --anchor`)",
    )
    anchor.add_argument("path")
    anchor.add_argument("--out", help="write the anchor to this file instead of stdout")
    anchor.set_defaults(run=anchor_command)


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--pubkey", help="the device's public key: verify checkpoint signatures")
    verify.add_argument("--fss-seed", help="the forward-secure seed: verify checkpoint tags")
    verify.add_argument("--anchor", help="an anchor from `vigil anchor`: prove nothing was cut")
    verify.add_argument(
        "--checkpoints", action="store_true", help="list the stretch each checkpoint covers"
    )


def verify_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "public_key": _keys.load_public(args.pubkey) if args.pubkey else None,
        "fss_seed": FssSeed.load(args.fss_seed) if args.fss_seed else None,
        "anchor": Anchor.load(args.anchor) if args.anchor else None,
    }


def _write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path``, refusing a named pipe or other non-regular file."""
    try:
        fd = open_regular(path, "anchor file", os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def print_seals(report: Any, args: argparse.Namespace) -> None:
    seals = report.seals
    if seals is None:
        return
    checked = [
        name
        for name, on in (("signatures", seals.signatures_checked), ("tags", seals.tags_checked))
        if on
    ]
    if not checked:
        print(
            f"  sealed log: {seals.checkpoints} checkpoints consistent, NOT authenticated "
            "(give --pubkey and/or --fss-seed)"
        )
    else:
        through = seals.authenticated_through
        print(
            f"  sealing: {seals.authenticated}/{seals.checkpoints} checkpoints valid "
            f"({' and '.join(checked)} checked); "
            + (
                f"records {report.first_seq}..{through} authenticated"
                if through is not None
                else "no records authenticated"
            )
        )
    for first, last in seals.unauthenticated[:10]:
        print(f"  unauthenticated: records {first}..{last}")
    if seals.anchor is not None:
        print(f"  anchor: {seals.anchor}")
    if args.checkpoints:
        keyed = seals.signatures_checked or seals.tags_checked
        for cp, first, last, epoch, ok in seals.stretches:
            state = ("valid" if ok else "INVALID") if keyed else "not authenticated (no key)"
            print(f"  checkpoint {cp} (epoch {epoch}): records {first}..{last} {state}")


def keygen_command(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    if args.no_signing_key and not args.fss:
        raise UsageError("--no-signing-key needs --fss (a log must be sealed somehow)")
    out: dict[str, str] = {}
    if not args.no_signing_key:
        for suffix in (".key", ".pub"):
            if Path(f"{prefix}{suffix}").exists():
                raise UsageError(f"{prefix}{suffix} exists; refusing to overwrite a key file")
        key = _keys.generate(_keys.KeyAlgorithm.parse(args.algorithm))
        key.save(f"{prefix}.key")
        key.public.save(f"{prefix}.pub")
        out["key_id"] = key.key_id.hex()
        out["private_key"] = f"{prefix}.key"
        out["public_key"] = f"{prefix}.pub"
    if args.fss:
        fss_id = fss_generate(f"{prefix}.fss-state", f"{prefix}.fss-seed")
        out["fss_id"] = fss_id.hex()
        out["fss_state"] = f"{prefix}.fss-state"
        out["fss_seed"] = f"{prefix}.fss-seed"
    print(json.dumps(out, indent=2))
    if args.fss:
        print(
            f"move {prefix}.fss-seed off the device: whoever holds it can forge every epoch",
            file=sys.stderr,
        )
    return 0


def anchor_command(args: argparse.Namespace) -> int:
    if args.out:
        refuse_non_regular(args.out, "anchor file")
    with LogReader(args.path) as reader:
        last = None
        for rec in reader.tail(min_segments=2, types=[RecordType.CHECKPOINT]):
            last = rec
        if last is None:  # the newest checkpoint is older than two segments: look further
            for rec in reader.records(types=[RecordType.CHECKPOINT]):
                last = rec
        if last is None or "covered_seq" not in last.body:
            raise UsageError(f"{args.path}: the log holds no checkpoint (is it sealed?)")
        body = R.BODIES[RecordType.CHECKPOINT].pack(last.body)
        anchor = Anchor(
            log_id=reader.geometry.log_id,
            seq=last.seq,
            epoch=int(last.body["epoch"]),
            body=body,
            record_chain=last.chain,
        )
    text = json.dumps(anchor.to_json(), indent=2, sort_keys=True)
    if args.out:
        _write_text(args.out, text + "\n")
    else:
        print(text)
    return 0
