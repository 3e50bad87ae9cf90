"""Signed checkpoints, forward-secure sealing and anchors, against an attacker who can write
the file: every CRC and chain digest recomputed, only the keys out of reach.

The forger below rewrites a one-segment log record by record with a consistent chain and
CRCs, as anyone with the file and docs/FORMAT.md can. The plain integrity check must accept
its output (that is the point: CRC and chain alone prove nothing against such an attacker);
the sealed checks must not. The attacks that defeated journald's sealing (CVE-2023-31437/8/9)
appear as tests: resealing old records with a later epoch's key, dropping a whole epoch,
records outside any seal, and bytes the seal does not cover.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from vigil import keys as _keys
from vigil.auditlog import (
    Anchor,
    FlightRecorder,
    ForwardSecureKey,
    FssSeed,
    LogReader,
    RingConfig,
    Sealer,
    crc32c,
    fss_generate,
    genesis_chain,
)
from vigil.auditlog._seal import checkpoint_message, fss_tag, next_key, signed_message
from vigil.cli import main
from vigil.errors import ConfigError, UsageError
from vigil.schemas import RecordType
from vigil.schemas import _records as R

from conftest import FakeClock

ONE_SEGMENT = RingConfig(size=4096 + 2 * (256 << 10), segment_size=256 << 10)
SEG0 = 4096
AREA = 1024
CP = R.BODIES[RecordType.CHECKPOINT]
EVERY = 20


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, object]:
    key = _keys.generate()
    fss_generate(tmp_path / "dev.fss-state", tmp_path / "dev.fss-seed")
    return {"key": key, "state": tmp_path / "dev.fss-state", "seed": tmp_path / "dev.fss-seed"}


def sealed_log(
    path: Path, keys: dict[str, object], n: int = 100, *, sign: bool = True, fss: bool = True
) -> None:
    sealer = Sealer(
        keys["key"] if sign else None,  # type: ignore[arg-type]
        fss=ForwardSecureKey(keys["state"]) if fss else None,  # type: ignore[arg-type]
        every_records=EVERY,
        every_ms=0,
    )
    with FlightRecorder.create(path, ONE_SEGMENT, sealer=sealer, clock=FakeClock()) as w:
        for i in range(n):
            w.annotate("note", f"record {i}")


def check(path: Path, keys: dict[str, object] | None = None, **extra: object):
    options: dict[str, object] = {}
    if keys is not None:
        options = {"public_key": keys["key"].public, "fss_seed": FssSeed.load(keys["seed"])}  # type: ignore[union-attr,arg-type]
    options.update(extra)
    with LogReader(path) as r:
        return r.verify(**options)  # type: ignore[arg-type]


def kinds(report) -> set[str]:
    return {f.kind for f in report.findings if not f.expected}


# --- the forger ---------------------------------------------------------------------------


def read_records(image: bytes) -> list[bytearray]:
    out, pos = [], SEG0 + AREA
    while True:
        length = struct.unpack_from("<I", image, pos)[0]
        if length == 0:
            return out
        out.append(bytearray(image[pos : pos + length]))
        pos += length


def forge(
    path: Path,
    edit: Callable[[list[bytearray]], list[bytearray]],
    *,
    fix_checkpoint: Callable[[bytearray, bytes], None] | None = None,
    checkpoints: bool = True,
) -> None:
    """Rewrite the log's records through ``edit``, renumber them, and recompute every chain
    digest and CRC. Checkpoint bodies are updated to the new seqs and digests (what anyone
    can do) unless ``checkpoints`` is False; ``fix_checkpoint(body, log_id)`` may also rewrite
    them (what an attacker with some key would do)."""
    image = bytearray(path.read_bytes())
    log_id = bytes(image[24:40])
    recs = edit(read_records(bytes(image)))
    image[SEG0 + AREA : SEG0 + ONE_SEGMENT.segment_size] = bytes(ONE_SEGMENT.segment_size - AREA)
    chain, pos = genesis_chain(log_id), SEG0 + AREA
    prev_cp = 0
    for seq, rec in enumerate(recs, start=1):
        struct.pack_into("<Q", rec, 8, seq)
        struct.pack_into("<Q", rec, 24, min(struct.unpack_from("<Q", rec, 24)[0], seq - 1))
        if checkpoints and rec[6] == RecordType.CHECKPOINT:
            body_len = struct.unpack_from("<H", rec, 4)[0]
            body = bytearray(rec[56 : 56 + body_len])
            struct.pack_into("<QQ", body, 16, seq - 1, prev_cp)
            body[48:80] = chain
            if fix_checkpoint is not None:
                fix_checkpoint(body, log_id)
            rec[56 : 56 + body_len] = body
            prev_cp = seq
        n = len(rec)
        chain = hashlib.sha256(chain + bytes(rec[: n - 36])).digest()
        rec[n - 36 : n - 4] = chain
        struct.pack_into("<I", rec, n - 4, crc32c(bytes(rec[: n - 4])))
        image[pos : pos + n] = rec
        pos += n
    path.write_bytes(bytes(image))


def body_of(rec: bytearray) -> bytearray:
    return rec[56 : 56 + struct.unpack_from("<H", rec, 4)[0]]


def is_checkpoint(rec: bytearray) -> bool:
    return rec[6] == RecordType.CHECKPOINT


def edit_text(index: int) -> Callable[[list[bytearray]], list[bytearray]]:
    """Change one character of the ``index``-th ANNOTATION's text."""

    def edit(recs: list[bytearray]) -> list[bytearray]:
        notes = [r for r in recs if r[6] == RecordType.ANNOTATION]
        rec = notes[index]
        at = rec.index(b"record ") + 7
        rec[at] = ord("9") if rec[at] != ord("9") else ord("8")
        return recs

    return edit


