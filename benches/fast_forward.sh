#!/usr/bin/env bash
# Benchmark: the fast-forward of a push that rewrites 3,000 files, gitsync's (staged
# files renamed in one by one, each replaced file verified, journaled) against the
# baseline it replaced, `git merge --ff-only`. RUNS rounds (default 7), interleaved, on the
# same clone reset between runs; medians and the ratio.
#   bash benches/fast_forward.sh      (GITSYNC_BIN overrides the binary; FILES the count;
#   BENCH_DIR the folder to work in, e.g. /dev/shm to leave the disk out of it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GITSYNC_BIN:-${CARGO_TARGET_DIR:-$here/../target}/release/gitsync}
[ -x "$bin" ] || { echo "$bin missing: run cargo build --release first" >&2; exit 1; }
files=${FILES:-3000}
runs=${RUNS:-7}
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/gitsync-ff.XXXXXX")
trap 'rm -rf "$work"' EXIT
export HOME=$work/home GIT_CONFIG_NOSYSTEM=1 LC_ALL=C
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.invalid
git config --global init.defaultBranch main
git init -q --bare "$work/r.git"
git init -q "$work/seed"
cd "$work/seed"
mkdir f
for i in $(seq 1 "$files"); do echo "line $i" > "f/$i.txt"; done
git add . && git commit -qm base && git push -q "$work/r.git" main
git clone -q "$work/r.git" "$work/clone"
for i in $(seq 1 "$files"); do echo "line $i, rewritten" > "f/$i.txt"; done
git commit -qam rewrite && git push -q "$work/r.git" main
cd "$work/clone"
git fetch -q
old=$(git rev-parse HEAD)
new=$(git rev-parse origin/main)
ms() { date +%s%N; }
merge=() ; ours=()
for r in $(seq 1 "$runs"); do
  git reset -q --hard "$old"
  t=$(ms); git merge -q --ff-only "$new" 2>/dev/null; merge+=($(( ($(ms) - t) / 1000000 )))
  [ "$(git rev-parse HEAD)" = "$new" ] || { echo "merge did not move" >&2; exit 1; }
  git reset -q --hard "$old"
  t=$(ms); "$bin" fast-forward-helper --worktree . --branch refs/heads/main --from "$old" --to "$new" >/dev/null
  ours+=($(( ($(ms) - t) / 1000000 )))
  [ "$(git rev-parse HEAD)" = "$new" ] && [ -z "$(git status --porcelain)" ] || { echo "gitsync did not move cleanly" >&2; exit 1; }
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(median "${merge[@]}"); o=$(median "${ours[@]}")
echo "fast-forward of a push rewriting $files files, $runs runs each (ms):"
echo "  git merge --ff-only      median $m   (${merge[*]})"
echo "  gitsync fast-forward     median $o   (${ours[*]})"
awk -v o="$o" -v m="$m" 'BEGIN {printf "  ratio gitsync / merge   %.2fx\n", o / m}'
