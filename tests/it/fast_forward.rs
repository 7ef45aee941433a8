//! Invariant 1: a clean clone strictly behind its upstream is fast-forwarded; in every
//! other case nothing is touched and `pull_blocked` says why.

use crate::common;

use std::time::Duration;

use common::{Env, find, tree_bytes};

#[test]
fn clean_clone_behind_is_fast_forwarded_by_sync() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let new = env.push_new_commit(&bare, "a.txt", "two\n");
    let hook = clone.join(".git/hooks/post-merge");
    std::fs::write(
        &hook,
        "#!/bin/sh\ntouch \"$(git rev-parse --git-dir)/post-merge-ran\"\n",
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let home = env.home("a");
    env.sync_root(&home);
    assert_eq!(env.head(&clone), new);
    assert_eq!(
        std::fs::read_to_string(clone.join("a.txt")).expect("read"),
        "two\n"
    );
    // As after `git merge`: ORIG_HEAD is the old commit and the post-merge hook ran.
    assert_ne!(env.git(&clone, &["rev-parse", "ORIG_HEAD"]).trim(), new);
    assert!(
        clone.join(".git/post-merge-ran").exists(),
        "post-merge hook not run"
    );
    let states = env.status(&home, &[]);
    let s = find(&states, None, "r").expect("state of r");
    assert_eq!(s["state"], "up_to_date");
    assert_eq!(s["head"], new.as_str());
    assert!(s["pull_blocked"].is_null());
}

struct Case {
    name: &'static str,
    expect: &'static str,
}

#[test]
fn unsafe_clones_are_not_touched_and_say_why() {
    let env = Env::new();
    let cases = [
        Case {
            name: "staged",
            expect: "staged change",
        },
        Case {
            name: "unstaged",
            expect: "unstaged change",
        },
        Case {
            name: "untracked",
            expect: "untracked files would be overwritten: new.txt",
        },
        Case {
            name: "merge",
            expect: "a merge is in progress",
        },
        Case {
            name: "rebase",
            expect: "a rebase is in progress",
        },
        Case {
            name: "detached",
            expect: "HEAD is detached",
        },
        Case {
            name: "no-upstream",
            expect: "main has no upstream",
        },
        Case {
            name: "diverged",
            expect: "diverged from origin/main",
        },
        Case {
            name: "ahead",
            expect: "ahead of origin/main by 1 commit",
        },
        Case {
            name: "index-lock",
            expect: "index.lock exists",
        },
    ];
    let mut before = Vec::new();
    for case in &cases {
        let (bare, clone) = env.remote_and_clone(case.name, &format!("root/{}", case.name));
        // Prepare the local situation, then (except for `ahead`) move the upstream on.
        match case.name {
            "staged" => {
                env.write(&clone, "a.txt", "local staged\n");
                env.git(&clone, &["add", "a.txt"]);
            }
            "unstaged" => env.write(&clone, "b.txt", "local edit\n"),
            "untracked" => env.write(&clone, "new.txt", "mine, not tracked\n"),
            "merge" => {
                env.git(&clone, &["checkout", "-qb", "topic"]);
                env.commit(&clone, "c.txt", "topic\n", "topic");
                env.git(&clone, &["checkout", "-q", "main"]);
                env.git(&clone, &["merge", "--no-ff", "--no-commit", "topic"]);
            }
            "rebase" => {
                env.commit(&clone, "c.txt", "one\n", "local one");
                let out = env.git_env(
                    &clone,
                    &["rebase", "-q", "-i", "HEAD~1"],
                    &[("GIT_SEQUENCE_EDITOR", "sed -i -e s/^pick/edit/")],
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "detached" => {
                env.git(&clone, &["checkout", "-q", "--detach"]);
            }
            "no-upstream" => {
                env.git(&clone, &["branch", "--unset-upstream"]);
            }
            "diverged" | "ahead" => {
                env.commit(&clone, "local.txt", "local\n", "local work");
            }
            "index-lock" => {
                std::fs::write(clone.join(".git/index.lock"), b"").expect("lock");
            }
            other => panic!("unknown case {other}"),
        }
        if case.name != "ahead" {
            let file = if case.name == "untracked" {
                "new.txt"
            } else {
                "a.txt"
            };
            env.push_new_commit(&bare, file, "upstream change\n");
        }
        before.push((env.head(&clone), tree_bytes(&clone)));
    }

    let home = env.home("a");
    env.sync_root(&home);
    let states = env.status(&home, &[]);
    for (case, (head, bytes)) in cases.iter().zip(before) {
        let clone = env.path(&format!("root/{}", case.name));
        assert_eq!(env.head(&clone), head, "{}: HEAD moved", case.name);
        assert_eq!(
            tree_bytes(&clone),
            bytes,
            "{}: worktree bytes changed",
            case.name
        );
        let s = find(&states, None, case.name).expect("state");
        let why = s["pull_blocked"].as_str().unwrap_or_default();
        assert!(
            why.contains(case.expect),
            "{}: pull_blocked is {why:?}, expected it to contain {:?}",
            case.name,
            case.expect
        );
    }
}

#[test]
fn running_daemon_fast_forwards_within_one_interval() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 2s\n",
            env.path("root").display()
        ),
    );
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    let new = env.push_new_commit(&bare, "a.txt", "two\n");
    common::wait_for(
        "the daemon to fast-forward",
        Duration::from_secs(15),
        || (env.head(&clone) == new).then_some(()),
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// An unknown ssh host key: the hint is the ssh command that accepts it, with the
/// remote's own user, host and port (it said `ssh HOST` before).
#[test]
fn an_unknown_ssh_host_key_names_the_ssh_command_that_accepts_it() {
    let env = Env::new();
    let (_bare, clone) = env.remote_and_clone("k", "root/k");
    env.git(
        &clone,
        &[
            "remote",
            "set-url",
            "origin",
            "ssh://deploy@gitsync.invalid:2222/k.git",
        ],
    );
    // A stand-in for ssh meeting a host key it does not know, in batch mode.
    let ssh = env.path("fake-ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\necho 'No ED25519 host key is known for [gitsync.invalid]:2222 and you have requested strict checking.' >&2\necho 'Host key verification failed.' >&2\nexit 255\n",
    )
    .expect("write");
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let home = env.home("a");
    let out = env
        .gitsync_command(
            &home,
            &["sync", "--root", env.path("root").to_str().expect("utf8")],
        )
        .env("GIT_SSH_COMMAND", &ssh)
        .env("GIT_SSH_VARIANT", "ssh")
        .output()
        .expect("run");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("connect once by hand (`ssh -p 2222 deploy@gitsync.invalid`)"),
        "{said}"
    );
}

