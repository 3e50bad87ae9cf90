#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from the repository root: downloads into .whl/ the
# packages vigil needs that the GPU machine's image lacks (it has torch, numpy, safetensors,
# transformers, matplotlib, prometheus-client, pytest, hypothesis). Then give the device call
# carry [".whl"] and run bench/gpu_checks.sh there. See docs/PERFORMANCE.md, "GPU checks".
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    transitions crc32c construct cryptography cffi pycparser pybreaker
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl crcmod sdnotify  # sdists only
ls .whl
