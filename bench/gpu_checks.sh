#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, in one device call with carry [".whl"]
# (fill it first with bench/gpu_wheels.sh). Every GPU figure and check the model and worker
# issues ask for, each one's output under $OUT (or /tmp/vigil-gpu):
#   env.txt         the device, torch, CUDA
#   tests.log       pytest -m gpu: parity with transformers on CUDA, device-side asserts
#                   in-process and through a CUDA worker, contracts on CUDA tensors
#   model.log       bench_model: bare vs supervised decoder, batch 1 and 8 (gpu preset, bf16)
#   model-tiny.log  the same with the tiny preset
#   worker.log      bench_worker --device cuda: boundary overhead, failover, cold restart
#   demo.log        vigil demo --device cuda (tiny), then --preset gpu
#   gpu-shaped.log  bench_gpu_shaped: the CPU stand-in of a 2.5 ms GPU call (logits and
#                   tokens output; bare vs inline/thread/process), on this machine's quiet cores
#   wait.log        bench_wait: the fixed cost after a 0..2500 us wait (spin, sleep) against
#                   the tight loop: whether this machine keeps caches and predictors warm
#                   across a GPU call's wait (the 2-vCPU VM does not: PERFORMANCE "Run R")
#   inline-parts.log bench_inline_parts, then --in-situ: the inline fixed cost (target 10 us,
#                   4x pybreaker), the floor of the required work on this CPU, and what each
#                   part costs inside the call (the 2-vCPU VM: floor 7-15 us, "Run S")
#   append.log      bench_append: record_inferences and record_inference vs sqlite, logging
#   digest-lag.log  bench_digest part 1: the off-path digest's lag at 400 calls/s, three pacings
#   pool.log        bench_pool --device cpu: 1 vs 2 active workers at 1/4/16 clients on spare
#                   cores (issue 13's capacity target: 2 workers >= 1.6x one at 16 clients)
#   safety-cuda.log the fault matrix's CUDA cells (device_fatal, oom with real CUDA faults,
#                   inline/thread/process); $OUT/safety/matrix-cuda.md is the section of
#                   docs/SAFETY.md: paste it with
#                   python bench/safety_matrix.py --cuda-section DIR/safety/matrix-cuda.md
# A step that fails is reported and the next one still runs; the exit code counts failures.
set -uo pipefail
OUT=${OUT:-/tmp/vigil-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target /tmp/site .whl/* >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 9; }
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
failed=0
step() {  # step NAME CMD...: run CMD, keep its output in $OUT/NAME.log
    local name=$1
    shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
step env python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
step tests python3 -m pytest -q -p vigil.testing.pytest_plugin -m gpu -o addopts="" tests
step model python3 bench/bench_model.py --preset gpu --device cuda --tokens 16 --batches 1,8 --calls 300
step model-tiny python3 bench/bench_model.py --preset tiny --device cuda --calls 300
step worker python3 bench/bench_worker.py --device cuda
step demo python3 -m vigil demo --device cuda --out /tmp/vigil-demo
step demo-gpu python3 -m vigil demo --device cuda --preset gpu --out /tmp/vigil-demo-gpu
step gpu-shaped python3 bench/bench_gpu_shaped.py --calls 1000 --tiny-calls 10000 --digest-threshold 65536
step wait python3 bench/bench_wait.py
step inline-parts bash -c "python3 bench/bench_inline_parts.py --calls 20000 && python3 bench/bench_inline_parts.py --in-situ --calls 20000"
step append python3 bench/bench_append.py --records 100000 --repeats 3
step digest-lag python3 bench/bench_digest.py --lag-only
step pool python3 bench/bench_pool.py --device cpu --seconds 4
step safety-cuda python3 bench/safety_matrix.py --device cuda --runs 2 --process-runs 2 --out "$OUT/safety"
echo "gpu_checks: $failed step(s) failed; logs in $OUT"
exit "$failed"