#[test]
fn a_remote_whose_ssh_key_wants_a_passphrase_fails_at_once_with_what_to_do() {
    let env = Env::new();
    let (_bare, clone) = env.remote_and_clone("k", "root/k");
    env.git(
        &clone,
        &["remote", "set-url", "origin", "ssh://gitsync.invalid/k.git"],
    );
    // A stand-in for ssh asking for a key's passphrase: it waits on the terminal, as ssh
    // does, and fails as ssh does when there is none.
    let ssh = env.path("fake-ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nif (: </dev/tty) 2>/dev/null; then printf 'Enter passphrase for key: ' >/dev/tty; read -r x </dev/tty; fi\necho \"read_passphrase: can't open /dev/tty: No such device or address\" >&2\necho 'git@gitsync.invalid: Permission denied (publickey).' >&2\nexit 255\n",
    )
    .expect("write");
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let home = env.home("a");
    let start = std::time::Instant::now();
    let out = env
        .gitsync_command(
            &home,
            &["sync", "--root", env.path("root").to_str().expect("utf8")],
        )
        .env("GIT_SSH_COMMAND", &ssh)
        .output()
        .expect("run");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the fetch waited for an answer"
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ssh-agent"), "{stderr}");
}

/// `gitsync sync` runs git's auto maintenance after its fetch, as `git fetch` would (now
/// once the state is published, and left to finish on its own): with every fetch kept as
/// a pack (`fetch.unpackLimit=1`) and `gc.autoPackLimit=1`, the pack a sync fetches next
/// to the clone's own makes two, and `gc --auto` packs them into one.
#[test]
fn sync_runs_gits_auto_maintenance_after_its_fetch() {
    let env = Env::new();
    let home = env.home("maintenance");
    let (bare, clone) = env.remote_and_clone("kept", "root/kept");
    env.git(&clone, &["config", "fetch.unpackLimit", "1"]);
    env.git(&clone, &["config", "gc.autoPackLimit", "1"]);
    let packs = || {
        std::fs::read_dir(clone.join(".git/objects/pack"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                    .count()
            })
            .unwrap_or(0)
    };
    env.git(&clone, &["repack", "-q", "-a", "-d"]);
    assert_eq!(packs(), 1, "the clone starts with one pack");
    let new = env.push_new_commit(&bare, "a.txt", "two\n");
    env.sync_root(&home);
    assert_eq!(env.git(&clone, &["rev-parse", "HEAD"]).trim(), new);
    common::wait_for(
        "git's auto maintenance to pack the fetched pack with the clone's",
        Duration::from_secs(60),
        || (packs() == 1 && !clone.join(".git/gc.pid").exists()).then_some(()),
    );
}

