"""Checking a log's checkpoints: which records a signature or forward-secure tag vouches for.

Theory of operation
-------------------
The verifier walks the records in sequence order (the same walk as the integrity check) and
meets each CHECKPOINT. A checkpoint *authenticates* the records since the previous one when:

1. its body decodes, and it names the record just before it (``covered_seq = seq - 1``) with
   that record's chain digest as the log holds it (otherwise it was moved or replayed from
   elsewhere: SEAL_MISMATCH);
2. it names the previous checkpoint the log holds, or one the ring has evicted, and its epoch
   is the previous one's plus one (a dropped or repeated epoch: EPOCH_GAP);
3. no more records lie between the two checkpoints than the writer's interval allows
   (otherwise records escaped sealing: UNSEALED);
4. its signature verifies under the auditor's public key, and/or its tag under the epoch key
   derived from the auditor's seed (SEAL_INVALID; another key or chain: WRONG_KEY).

The chain digest a checkpoint signs depends on every byte of every record before it, so a
single valid checkpoint vouches for all of them: anyone who changes a record must recompute
the chain, and the recomputed digest is not the one signed. The integrity walk reports chain
breaks itself (TAMPERING); a stretch that contains one is not counted as authenticated.

After the last checkpoint, records are *unauthenticated*: expected for a live log or after a
crash (UNSEALED_TAIL), not after a clean close or beyond the interval (UNSEALED: the closing
checkpoint was cut off, or records were appended by someone who could not seal them). The
interval is the one the last checkpoint signs: ``every_records``, and ``every_ms``. The writer
checks the time after each append and seals at once when it is due, and the first record after
a checkpoint was written after the checkpoint set its deadline; so every tail record *but the
last* lies less than ``every_ms`` after the tail's first record, on the same boot, and is no
OPENED record (a writer seals right after its OPENED). A record that breaks this and is not
the last is proof that the tail was written by someone who could not seal it.

A forward-secure tag proves only what its epoch label says: a thief holding epoch *e*'s key can
tag any checkpoint labelled *e* or later. Labels are trusted only while every checkpoint since
the first the log holds passed its own checks; after one failed (an EPOCH_GAP of relabelled
epochs, a bad tag...), later tags alone authenticate nothing, and their stretches are not
reported valid. A signature under the auditor's key does not depend on the label.

Nothing in a log proves that newer records did not exist: an attacker can cut the log after
any checkpoint, or put back an older copy of the whole file. An *anchor* (the newest
checkpoint, kept elsewhere) closes that: the log must reach the anchor's seq and hold the
anchored checkpoint byte for byte (ANCHOR).
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from vigil._files import read_small
from vigil.auditlog import _format as F
from vigil.auditlog._seal import FssSeed, checkpoint_message, fss_tag, signed_message
from vigil.auditlog._verify import FindingSink
from vigil.errors import InvalidArgument, UsageError
from vigil.keys import KeyAlgorithm, PublicKey
from vigil.schemas import _records as R
from vigil.schemas._enums import LifecycleEvent, RecordType

__all__ = ["Anchor", "SealChecker", "SealReport"]

_CHECKPOINT = R.BODIES[RecordType.CHECKPOINT]
_T_CHECKPOINT = int(RecordType.CHECKPOINT)
_T_LIFECYCLE = int(RecordType.LIFECYCLE)
_MAX_RANGES = 100

ANCHOR_LIMIT = 1 << 20
"""Bytes read from an anchor file at most (one is under 1 KiB)."""


@dataclass(frozen=True)
class Anchor:
    """A checkpoint kept outside the log (``vigil anchor``), to prove nothing was cut off."""

    log_id: bytes
    seq: int  # the checkpoint record's seq
    epoch: int
    body: bytes  # the checkpoint's body, signature included
    record_chain: bytes  # the checkpoint record's own chain digest

    def to_json(self) -> dict[str, Any]:
        body = _CHECKPOINT.unpack(self.body)
        return {
            "vigil_anchor": 1,
            "log_id": self.log_id.hex(),
            "seq": self.seq,
            "epoch": self.epoch,
            "covered_seq": body["covered_seq"],
            "chain": body["chain"].hex(),
            "key_id": body["key_id"].hex(),
            "signature": body["signature"].hex(),
            "real_ns": body["real_ns"],
            "record_chain": self.record_chain.hex(),
            "body": self.body.hex(),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "anchor") -> Anchor:
        """Raises UsageError (DIA-1002) for anything but an anchor written by ``vigil anchor``:
        ``seq`` an integer (not a string, float or bool), and every field that restates the
        checkpoint body (``epoch``, ``covered_seq``, ``chain``, ``key_id``, ``signature``,
        ``real_ns``) equal to what the body says, so that what a reader of the file sees is
        what is checked."""
        try:
            body = bytes.fromhex(data["body"])
            fields = _CHECKPOINT.unpack(body)
            seq = data["seq"]
            anchor = cls(
                log_id=bytes.fromhex(data["log_id"]),
                seq=seq,
                epoch=int(fields["epoch"]),
                body=body,
                record_chain=bytes.fromhex(data["record_chain"]),
            )
            version = data.get("vigil_anchor")
        except (AttributeError, KeyError, TypeError, ValueError, InvalidArgument) as exc:
            raise UsageError(f"{where}: not a vigil anchor ({exc})") from None
        if version != 1 or len(anchor.log_id) != 16 or len(anchor.record_chain) != 32:
            raise UsageError(f"{where}: not a vigil anchor (version 1 with 16/32-byte ids)")
        if type(seq) is not int or not 1 <= seq < 1 << 64:
            raise UsageError(f"{where}: anchor seq {seq!r} is not a record's seq")
        written = anchor.to_json()
        for key in ("epoch", "covered_seq", "chain", "key_id", "signature", "real_ns"):
            if key in data and (data[key] != written[key] or type(data[key]) is bool):
                raise UsageError(
                    f"{where}: not a vigil anchor: {key} {data[key]!r} is not what its "
                    f"checkpoint body says ({written[key]!r})"
                )
        return anchor

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Anchor:
        """Read an anchor file written by ``vigil anchor``: a regular file only (opening a
        named pipe would block forever), at most :data:`ANCHOR_LIMIT` bytes.

        Raises:
            NotARegularFile: DIA-1010, ``path`` is a pipe, directory or device.
            UsageError: DIA-1002, unreadable, too large, or not an anchor.
        """
        where = os.fspath(path)
        data = read_small(where, "anchor file", ANCHOR_LIMIT)  # one is < 1 KiB
        try:
            value = json.loads(data)
        except RecursionError:
            raise UsageError(f"{where}: not a vigil anchor (nested too deeply)") from None
        except ValueError as exc:
            raise UsageError(f"{where}: cannot read an anchor ({exc})") from None
        return cls.from_json(value, where)


@dataclass(frozen=True)
class SealReport:
    """What the checkpoints prove (part of :class:`~vigil.auditlog.VerifyReport`).

    Attributes:
        expected: the log is sealed, or the auditor gave a key or seed.
        signatures_checked: a public key was given; ``tags_checked``: an FSS seed was given.
        checkpoints: CHECKPOINT records met; ``authenticated``: those that verified.
        authenticated_through: the last seq vouched for by an unbroken run of valid
            checkpoints from the oldest record the log holds (None: none).
        unauthenticated: seq ranges no valid checkpoint vouches for (first 100).
        anchor: what the anchor check found, when an anchor was given.
        stretches: per checkpoint ``(checkpoint_seq, first_seq, last_seq, epoch, valid)``:
            the records it covers and whether it authenticates them (never without a key).
    """

    expected: bool
    signatures_checked: bool
    tags_checked: bool
    checkpoints: int
    authenticated: int
    authenticated_through: int | None
    unauthenticated: tuple[tuple[int, int], ...]
    anchor: str | None
    stretches: tuple[tuple[int, int, int, int, bool], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unauthenticated"] = [list(r) for r in self.unauthenticated]
        out["stretches"] = [
            {"checkpoint": c, "first_seq": a, "last_seq": b, "epoch": e, "valid": ok}
            for c, a, b, e, ok in self.stretches
        ]
        return out


@dataclass
class _Last:
    seq: int
    epoch: int
    every_records: int
    every_ms: int = 0


class SealChecker:
    """Consumes the walk's records one by one (:meth:`see`), then :meth:`finish`.

    Args:
        geometry: the log's.
        sink: where findings go (shared with the integrity walk).
        public_key: the device's public key, or None (signatures unchecked).
        fss_seed: the forward-secure seed, or None (tags unchecked).
        anchor: a checkpoint kept elsewhere, or None.
    """

    def __init__(
        self,
        geometry: F.Geometry,
        sink: FindingSink,
        *,
        public_key: PublicKey | None = None,
        fss_seed: FssSeed | None = None,
        anchor: Anchor | None = None,
    ) -> None:
        self.geo = geometry
        self.sink = sink
        self.public_key = public_key
        self.fss_seed = fss_seed
        self.keys = fss_seed.keys() if fss_seed else None
        self.anchor = anchor
        self.expected = geometry.sealed or public_key is not None or fss_seed is not None
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.prev: F.RawRecord | None = None
        self.last: _Last | None = None
        self.checkpoints = self.good = 0
        self.through: int | None = None  # authenticated without a break from the oldest record
        self.unbroken = True
        self.bad: list[tuple[int, int]] = []
        self.closed_at: int | None = None  # a CLOSED record after the last checkpoint
        self.anchor_state: str | None = None
        self.broken_seqs: set[int] = set()
        self.last_good = 0
        self.stretch_start = 0
        self.stretches: list[tuple[int, int, int, int, bool]] = []
        self.anchored = True  # every checkpoint so far passed its own checks (FSS epoch labels)
        self.tail_first: F.RawRecord | None = None  # the first record after the last checkpoint
        self.tail_late: tuple[int, str] | None = None  # a tail record the writer sealed after
        if public_key is not None and geometry.key_id != public_key.key_id:
            self.sink.add(
                "WRONG_KEY",
                f"the log names signing key {geometry.key_id.hex()[:16]}…, the key given is "
                f"{public_key.key_id.hex()[:16]}…: another device's log, or the superblock "
                "was edited",
                offset=0,
            )

    def see(self, raw: F.RawRecord, body: bytes | None) -> None:
        """One record of the walk; ``body`` is given for CHECKPOINT and LIFECYCLE records."""
        if self.first_seq is None:
            self.first_seq = raw.seq
        self.last_seq = raw.seq
        if raw.link is False:
            self.broken_seqs.add(raw.seq)
        if raw.type == _T_CHECKPOINT and body is not None:
            self._checkpoint(raw, body)
            self.closed_at = None
            self.tail_first = self.tail_late = None
        else:
            self._tail(raw, body)
            if raw.type == _T_LIFECYCLE and body and body[0] == LifecycleEvent.CLOSED:
                self.closed_at = raw.seq
        if self.anchor is not None and raw.seq == self.anchor.seq:
            self._check_anchor_record(raw, body)
        self.prev = raw

    def _tail(self, raw: F.RawRecord, body: bytes | None) -> None:
        """Note the first record after the last checkpoint past which its writer, had it held
        the key, would have sealed (see the module docstring)."""
        last = self.last
        if last is None or self.tail_late is not None:
            return
        if self.tail_first is None:
            self.tail_first = raw
        first = self.tail_first
        every_ns = last.every_ms * 1_000_000
        if raw.type == _T_LIFECYCLE and body and body[0] == LifecycleEvent.OPENED:
            self.tail_late = (raw.seq, "is a writer's OPENED record, which it seals at once")
        elif raw.boot_id != first.boot_id:
            self.tail_late = (
                raw.seq,
                f"comes from another boot than record {first.seq} and follows no OPENED record",
            )
        elif every_ns and raw.mono_ns - first.mono_ns >= every_ns:
            self.tail_late = (
                raw.seq,
                f"was written {(raw.mono_ns - first.mono_ns) / 1e6:.0f} ms after record "
                f"{first.seq}, the first after checkpoint {last.seq}, whose signed interval is "
                f"{last.every_ms} ms",
            )

    # --- one checkpoint ---------------------------------------------------------------------

    def _fail(self, kind: str, raw: F.RawRecord, message: str, start: int) -> None:
        self.sink.add(kind, f"checkpoint {raw.seq}: {message}", seq=start, last_seq=raw.seq)
        if len(self.bad) < _MAX_RANGES:
            self.bad.append((start, raw.seq))
        self.unbroken = False
        self.anchored = False

    def _checkpoint(self, raw: F.RawRecord, body: bytes) -> None:
        bad = len(self.bad)
        self._judge(raw, body)
        ok = len(self.bad) == bad and self.unbroken_at(raw)
        assert self.last is not None
        first = self.stretch_start
        self.stretches.append((raw.seq, first, raw.seq - 1, self.last.epoch, ok))

    def unbroken_at(self, raw: F.RawRecord) -> bool:
        return self.last_good == raw.seq

    def _judge(self, raw: F.RawRecord, body: bytes) -> None:
        self.checkpoints += 1
        last = self.last
        assert self.first_seq is not None
        start = last.seq + 1 if last else self.first_seq
        self.stretch_start = start
        try:
            cp = _CHECKPOINT.unpack(body)
        except InvalidArgument as exc:
            self._fail("SEAL_INVALID", raw, f"undecodable body ({exc.message})", start)
            self.last = _Last(raw.seq, 0, 0)
            return
        epoch, every = cp["epoch"], cp["every_records"]
        prev = self.prev
        if cp["covered_seq"] != raw.seq - 1 or (prev is not None and prev.seq != raw.seq - 1):
            self._fail(
                "SEAL_MISMATCH",
                raw,
                f"names record {cp['covered_seq']} but follows record "
                f"{prev.seq if prev else None}: moved or replayed from elsewhere",
                start,
            )
            self.last = _Last(raw.seq, epoch, every, cp["every_ms"])
            return
        if prev is not None and prev.chain != cp["chain"]:
            self._fail(
                "SEAL_MISMATCH",
                raw,
                f"signs chain digest {cp['chain'].hex()[:16]}… for record {raw.seq - 1}, the log "
                f"holds {prev.chain.hex()[:16]}…: the records before it were rewritten, or the "
                "checkpoint comes from another log",
                start,
            )
            self.last = _Last(raw.seq, epoch, every, cp["every_ms"])
            return
        ok = self._order(raw, cp, last, start) and self._seal(raw, body, cp, start)
        between = raw.seq - start
        if ok and between > cp["every_records"]:
            self._fail(
                "UNSEALED",
                raw,
                f"{between} records since the previous checkpoint, the writer's interval is "
                f"{cp['every_records']}: records escaped sealing",
                start,
            )
            ok = False
        if ok and any(start <= s < raw.seq for s in self.broken_seqs):
            ok = False  # the integrity walk reported the break (TAMPERING)
            if len(self.bad) < _MAX_RANGES:
                self.bad.append((start, raw.seq))
            self.unbroken = False
        self.broken_seqs.clear()
        self.last = _Last(raw.seq, epoch, every, cp["every_ms"])
        if ok and self.public_key is None and self.fss_seed is not None and not self.anchored:
            ok = False  # a tag under an epoch label no valid checkpoint leads to proves nothing
            if len(self.bad) < _MAX_RANGES:
                self.bad.append((start, raw.seq))
        if ok:
            self.good += 1
            self.last_good = raw.seq
            if self.unbroken:
                self.through = raw.seq - 1

    def _order(self, raw: F.RawRecord, cp: dict[str, Any], last: _Last | None, start: int) -> bool:
        epoch, prev_cp = cp["epoch"], cp["prev_checkpoint_seq"]
        if last is not None:
            if prev_cp != last.seq:
                self._fail(
                    "SEAL_MISMATCH",
                    raw,
                    f"names checkpoint {prev_cp} as its predecessor, the log's is {last.seq}",
                    start,
                )
                return False
            if epoch != last.epoch + 1:
                self._fail(
                    "EPOCH_GAP",
                    raw,
                    f"epoch {epoch} follows epoch {last.epoch}: "
                    + ("epochs were dropped" if epoch > last.epoch else "an epoch repeats"),
                    start,
                )
                return False
            return True
        assert self.first_seq is not None
        if prev_cp >= self.first_seq:
            self._fail(
                "SEAL_MISMATCH",
                raw,
                f"names checkpoint {prev_cp} as its predecessor, which the log should still "
                "hold and does not",
                start,
            )
            return False
        if prev_cp == 0 and epoch != 1:
            self._fail("EPOCH_GAP", raw, f"the log's first checkpoint has epoch {epoch}", start)
            return False
        if not 1 <= epoch <= raw.seq:
            self._fail("SEAL_INVALID", raw, f"impossible epoch {epoch}", start)
            return False
        return True

    def _seal(self, raw: F.RawRecord, body: bytes, cp: dict[str, Any], start: int) -> bool:
        log_id = self.geo.log_id
        pk = self.public_key
        if pk is not None:
            if cp["sig_alg"] == 0:
                self._fail("SEAL_INVALID", raw, "is not signed, the log is", start)
                return False
            if cp["key_id"] != pk.key_id or cp["sig_alg"] != pk.algorithm:
                self._fail(
                    "WRONG_KEY",
                    raw,
                    f"signed by key {cp['key_id'].hex()[:16]}…, not by the key given",
                    start,
                )
                return False
            if not pk.verify(cp["signature"], signed_message(log_id, body)):
                self._fail("SEAL_INVALID", raw, "signature does not verify", start)
                return False
        elif cp["sig_alg"] not in (0, *map(int, KeyAlgorithm)):
            self._fail("SEAL_INVALID", raw, f"unknown signature algorithm {cp['sig_alg']}", start)
            return False
        seed, keys = self.fss_seed, self.keys
        if seed is not None and keys is not None:
            if not cp["flags"] & 1:
                self._fail("SEAL_INVALID", raw, "carries no forward-secure tag", start)
                return False
            if cp["fss_id"] != seed.fss_id:
                self._fail(
                    "WRONG_KEY",
                    raw,
                    f"sealed by forward-secure chain {cp['fss_id'].hex()}, not {seed.fss_id.hex()}",
                    start,
                )
                return False
            epoch = cp["epoch"]
            if not 1 <= epoch <= raw.seq:
                self._fail("SEAL_INVALID", raw, f"impossible epoch {epoch}", start)
                return False
            want = fss_tag(keys.key(epoch), checkpoint_message(log_id, body))
            if not hmac.compare_digest(want, cp["fss_tag"]):
                self._fail(
                    "SEAL_INVALID",
                    raw,
                    f"forward-secure tag does not verify under epoch {epoch}'s key",
                    start,
                )
                return False
        return True

    # --- anchor and the end ---------------------------------------------------------------------

    def _check_anchor_record(self, raw: F.RawRecord, body: bytes | None) -> None:
        anchor = self.anchor
        assert anchor is not None
        if raw.type != _T_CHECKPOINT or body != anchor.body or raw.chain != anchor.record_chain:
            self.anchor_state = "differs"
            self.sink.add(
                "ANCHOR",
                f"record {raw.seq} is not the anchored checkpoint: the log was rewritten from "
                "there on, or forked from another copy",
                seq=raw.seq,
            )
        else:
            self.anchor_state = "found"

    def _finish_anchor(self) -> None:
        anchor = self.anchor
        if anchor is None:
            return
        if anchor.log_id != self.geo.log_id:
            self.anchor_state = "other log"
            self.sink.add(
                "ANCHOR", f"the anchor is for log {anchor.log_id.hex()}, not this one", seq=None
            )
            return
        pk = self.public_key
        if pk is not None and not pk.verify(
            _CHECKPOINT.unpack(anchor.body)["signature"], signed_message(anchor.log_id, anchor.body)
        ):
            self.anchor_state = "forged"
            self.sink.add("ANCHOR", "the anchor's own signature does not verify", seq=anchor.seq)
            return
        if self.anchor_state is not None:
            return
        if self.last_seq is None or self.last_seq < anchor.seq:
            self.anchor_state = "missing"
            self.sink.add(
                "ANCHOR",
                f"the log ends at record {self.last_seq}, before the anchored checkpoint "
                f"{anchor.seq}: it was truncated or rolled back to an older copy",
                seq=anchor.seq,
            )
        else:
            self.anchor_state = "evicted"
            self.sink.add(
                "ANCHOR_EVICTED",
                f"the anchored checkpoint {anchor.seq} was overwritten by the ring; the log "
                "continues past it, so it was not cut off there",
                seq=anchor.seq,
            )

    def finish(self) -> SealReport:
        """Report on the tail and the anchor; return the summary."""
        last, end = self.last, self.last_seq
        if self.expected and end is not None:
            start = last.seq + 1 if last else self.first_seq
            assert start is not None
            if start <= end:
                where = {"seq": start, "last_seq": end}
                if len(self.bad) < _MAX_RANGES:
                    self.bad.append((start, end))
                if self.closed_at is not None:
                    self.sink.add(
                        "UNSEALED",
                        f"records {start}..{end} follow no checkpoint although the log was "
                        f"closed at {self.closed_at}: its closing checkpoint was cut off",
                        **where,
                    )
                elif (last is None and end - start + 1 > 2) or (
                    last is not None and end - start + 1 > last.every_records
                ):
                    self.sink.add(
                        "UNSEALED",
                        f"records {start}..{end} follow no checkpoint, more than the writer's "
                        "interval allows: written by someone who could not seal them",
                        **where,
                    )
                elif self.tail_late is not None and self.tail_late[0] < end:
                    late, why = self.tail_late
                    self.sink.add(
                        "UNSEALED",
                        f"records {start}..{end} follow no checkpoint, but record {late} {why}: "
                        "its writer would have sealed right after it, so the records after it "
                        "were written by someone who could not seal them",
                        **where,
                    )
                else:
                    self.sink.add(
                        "UNSEALED_TAIL",
                        f"records {start}..{end} are not under a checkpoint yet (a live log, or "
                        "a crash before the next one): unauthenticated",
                        **where,
                    )
        self._finish_anchor()
        keyed = self.public_key is not None or self.fss_seed is not None
        return SealReport(
            expected=self.expected,
            signatures_checked=self.public_key is not None,
            tags_checked=self.fss_seed is not None,
            checkpoints=self.checkpoints,
            authenticated=self.good if keyed else 0,  # without a key: consistent, not proven
            authenticated_through=self.through if keyed else None,
            unauthenticated=tuple(self.bad),
            anchor=self.anchor_state,
            # valid means authenticated: without a key a consistent stretch proves nothing
            stretches=tuple(self.stretches)
            if keyed
            else tuple((c, a, b, e, False) for c, a, b, e, _ in self.stretches),
        )