# --- a clean sealed log -------------------------------------------------------------------


def test_sealed_log_is_authenticated_stretch_by_stretch(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys)
    report = check(log, keys)
    seals = report.seals
    assert report.intact and not report.findings
    assert seals.checkpoints == seals.authenticated == len(seals.stretches) > 100 // EVERY
    assert seals.authenticated_through == report.last_seq - 1  # all but the final checkpoint
    assert seals.unauthenticated == ()
    # the stretches tile the log: each starts after the previous checkpoint
    for (cp_a, _, _, ep_a, _), (_, first_b, last_b, ep_b, ok) in zip(
        seals.stretches, seals.stretches[1:], strict=False
    ):
        assert first_b == cp_a + 1 and ep_b == ep_a + 1 and ok
        assert last_b - first_b + 1 <= EVERY


def test_plain_verify_of_sealed_log_says_not_authenticated(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys)
    report = check(log)  # no key given
    assert report.intact and report.seals.expected
    assert report.seals.authenticated == 0 and report.seals.authenticated_through is None


def test_crash_leaves_an_expected_unauthenticated_tail(tmp_path, keys):
    log = tmp_path / "log"
    sealer = Sealer(keys["key"], every_records=EVERY, every_ms=0)
    w = FlightRecorder.create(log, ONE_SEGMENT, sealer=sealer, durability="batch")
    for i in range(EVERY + 5):
        w.annotate("note", f"record {i}")
    w._drop()  # a crash: no closing checkpoint
    report = check(log, public_key=keys["key"].public)
    assert report.intact
    assert [f.kind for f in report.findings] == ["UNSEALED_TAIL"]
    tail = report.seals.unauthenticated[-1]
    assert tail[1] == report.last_seq and tail[1] - tail[0] + 1 <= EVERY
    # the next writer covers the crash's tail with its OPENED checkpoint
    FlightRecorder.open(log, sealer=Sealer(keys["key"], every_records=EVERY)).close()
    again = check(log, public_key=keys["key"].public)
    assert again.intact and not again.findings and again.seals.unauthenticated == ()


def test_time_interval_seals_a_quiet_log(tmp_path, keys):
    clock = FakeClock(step_ns=1000)
    sealer = Sealer(keys["key"], every_records=10_000, every_ms=5)
    with FlightRecorder.create(tmp_path / "log", ONE_SEGMENT, sealer=sealer, clock=clock) as w:
        w.annotate("note", "a")
        clock.advance(6_000_000)
        seq = w.annotate("note", "b")
        assert w.head_seq == seq + 1  # a TIME checkpoint followed record b
    with LogReader(tmp_path / "log") as r:
        body = next(r.records(since_seq=seq + 1)).body
    assert body["reason"].name == "TIME" and body["covered_seq"] == seq


