"""``vigil demo``: the supervisor around the signed reference decoder, driven through every
state.

The demo first signs the reference model: it draws the weights of a :class:`Decoder`
(``DecoderConfig.tiny()`` by default), writes them as a signed model directory with a key made
for this run, and loads the model back only through the verifying loader -- so every
INFERENCE record names the digest of a signed artifact.

Frames of token ids arrive at 1 kHz, like a sensor stream. A seeded fault plan makes the
primary fail in every way the supervisor must handle -- exceptions, NaN logits, wrong shapes,
out-of-memory, slow calls, a hang past the deadline, and finally a persistent failure whose
recoveries keep failing until SAFE_STOP -- while bad inputs are sent now and then (token ids
out of the vocabulary, negative ids, float "ids": rejected by the input contract; an output
contract catches wrong shapes). The fallback chain is the decoder's cheap bigram stand-in
(:class:`DecoderFallback`), then the last good answer, then uniform logits. An operator reset
(audited) ends the safe stop. A progress line shows the state, the calls, the fallbacks and
the p99 latency. At the end the log is verified and replayed against its policy, and a
timeline picture is drawn from it.

The faults are scheduled by the primary's own call count, so the sequence of outcomes is the
same on every machine; how many calls the fallback answers in between depends on timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from vigil import keys as _keys
from vigil.auditlog import LogReader, RingConfig
from vigil.errors import InvalidInput, Unavailable
from vigil.fsm import Policy
from vigil.model import DecoderConfig, DecoderFallback, load_model
from vigil.schemas import Contract, ServedBy, State, TensorSpec
from vigil.supervisor import Constant, FallbackModel, LastGood, Supervisor, replay
from vigil.testing._faults import Fault, FaultPlan, FaultyModel
from vigil.testing._models import build_reference, save_reference_decoder

MS = 1_000_000
POLICY = Policy(
    consecutive_failures=3,
    window=20,
    min_calls=10,
    failure_rate=0.5,
    slow_call_ns=10 * MS,
    slow_rate=0.5,
    cooldown_ns=15 * MS,
    cooldown_backoff=2.0,
    cooldown_max_ns=120 * MS,
    probes_required=5,
    probe_mode="shadow",
    max_recovering_ns=2_000 * MS,
    max_failed_recoveries=3,
    failed_recovery_period_ns=60_000 * MS,
)
DEADLINE_NS = 25 * MS
FRAME_PERIOD_S = 0.001  # the frames arrive like a 1 kHz sensor stream
SAFE_STOP_HOLD = 100  # calls answered in SAFE_STOP before the operator resets
TOKENS = 16  # token ids per frame


def plan_for(seed: int, calls: int) -> FaultPlan:
    """The fault schedule, by the primary's call index, scaled to the demo's length."""
    k = max(calls // 2000, 1)
    plan = FaultPlan(seed)
    plan.at_calls([150 * k], Fault.SLOW, delay_s=0.012)
    plan.at_calls(range(200 * k, 200 * k + 3), Fault.EXCEPTION)  # trip: 3 in a row
    plan.at_calls([400 * k], Fault.NAN)
    plan.at_calls([400 * k + 1], Fault.OOM)
    plan.at_calls([400 * k + 2], Fault.WRONG_SHAPE)  # trip again ...
    plan.at_calls([400 * k + 3], Fault.EXCEPTION)  # ... and the first probe fails
    plan.at_calls([550 * k], Fault.HANG, hang_s=0.15)  # past the deadline, hung for a while
    plan.at_calls(range(700 * k, 700 * k + 7), Fault.EXCEPTION)  # recovery keeps failing
    plan.with_probability(0.01, Fault.SLOW, delay_s=0.012)
    return plan


def run(
    out: str,
    calls: int,
    seed: int,
    device: str,
    preset: str = "tiny",
    *,
    ring: RingConfig | None = None,
) -> int:
    """Write ``out/flight.vigil``, ``out/timeline.png`` and the signed model ``out/model``
    (with its public key ``out/model-signer.pub``); return the exit code.

    ``ring``: the log's geometry (default 127 segments of 256 KiB, which 10,000 calls do not
    fill); a small ring wraps, so that verify shows eviction."""
    dev = _device(device)
    path = _fresh_log(out)
    torch.manual_seed(seed)
    loaded = _signed_reference(out, preset, seed)
    reference = loaded.module.to(dev)
    fallback = DecoderFallback(reference)
    plan = plan_for(seed, calls)
    primary = FaultyModel(_no_grad(reference), plan)
    inputs = _Inputs.for_model(reference.config, dev)
    start = time.perf_counter()
    with _supervisor(path, primary, fallback, loaded.digest, inputs, ring=ring) as sup:
        artifact = loaded.artifact
        sup.log.annotate(
            "vigil.demo",
            f"{calls} calls, seed {seed}, device {dev}; model {artifact.name} "
            f"{artifact.version} ({preset}), digest {artifact.digest.hex()}",
        )
        _drive(sup, calls, inputs)
        stats = sup.statistics()
        plan.release()
    elapsed = time.perf_counter() - start
    with LogReader(path) as reader:
        report = reader.verify()
    replayed = replay(path)
    png = os.path.join(out, "timeline.png")
    from vigil.cli import _timeline  # noqa: PLC0415 - matplotlib only when drawing

    _timeline.render(path, png, f"vigil demo: {calls} calls on {dev} (seed {seed})")
    model_dir = loaded.artifact.directory
    print(f"vigil demo: wrote {path}, {png} and the signed model {model_dir}")
    print(
        f"  model: reference decoder ({preset}, "
        f"{sum(p.numel() for p in reference.parameters()):,} parameters), "
        f"digest {loaded.digest.hex()[:16]}… in every INFERENCE record"
    )
    _print_session(calls, elapsed, dev, stats, len(plan.history))
    # A ring small enough to wrap evicts the session's start (OPENED, its policy): replay
    # then has nothing to check and says INCONCLUSIVE, which is the truth, not a failure.
    evicted_start = replayed.verdict == "INCONCLUSIVE" and bool(report.counts.get("EVICTED"))
    _print_checks(report, replayed, evicted_start)
    _print_next(path, model_dir)
    return 0 if report.intact and (replayed.agrees or evicted_start) else 1


def _fresh_log(out: str) -> str:
    """The log's path in ``out`` (created), the demo's own log from a previous run removed."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "flight.vigil")
    if os.path.exists(path):
        os.remove(path)
    return path


