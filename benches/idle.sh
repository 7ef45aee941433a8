#!/usr/bin/env bash
# Benchmark: an idle daemon watching 200 repositories (~1,000 files each) for DURATION
# seconds (default 600) with the default pull.interval (5m). Reports start-up time to
# "ready", the daemon's own CPU time after ready (user+system, from /proc/PID/stat; git
# child processes not included), and its peak RSS (VmHWM, whole life).
# Goals: peak RSS at most 40 MB, CPU time at most 1 s over 10 minutes.
#   benches/idle.sh [DURATION]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
duration=${1:-600}
bin=${GITSYNC_BIN:-${CARGO_TARGET_DIR:-$here/../target}/release/gitsync}
dir=${GITSYNC_BENCH_DIR:-/tmp/gitsync-bench-200x1000}
bash "$here/make-repos.sh" "$dir" 200 1000
home=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$home"' EXIT
cp "$dir/home/.gitconfig" "$home/"
mkdir -p "$home/.gitsync"
printf 'root: %s\n' "$dir/root" > "$home/.gitsync/config.yml"
HOME=$home GITSYNC_LOG=info "$bin" run 2> "$home/daemon.log" &
pid=$!
start=$(date +%s.%N)
until grep -q ' ready' "$home/daemon.log"; do sleep 0.05; kill -0 "$pid"; done
ready=$(date +%s.%N)
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
sleep "$duration"
c1=$(cpu)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
awk -v s="$start" -v r="$ready" -v c0="$c0" -v c1="$c1" -v t="$tick" -v h="$hwm" -v rss="$rss" -v d="$duration" 'BEGIN {
  printf "idle daemon, 200 repositories x 1000 files, %d s after ready\n", d
  printf "  start-up to ready:         %6.2f s\n", r - s
  printf "  CPU time while idle:       %6.2f s   (goal: at most 1 s per 600 s)\n", (c1 - c0) / t
  printf "  peak RSS (VmHWM):          %6.1f MB  (goal: at most 40 MB)\n", h / 1024
  printf "  RSS at the end:            %6.1f MB\n", rss / 1024
}'
