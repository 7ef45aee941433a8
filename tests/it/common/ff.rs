//! Fast-forward fixtures shared by the races and safety attacks: a large push, the check
//! that a repository is wholly at one commit, and what was kept aside.

use std::path::{Path, PathBuf};

use super::Env;

/// A bare remote `remotes/<name>.git` whose main holds `files` files (`f/NNNN.txt`), a clone of it at
/// `root/<name>`, and a push that rewrites every file; returns (bare, clone, old, new).
pub fn big_push(env: &Env, name: &str, files: usize) -> (PathBuf, PathBuf, String, String) {
    let bare = env.path(&format!("remotes/{name}.git"));
    std::fs::create_dir_all(&bare).expect("mkdir");
    env.git(&bare, &["init", "--bare", "-q"]);
    let seed = env.path(&format!("seeds/{name}"));
    std::fs::create_dir_all(seed.join("f")).expect("mkdir");
    env.git(&seed, &["init", "-q"]);
    for i in 0..files {
        std::fs::write(seed.join(format!("f/{i:04}.txt")), format!("line {i}\n")).expect("write");
    }
    env.git(&seed, &["add", "."]);
    env.git(&seed, &["commit", "-qm", "base"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let old = env.head(&seed);
    let clone = env.clone_of(&bare, &format!("root/{name}"));
    for i in 0..files {
        std::fs::write(
            seed.join(format!("f/{i:04}.txt")),
            format!("line {i}, rewritten by the push\n"),
        )
        .expect("write");
    }
    env.git(&seed, &["commit", "-qam", "rewrite every file"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let new = env.head(&seed);
    (bare, clone, old, new)
}

/// Everything a fast-forward may leave behind, and whether git sees a clean worktree.
pub fn assert_whole(env: &Env, clone: &Path, old: &str, new: &str) -> String {
    let head = env.head(clone);
    assert!(
        head == old || head == new,
        "HEAD at {head}, neither old nor new"
    );
    assert!(
        !clone.join(".git/index.lock").exists(),
        "index.lock left behind"
    );
    assert!(
        !clone.join(".git/gitsync/ff").exists(),
        "the staging folder was left behind"
    );
    let status = env.git(clone, &["status", "--porcelain"]);
    assert!(
        status.is_empty(),
        "the repository is not wholly at one commit (HEAD {head}):\n{}",
        status.lines().take(10).collect::<Vec<_>>().join("\n")
    );
    head
}

/// The text of every file a fast-forward kept aside in `clone`.
pub fn kept_texts(clone: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![clone.join(".git/gitsync/kept")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    out
}
