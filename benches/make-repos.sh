#!/usr/bin/env bash
# Generates N clones of one bare remote, each with FILES files in 20 folders, under
# DIR/root; every 4th clone is dirty (3 files edited, 1 untracked), every 10th is one
# commit behind. Reuses DIR when DIR/ready says it was made with the same N and FILES.
#   benches/make-repos.sh DIR N FILES
set -euo pipefail
dir=$1 n=${2:-200} files=${3:-1000}
if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$n $files" ]; then exit 0; fi
rm -rf "$dir"; mkdir -p "$dir/root"
export HOME="$dir/home" GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
git config --global user.name bench; git config --global user.email bench@example.invalid
git config --global init.defaultBranch main
git init -q "$dir/template"
(
  cd "$dir/template"
  for ((i = 0; i < files; i++)); do
    d="dir$((i % 20))"; mkdir -p "$d"
    printf 'file %d\nline two\n' "$i" > "$d/f$i.txt"
  done
  git add -A && git commit -qm "initial $files files"
  echo more >> dir0/f0.txt && git commit -qam "second"
)
git clone -q --bare "$dir/template" "$dir/remote.git"
for ((r = 0; r < n; r++)); do
  repo="$dir/root/repo-$r"
  git clone -q "$dir/remote.git" "$repo"
  if ((r % 10 == 0)); then git -C "$repo" reset -q --hard HEAD~1; fi
  if ((r % 4 == 1)); then
    for f in dir1/f1.txt dir2/f2.txt dir3/f3.txt; do echo edit >> "$repo/$f"; done
    echo new > "$repo/untracked.txt"
  fi
done
echo "$n $files" > "$dir/ready"
