//! The state gitsync reads with gix equals what `git status --porcelain=v2 --branch`
//! reports, on crafted states (`git-status(1)`, "Porcelain Format Version 2").

use crate::common;

use std::path::Path;

use common::{Env, find};

/// The fields of porcelain v2 that gitsync's state also has.
#[derive(Debug, PartialEq, Default)]
struct Porcelain {
    head: Option<String>,
    branch: Option<String>,
    upstream: Option<String>,
    ahead: u64,
    behind: u64,
    staged: u64,
    unstaged: u64,
    untracked: u64,
    conflicted: u64,
}

fn porcelain(env: &Env, repo: &Path) -> Porcelain {
    let text = env.git(repo, &["status", "--porcelain=v2", "--branch"]);
    let mut p = Porcelain::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["#", "branch.oid", oid] => p.head = (*oid != "(initial)").then(|| oid.to_string()),
            ["#", "branch.head", name] => {
                p.branch = (*name != "(detached)").then(|| name.to_string())
            }
            ["#", "branch.upstream", up] => p.upstream = Some(up.to_string()),
            ["#", "branch.ab", a, b] => {
                p.ahead = a.trim_start_matches('+').parse().expect("ahead");
                p.behind = b.trim_start_matches('-').parse().expect("behind");
            }
            ["1" | "2", xy, ..] => {
                let xy = xy.as_bytes();
                p.staged += u64::from(xy[0] != b'.');
                p.unstaged += u64::from(xy[1] != b'.');
            }
            ["u", ..] => p.conflicted += 1,
            ["?", ..] => p.untracked += 1,
            _ => {}
        }
    }
    p
}

fn from_state(s: &serde_json::Value) -> Porcelain {
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is a number in {s}"))
    };
    let text = |k: &str| s[k].as_str().map(str::to_string);
    Porcelain {
        head: text("head"),
        branch: text("branch"),
        upstream: text("upstream"),
        ahead: n("ahead"),
        behind: n("behind"),
        staged: n("staged"),
        unstaged: n("unstaged"),
        untracked: n("untracked"),
        conflicted: n("conflicted"),
    }
}