@dataclass
class _Inputs:
    """What the demo feeds the decoder and what it promises about it: the input contract
    (token ids within the vocabulary), the output contract (the logits' shape and dtype), a
    loop of good frames and the bad inputs sent now and then."""

    contract: Contract
    output_contract: Contract
    frames: torch.Tensor
    bad: list[torch.Tensor]
    zeros: torch.Tensor  # uniform logits: the last fallback's constant answer

    @classmethod
    def for_model(cls, config: DecoderConfig, dev: torch.device) -> _Inputs:
        dtype, vocab = config.torch_dtype, config.vocab_size
        frames = torch.randint(0, vocab, (64, 1, TOKENS), device=dev)
        return cls(
            contract=Contract(
                TensorSpec(
                    shape=(1, TOKENS), dtype=torch.int64, device=dev.type, min=0, max=vocab - 1
                )
            ),
            output_contract=Contract(
                TensorSpec(shape=(1, TOKENS, vocab), dtype=dtype, device=dev.type)
            ),
            frames=frames,
            bad=[  # each rejected by the input contract with its own code
                torch.full((1, TOKENS), vocab, device=dev),  # an id past the vocabulary
                torch.full((1, TOKENS), -1, device=dev),  # a negative id
                frames[0].to(torch.float32),  # float "ids"
            ],
            zeros=torch.zeros(1, TOKENS, vocab, dtype=dtype, device=dev),
        )

    def frame(self, i: int) -> torch.Tensor:
        """Call ``i``'s input: every 250th a bad one (in turn), else the next frame."""
        if i % 250 == 249:
            return self.bad[i // 250 % len(self.bad)]
        return self.frames[i % len(self.frames)]


def _supervisor(
    path: str,
    primary: FaultyModel,
    fallback: DecoderFallback,
    model_digest: bytes,
    inputs: _Inputs,
    *,
    ring: RingConfig | None,
) -> Supervisor:
    """The faulty primary under supervision, with the fallback chain: the decoder's bigram
    stand-in, the last good answer (200 ms), uniform logits."""
    return Supervisor(
        primary,
        log=path,
        policy=POLICY,
        deadline_ns=DEADLINE_NS,
        input_contract=inputs.contract,
        output_contract=inputs.output_contract,
        model_digest=model_digest,
        fallback=[
            FallbackModel(_no_grad(fallback)),
            LastGood(200 * MS),
            Constant(inputs.zeros),
        ],
        ring=ring or RingConfig(size=32 << 20, segment_size=256 << 10),
    )


def _drive(sup: Supervisor, calls: int, inputs: _Inputs) -> None:
    """Send ``calls`` frames at the frame rate, showing progress; an operator resets the
    supervisor after it has held SAFE_STOP for SAFE_STOP_HOLD calls."""
    progress = _Progress(calls)
    held = 0
    next_frame = time.perf_counter()
    for i in range(calls):
        next_frame += FRAME_PERIOD_S
        time.sleep(max(0.0, next_frame - time.perf_counter()))
        with contextlib.suppress(InvalidInput, Unavailable):  # both are recorded
            sup.infer(inputs.frame(i))
        if sup.state is State.SAFE_STOP:
            held += 1
            if held == SAFE_STOP_HOLD:
                sup.reset("demo operator: the persistent fault was cleared")
        if i % 50 == 0 or i == calls - 1:
            progress.show(i + 1, sup)
    progress.done()


def _print_session(calls: int, elapsed: float, dev: torch.device, stats: Any, faults: int) -> None:
    """Who answered how many calls, and the latency."""
    served = stats.served
    print(
        f"  {calls} calls in {elapsed:.1f} s on {dev}: "
        f"{served.get('PRIMARY', 0)} by the primary, {served.get('FALLBACK', 0)} by the "
        f"fallback model, {served.get('LAST_GOOD', 0) + served.get('CONSTANT', 0)} by "
        f"last-good/constant, {stats.rejected} bad inputs rejected; "
        f"{stats.machine.transitions} transitions, faults injected: {faults}"
    )
    print(
        f"  latency p50 {stats.latency_p50_ns / 1e6:.2f} ms, p99 "
        f"{stats.latency_p99_ns / 1e6:.2f} ms (deadline {DEADLINE_NS / 1e6:.0f} ms)"
    )


def _print_checks(report: Any, replayed: Any, evicted_start: bool) -> None:
    """What verify and replay said of the log."""
    print(
        f"  verify: {'INTACT' if report.intact else 'NOT INTACT'} ({report.records} records"
        + (
            f" {report.first_seq}..{report.last_seq}, older ones evicted by the ring"
            if report.counts.get("EVICTED")
            else ""
        )
        + "); "
        + f"replay: {replayed.verdict} "
        f"({replayed.transitions} transitions"
        + (", the session's policy left the ring with its start" if evicted_start else "")
        + ")"
    )


def _print_next(path: str, model_dir: str) -> None:
    """The commands to try on what the demo wrote."""
    vigil = _command_name()
    print("  next:")
    print(f"    {vigil} verify {path}")
    print(f"    {vigil} replay {path}")
    print(f"    {vigil} dump {path} --type transition")
    print(f"    {vigil} inspect {path}")
    print(f"    {vigil} model verify {model_dir} --pubkey {model_dir}-signer.pub")


def _signed_reference(out: str, preset: str, seed: int) -> Any:
    """Sign the reference decoder's weights with a key made for this run, then load them back
    through the verifying loader (a :class:`vigil.model.LoadedModel`)."""
    key = _keys.generate(_keys.KeyAlgorithm.ECDSA_P384)
    model_dir = os.path.join(out, "model")
    public_path = model_dir + "-signer.pub"
    with contextlib.suppress(FileNotFoundError):
        os.remove(public_path)  # the demo's own key from a previous run
    key.public.save(public_path)
    save_reference_decoder(model_dir, key, preset=preset, seed=seed)
    return load_model(model_dir, key.public, build_reference)


def _no_grad(model: torch.nn.Module) -> Any:
    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(x)
        return out

    return call


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class _Progress:
    """One status line: rewritten in place on a terminal, a line per quarter otherwise."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.tty = sys.stderr.isatty()
        self.quarter = 0

    def show(self, done: int, sup: Supervisor) -> None:
        s = sup.statistics()
        fallbacks = s.calls - s.served.get(ServedBy.PRIMARY.name, 0)
        line = (
            f"  [{s.state.name:<10}] calls {done:>6}/{self.calls}  fallbacks {fallbacks:>5}"
            f"  rejected {s.rejected:>3}  p99 {s.latency_p99_ns / 1e6:6.2f} ms"
        )
        if self.tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif done * 4 >= (self.quarter + 1) * self.calls:
            self.quarter += 1
            print(line, file=sys.stderr)

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _command_name() -> str:
    """``vigil`` when that is on PATH, else the path this command was started by."""
    invoked = sys.argv[0]
    if shutil.which("vigil") or not invoked.endswith("vigil"):
        return "vigil"
    return invoked
