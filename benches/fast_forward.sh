#!/usr/bin/env bash
# Benchmark (issue 20): gitsync's fast-forward against git's own, side by side, interleaved,
# on the same clone reset between runs; medians and ratios.
#   - the helper (`gitsync-fast-forward`, or `gitsync fast-forward-helper` without it:
#     content check, staging, swap, journal)
#     against `git merge --ff-only`;
#   - `gitsync sync` (fetch, state, decision, fast-forward) against `git pull --ff-only`;
# for pushes rewriting 30 and 3,000 files, on disk ($TMPDIR) and on tmpfs (/dev/shm).
#   bash benches/fast_forward.sh     (GITSYNC_BIN overrides the binary; SIZES the file
#   counts, default "30 3000"; PLACES the folders, default "${TMPDIR:-/tmp} /dev/shm";
#   RUNS the rounds, default 9)
# A place on ext4 without a journal measures mostly ext4 itself: there a new inode is never
# one freed in the last 60 s (ialloc.c's recently_deleted), so every create of a run that
# follows a reset of 3,000 files scans past them (about 1 ms a file on this machine, for
# git and gitsync alike). To measure a disk as users have it, point PLACES at a journaled
# ext4, e.g. a loop mount:
#   truncate -s 2G /var/tmp/ff.img && mkfs.ext4 -q -F /var/tmp/ff.img \
#     && mkdir -p /mnt/ff && mount -o loop /var/tmp/ff.img /mnt/ff && PLACES="/mnt/ff /dev/shm" ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GITSYNC_BIN:-${CARGO_TARGET_DIR:-$here/../target}/release/gitsync}
[ -x "$bin" ] || { echo "$bin missing: run cargo build --release first" >&2; exit 1; }
# The helper the daemon runs: gitsync-fast-forward beside the binary, else its own.
helper=("$(dirname "$bin")/gitsync-fast-forward")
[ -x "${helper[0]}" ] || helper=("$bin" fast-forward-helper)
sizes=${SIZES:-30 3000}
places=${PLACES:-${TMPDIR:-/tmp} /dev/shm}
runs=${RUNS:-9}
export GIT_CONFIG_NOSYSTEM=1 LC_ALL=C
ms() { date +%s%N; }
# shellcheck source=benches/ff-push.sh
. "$here/ff-push.sh"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Prints the median of the per-round ratios a[i]/b[i].
median_ratio() {
  local -n a=$1 b=$2
  local r=()
  for i in "${!a[@]}"; do r+=("$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN {printf "%.3f", x / (y > 0 ? y : 0.001)}')"); done
  median "${r[@]}"
}

# Warns when `place` is on ext4 without a journal (see above).
journal_check() {
  local dev
  dev=$(basename "$(findmnt -no SOURCE -T "$1" 2>/dev/null || true)")
  if [ -n "$dev" ] && grep -qs none "/sys/fs/ext4/$dev/journal_task"; then
    echo "note: $1 is on ext4 without a journal: its figures include ext4's scan past inodes freed in the last 60 s" >&2
  fi
}

bench() {
  local files=$1 place=$2
  local work
  work=$(mktemp -d "$place/gitsync-ff.XXXXXX")
  trap 'rm -rf "$work"' RETURN
  ff_push "$work" "$files"
  local old=$OLD new=$NEW
  local merge=() ours=() pull=() sync=()
  # A push arrives long after the files were last written: the pause keeps both git and
  # gitsync from paying the racy-file re-check (a file written within one clock tick of the
  # check is read again) that only a benchmark's back-to-back reset would cause.
  back() { git reset -q --hard "$old"; git update-ref refs/remotes/origin/main "$old"; sleep 0.05; }
  for _ in $(seq 1 "$runs"); do
    back; git update-ref refs/remotes/origin/main "$new"
    local t; t=$(ms); git merge -q --ff-only "$new" 2>/dev/null; merge+=($(( ($(ms) - t) / 100000 )))
    [ "$(git rev-parse HEAD)" = "$new" ] || { echo "merge did not move" >&2; exit 1; }
    back; git update-ref refs/remotes/origin/main "$new"
    t=$(ms); "${helper[@]}" --worktree . --branch refs/heads/main --from "$old" --to "$new" >/dev/null
    ours+=($(( ($(ms) - t) / 100000 )))
    [ "$(git rev-parse HEAD)" = "$new" ] && [ -z "$(git status --porcelain)" ] || { echo "gitsync did not move cleanly" >&2; exit 1; }
    back
    t=$(ms); git pull -q --ff-only 2>/dev/null; pull+=($(( ($(ms) - t) / 100000 )))
    [ "$(git rev-parse HEAD)" = "$new" ] || { echo "pull did not move" >&2; exit 1; }
    back
    t=$(ms); "$bin" sync --root "$work/clone" >/dev/null 2>&1; sync+=($(( ($(ms) - t) / 100000 )))
    [ "$(git rev-parse HEAD)" = "$new" ] || { echo "gitsync sync did not move" >&2; exit 1; }
  done
  local where=disk
  [ "$(stat -f -c %T "$place")" = tmpfs ] && where=tmpfs
  # Times are in tenths of a millisecond.
  awk -v f="$files" -v w="$where" -v m="$(median "${merge[@]}")" -v o="$(median "${ours[@]}")" \
      -v p="$(median "${pull[@]}")" -v s="$(median "${sync[@]}")" \
      -v r1="$(median_ratio ours merge)" -v r2="$(median_ratio sync pull)" 'BEGIN {
    printf "%5d files, %-5s  git merge --ff-only %6.1f ms  helper %6.1f ms  ratio %.2fx  |  git pull --ff-only %6.1f ms  gitsync sync %6.1f ms  ratio %.2fx\n",
      f, w, m / 10, o / 10, r1, p / 10, s / 10, r2 }'
  cd /
}

echo "fast-forward, $runs interleaved rounds each, medians (ratio: median of per-round ratios):"
for place in $places; do
  journal_check "$place"
  for files in $sizes; do
    bench "$files" "$place"
  done
done