# --- rewriting without the key ------------------------------------------------------------


@pytest.mark.requirement("SR-007")
def test_rewritten_log_passes_crc_and_chain_but_not_the_signatures(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, sign=True, fss=False)
    forge(log, edit_text(50))
    plain = check(log)
    assert plain.intact  # CRC and chain recomputed: the integrity check cannot tell
    sealed = check(log, public_key=keys["key"].public)
    assert not sealed.intact
    assert kinds(sealed) == {"SEAL_INVALID"}
    # exactly the stretch holding the edited record lost its authentication
    bad = [s for s in sealed.seals.stretches if not s[4]]
    assert len(bad) >= 1 and all(s[0] > 50 for s in bad)


def test_rewritten_log_with_stale_checkpoints_is_a_mismatch(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, sign=True, fss=False)
    forge(log, edit_text(30), checkpoints=False)  # chain and CRCs recomputed, bodies left
    assert "SEAL_MISMATCH" in kinds(check(log))  # the structure alone shows it
    assert "SEAL_MISMATCH" in kinds(check(log, public_key=keys["key"].public))


@pytest.mark.requirement("SR-007")
def test_another_devices_key_fails(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)
    other = _keys.generate()
    report = check(log, public_key=other.public)
    assert not report.intact and "WRONG_KEY" in kinds(report)
    assert report.seals.authenticated == 0


def test_checkpoint_replayed_from_another_log_fails(tmp_path, keys):
    a, b = tmp_path / "a", tmp_path / "b"
    sealed_log(a, keys, fss=False)
    sealed_log(b, keys, fss=False)  # same device key, another log
    donor = [body_of(r) for r in read_records(a.read_bytes()) if is_checkpoint(r)]

    def splice(recs: list[bytearray]) -> list[bytearray]:
        cps = [r for r in recs if is_checkpoint(r)]
        cps[2][56 : 56 + len(donor[2])] = donor[2]
        return recs

    forge(b, splice, fix_checkpoint=lambda body, log_id: None)
    report = check(b, public_key=keys["key"].public)
    assert not report.intact and "SEAL_INVALID" in kinds(report)  # signed for log a's id


def test_superblock_key_id_is_checked(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)
    image = bytearray(log.read_bytes())
    for copy in (0, 512):  # point both superblock copies at another key, fix their CRCs
        image[copy + 80 : copy + 112] = _keys.generate().key_id
        struct.pack_into("<I", image, copy + 252, crc32c(bytes(image[copy : copy + 252])))
    log.write_bytes(bytes(image))
    report = check(log, public_key=keys["key"].public)
    assert "WRONG_KEY" in kinds(report) and not report.intact


def test_checkpoint_bytes_outside_the_signature_do_not_exist(tmp_path, keys):
    """Every byte of a checkpoint body but the signature itself is signed: change any field
    (here the wall time and the interval, which an attacker would like to stretch), recompute
    chain and CRC, and the signature fails."""
    for offset in (40, 4, 2):  # real_ns, every_records, reason
        log = tmp_path / f"log{offset}"
        sealed_log(log, keys, fss=False)

        def nudge(recs: list[bytearray], offset: int = offset) -> list[bytearray]:
            cp = [r for r in recs if is_checkpoint(r)][3]
            cp[56 + offset] ^= 1
            return recs

        forge(log, nudge)
        report = check(log, public_key=keys["key"].public)
        assert kinds(report) == {"SEAL_INVALID"}, offset


def test_unsigned_records_appended_after_close_are_unsealed(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, n=30, fss=False)

    def append(recs: list[bytearray]) -> list[bytearray]:
        # cut the closing checkpoint, add records a writer without the key would write
        note = next(r for r in recs if r[6] == RecordType.ANNOTATION)
        return recs[:-1] + [bytearray(note) for _ in range(3)]

    forge(log, append)
    assert check(log).intact is False  # CLOSED followed by records and no checkpoint
    report = check(log, public_key=keys["key"].public)
    assert "UNSEALED" in kinds(report)


