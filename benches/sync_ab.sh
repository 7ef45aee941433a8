#!/usr/bin/env bash
# Benchmark (issue 20): `gitsync sync` of one or more builds against `git pull --ff-only`,
# interleaved round by round on the same clone (reset between runs), for one push: the
# way to compare two builds of gitsync on a noisy machine, where two separate runs of
# benches/fast_forward.sh differ by more than a change does. Prints each median and its
# ratio to git's median.
#   bash benches/sync_ab.sh OLD/gitsync NEW/gitsync ...
#   (FILES the files the push rewrites, default 30; ROUNDS, default 25; PLACE the folder,
#   default /dev/shm). Each build runs the `gitsync-fast-forward` beside it, if any.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benches/sync_ab.sh GITSYNC_BINARY..." >&2; exit 2; }
for bin in "$@"; do [ -x "$bin" ] || { echo "$bin is not a program" >&2; exit 2; }; done
files=${FILES:-30}
rounds=${ROUNDS:-25}
place=${PLACE:-/dev/shm}
export GIT_CONFIG_NOSYSTEM=1 LC_ALL=C
work=$(mktemp -d "$place/gitsync-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=benches/ff-push.sh
. "$(cd "$(dirname "$0")" && pwd)/ff-push.sh"
ff_push "$work" "$files"
old=$OLD
new=$NEW
# As in fast_forward.sh: the pause keeps every run from paying the racy-file re-check.
back() { git reset -q --hard "$old"; git update-ref refs/remotes/origin/main "$old"; sleep 0.05; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
for _ in $(seq 1 "$rounds"); do
  for who in "$@" pull; do
    back
    t=$(date +%s%N)
    if [ "$who" = pull ]; then
      git pull -q --ff-only >/dev/null 2>&1
    else
      "$who" sync --root "$work/clone" >/dev/null 2>&1
    fi
    times[$who]+="$(( ($(date +%s%N) - t) / 1000 )) "
    [ "$(git rev-parse HEAD)" = "$new" ] || { echo "$who did not move HEAD" >&2; exit 1; }
  done
done
# shellcheck disable=SC2086
git_median=$(median ${times[pull]})
echo "sync of a $files-file push, $rounds interleaved rounds, medians:"
for who in "$@" pull; do
  # shellcheck disable=SC2086
  m=$(median ${times[$who]})
  label=$who
  [ "$who" = pull ] && label="git pull --ff-only"
  awk -v l="$label" -v m="$m" -v g="$git_median" 'BEGIN { printf "  %-50s %7.1f ms  %.2fx git\n", l, m / 1000, m / g }'
done
