"""The ``vigil`` subcommands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
from typing import Any

from vigil.auditlog import ClockStep, LogReader, LogRecord, RingConfig, clock_steps
from vigil.cli import _seal
from vigil.errors import UsageError
from vigil.schemas import CallFlags, RecordType

TYPE_NAMES = tuple(t.name.lower() for t in RecordType)


def add_parsers(sub: Any) -> None:
    """``demo``, ``verify``, ``dump``, ``replay`` and ``inspect``: their options, beside them."""
    demo_p = sub.add_parser(
        "demo", help="run the supervisor through every state; verify and replay its log"
    )
    demo_p.add_argument(
        "--out", default="vigil-demo", help="output directory (default: %(default)s)"
    )
    demo_p.add_argument(
        "--calls", type=int, default=2000, help="inference calls (default: %(default)s)"
    )
    demo_p.add_argument("--seed", type=int, default=7, help="workload seed (default: %(default)s)")
    demo_p.add_argument(
        "--segments",
        type=int,
        default=127,
        help="segments in the log's ring (at least 2; with few, small segments the ring wraps "
        "and `vigil verify` shows eviction) (default: %(default)s)",
    )
    demo_p.add_argument(
        "--segment-size",
        type=int,
        default=256 << 10,
        metavar="BYTES",
        help="bytes per segment: a multiple of 4096, 8192 .. 1 GiB (default: %(default)s)",
    )

    demo_p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the reference workload runs (default: %(default)s)",
    )
    demo_p.add_argument(
        "--preset",
        default="tiny",
        choices=("tiny", "gpu"),
        help="the reference decoder's size: tiny (CPU, ~0.2 M parameters) or gpu "
        "(~156 M, bfloat16; for --device cuda) (default: %(default)s)",
    )
    demo_p.set_defaults(run=demo)

    verify_p = sub.add_parser("verify", help="check a log's integrity; exit 0 intact, 1 not")
    verify_p.add_argument("path")
    verify_p.add_argument("--json", action="store_true", help="print the report as JSON")
    verify_p.add_argument(
        "--max-findings",
        type=int,
        default=1000,
        help="findings to list; the rest are counted (default: %(default)s)",
    )
    verify_p.add_argument(
        "--clock-steps",
        action="store_true",
        help="also list where each session's wall clock (realtime, TAI or PTP) stepped",
    )
    _seal.add_verify_options(verify_p)
    verify_p.set_defaults(run=verify)

    dump_p = sub.add_parser("dump", help="print a log's records in sequence order")
    dump_p.add_argument("path")
    dump_p.add_argument("--format", choices=("jsonl", "table"), default="table")
    dump_p.add_argument(
        "--type",
        action="append",
        dest="types",
        metavar="T",
        help="only records of this type (repeatable): " + ", ".join(TYPE_NAMES),
    )
    dump_p.add_argument(
        "--since", help="first record: a sequence number or an ISO-8601 time (inclusive)"
    )
    dump_p.add_argument(
        "--until", help="last record: a sequence number or an ISO-8601 time (inclusive)"
    )
    dump_p.add_argument(
        "--trace",
        metavar="HEX",
        help="only the records of this W3C trace id (32 hex digits): its calls' INFERENCE and "
        "REJECTED records and their OUTPUT_DIGEST records (format 1.2)",
    )
    dump_p.set_defaults(run=dump)

    replay_p = sub.add_parser(
        "replay", help="re-derive every state change from the recorded calls and policy"
    )
    replay_p.add_argument("path")
    replay_p.add_argument("--json", action="store_true", help="print the report as JSON")
    replay_p.set_defaults(run=replay)

    inspect_p = sub.add_parser("inspect", help="show geometry, head, records, segments and wear")
    inspect_p.add_argument("path")
    inspect_p.add_argument("--json", action="store_true", help="print as JSON")
    inspect_p.set_defaults(run=inspect)


def demo(args: argparse.Namespace) -> int:
    if args.calls < 1 or args.calls > 10_000_000:
        raise UsageError(f"--calls {args.calls}: must be in [1, 10000000]")
    if not 2 <= args.segments <= 1 << 24:
        raise UsageError(f"--segments {args.segments}: must be in [2, 2^24]")
    size = args.segment_size
    if size % 4096 or not 8192 <= size <= 1 << 30:
        raise UsageError(f"--segment-size {size}: must be a multiple of 4096 in [8192, 2^30]")
    ring = RingConfig(size=4096 + args.segments * size, segment_size=size)
    from vigil.cli import _demo  # noqa: PLC0415 - torch only when needed

    return _demo.run(args.out, args.calls, args.seed, args.device, args.preset, ring=ring)


def verify(args: argparse.Namespace) -> int:
    if args.max_findings < 0:
        raise UsageError(f"--max-findings {args.max_findings}: must be >= 0")
    options = _seal.verify_options(args)
    with LogReader(args.path) as reader:
        report = reader.verify(max_findings=args.max_findings, **options)
        steps = _clock_steps(reader, args.max_findings) if args.clock_steps else None
    if args.json:
        out = report.to_json()
        if steps is not None:
            out["clock_steps"] = [s.to_json() for s in steps]
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0 if report.intact else 1
    verdict = "INTACT" if report.intact else "NOT INTACT"
    span = (
        f"records {report.first_seq}..{report.last_seq}"
        if report.first_seq is not None
        else "no records"
    )
    print(f"{report.path}: {verdict}")
    print(
        f"  checked {report.records} records ({span}), {report.bytes} bytes in "
        f"{report.segments} segments, {report.seconds * 1000:.1f} ms"
        + ("; a writer has it open" if report.live else "")
    )
    if report.retained_from is not None:
        print(
            f"  retention: every record from {report.retained_from} must be present "
            f"({report.retention})"
        )
    for kind, n in sorted(report.counts.items()):
        print(f"  {kind}: {n}")
    for f in report.findings:
        where = " ".join(
            f"{k}={v}"
            for k, v in (("seq", f.seq), ("segment", f.segment), ("offset", f.offset))
            if v is not None
        )
        tag = "expected" if f.expected else "FAILURE"
        print(f"  [{f.code} {f.kind} {tag}] {where}: {f.message}")
    if report.findings_dropped:
        print(f"  ... {report.findings_dropped} more findings not listed (--max-findings)")
    _seal.print_seals(report, args)
    if steps is not None:
        print(f"  clock steps: {len(steps)}" + ("" if steps else " (none)"))
        for step in steps:
            print(f"  [{step.code} CLOCK_STEP] seq={step.seq}: {step.describe()}")
    return 0 if report.intact else 1


def _clock_steps(reader: LogReader, limit: int) -> list[ClockStep]:
    """The first ``limit`` clock steps of the log (a second pass, over decoded records)."""
    return list(itertools.islice(clock_steps(reader.records()), limit))


def replay(args: argparse.Namespace) -> int:
    from vigil.supervisor import replay as run_replay  # noqa: PLC0415 - torch only when needed

    report = run_replay(args.path)
    code = REPLAY_EXIT[report.verdict]
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return code
    print(f"{report.path}: {report.verdict}" + _VERDICT_TAIL[report.verdict])
    print(
        f"  {report.sessions} session(s), {report.counted} counted calls, "
        f"{report.transitions} transitions checked"
    )
    for f in report.findings:
        tag = "expected" if f.expected else "FAILURE"
        print(f"  [{f.code} {f.kind} {tag}] seq={f.seq}: {f.message}")
    return code


REPLAY_EXIT = {"AGREES": 0, "DISAGREES": 1, "INCONCLUSIVE": 3}
"""``vigil replay``'s exit code for each verdict."""
_VERDICT_TAIL = {
    "AGREES": " with its recorded policy",
    "DISAGREES": " with its recorded policy",
    "INCONCLUSIVE": ": replay could not check (all of) the log",
}


