"""Opening a log for export: verify it first, then say how far each record can be trusted.

Theory of operation
-------------------
Export never trusts a record the verifier has not vouched for. :func:`open_verified` runs
:meth:`~vigil.auditlog.LogReader.verify` (with the auditor's keys, matched to the log by key
id, seed id and log id) and turns its report into a per-record *status*:

==================  ====================================================================
``authenticated``   under a checkpoint whose signature or forward-secure tag verified
``chain_valid``     CRC and chain verify, but no verified checkpoint vouches for it (an
                    unsealed log, or a sealed one exported without its key)
``unsealed_tail``   a sealed log's newest records, after its last checkpoint: chain-valid,
                    and the next checkpoint will authenticate them (export again)
``after_damage``    at or after the first finding normal operation does not explain: only
                    exported with ``keep_damaged``, and never counted by the reports
==================  ====================================================================

Records are read only up to the last sequence number the verifier walked, so a writer
appending meanwhile adds nothing unverified.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil import _diagnostics as D
from vigil.auditlog import Anchor, FssSeed, LogReader, LogRecord, VerifyReport
from vigil.errors import ExportKeyMismatch, ExportSourceInvalid
from vigil.keys import PublicKey
from vigil.schemas import LifecycleEvent, RecordType

AUTHENTICATED = "authenticated"
CHAIN_VALID = "chain_valid"
UNSEALED_TAIL = "unsealed_tail"
AFTER_DAMAGE = "after_damage"
STATUSES = (AUTHENTICATED, CHAIN_VALID, UNSEALED_TAIL, AFTER_DAMAGE)
VERIFIED = (AUTHENTICATED, CHAIN_VALID, UNSEALED_TAIL)
"""The statuses the reports count: everything but ``after_damage``."""

_ZERO_KEY = bytes(32)


@dataclass(frozen=True)
class Keys:
    """What the auditor holds; each log gets the key, seed and anchor that match it.

    Attributes:
        public_keys: device public keys, matched by key id (superblock ``key_id``).
        fss_seeds: forward-secure seeds, matched by seed id (checkpoint ``fss_id``).
        anchors: anchors from ``vigil anchor``, matched by log id.
    """

    public_keys: tuple[PublicKey, ...] = ()
    fss_seeds: tuple[FssSeed, ...] = ()
    anchors: tuple[Anchor, ...] = ()


@dataclass
class VerifiedLog:
    """A log verified for export: its identity, verdict and the status of each seq.

    Attributes:
        path: the file.
        log_id: hex. device: from the newest OPENED record's ``host`` (else the file's name).
        key_id: hex of the sealing key id, None for an unsigned log.
        report: the verifier's report.
        damage_seq: the first seq at or after damage (None: none found).
        authenticated: ``(first, last)`` seq ranges a verified checkpoint vouches for.
        tail_from: first seq of a sealed log's unsealed tail (None: none).
        findings: the verifier's findings plus the export's own, as JSON-ready dicts.
    """

    path: str
    log_id: str
    device: str
    key_id: str | None
    sealed: bool
    report: VerifyReport
    damage_seq: int | None
    authenticated: list[tuple[int, int]]
    tail_from: int | None
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "INTACT" if self.report.intact else "NOT_INTACT"

    def status(self, seq: int) -> str:
        """The verification status of record ``seq`` (see the module docstring)."""
        if self.damage_seq is not None and seq >= self.damage_seq:
            return AFTER_DAMAGE
        for first, last in self.authenticated:
            if first <= seq <= last:
                return AUTHENTICATED
        if self.tail_from is not None and seq >= self.tail_from:
            return UNSEALED_TAIL
        return CHAIN_VALID

    def records(
        self, since_seq: int | None = None, *, keep_damaged: bool = False
    ) -> Iterator[tuple[LogRecord, str]]:
        """Yield ``(record, status)`` for the verified records from ``since_seq`` on.

        Stops before the damage unless ``keep_damaged``; never reads past the last seq the
        verifier walked.
        """
        last = self.report.last_seq
        if last is None:
            return
        if self.damage_seq is not None and not keep_damaged:
            last = min(last, self.damage_seq - 1)
        with LogReader(self.path) as reader:
            for rec in reader.records(since_seq=since_seq, until_seq=last):
                yield rec, self.status(rec.seq)


def check_source(path: str) -> None:
    """Refuse a path that is not a regular file before opening it (a FIFO would block).

    Raises:
        ExportSourceInvalid: DIA-8002.
        LogIOError: the path cannot be examined (the reader's own error, DIA-3001).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the reader raises its own LogIOError with the errno
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device or other special file"
        )
        raise ExportSourceInvalid(
            f"{path}: is {kind}, not a log file; give the log file itself", path=path
        )