/// The cache tree of `clone`'s index: each node as "folder id entries", or "folder
/// invalid", in a stable order.
fn cache_tree(clone: &std::path::Path) -> Vec<String> {
    let index = gix::index::File::at(
        clone.join(".git/index"),
        gix::hash::Kind::Sha1,
        false,
        Default::default(),
    )
    .expect("read the index");
    let mut out = Vec::new();
    let mut stack: Vec<(String, &gix::index::extension::Tree)> = index
        .tree()
        .map(|t| (String::new(), t))
        .into_iter()
        .collect();
    while let Some((folder, node)) = stack.pop() {
        out.push(match node.num_entries {
            Some(n) => format!("{folder}/ {} {n}", node.id),
            None => format!("{folder}/ invalid"),
        });
        for child in &node.children {
            let name = String::from_utf8_lossy(&child.name);
            stack.push((format!("{folder}/{name}"), child));
        }
    }
    out.sort();
    out
}

#[test]
fn a_clean_fast_forward_leaves_the_cache_tree_git_merge_leaves() {
    let env = Env::new();
    let home = env.home("cache-tree");
    let bare = env.path("remotes/tree.git");
    std::fs::create_dir_all(&bare).expect("mkdir");
    env.git(&bare, &["init", "--bare", "-q"]);
    let seed = env.path("seeds/tree");
    for (file, text) in [
        ("a.txt", "a\n"),
        ("docs/x.md", "x\n"),
        ("docs/deep/y.md", "y\n"),
        ("gone/old.txt", "old\n"),
        ("keep/k.txt", "k\n"),
        ("keep/sub/s.txt", "s\n"),
    ] {
        std::fs::create_dir_all(seed.join(file).parent().expect("parent")).expect("mkdir");
        std::fs::write(seed.join(file), text).expect("write");
    }
    env.git(&seed, &["init", "-q"]);
    env.git(&seed, &["add", "."]);
    env.git(&seed, &["commit", "-qm", "base"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let clone = env.clone_of(&bare, "root/tree");
    let twin = env.clone_of(&bare, "twin/tree");
    let touched = env.clone_of(&bare, "root/touched");
    assert!(
        cache_tree(&clone).iter().all(|n| !n.ends_with("invalid")),
        "git clone left a valid cache tree: {:?}",
        cache_tree(&clone)
    );
    // The push: a deep file changed, a folder gone, new folders, a new file at the top.
    std::fs::write(seed.join("docs/deep/y.md"), "y, changed\n").expect("write");
    std::fs::remove_dir_all(seed.join("gone")).expect("rm");
    std::fs::create_dir_all(seed.join("new/dir")).expect("mkdir");
    std::fs::write(seed.join("new/dir/n.txt"), "n\n").expect("write");
    std::fs::write(seed.join("b.txt"), "b\n").expect("write");
    env.git(&seed, &["add", "-A"]);
    env.git(&seed, &["commit", "-qm", "push"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let new = env.head(&seed);
    // A file staged and staged back: the index is the old tree again, but git left its
    // cache tree invalid along the path, so nothing proves that: only the changed paths
    // are invalidated.
    std::fs::write(touched.join("keep/k.txt"), "k, staged\n").expect("write");
    env.git(&touched, &["add", "keep/k.txt"]);
    std::fs::write(touched.join("keep/k.txt"), "k\n").expect("write");
    env.git(&touched, &["add", "keep/k.txt"]);

    env.sync_root(&home);
    env.git(&twin, &["pull", "-q", "--ff-only"]);
    for dir in [&clone, &twin, &touched] {
        assert_eq!(
            env.head(dir),
            new,
            "{} was not fast-forwarded",
            dir.display()
        );
        let wrong = common::ff::cache_tree_errors(&env, dir);
        assert!(wrong.is_empty(), "{}: {wrong:?}", dir.display());
    }
    let tree = env.git(&clone, &["rev-parse", "HEAD^{tree}"]);
    let ours = cache_tree(&clone);
    assert!(
        ours.contains(&format!("/ {} 7", tree.trim())),
        "the root does not name the new tree: {ours:?}"
    );
    assert_eq!(
        ours,
        cache_tree(&twin),
        "not the cache tree git merge leaves"
    );
    assert!(
        cache_tree(&touched).iter().any(|n| n == "/ invalid"),
        "the root names a tree nothing proved: {:?}",
        cache_tree(&touched)
    );
}