def _bound(text: str | None, flag: str) -> tuple[str, int] | None:
    """Parse a --since/--until value: a sequence number or an ISO-8601 time."""
    if text is None:
        return None
    if text.isdigit():
        return "seq", int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: give a sequence number or an ISO-8601 time such as "
            "2026-11-23T10:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a person typing it means it
    return "time", int(when.timestamp() * 1e9)


def dump(args: argparse.Namespace) -> int:
    types = None
    if args.types:
        unknown = [t for t in args.types if t.lower() not in TYPE_NAMES]
        if unknown:
            raise UsageError(f"--type {unknown[0]!r}: choose from {', '.join(TYPE_NAMES)}")
        types = [RecordType[t.upper()] for t in args.types]
    since, until = _bound(args.since, "--since"), _bound(args.until, "--until")
    trace = _trace_arg(args.trace)
    traced: set[int] = set()  # seqs of the trace's INFERENCE records, for their digests
    out = sys.stdout
    with LogReader(args.path) as reader:
        records = reader.records(
            since_seq=since[1] if since and since[0] == "seq" else None,
            until_seq=until[1] if until and until[0] == "seq" else None,
            types=types,
        )
        if args.format == "table":
            out.write(f"{'SEQ':>10}  {'TIME (UTC)':<26}  {'TYPE':<10}  SUMMARY\n")
        for rec in records:
            if since and since[0] == "time" and rec.real_ns < since[1]:
                continue
            if until and until[0] == "time" and rec.real_ns > until[1]:
                continue
            if trace is not None and not _of_trace(rec, trace, traced):
                continue
            if args.format == "jsonl":
                out.write(json.dumps(rec.to_json(), sort_keys=True) + "\n")
            else:
                out.write(
                    f"{rec.seq:>10}  {_utc(rec.real_ns):<26}  {rec.type_name:<10}  "
                    f"{summarize(rec)}\n"
                )
    return 0


