#!/usr/bin/env bash
# Run every benchmark that exists on both sides alternately on an older commit and on a newer
# one (or this checkout), three times each, so that drift on a noisy machine reaches both alike.
# Usage: bash bench/alternate_commits.sh [OLD_COMMIT] [NEW_COMMIT]
#   OLD_COMMIT  default 1cdec70 (before the layout split of issue 14)
#   NEW_COMMIT  default: this checkout as it is; a commit runs in its own temporary worktree, so
#               the checkout can change while the benchmarks run
#   ALT_OUT=DIR keeps each run's output as DIR/{old,new}.BENCH.N.txt (default: a temporary
#               folder, printed at the end); bench/alternate_summary.py DIR tabulates the medians.
#   ALT_RUNS=N  alternations (default 3)
#   ALT_ONLY="bench_seal.py bench_recover.py"  only these benchmarks
# The supervisor and append benchmarks (the hot path) run at the sizes of PERFORMANCE.md run L;
# the others with --quick. A benchmark missing on the old commit is skipped and said so.
set -u
old=${1:-1cdec70}
new=${2:-}
runs=${ALT_RUNS:-3}
here=$(git rev-parse --show-toplevel)
out=${ALT_OUT:-$(mktemp -d)}
mkdir -p "$out"
scratch=$(mktemp -d)
old_tree=$scratch/old
git -C "$here" worktree add -q --detach "$old_tree" "$old"
new_tree=$here
if [ -n "$new" ]; then
  new_tree=$scratch/new
  git -C "$here" worktree add -q --detach "$new_tree" "$new"
fi
py="$here/.venv/bin/python"
args_for() {
  case $1 in
    bench_supervisor.py) echo "--repeats 3 --calls 5000" ;;
    bench_append.py) echo "--records 50000 --always-records 500 --repeats 3" ;;
    *) echo "--quick" ;;
  esac
}
benches=()
for f in "$new_tree"/bench/bench_*.py; do
  b=$(basename "$f")
  if [ -n "${ALT_ONLY:-}" ] && [[ " $ALT_ONLY " != *" $b "* ]]; then
    continue
  elif [ ! -f "$old_tree/bench/$b" ]; then
    echo "skip $b: not on $old"
  elif ! grep -q -- '--quick' "$f"; then
    echo "skip $b: no --quick"
  else
    benches+=("$b")
  fi
done
echo "benchmarks: ${benches[*]}"
for i in $(seq 1 "$runs"); do
  for side in old new; do
    if [ "$side" = old ]; then d=$old_tree; else d=$new_tree; fi
    for b in "${benches[@]}"; do
      echo "=== $side ($d) run $i: $b"
      # shellcheck disable=SC2046
      (cd "$d" && PYTHONPATH="$d" timeout 900 "$py" "bench/$b" $(args_for "$b") \
        >"$out/$side.${b%.py}.$i.txt" 2>&1) || echo "    exit $? (see $out/$side.${b%.py}.$i.txt)"
    done
  done
done
git -C "$here" worktree remove --force "$old_tree"
[ -n "$new" ] && git -C "$here" worktree remove --force "$new_tree"
rm -rf "$scratch"
echo "outputs in $out"