def test_too_many_records_between_checkpoints_is_unsealed(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)

    def insert(recs: list[bytearray]) -> list[bytearray]:
        i = [k for k, r in enumerate(recs) if is_checkpoint(r)][2]
        note = recs[i - 1]
        return recs[:i] + [bytearray(note) for _ in range(EVERY)] + recs[i:]

    # the attacker cannot re-sign: leave signatures stale (they fail too)
    forge(log, insert)
    report = check(log, public_key=keys["key"].public)
    assert not report.intact and kinds(report) & {"SEAL_INVALID", "UNSEALED"}


# --- forward-secure sealing ----------------------------------------------------------------


def stolen_state(keys: dict[str, object]) -> tuple[int, bytes]:
    """What an attacker who takes the device now learns: the current epoch and its key."""
    state = ForwardSecureKey(keys["state"])  # type: ignore[arg-type]
    return state.epoch, bytes(state._key)


def retag(epoch_key: Callable[[int], bytes | None]) -> Callable[[bytearray, bytes], None]:
    def fix(body: bytearray, log_id: bytes) -> None:
        epoch = struct.unpack_from("<Q", body, 32)[0]
        key = epoch_key(epoch)
        if key is not None:
            body[128:160] = fss_tag(key, checkpoint_message(log_id, bytes(body)))

    return fix


def keys_from(epoch0: int, key0: bytes) -> Callable[[int], bytes | None]:
    def derive(epoch: int) -> bytes | None:
        if epoch < epoch0:
            return None  # out of reach: erased before the compromise
        k = key0
        for _ in range(epoch - epoch0):
            k = next_key(k)
        return k

    return derive


def test_fss_state_moves_forward_and_old_keys_are_gone(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)
    epoch, key = stolen_state(keys)
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert report.intact and report.seals.tags_checked
    assert epoch == report.seals.checkpoints + 1  # the state is past every epoch used
    seed = FssSeed.load(keys["seed"])
    walk = seed.keys()
    assert key == walk.key(epoch)
    assert all(walk.key(e) != key for e in range(1, epoch))


def test_fss_forging_an_earlier_epoch_with_the_current_key_fails(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)
    epoch0, key0 = stolen_state(keys)
    forge(log, edit_text(10), fix_checkpoint=retag(keys_from(epoch0, key0)))
    assert check(log).intact  # consistent bytes
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert "SEAL_INVALID" in kinds(report) and not report.intact


def test_fss_resealing_old_records_under_a_newer_epoch_fails(tmp_path, keys):
    """CVE-2023-31439's shape: rewrite old records and seal them with the key the attacker
    has, relabelling the epochs so that every tag verifies under the label's key."""
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)
    epoch0, key0 = stolen_state(keys)
    derive = keys_from(epoch0, key0)

    def relabel(body: bytearray, log_id: bytes) -> None:
        epoch = struct.unpack_from("<Q", body, 32)[0]
        struct.pack_into("<Q", body, 32, epoch + epoch0)  # every epoch now within reach
        retag(derive)(body, log_id)

    forge(log, edit_text(10), fix_checkpoint=relabel)
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert not report.intact and "EPOCH_GAP" in kinds(report)


@pytest.mark.requirement("SR-007")
def test_fss_dropping_a_whole_epoch_fails(tmp_path, keys):
    """CVE-2023-31438's shape: cut out one sealed stretch and splice the rest together."""
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)

    def drop(recs: list[bytearray]) -> list[bytearray]:
        cps = [k for k, r in enumerate(recs) if is_checkpoint(r)]
        return recs[: cps[2] + 1] + recs[cps[3] + 1 :]

    epoch0, key0 = stolen_state(keys)
    forge(log, drop, fix_checkpoint=retag(keys_from(epoch0, key0)))
    assert kinds(check(log)) == {"EPOCH_GAP"}  # the numbering alone shows it, key or not
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert not report.intact and kinds(report) & {"EPOCH_GAP", "SEAL_INVALID"}
    assert "EPOCH_GAP" in kinds(report)


def test_fss_sealed_log_without_tags_is_refused(tmp_path, keys):
    """Records not covered by any seal while sealing was expected (CVE-2023-31437's shape):
    the attacker strips the tags and claims the log was never sealed."""
    log = tmp_path / "log"
    sealed_log(log, keys, sign=False)

    def strip(body: bytearray, log_id: bytes) -> None:
        body[1] = 0
        body[112:160] = bytes(48)

    forge(log, lambda recs: recs, fix_checkpoint=strip)
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert "SEAL_INVALID" in kinds(report)