def _trace_arg(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        trace = bytes.fromhex(text)
    except ValueError:
        trace = b""
    if len(trace) != 16:
        raise UsageError(f"--trace {text!r}: a W3C trace id is 32 hex digits")
    return trace


def _of_trace(rec: LogRecord, trace: bytes, traced: set[int]) -> bool:
    """Whether ``rec`` belongs to the trace: it carries the trace id, or it is the
    OUTPUT_DIGEST of a call that does (``traced`` collects those calls' seqs)."""
    if rec.body.get("trace_id") == trace:
        if rec.type == RecordType.INFERENCE:
            traced.add(rec.seq)
        return True
    if rec.type == RecordType.OUTPUT_DIGEST:
        named = rec.body.get("inference_seq")
        if named in traced:
            traced.discard(named)
            return True
    return False


def _utc(ns: int) -> str:
    try:
        when = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"@{ns}ns"
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _trace_note(body: dict[str, Any]) -> str:
    trace = body.get("trace_id")
    return "" if trace is None else f" trace={trace.hex()}"


def summarize(rec: LogRecord) -> str:
    """A one-line, human summary of a record's body."""
    b = rec.body
    if "raw" in b:
        why = b.get("undecodable", "unknown type or version")
        return f"<{len(b['raw'])} bytes: {why}>"
    t = rec.type
    if t == RecordType.INFERENCE:
        code = f" DIA-{b['code']:04d}" if b["code"] else ""
        age = f" age={b['answer_age_ns'] / 1e6:.1f}ms" if b["answer_age_ns"] else ""
        out = "follows" if b["flags"] & CallFlags.DIGEST_FOLLOWS else b["output_digest"].hex()[:8]
        return (
            f"{_name(b['state'])} {_name(b['served_by'])} {_name(b['outcome'])}{code} "
            f"latency={b['latency_ns'] / 1e6:.3f}ms deadline={b['deadline_ns'] / 1e6:.1f}ms{age} "
            f"req={b['request_id'].hex()[:8]} in={b['input_digest'].hex()[:8]} "
            f"out={out}{_trace_note(b)}"
        )
    if t == RecordType.OUTPUT_DIGEST:
        return (
            f"of seq {b['inference_seq']} out={b['output_digest'].hex()[:8]} "
            f"bytes={b['output_bytes']} lag={b['lag_ns'] / 1e6:.3f}ms"
        )
    if t == RecordType.TRANSITION:
        code = f" DIA-{b['code']:04d}" if b["code"] else ""
        cause = f" (cause seq {b['cause_seq']})" if b["cause_seq"] else ""
        return f"{_name(b['from_state'])} -> {_name(b['to_state'])}{code}{cause}: {b['reason']}"
    if t == RecordType.REJECTED:
        return f"DIA-{b['code']:04d} req={b['request_id'].hex()[:8]}{_trace_note(b)}: {b['reason']}"
    if t == RecordType.ANNOTATION:
        return f"{b['key']}: {b['text']}"
    if t == RecordType.LIFECYCLE:
        return (
            f"{_name(b['event'])} pid={b['pid']} durability={_name(b['durability'])} {b['detail']}"
        )
    return f"<{len(b.get('opaque', b''))} bytes>"


def inspect(args: argparse.Namespace) -> int:
    with LogReader(args.path) as reader:
        info = reader.inspect()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    g, h, s = info["geometry"], info["head"], info["segments"]
    print(f"{info['path']}  (log {info['log_id']}, format {info['format']})")
    print(
        f"  geometry: {g['file_size']} bytes = superblock {g['segments_offset']} + "
        f"{g['segment_count']} segments x {g['segment_size']}; frozen quota {g['frozen_quota']}"
        + ("; TRUNCATED" if g["truncated"] else "")
    )
    print(f"  writer:   {'open (live)' if info['live'] else 'none'}")
    if h is None:
        print("  head:     empty log")
    else:
        print(
            f"  head:     segment {h['segment']} (generation {h['generation']}), last seq "
            f"{h['last_seq']} at offset {h['end_offset']}"
            + (f", then {h['after']}" if h["after"] else "")
        )
        print(
            f"  records:  seq {info['first_seq']}..{h['last_seq']} retained "
            f"(guaranteed from {h['retained_from']})"
        )
    w = s["wear"]
    print(
        f"  segments: {s['counts']}; wear min/mean/max {w['min']}/{w['mean']:.2f}/{w['max']}"
        f" (unfrozen: {s['wear_unfrozen']['min']}/{s['wear_unfrozen']['mean']:.2f}/"
        f"{s['wear_unfrozen']['max']})"
    )
    print(f"  frozen:   {s['frozen'] or 'none'}")
    return 0


__all__ = ["REPLAY_EXIT", "TYPE_NAMES", "demo", "dump", "inspect", "replay", "summarize", "verify"]