def open_verified(
    path: str, keys: Keys = Keys(), *, max_findings: int = 1000, device_from: str = "host"
) -> VerifiedLog:
    """Verify the log at ``path`` with the keys that match it.

    ``device_from``: ``host`` names the device by the newest OPENED record's host (the
    file's name when none), ``dir`` by the directory that holds the log.

    Raises:
        ExportSourceInvalid (DIA-8002), ExportKeyMismatch (DIA-8003), or the reader's own
        :class:`~vigil.errors.LogError` (not a log, unreadable, corrupt superblock).
    """
    check_source(path)
    with LogReader(path) as reader:
        geo = reader.geometry
        key_id = geo.key_id if geo.key_id != _ZERO_KEY else None
        public_key = None
        if keys.public_keys and key_id is not None:
            public_key = next((k for k in keys.public_keys if k.key_id == key_id), None)
            if public_key is None:
                raise ExportKeyMismatch(
                    f"{path}: sealed with key {key_id.hex()[:16]}..., which none of the "
                    f"{len(keys.public_keys)} --pubkey file(s) given matches; give this "
                    "device's public key",
                    path=path,
                    key_id=key_id.hex(),
                )
        fss_seed = _match_seed(reader, keys.fss_seeds, path) if keys.fss_seeds else None
        anchor = next((a for a in keys.anchors if a.log_id == geo.log_id), None)
        report = reader.verify(
            max_findings=max_findings, public_key=public_key, fss_seed=fss_seed, anchor=anchor
        )
        if report.counts.get("WRONG_KEY"):
            raise ExportKeyMismatch(
                f"{path}: the verifier found checkpoints sealed by another key (WRONG_KEY); "
                "give this device's key",
                path=path,
                key_id=key_id.hex() if key_id else None,
            )
        if device_from == "dir":
            device = Path(path).resolve().parent.name
        else:
            device = _device(reader, report) or Path(path).stem
    return _classify(
        VerifiedLog(
            path=path,
            log_id=geo.log_id.hex(),
            device=device,
            key_id=key_id.hex() if key_id else None,
            sealed=geo.sealed,
            report=report,
            damage_seq=None,
            authenticated=[],
            tail_from=None,
        ),
        reader,
    )


def _match_seed(reader: LogReader, seeds: Sequence[FssSeed], path: str) -> FssSeed | None:
    fss_id = None
    for rec in reader.records(types=[RecordType.CHECKPOINT]):
        fss_id = rec.body.get("fss_id")
        if fss_id and any(fss_id):
            break
    if fss_id is None or not any(fss_id):
        return None  # the log has no forward-secure tags: nothing to match
    seed = next((s for s in seeds if s.fss_id == fss_id), None)
    if seed is None:
        raise ExportKeyMismatch(
            f"{path}: sealed with forward-secure seed {fss_id.hex()}, which none of the "
            "--fss-seed files given matches; give this device's seed",
            path=path,
            key_id=None,
        )
    return seed


def _device(reader: LogReader, report: VerifyReport) -> str | None:
    """The ``host`` of the newest OPENED record in the verified range: looked for in the
    newest segments first, then (a long session) in the whole log."""
    for records in (
        reader.tail(min_segments=2, types=[RecordType.LIFECYCLE]),
        reader.records(types=[RecordType.LIFECYCLE]),
    ):
        host = None
        for rec in records:
            if report.last_seq is not None and rec.seq > report.last_seq:
                break
            if rec.body.get("event") == LifecycleEvent.OPENED:
                try:
                    detail = json.loads(rec.body.get("detail", ""))
                except (ValueError, RecursionError):
                    continue
                if isinstance(detail, dict) and isinstance(detail.get("host"), str):
                    host = str(detail["host"])
        if host is not None:
            return host
    return None


def _classify(vlog: VerifiedLog, reader: LogReader) -> VerifiedLog:
    """Fill in where damage starts, what is authenticated and where the tail begins."""
    report = vlog.report
    damage = _damage_seq(report, reader)
    authenticated, tail_from = _seal_coverage(report)
    vlog.damage_seq, vlog.authenticated, vlog.tail_from = damage, authenticated, tail_from
    vlog.findings = _findings(report, damage)
    return vlog


def _damage_seq(report: VerifyReport, reader: LogReader) -> int | None:
    """The first seq the verifier's unexpected findings reach (a finding without a seq placed
    by its segment, or by its offset in the ring); the log's first seq when some findings were
    dropped and none could be placed; None when nothing is damaged."""
    geo = reader.geometry
    damage: int | None = None
    for f in report.findings:
        if f.expected:
            continue
        seq = f.seq
        if seq is None:
            segment = f.segment
            if segment is None and f.offset is not None and f.offset >= geo.segments_offset:
                segment = (f.offset - geo.segments_offset) // geo.segment_size
            if segment is not None and 0 <= segment < len(reader.segments):
                seq = reader.segments[segment].first_seq or None
        if seq is not None:
            damage = seq if damage is None else min(damage, seq)
    if report.findings_dropped and not report.intact and damage is None:
        damage = report.first_seq  # damage we could not place: trust nothing
    return damage


def _seal_coverage(report: VerifyReport) -> tuple[list[tuple[int, int]], int | None]:
    """The seq ranges a checked signature or tag vouches for, and the first seq past the last
    sealed stretch when the log is expected to be sealed (its unsealed tail; None: none)."""
    seals = report.seals
    if seals is None:
        return [], None
    authenticated: list[tuple[int, int]] = []
    if seals.signatures_checked or seals.tags_checked:
        authenticated = [(a, b) for _, a, b, _, ok in seals.stretches if ok]
    tail_from = None
    if seals.expected and report.last_seq is not None:
        covered = max((b for _, _, b, _, _ in seals.stretches), default=None)
        start = covered + 1 if covered is not None else report.first_seq
        if start is not None and start <= report.last_seq:
            tail_from = start
    return authenticated, tail_from


def _findings(report: VerifyReport, damage: int | None) -> list[dict[str, Any]]:
    """The verifier's findings as the ``logs`` table lists them, with one for the findings
    it dropped and one saying from which seq nothing is exported as verified."""
    findings = [f.to_json() for f in report.findings]
    if report.findings_dropped:
        findings.append(
            {
                "kind": "FINDINGS_DROPPED",
                "code": D.FLEET_FAILED.code,
                "message": f"{report.findings_dropped} more findings not listed",
                "expected": False,
            }
        )
    if damage is not None:
        findings.append(
            {
                "kind": "EXPORT_AFTER_DAMAGE",
                "code": D.EXPORT_AFTER_DAMAGE.code,
                "message": f"records from {damage} on follow damage the verifier found: not "
                "exported as verified",
                "seq": damage,
                "expected": False,
            }
        )
    return findings
