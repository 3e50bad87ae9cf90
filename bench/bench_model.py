"""What supervision costs around the reference decoder, at batch 1 and 8, in one run.

Cases, for each batch size (each call timed with ``perf_counter_ns``; medians of per-repeat
percentiles over repeats; the three whole calls alternate call by call, so that drift of the
machine reaches each alike):

- ``bare``: ``Decoder(ids)`` under ``inference_mode``, then a device synchronisation (on CUDA:
  a bare call is done when its logits are);
- ``supervised (inline)`` / ``(thread)``: ``Supervisor.infer(ids)`` around the same model, in
  both isolation modes (the target is judged on inline; thread adds a handoff): an input
  contract (int64 token ids in ``[0, vocab)``), an output contract (shape, dtype, finite; one
  synchronisation), SHA-256 digests of input and output, a sealed INFERENCE record;
- the parts, one by one: the two contract checks, the two digests (the output digest copies
  the logits to the host first on CUDA), a plain device-to-host copy of the logits, and,
  where the ``blake3`` package is installed, BLAKE3 of the same bytes (a what-if: the log
  uses SHA-256).

The issue's target: supervised overhead ``(supervised - bare) / bare <= 1 %`` at batch 1 for
the GPU-size config on the GPU (``--preset gpu --device cuda``). Elsewhere the target is
printed as information. Nothing here asserts on timing.

    python bench/bench_model.py [--quick] [--preset tiny|gpu] [--device cpu|cuda]
        [--tokens 16] [--batches 1,8] [--calls 300] [--repeats 5] [--dtype float32] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable

import torch
from _common import interleaved, pct, timed

from vigil.model import PRESETS, Decoder, DecoderConfig
from vigil.schemas import Contract, TensorSpec
from vigil.supervisor import Supervisor, digest

MS = 1_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", choices=PRESETS, default="tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="override")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per call (default: 16)")
    ap.add_argument("--batches", default="1,8", help="batch sizes (default: 1,8)")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=os.environ.get("VIGIL_BENCH_DIR"))
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.calls = 1, 50
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    overrides = {"dtype": args.dtype} if args.dtype else {}
    config = DecoderConfig.preset(args.preset, **overrides)
    device = torch.device(args.device)
    model = Decoder(config, seed=0).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    work = tempfile.mkdtemp(prefix="vigil-bench-model-", dir=args.dir)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"reference decoder: preset {args.preset}, {params / 1e6:.1f} M parameters, "
        f"{config.dtype}, vocab {config.vocab_size}, {args.tokens} tokens per call, on "
        f"{_device_name(device)}; {args.calls} calls x {args.repeats} repeats"
    )
    results = {}
    for batch in (int(b) for b in args.batches.split(",")):
        results[batch] = _run_batch(model, batch, args, work, sync)
    shutil.rmtree(work, ignore_errors=True)
    _report(results, args)


def _run_batch(
    model: Decoder, batch: int, args: argparse.Namespace, work: str, sync: Callable[[], None]
) -> dict[str, tuple[float, float]]:
    config, device = model.config, model.device
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (batch, args.tokens), device=device)

    def bare() -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = model(ids)
        sync()
        return out

    def primary(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out: torch.Tensor = model(x)
        return out

    spec_in = Contract(
        TensorSpec(
            shape=(batch, args.tokens),
            dtype=torch.int64,
            device=device.type,
            min=0,
            max=vocab - 1,
        )
    )
    spec_out = Contract(
        TensorSpec(shape=(batch, args.tokens, vocab), dtype=config.torch_dtype, device=device.type)
    )
    sups = {
        iso: Supervisor(
            primary,
            log=os.path.join(work, f"b{batch}-{iso}.vigil"),
            isolation=iso,
            deadline_ns=10_000 * MS,  # generous: a CPU run of the gpu preset is slow
            input_contract=spec_in,
            output_contract=spec_out,
            model_digest=hashlib.sha256(b"bench").digest(),
        )
        for iso in ("inline", "thread")
    }
    out = bare()
    host = out.cpu()
    cases: dict[str, Callable[[], object]] = {
        "bare": bare,
        "supervised (inline)": lambda: sups["inline"].infer(ids),
        "supervised (thread)": lambda: sups["thread"].infer(ids),
        "part: input contract": lambda: spec_in.check(ids),
        "part: output contract": lambda: spec_out.check(out),
        "part: digest(input)": lambda: digest(ids),
        "part: digest(output)": lambda: digest(out),
    }
    if device.type == "cuda":
        cases["part: logits to host"] = out.cpu
    with contextlib.suppress(ImportError):
        import blake3

        raw = host.contiguous().view(torch.uint8)
        cases["what-if: blake3(output)"] = lambda: blake3.blake3(raw.numpy().data).digest()
    warm = max(args.calls // 10, 3)
    for fn in cases.values():
        timed(fn, warm)
    p50: dict[str, list[float]] = {k: [] for k in cases}
    p99: dict[str, list[float]] = {k: [] for k in cases}
    whole = ["bare", "supervised (inline)", "supervised (thread)"]
    for rep in range(args.repeats):
        # the whole calls alternate call by call, so that the machine's drift (large here)
        # reaches each of them alike; the parts are timed in blocks
        timings = interleaved([cases[n] for n in whole], args.calls)
        for name, samples in zip(whole, timings, strict=True):
            p50[name].append(pct(samples, 0.5))
            p99[name].append(pct(samples, 0.99))
        for name in [n for n in cases if n not in whole]:
            samples = timed(cases[name], args.calls)
            p50[name].append(pct(samples, 0.5))
            p99[name].append(pct(samples, 0.99))
        print(f"  batch {batch}: repeat {rep + 1}/{args.repeats} done", flush=True)
    for iso, sup in sups.items():
        stats = sup.statistics()
        sup.close()
        if stats.served.get("PRIMARY", 0) != stats.calls:  # the primary served every call
            raise SystemExit(f"batch {batch}, {iso}: a call was not the primary's: {stats}")
    return {k: (statistics.median(p50[k]), statistics.median(p99[k])) for k in cases}


def _report(results: dict[int, dict[str, tuple[float, float]]], args: argparse.Namespace) -> None:
    print("\np50 / p99 in µs (medians of per-repeat percentiles, timer included)\n")
    batches = list(results)
    print(f"{'case':28s}" + "".join(f" {f'batch {b}':>21s}" for b in batches))
    for name in results[batches[0]]:
        cells = "".join(
            f" {results[b][name][0]:10.1f} /{results[b][name][1]:9.1f}" for b in batches
        )
        print(f"{name:28s}{cells}")
    print("\noverhead (supervised - bare, p50):")
    applies = args.preset == "gpu" and args.device == "cuda"
    for iso in ("inline", "thread"):
        for b in batches:
            bare, sup = results[b]["bare"][0], results[b][f"supervised ({iso})"][0]
            share = (sup - bare) / bare * 100
            judged = applies and b == 1 and iso == "inline"
            verdict = ("PASS" if share <= 1 else "MISS") if judged else "info"
            print(
                f"  {verdict}  {iso}, batch {b}: {sup - bare:.1f} µs = {share:.2f} % "
                "of the bare call"
            )
    if not applies:
        print("  (the <= 1 % target is judged on --preset gpu --device cuda, batch 1)")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (1 thread)"


if __name__ == "__main__":
    main()