def test_fss_restart_continues_the_epochs(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, n=30, sign=False)
    state = ForwardSecureKey(keys["state"])
    with FlightRecorder.open(log, sealer=Sealer(fss=state, every_records=EVERY)) as w:
        w.annotate("note", "after restart")
    report = check(log, fss_seed=FssSeed.load(keys["seed"]))
    assert report.intact and not report.findings
    epochs = [s[3] for s in report.seals.stretches]
    assert epochs == list(range(1, len(epochs) + 1))


def test_fss_state_of_another_log_is_refused(tmp_path, keys):
    sealed_log(tmp_path / "a", keys, n=5, sign=False)
    with pytest.raises(ConfigError) as e:
        FlightRecorder.create(
            tmp_path / "b", ONE_SEGMENT, sealer=Sealer(fss=ForwardSecureKey(keys["state"]))
        )
    assert e.value.code == "DIA-3014"


def test_fss_needs_durability(tmp_path, keys):
    with pytest.raises(ConfigError):
        FlightRecorder.create(
            tmp_path / "log",
            ONE_SEGMENT,
            durability="none",
            sealer=Sealer(fss=ForwardSecureKey(keys["state"])),
        )


# --- opening with the wrong sealer ----------------------------------------------------------


def test_sealed_log_needs_its_sealer(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, n=5, fss=False)
    with pytest.raises(ConfigError) as e:
        FlightRecorder.open(log)
    assert e.value.code == "DIA-3013"
    with pytest.raises(ConfigError) as e:
        FlightRecorder.open(log, sealer=Sealer(_keys.generate()))
    assert e.value.code == "DIA-3014"
    plain = tmp_path / "plain"
    FlightRecorder.create(plain, ONE_SEGMENT).close()
    with pytest.raises(ConfigError) as e:
        FlightRecorder.open(plain, sealer=Sealer(keys["key"]))
    assert e.value.code == "DIA-3014"


# --- anchors --------------------------------------------------------------------------------


def take_anchor(log: Path, out: Path) -> Anchor:
    assert main(["anchor", str(log), "--out", str(out)]) == 0
    return Anchor.load(str(out))


def test_truncation_before_an_anchor_is_caught_only_with_it(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)
    anchor = take_anchor(log, tmp_path / "anchor.json")

    def cut(recs: list[bytearray]) -> list[bytearray]:
        cps = [k for k, r in enumerate(recs) if is_checkpoint(r)]
        return recs[: cps[2] + 1]  # end the log cleanly at an earlier checkpoint

    forge(log, cut)
    without = check(log, public_key=keys["key"].public)
    assert without.intact  # a clean log that simply ends early
    report = check(log, public_key=keys["key"].public, anchor=anchor)
    assert not report.intact and kinds(report) == {"ANCHOR"}
    assert report.seals.anchor == "missing"


@pytest.mark.requirement("SR-007")
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epoch", 99),
        ("covered_seq", 3),
        ("chain", "00" * 32),
        ("chain", "00"),
        ("key_id", "00" * 32),
        ("signature", "00" * 64),
        ("real_ns", 1),
        ("seq", "48"),  # the old parser took these for 48 and 1
        ("seq", 48.0),
        ("seq", True),
        ("seq", 1 << 64),
    ],
    ids=lambda v: str(v)[:12],
)
def test_an_anchor_whose_fields_disagree_with_its_body_is_refused(
    tmp_path, keys, key: str, value: object
) -> None:
    """What a person reads in the anchor file is what verify checks: the fields that restate
    the checkpoint body (once ignored, so editing them changed nothing) must agree with it."""
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)
    good = take_anchor(log, tmp_path / "anchor.json").to_json()
    assert Anchor.from_json(good).to_json() == good  # the control: an untouched file reads
    with pytest.raises(UsageError) as exc:
        Anchor.from_json({**good, key: value})
    assert exc.value.code == "DIA-1002" and key in exc.value.message


