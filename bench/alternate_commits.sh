#!/usr/bin/env bash
# Run the supervisor and append benchmarks alternately on an older commit and on this checkout,
# three times each, so that drift on a noisy machine reaches both sides alike.
# Usage: bash bench/alternate_commits.sh [OLD_COMMIT]   (default: 1cdec70, before the split)
set -u
old=${1:-1cdec70}
here=$(git rev-parse --show-toplevel)
tree=$(mktemp -d)/old
git -C "$here" worktree add -q --detach "$tree" "$old"
py="$here/.venv/bin/python"
for i in 1 2 3; do
  for d in "$tree" "$here"; do
    echo "=== $d run $i: bench_supervisor"
    (cd "$d" && PYTHONPATH="$d" "$py" bench/bench_supervisor.py --repeats 3 --calls 5000 | tail -25)
    echo "=== $d run $i: bench_append"
    (cd "$d" && PYTHONPATH="$d" "$py" bench/bench_append.py --records 50000 --always-records 500 \
      --repeats 3 | tail -25)
  done
done
git -C "$here" worktree remove --force "$tree"