#[test]
fn state_equals_porcelain_v2_on_crafted_states() {
    let env = Env::new();
    let names = [
        "clean",
        "staged-modify",
        "unstaged-modify",
        "staged-and-unstaged",
        "untracked-file",
        "untracked-folder",
        "unstaged-delete",
        "staged-delete",
        "staged-add",
        "staged-rename",
        "conflict",
        "ahead-two",
        "behind-one",
        "diverged",
        "detached",
        "no-upstream",
        "upstream-gone",
        "ignored-only",
        "stash",
        "unborn",
        // The stat pass's edge cases (racy-git, mode and type changes, folders).
        "racy-same-size",
        "chmod-exec",
        "file-to-symlink",
        "symlinked-folder",
        "file-to-folder",
        "touched-only",
        "nested-edit",
        // The untracked walk's quick path and its hand-over to gix.
        "empty-folder",
        "untracked-in-tracked-folder",
        // Index and config variants the stat pass must honour.
        "split-index",
        "filemode-off",
    ];
    for name in names {
        let at = format!("root/{name}");
        if name == "unborn" {
            let dir = env.path(&at);
            std::fs::create_dir_all(&dir).expect("mkdir");
            env.git(&dir, &["init", "-q"]);
            env.write(&dir, "new.txt", "x\n");
            continue;
        }
        let (bare, c) = env.remote_and_clone(name, &at);
        match name {
            "clean" => {}
            "staged-modify" => {
                env.write(&c, "a.txt", "changed\n");
                env.git(&c, &["add", "a.txt"]);
            }
            "unstaged-modify" => env.write(&c, "a.txt", "changed\n"),
            "staged-and-unstaged" => {
                env.write(&c, "a.txt", "staged\n");
                env.git(&c, &["add", "a.txt"]);
                env.write(&c, "a.txt", "then edited\n");
                env.write(&c, "b.txt", "also edited\n");
            }
            "untracked-file" => {
                env.write(&c, "u1.txt", "u\n");
                env.write(&c, "u2.txt", "u\n");
            }
            "untracked-folder" => {
                env.write(&c, "newdir/x.txt", "x\n");
                env.write(&c, "newdir/deeper/y.txt", "y\n");
            }
            "unstaged-delete" => std::fs::remove_file(c.join("b.txt")).expect("rm"),
            "staged-delete" => {
                env.git(&c, &["rm", "-q", "b.txt"]);
            }
            "staged-add" => {
                env.write(&c, "added.txt", "new\n");
                env.git(&c, &["add", "added.txt"]);
            }
            "staged-rename" => {
                env.write(
                    &c,
                    "long.txt",
                    &"a line that is long enough to be similar\n".repeat(20),
                );
                env.git(&c, &["add", "long.txt"]);
                env.git(&c, &["commit", "-qm", "long"]);
                env.git(&c, &["push", "-q", "origin", "main"]);
                env.git(&c, &["mv", "long.txt", "renamed.txt"]);
            }
            "conflict" => {
                env.push_new_commit(&bare, "a.txt", "theirs\n");
                env.commit(&c, "a.txt", "ours\n", "ours");
                env.git(&c, &["fetch", "-q"]);
                let out = env.git_try(&c, &["merge", "origin/main"]);
                assert!(!out.status.success(), "the merge must conflict");
            }
            "ahead-two" => {
                env.commit(&c, "l1.txt", "1\n", "l1");
                env.commit(&c, "l2.txt", "2\n", "l2");
            }
            "behind-one" => {
                env.push_new_commit(&bare, "r.txt", "r\n");
            }
            "diverged" => {
                env.push_new_commit(&bare, "r.txt", "r\n");
                env.commit(&c, "l.txt", "l\n", "local");
            }
            "detached" => {
                env.git(&c, &["checkout", "-q", "--detach"]);
                env.write(&c, "a.txt", "edited while detached\n");
            }
            "no-upstream" => {
                env.git(&c, &["checkout", "-qb", "feature"]);
                env.write(&c, "f.txt", "f\n");
            }
            "upstream-gone" => {
                env.git(&c, &["config", "branch.main.merge", "refs/heads/gone"]);
            }
            "ignored-only" => {
                env.commit(&c, ".gitignore", "*.log\nbuild/\n", "ignore");
                env.write(&c, "debug.log", "noise\n");
                env.write(&c, "build/out.bin", "noise\n");
            }
            "stash" => {
                env.write(&c, "a.txt", "stashed\n");
                env.git(&c, &["stash", "-q"]);
                env.write(&c, "b.txt", "stashed too\n");
                env.git(&c, &["stash", "-q"]);
            }
            "racy-same-size" => {
                // Same size, written in the same second as the index: only content tells.
                env.write(&c, "a.txt", "two\n");
                env.git(&c, &["add", "a.txt"]);
                env.write(&c, "a.txt", "six\n");
            }
            "chmod-exec" => {
                use std::os::unix::fs::PermissionsExt;
                let file = c.join("a.txt");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            "file-to-symlink" => {
                std::fs::remove_file(c.join("b.txt")).expect("rm");
                std::os::unix::fs::symlink("a.txt", c.join("b.txt")).expect("symlink");
            }
            "symlinked-folder" => {
                env.commit(&c, "sub/x.txt", "x\n", "sub");
                std::fs::rename(c.join("sub"), c.join("real")).expect("mv");
                std::os::unix::fs::symlink("real", c.join("sub")).expect("symlink");
            }
            "file-to-folder" => {
                std::fs::remove_file(c.join("b.txt")).expect("rm");
                env.write(&c, "b.txt/inside.txt", "now a folder\n");
            }
            "touched-only" => {
                let file = std::fs::File::options()
                    .append(true)
                    .open(c.join("a.txt"))
                    .expect("open");
                file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
                    .expect("set mtime");
            }
            "nested-edit" => {
                env.write(&c, "x/y/z.txt", "z\n");
                env.write(&c, "x/w.txt", "w\n");
                env.write(&c, "x/y2/q.txt", "q\n");
                env.write(&c, "x/y/deep/d.txt", "d\n");
                env.git(&c, &["add", "x"]);
                env.git(&c, &["commit", "-qm", "nested"]);
                env.write(&c, "x/y/deep/d.txt", "changed\n");
                env.write(&c, "x/y2/q.txt", "changed\n");
                std::fs::remove_file(c.join("x/w.txt")).expect("rm");
            }
            "empty-folder" => std::fs::create_dir_all(c.join("empty/inner")).expect("mkdir"),
            "untracked-in-tracked-folder" => {
                env.commit(&c, "x/y/z.txt", "z\n", "nested");
                env.write(&c, "x/y/new.txt", "new\n");
                env.write(&c, "x/other/new.txt", "new\n");
            }
            "split-index" => {
                env.git(&c, &["update-index", "--split-index"]);
                env.write(&c, "a.txt", "edited after the split\n");
                env.write(&c, "c.txt", "new\n");
                env.git(&c, &["add", "c.txt"]);
            }
            "filemode-off" => {
                use std::os::unix::fs::PermissionsExt;
                env.git(&c, &["config", "core.fileMode", "false"]);
                let file = c.join("a.txt");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            other => panic!("unknown {other}"),
        }
    }

    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  fast_forward: false\n",
            env.path("root").display()
        ),
    );
    let out = env.gitsync(&home, &["sync"]);
    assert!(
        out.status.success(),
        "sync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let states = env.status(&home, &[]);
    assert_eq!(states.len(), names.len(), "one state per repository");
    for name in names {
        let repo = env.path(&format!("root/{name}"));
        let state = find(&states, None, name).expect("state");
        assert_eq!(
            from_state(state),
            porcelain(&env, &repo),
            "{name}: gitsync vs git status"
        );
    }
    // Fields porcelain v2 does not have.
    let summary = |name: &str| find(&states, None, name).expect("state")["state"].clone();
    assert_eq!(summary("clean"), "up_to_date");
    assert_eq!(summary("ahead-two"), "ahead");
    assert_eq!(summary("behind-one"), "behind");
    assert_eq!(summary("diverged"), "diverged");
    assert_eq!(summary("detached"), "detached");
    assert_eq!(summary("no-upstream"), "no_upstream");
    assert_eq!(summary("upstream-gone"), "upstream_gone");
    assert_eq!(summary("unborn"), "no_upstream");
    let stash = find(&states, None, "stash").expect("stash");
    assert_eq!(stash["stashes"], 2);
    let conflict = find(&states, None, "conflict").expect("conflict");
    assert_eq!(conflict["operation"], "merge");
}

/// `state::refresh` (the refs read again after a fetch that ran beside the first read)
/// gives what a whole read gives, for random worktree states and random things that happen
/// between the two reads: a push fetched, a fetch that brings nothing, a local commit, a
/// switch, a detach, the upstream ref deleted, a second upstream commit. The worktree's
/// counts come from the first read unless HEAD moved, and then everything is read again.
#[test]
fn a_refresh_after_a_fetch_equals_a_whole_read() {
    use gitsync::git::state;
    let env = Env::new();
    let seed = common::attack_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let cases: usize = std::env::var("GITSYNC_ATTACK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        / 3;
    let refs_of = |s: &state::Snapshot| {
        (
            s.state.branch.clone(),
            s.state.head.clone(),
            s.state.upstream.clone(),
            s.state.ahead,
            s.state.behind,
            s.state.state,
            s.upstream_head.clone(),
            s.remote.clone(),
        )
    };
    let worktree_of = |s: &state::Snapshot| {
        (
            s.state.staged,
            s.state.unstaged,
            s.state.untracked,
            s.state.conflicted,
            s.state.submodules.clone(),
            s.index_locked,
        )
    };
    for n in 0..cases.max(4) {
        let name = format!("refresh-{n}");
        let (bare, clone) = env.remote_and_clone(&name, &format!("root/{name}"));
        // A random worktree: staged, unstaged, untracked, or clean.
        for _ in 0..rng.usize(0..3) {
            match rng.u8(0..3) {
                0 => env.write(&clone, "a.txt", &format!("edit {}\n", rng.u32(..))),
                1 => {
                    env.write(&clone, "b.txt", &format!("staged {}\n", rng.u32(..)));
                    env.git(&clone, &["add", "b.txt"]);
                }
                _ => env.write(&clone, &format!("new-{}.txt", rng.u8(..)), "u\n"),
            }
        }
        if rng.bool() {
            env.push_new_commit(&bare, "c.txt", &format!("before {n}\n"));
            env.git(&clone, &["fetch", "-q"]);
        }
        let earlier = state::read("h", &name, &clone);
        let what = rng.u8(0..7);
        let head_moves = match what {
            0 => {
                env.push_new_commit(&bare, "c.txt", &format!("pushed {n}\n"));
                env.git(&clone, &["fetch", "-q"]);
                false
            }
            1 => {
                env.git(&clone, &["fetch", "-q"]);
                false
            }
            2 => {
                env.git(&clone, &["commit", "-q", "--allow-empty", "-m", "local"]);
                true
            }
            3 => {
                env.git(&clone, &["switch", "-q", "-c", "other"]);
                true
            }
            4 => {
                env.git(&clone, &["switch", "-q", "--detach"]);
                true
            }
            5 => {
                env.git(&clone, &["update-ref", "-d", "refs/remotes/origin/main"]);
                false
            }
            _ => {
                env.push_new_commit(&bare, "c.txt", &format!("one {n}\n"));
                env.push_new_commit(&bare, "d.txt", &format!("two {n}\n"));
                env.git(&clone, &["fetch", "-q"]);
                false
            }
        };
        let refreshed = state::refresh("h", &name, &clone, earlier.clone());
        let whole = state::read("h", &name, &clone);
        assert_eq!(
            refs_of(&refreshed),
            refs_of(&whole),
            "case {n} (action {what}): the refs differ from a whole read"
        );
        let expected = if head_moves { &whole } else { &earlier };
        assert_eq!(
            worktree_of(&refreshed),
            worktree_of(expected),
            "case {n} (action {what}): the worktree's part"
        );
        assert_eq!(
            refreshed.state.last_commit, whole.state.last_commit,
            "case {n}"
        );
        assert_eq!(
            refreshed.state.remote_url, whole.state.remote_url,
            "case {n}"
        );
    }
}

/// From 1,000 tracked files the read splits its stat pass between two threads and walks
/// for untracked files in a third: on random large worktrees (nested folders, edits,
/// deletions, staged changes, new files and folders, ignored files) it still counts what
/// `git status --porcelain=v2` counts.
#[test]
fn a_large_worktree_read_in_threads_equals_porcelain_v2() {
    use gitsync::git::state;
    let env = Env::new();
    let seed = common::attack_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for n in 0..3 {
        let name = format!("large-{n}");
        let (_bare, clone) = env.remote_and_clone(&name, &format!("root/{name}"));
        let count = 1_000 + rng.usize(..1_500);
        let paths: Vec<String> = (0..count)
            .map(|i| match rng.u8(..3) {
                0 => format!("f{i}.txt"),
                1 => format!("d{}/f{i}.txt", rng.u8(..6)),
                _ => format!("d{}/e{}/f{i}.txt", rng.u8(..6), rng.u8(..4)),
            })
            .collect();
        for path in &paths {
            env.write(&clone, path, &format!("{path}\n"));
        }
        env.write(&clone, ".gitignore", "*.log\n");
        env.git(&clone, &["add", "."]);
        env.git(&clone, &["commit", "-qm", "many files"]);
        let mut what = [0usize; 6];
        for path in &paths {
            let kind = rng.u8(..40);
            match kind {
                0 => env.write(&clone, path, "edited\n"),
                1 => std::fs::remove_file(clone.join(path)).expect("rm"),
                2 => {
                    env.write(&clone, path, "staged\n");
                    env.git(&clone, &["add", path]);
                }
                3 => env.write(&clone, &format!("{path}.log"), "ignored\n"),
                4 => env.write(&clone, &format!("{path}.new"), "untracked\n"),
                _ => {}
            }
            what[usize::from(kind.min(5))] += 1;
        }
        for k in 0..rng.usize(..4) {
            for j in 0..1 + rng.usize(..3) {
                env.write(&clone, &format!("new-{k}/n{j}.txt"), "untracked folder\n");
            }
        }
        let snapshot = state::read("h", &name, &clone);
        let s = &snapshot.state;
        let got = (
            u64::from(s.staged),
            u64::from(s.unstaged),
            u64::from(s.untracked),
            u64::from(s.conflicted),
        );
        let git = porcelain(&env, &clone);
        assert_eq!(
            got,
            (git.staged, git.unstaged, git.untracked, git.conflicted),
            "case {n} (seed {seed}): {count} files, changes {what:?}: gitsync vs git status"
        );
    }
}