def test_rollback_to_an_older_copy_is_caught_only_against_an_anchor(tmp_path, keys):
    log = tmp_path / "log"
    sealer = Sealer(keys["key"], every_records=EVERY, every_ms=0)
    with FlightRecorder.create(log, ONE_SEGMENT, sealer=sealer) as w:
        for i in range(30):
            w.annotate("note", f"record {i}")
    shutil.copy(log, tmp_path / "old")
    with FlightRecorder.open(log, sealer=Sealer(keys["key"], every_records=EVERY)) as w:
        w.annotate("note", "the incident")
    anchor = take_anchor(log, tmp_path / "anchor.json")
    assert check(log, public_key=keys["key"].public, anchor=anchor).intact
    os.replace(tmp_path / "old", log)  # the attacker puts the older copy back
    assert check(log, public_key=keys["key"].public).intact  # nothing inside tells
    report = check(log, public_key=keys["key"].public, anchor=anchor)
    assert not report.intact and report.seals.anchor == "missing"


def test_forked_log_differs_from_the_anchor(tmp_path, keys):
    log = tmp_path / "log"
    sealed_log(log, keys, fss=False)
    anchor = take_anchor(log, tmp_path / "anchor.json")
    forge(log, edit_text(90))  # rewrites the anchored stretch
    report = check(log, anchor=anchor)
    assert "ANCHOR" in kinds(report) and report.seals.anchor == "differs"


def test_forged_anchor_and_anchor_of_another_log(tmp_path, keys):
    a, b = tmp_path / "a", tmp_path / "b"
    sealed_log(a, keys, fss=False)
    sealed_log(b, keys, n=10, fss=False)
    anchor = take_anchor(a, tmp_path / "anchor.json")
    report = check(b, public_key=keys["key"].public, anchor=anchor)
    assert report.seals.anchor == "other log" and "ANCHOR" in kinds(report)
    body = bytearray(anchor.body)
    body[40] ^= 1
    forged = Anchor(anchor.log_id, anchor.seq, anchor.epoch, bytes(body), anchor.record_chain)
    report = check(a, public_key=keys["key"].public, anchor=forged)
    assert report.seals.anchor == "forged"


# --- keys and the command line ---------------------------------------------------------------


def test_cli_keygen_verify_and_exit_codes(tmp_path, capsys):
    prefix = tmp_path / "dev"
    assert main(["keygen", str(prefix), "--fss"]) == 0
    for suffix, mode in ((".key", 0o600), (".pub", 0o644), (".fss-state", 0o600)):
        assert os.stat(f"{prefix}{suffix}").st_mode & 0o777 == mode
    assert os.stat(f"{prefix}.fss-seed").st_mode & 0o777 == 0o600
    assert main(["keygen", str(prefix)]) == 2  # never overwrites
    key = _keys.load_private(f"{prefix}.key")
    keys = {"key": key, "state": Path(f"{prefix}.fss-state"), "seed": Path(f"{prefix}.fss-seed")}
    log = tmp_path / "log"
    sealed_log(log, keys)
    capsys.readouterr()
    args = ["verify", str(log), "--pubkey", f"{prefix}.pub", "--fss-seed", f"{prefix}.fss-seed"]
    assert main([*args, "--checkpoints"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints valid (signatures and tags checked)" in out
    assert "checkpoint 2 (epoch 1): records 1..1 valid" in out
    secret = key._key.private_bytes_raw().hex()  # type: ignore[union-attr]
    assert secret not in out
    forge(log, edit_text(5), fix_checkpoint=None)
    assert main(args) == 1
    other = _keys.generate()
    other.public.save(tmp_path / "other.pub")
    assert main(["verify", str(log), "--pubkey", str(tmp_path / "other.pub")]) == 1
    assert main(["verify", str(log), "--pubkey", str(tmp_path / "missing.pub")]) == 2
    assert main(["anchor", str(tmp_path / "log")]) == 0
    plain = tmp_path / "plain"
    FlightRecorder.create(plain, ONE_SEGMENT).close()
    assert main(["anchor", str(plain)]) == 2


def test_signed_message_binds_the_log_identity():
    body = bytes(CP.fixed_size + 2)
    assert signed_message(b"a" * 16, body) != signed_message(b"b" * 16, body)
    assert checkpoint_message(b"a" * 16, body) != checkpoint_message(b"b" * 16, body)
