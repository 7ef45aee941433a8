# Sourced by fast_forward.sh and sync_ab.sh: the push both measure.
#
# ff_push WORK FILES: makes, in the folder WORK, a HOME of its own (git identity, branch
# main), a bare remote r.git, a clone of its first commit (FILES files under f/), then
# pushes a commit rewriting every file and fetches it into the clone. Leaves the shell in
# the clone, with OLD and NEW the clone's HEAD and the fetched commit.
ff_push() {
  local work=$1 files=$2
  export HOME=$work/home
  mkdir -p "$HOME"
  git config --global user.name bench
  git config --global user.email bench@example.invalid
  git config --global init.defaultBranch main
  git init -q --bare "$work/r.git"
  git init -q "$work/seed"
  (
    cd "$work/seed"
    mkdir f
    for i in $(seq 1 "$files"); do echo "line $i" > "f/$i.txt"; done
    git add . && git commit -qm base && git push -q "$work/r.git" main
  )
  git clone -q "$work/r.git" "$work/clone"
  (
    cd "$work/seed"
    for i in $(seq 1 "$files"); do echo "line $i, rewritten" > "f/$i.txt"; done
    git commit -qam rewrite && git push -q "$work/r.git" main
  )
  cd "$work/clone"
  git fetch -q
  OLD=$(git rev-parse HEAD)
  NEW=$(git rev-parse origin/main)
}
