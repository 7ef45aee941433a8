//! The second attack on the fast-forward (issue 20): index flags that hide edits, kills at
//! random instants, writes through descriptors opened before it, readers that must never
//! find a tracked file missing, the user's own git commands racing it, and pushes that
//! change no file. Each test drives the real helper (`gitsync fast-forward-helper`) or
//! `gitsync sync` on real repositories. `GITSYNC_SIGNAL_CASES` sets how many random kills
//! (default 8).

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use common::ff::{assert_whole, big_push, kept_texts};

/// [`big_push`] with the push fetched into the clone: (clone, old, new).
fn fetched_push(env: &Env, name: &str, files: usize) -> (PathBuf, String, String) {
    let (_bare, clone, old, new) = big_push(env, name, files);
    env.git(&clone, &["fetch", "-q"]);
    (clone, old, new)
}

/// Starts the helper on `clone` from `old` to `new`.
fn helper(env: &Env, clone: &Path, old: &str, new: &str) -> Child {
    env.gitsync_command(
        &env.home("a"),
        &[
            "fast-forward-helper",
            "--worktree",
            clone.to_str().expect("utf8"),
            "--branch",
            "refs/heads/main",
            "--from",
            old,
            "--to",
            new,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the helper")
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().expect("wait for the helper");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn assume_unchanged_and_fsmonitor_hidden_edits_are_never_overwritten() {
    let env = Env::new();
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    let home = env.home("a");
    // Each case: how the edit is hidden from git, and what the push does to the file.
    let mut n = 0;
    for hide in ["assume-unchanged", "assume-unchanged-big"] {
        for push in ["modify", "delete", "chmod"] {
            n += 1;
            let (bare, clone) = env.remote_and_clone(&format!("r{n}"), &format!("root/r{n}"));
            env.commit(&clone, "conf.txt", "setting = 1\n", "conf");
            env.git(&clone, &["push", "-q", "origin", "main"]);
            let size = if hide.ends_with("big") {
                100_000 + rng.usize(..100_000)
            } else {
                1 + rng.usize(..50)
            };
            let edit: String = (0..size).map(|_| rng.alphanumeric()).collect();
            env.git(&clone, &["update-index", "--assume-unchanged", "conf.txt"]);
            std::fs::write(clone.join("conf.txt"), &edit).expect("edit");
            // Another machine pushes.
            let scratch = env.clone_of(&bare, &format!("scratch/r{n}"));
            match push {
                "modify" => {
                    env.write(&scratch, "conf.txt", "setting = 2\n");
                }
                "delete" => {
                    env.git(&scratch, &["rm", "-q", "conf.txt"]);
                }
                _ => {
                    std::fs::set_permissions(
                        scratch.join("conf.txt"),
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )
                    .expect("chmod");
                }
            }
            env.git(&scratch, &["commit", "-qam", "push"]);
            env.git(&scratch, &["push", "-q", "origin", "main"]);
            let out = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            let now = std::fs::read_to_string(clone.join("conf.txt")).unwrap_or_default();
            let kept = kept_texts(&clone);
            assert!(
                now == edit || kept.contains(&edit),
                "{hide} edit of {size} bytes lost to a {push} push; sync said: {said}"
            );
            assert!(
                !clone.join(".git/index.lock").exists(),
                "index.lock left behind"
            );
        }
    }
}

/// The helper judges most files by git's stat test instead of reading them: an edit that
/// keeps the size and puts the modification time back (`touch -r`, an editor that restores
/// it) changes the change time, and is still refused.
#[test]
fn an_edit_that_keeps_size_and_modification_time_is_still_seen() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let file = clone.join("a.txt");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let set_mtime = |when| {
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
    };
    // The index records the file as it is, long after it was written: not racy.
    set_mtime(long_ago);
    env.git(&clone, &["update-index", "--refresh"]);
    let old = env.head(&clone);
    let new = env.push_new_commit(&bare, "a.txt", "pushed\n");
    env.git(&clone, &["fetch", "-q"]);
    let before = std::fs::read(&file).expect("read");
    let mut edit = before.clone();
    edit[0] = if edit[0] == b'X' { b'Y' } else { b'X' };
    std::fs::write(&file, &edit).expect("same-size edit");
    set_mtime(long_ago);
    let out = finish(helper(&env, &clone, &old, &new));
    assert!(out.contains("blocked"), "the edit was not seen: {out}");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        edit,
        "the edit is gone"
    );
    assert_eq!(env.head(&clone), old);
    // Without the edit, the same push moves (the stat test does let clean files through).
    std::fs::write(&file, &before).expect("undo");
    env.git(&clone, &["update-index", "--refresh"]);
    let out = finish(helper(&env, &clone, &old, &new));
    assert!(out.contains("moved"), "{out}");
    assert_eq!(std::fs::read(&file).expect("read"), b"pushed\n");
}

#[test]
fn a_push_that_changes_no_file_moves_the_branch() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    for how in ["allow-empty", "commit-and-revert"] {
        let scratch = env.path(&format!("scratch/{how}"));
        env.clone_of(&bare, &format!("scratch/{how}"));
        if how == "allow-empty" {
            env.git(&scratch, &["commit", "-q", "--allow-empty", "-m", "empty"]);
        } else {
            env.commit(&scratch, "a.txt", "changed\n", "change");
            env.git(&scratch, &["revert", "--no-edit", "HEAD"]);
        }
        env.git(&scratch, &["push", "-q", "origin", "main"]);
        let pushed = env.head(&scratch);
        let out = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
        assert_eq!(
            env.head(&clone),
            pushed,
            "{how}: the branch stayed behind; sync said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(env.git(&clone, &["status", "--porcelain"]).is_empty());
    }
}

/// Every file's (inode, change time in nanoseconds) under `dir`, `.git` left out.
fn change_times(dir: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let meta = path.symlink_metadata().expect("lstat");
            if meta.is_dir() {
                stack.push(path);
            } else {
                let ctime = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
                out.insert(path, (meta.ino(), ctime));
            }
        }
    }
    out
}

/// A folder nothing can be written into (issue 20, item 8: it was called "being edited"
/// and retried every few seconds): the refusal names the folder and says to check its
/// permissions, nothing moves, no file is so much as renamed (change times stay), and
/// once the folder is writable again the next sync pulls.
#[test]
fn an_unwritable_folder_is_named_and_no_file_is_touched() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    let scratch = env.clone_of(&bare, "scratch/r");
    env.write(&scratch, "dir/c.txt", "charlie\n");
    env.git(&scratch, &["add", "-A"]);
    env.git(&scratch, &["commit", "-qm", "dir"]);
    env.git(&scratch, &["push", "-q", "origin", "main"]);
    let sync = || env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
    sync();
    assert_eq!(env.head(&clone), env.head(&scratch));
    // The push deletes a file at the top (moved out first) and changes one in dir.
    env.git(&scratch, &["rm", "-q", "b.txt"]);
    env.write(&scratch, "dir/c.txt", "charlie, pushed\n");
    env.git(&scratch, &["commit", "-qam", "push"]);
    env.git(&scratch, &["push", "-q", "origin", "main"]);
    let before_head = env.head(&clone);
    let frozen = common::disk::Immutable::set(&clone.join("dir"));
    let before = change_times(&clone);
    let out = sync();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot write dir") && said.contains("permissions"),
        "the refusal does not name the folder: {said}"
    );
    assert!(!said.contains("being edited"), "{said}");
    assert_eq!(env.head(&clone), before_head, "{said}");
    assert_eq!(
        change_times(&clone),
        before,
        "a refused fast-forward touched files"
    );
    drop(frozen);
    sync();
    assert_eq!(env.head(&clone), env.head(&scratch));
    assert!(!clone.join("b.txt").exists());
    assert_eq!(
        std::fs::read(clone.join("dir/c.txt")).expect("read"),
        b"charlie, pushed\n"
    );
}

/// A worktree on another file system than its git folder (`git clone --separate-git-dir`;
/// a linked worktree on another disk): files are staged at the worktree's top, so the
/// fast-forward still moves each one with a rename(2), and the staging folder goes after.
/// When that disk is full, the refusal says so and nothing changes.
#[test]
fn a_worktree_on_another_file_system_than_its_git_folder_is_pulled() {
    let env = Env::new();
    let (bare, _) = env.remote_and_clone("r", "first/r");
    let home = env.home("a");
    let clone = env.path("root/r");
    let disk = common::disk::Tmpfs::mount(&clone, "2m");
    std::fs::create_dir_all(env.path("gitdirs")).expect("mkdir");
    let git_dir = env.path("gitdirs/r");
    env.git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            &format!("--separate-git-dir={}", git_dir.display()),
            bare.to_str().expect("utf8"),
            clone.to_str().expect("utf8"),
        ],
    );
    let scratch = env.clone_of(&bare, "scratch/r");
    env.write(&scratch, "a.txt", "one, pushed\n");
    env.write(&scratch, "new/deep/n.txt", "new\n");
    env.git(&scratch, &["add", "-A"]);
    env.git(&scratch, &["commit", "-qm", "push"]);
    env.git(&scratch, &["push", "-q", "origin", "main"]);
    let sync = || {
        let out = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let said = sync();
    assert_eq!(env.head(&clone), env.head(&scratch), "{said}");
    assert_eq!(
        std::fs::read(clone.join("a.txt")).expect("read"),
        b"one, pushed\n"
    );
    assert_eq!(
        std::fs::read(clone.join("new/deep/n.txt")).expect("read"),
        b"new\n"
    );
    assert!(env.git(&clone, &["status", "--porcelain"]).is_empty());
    assert!(
        !clone.join(".gitsync-ff").exists(),
        "the staging folder stayed"
    );
    assert!(!git_dir.join("gitsync/ff").exists());

    // The worktree's disk fills up; the next push cannot be written.
    disk.fill("filler.bin");
    env.write(&scratch, "a.txt", "one, pushed twice\n");
    env.git(&scratch, &["commit", "-qam", "again"]);
    env.git(&scratch, &["push", "-q", "origin", "main"]);
    let before = env.head(&clone);
    let said = sync();
    assert_eq!(env.head(&clone), before, "{said}");
    assert!(
        said.to_lowercase().contains("no space left"),
        "the refusal does not say the disk is full: {said}"
    );
    assert_eq!(
        std::fs::read(clone.join("a.txt")).expect("read"),
        b"one, pushed\n"
    );
    assert!(
        !clone.join(".gitsync-ff").exists(),
        "the staging folder stayed"
    );
}

fn signal_cases() -> usize {
    std::env::var("GITSYNC_SIGNAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

#[test]
fn sigkill_of_the_helper_at_random_instants_is_recovered_by_one_sync() {
    let env = Env::new();
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (clone, old, new) = fetched_push(&env, "big", 5000);
    // How long a whole fast-forward takes here, so the kills land inside it.
    let start = Instant::now();
    finish(helper(&env, &clone, &old, &new));
    let whole = start.elapsed().as_micros() as u64;
    assert_eq!(assert_whole(&env, &clone, &old, &new), new);
    let home = env.home("a");
    let mut table: BTreeMap<&str, usize> = BTreeMap::new();
    for case in 0..signal_cases() {
        env.git(&clone, &["reset", "-q", "--hard", &old]);
        let mut child = helper(&env, &clone, &old, &new);
        let at = rng.u64(..whole.max(1000));
        std::thread::sleep(Duration::from_micros(at));
        let _ = child.kill();
        let _ = child.wait();
        // One sync recovers and then pulls: wholly at the new commit.
        let out = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let head = std::panic::catch_unwind(|| assert_whole(&env, &clone, &old, &new))
            .unwrap_or_else(|_| {
                panic!(
                    "case {case} (seed {seed}), killed after {at} us of {whole}; sync said {said}"
                )
            });
        assert_eq!(
            head, new,
            "case {case}: not pulled after the recovery; sync said {said}"
        );
        *table
            .entry(if at * 2 < whole { "early" } else { "late" })
            .or_default() += 1;
    }
    eprintln!("kills: {table:?}");
}

#[test]
fn writes_through_descriptors_opened_before_the_fast_forward_are_kept() {
    let env = Env::new();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let files = 3000;
    let (clone, old, new) = fetched_push(&env, "fds", files);
    for round in 0..3 {
        env.git(&clone, &["reset", "-q", "--hard", &old]);
        // Descriptors opened before the fast-forward, as an editor or a logger holds them.
        let mut open: Vec<(usize, std::fs::File)> = (0..100)
            .map(|_| rng.usize(..files))
            .map(|i| {
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(clone.join(format!("f/{i:04}.txt")))
                    .expect("open");
                (i, f)
            })
            .collect();
        let child = helper(&env, &clone, &old, &new);
        let mut lines = Vec::new();
        let mut n = 0;
        let started = Instant::now();
        // Write at random instants until the helper is done.
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let waiter = std::thread::spawn(move || {
            let out = finish(child);
            flag.store(true, Ordering::SeqCst);
            out
        });
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            let k = rng.usize(..open.len());
            let (i, f) = &mut open[k];
            n += 1;
            let line = format!("write {n} through an old descriptor of {i}\n");
            f.write_all(line.as_bytes()).expect("write");
            lines.push((*i, line));
            std::thread::sleep(Duration::from_micros(rng.u64(..300)));
        }
        let said = waiter.join().expect("helper thread");
        drop(open);
        let kept = kept_texts(&clone);
        for (i, line) in &lines {
            let now =
                std::fs::read_to_string(clone.join(format!("f/{i:04}.txt"))).unwrap_or_default();
            assert!(
                now.contains(line.as_str()) || kept.iter().any(|k| k.contains(line.as_str())),
                "round {round} (seed {seed}): lost {line:?} ({} writes); the helper said {said}",
                lines.len()
            );
        }
        let _ = std::fs::remove_dir_all(clone.join(".git/gitsync/kept"));
    }
}

#[test]
fn no_tracked_file_is_ever_missing_during_a_fast_forward() {
    let env = Env::new();
    let files = 3000;
    let (clone, old, new) = fetched_push(&env, "readers", files);
    for _ in 0..3 {
        env.git(&clone, &["reset", "-q", "--hard", &old]);
        let running = Arc::new(AtomicBool::new(true));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (clone, running) = (clone.clone(), running.clone());
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(r);
                    let (mut reads, mut missing) = (0usize, Vec::new());
                    while running.load(Ordering::SeqCst) {
                        let i = rng.usize(..files);
                        let path = clone.join(format!("f/{i:04}.txt"));
                        reads += 1;
                        if let Err(err) = std::fs::read(&path)
                            && err.kind() == std::io::ErrorKind::NotFound
                        {
                            missing.push(i);
                        }
                    }
                    (reads, missing)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let said = finish(helper(&env, &clone, &old, &new));
        running.store(false, Ordering::SeqCst);
        let mut all_missing = Vec::new();
        let mut reads = 0;
        for r in readers {
            let (n, missing) = r.join().expect("reader");
            reads += n;
            all_missing.extend(missing);
        }
        assert_eq!(assert_whole(&env, &clone, &old, &new), new, "{said}");
        assert!(
            all_missing.is_empty(),
            "{} of {reads} reads found a tracked file missing: {:?}",
            all_missing.len(),
            &all_missing[..all_missing.len().min(10)]
        );
    }
}

/// Runs `git` commands of the user's in `clone` while `run` does its fast-forward; returns
/// how many failed because of `index.lock`.
fn racing_git_commands(env: &Env, clone: &Path, run: impl FnOnce()) -> usize {
    let running = Arc::new(AtomicBool::new(true));
    let (dir, flag) = (clone.to_path_buf(), running.clone());
    let home = env.home("default");
    let user = std::thread::spawn(move || {
        let mut failed = 0;
        let mut tries = 0;
        while flag.load(Ordering::SeqCst) || tries == 0 {
            tries += 1;
            // A read-only command that refreshes the index, as editors run all the time,
            // and one that must write it.
            for args in [
                &["add", "--refresh", "."][..],
                &["update-index", "--refresh"],
            ] {
                let out = Command::new("git")
                    .current_dir(&dir)
                    .env("HOME", &home)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .args(args)
                    .output()
                    .expect("git");
                if String::from_utf8_lossy(&out.stderr).contains("index.lock") {
                    failed += 1;
                }
            }
            // An editor refreshes every so often, not back to back: the helper, which waits
            // while a git command of the user's runs ("not now"), gets a moment between.
            std::thread::sleep(Duration::from_millis(20));
        }
        failed
    });
    std::thread::sleep(Duration::from_millis(5));
    run();
    running.store(false, Ordering::SeqCst);
    user.join().expect("user thread")
}

#[test]
fn the_users_git_commands_fail_no_more_often_than_against_git_merge() {
    let env = Env::new();
    let files = 3000;
    let (clone, old, new) = fetched_push(&env, "racing", files);
    let (mut ours, mut merges) = (0, 0);
    for _ in 0..2 {
        env.git(&clone, &["reset", "-q", "--hard", &old]);
        merges += racing_git_commands(&env, &clone, || {
            // A merge that met the user's lock is tried again, as the helper is.
            for _ in 0..100 {
                let out = env.git_try(&clone, &["merge", "-q", "--ff-only", &new]);
                if out.status.success() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        assert_eq!(env.head(&clone), new, "git merge never got through");
        env.git(&clone, &["reset", "-q", "--hard", &old]);
        let mut said = String::new();
        ours += racing_git_commands(&env, &clone, || {
            // As the daemon does: a pull refused for a passing reason (a git command of the
            // user's running right then) is tried again.
            for _ in 0..500 {
                said = finish(helper(&env, &clone, &old, &new));
                if !said.contains("not now") && !said.contains("index.lock exists") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        assert_eq!(
            assert_whole(&env, &clone, &old, &new),
            new,
            "the helper said {said}"
        );
    }
    eprintln!("index.lock failures: gitsync {ours}, git merge {merges}");
    // Noise allowance: a few more failures than git.
    assert!(
        ours <= merges + 3,
        "the user's git commands failed {ours} times against gitsync, {merges} against git merge"
    );
}

/// A superproject `super` whose submodule `sub` (of `lib`) is recorded at lib's first
/// commit, cloned under the root with the submodule checked out, after `prepare(clone)`;
/// then another machine bumps it to lib's second commit and pushes.
/// Returns (the pushing seed, the clone, lib's second commit).
fn pushed_submodule_bump(env: &Env, prepare: impl FnOnce(&Path)) -> (PathBuf, PathBuf, String) {
    let (lib_bare, lib) = env.remote_and_clone("lib", "work/lib");
    let first = env.head(&lib);
    let second = env.commit(&lib, "lib.txt", "lib two\n", "lib two");
    env.git(&lib, &["push", "-q", "origin", "main"]);
    let (bare, seed) = env.remote_and_clone("super", "work/super");
    let lib_url = lib_bare.to_str().expect("utf8");
    env.git(&seed, &["submodule", "add", "-q", lib_url, "sub"]);
    env.git(&seed.join("sub"), &["checkout", "-q", &first]);
    env.git(&seed, &["add", "-A"]);
    env.git(&seed, &["commit", "-qm", "sub at the first commit"]);
    env.git(&seed, &["push", "-q", "origin", "main"]);
    let clone = env.clone_of(&bare, "root/super");
    env.git(&clone, &["submodule", "update", "--init", "-q"]);
    prepare(&clone);
    env.git(&seed.join("sub"), &["checkout", "-q", &second]);
    env.git(&seed, &["commit", "-qam", "bump sub"]);
    env.git(&seed, &["push", "-q", "origin", "main"]);
    (seed, clone, second)
}

#[test]
fn a_pushed_submodule_bump_does_not_block_the_pulls_after_it() {
    let env = Env::new();
    let (seed, clone, _) = pushed_submodule_bump(&env, |_| {});
    let home = env.home("a");
    env.sync_root(&home);
    assert_eq!(env.head(&clone), env.head(&seed), "the bump was not pulled");
    // As after git pull: the submodule stays where it was. Nobody worked there, so the
    // next push is pulled all the same.
    let next = env.commit(&seed, "a.txt", "after the bump\n", "after");
    env.git(&seed, &["push", "-q", "origin", "main"]);
    env.sync_root(&home);
    let states = env.status(&home, &[]);
    let s = common::find(&states, None, "super").expect("state of super");
    assert_eq!(
        env.head(&clone),
        next,
        "the pull after a submodule bump was refused: {}",
        s["pull_blocked"]
    );
    // Work in the submodule still blocks.
    std::fs::write(clone.join("sub/lib.txt"), "edited in the submodule\n").expect("edit");
    env.commit(&seed, "a.txt", "again\n", "again");
    env.git(&seed, &["push", "-q", "origin", "main"]);
    env.sync_root(&home);
    assert_eq!(
        env.head(&clone),
        next,
        "a pull buried work in the submodule"
    );
}

#[test]
fn with_submodule_recurse_a_pushed_bump_moves_the_clean_submodule_as_git_pull_would() {
    let env = Env::new();
    let (seed, clone, second) = pushed_submodule_bump(&env, |clone| {
        env.git(clone, &["config", "submodule.recurse", "true"]);
    });
    let home = env.home("a");
    env.sync_root(&home);
    assert_eq!(env.head(&clone), env.head(&seed), "the bump was not pulled");
    assert_eq!(
        env.head(&clone.join("sub")),
        second,
        "submodule.recurse is set: the clean submodule follows the bump"
    );
    let states = env.status(&home, &[]);
    let s = common::find(&states, None, "super").expect("state of super");
    assert!(
        s["submodules"]
            .as_array()
            .is_none_or(|lines| lines.is_empty()),
        "{s}"
    );
    assert!(
        env.git(&clone, &["status", "--porcelain"])
            .trim()
            .is_empty(),
        "the superproject is not clean after the update"
    );
}

#[test]
fn a_branch_whose_upstream_is_a_local_branch_is_pulled() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    env.git(
        &clone,
        &["checkout", "-q", "-b", "topic", "--track", "main"],
    );
    let pushed = env.push_new_commit(&bare, "a.txt", "pushed\n");
    // One sync: origin is fetched (main's remote; a plain `git fetch` on topic would
    // fetch from the repository itself), main (not checked out) follows origin/main, and
    // topic follows main.
    let home = env.home("a");
    env.sync_root(&home);
    let states = env.status(&home, &[]);
    let s = common::find(&states, None, "r").expect("state of r");
    assert_eq!(s["upstream"], "main", "{s}");
    assert_eq!(
        env.git(&clone, &["rev-parse", "main"]).trim(),
        pushed,
        "main did not follow origin/main"
    );
    assert_eq!(env.head(&clone), pushed, "topic was not pulled: {s}");
}

/// Every file under `dir`, `.git` included: relative path -> bytes (a symbolic link: its
/// target).
fn every_byte(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(folder) = todo.pop() {
        for entry in std::fs::read_dir(&folder).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(dir).expect("inside").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, b"/".to_vec());
                todo.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(rel, target.into_os_string().into_encoded_bytes());
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// A helper started ahead (`--wait-for-request`: `gitsync sync` and push events start it
/// while the fetch runs) touches nothing until it is handed its request. Its input ended
/// without one (nothing to pull, or its caller gone), it exits at once with no outcome and
/// every byte of the repository as it was; handed a request for objects fetched after it
/// started, it pulls them as the helper started after the fetch does; a malformed request
/// is refused with what was expected, and changes nothing. Both programs that run it
/// (`gitsync fast-forward-helper`, `gitsync-fast-forward`) are driven.
#[test]
fn a_helper_started_ahead_touches_nothing_until_it_is_handed_the_request() {
    let env = Env::new();
    let programs: [Vec<&str>; 2] = [
        vec![common::BIN, "fast-forward-helper"],
        vec![env!("CARGO_BIN_EXE_gitsync-fast-forward")],
    ];
    for (n, program) in programs.iter().enumerate() {
        let (_bare, clone, old, new) = big_push(&env, &format!("ahead{n}"), 300);
        let start = || {
            let mut cmd = Command::new(program[0]);
            cmd.args(&program[1..])
                .args([
                    "--worktree",
                    clone.to_str().expect("utf8"),
                    "--wait-for-request",
                ])
                .env("HOME", env.home("a"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("start the helper ahead")
        };
        let hand = |mut child: Child, request: &str| {
            let mut input = child.stdin.take().expect("stdin");
            input
                .write_all(request.as_bytes())
                .expect("write the request");
            drop(input);
            child.wait_with_output().expect("wait for the helper")
        };

        // Nothing decided: it waits, then its input ends.
        let before = every_byte(&clone);
        let child = start();
        std::thread::sleep(Duration::from_millis(50));
        let out = hand(child, "");
        assert!(out.status.success(), "{program:?}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{program:?} said something without a request: {out:?}"
        );
        let after = every_byte(&clone);
        let changed: Vec<&PathBuf> = before
            .keys()
            .chain(after.keys())
            .filter(|p| before.get(*p) != after.get(*p))
            .collect();
        assert!(
            changed.is_empty(),
            "{program:?} without a request changed {changed:?}"
        );

        // Started before the fetch, handed the decision after it.
        let child = start();
        env.git(&clone, &["fetch", "-q"]);
        let out = hand(child, &format!("refs/heads/main {old} {new}\n"));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            said.contains("\"outcome\":\"moved\""),
            "{program:?}: {said}"
        );
        assert_eq!(assert_whole(&env, &clone, &old, &new), new, "{program:?}");
        assert!(common::ff::cache_tree_errors(&env, &clone).is_empty());

        // A malformed request: refused, nothing moved.
        let before = every_byte(&clone);
        let out = hand(start(), &format!("refs/heads/main {new}\n"));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            said.contains("malformed request") && said.contains("<branch> <from> <to>"),
            "{program:?}: {said}"
        );
        assert_eq!(
            every_byte(&clone),
            before,
            "{program:?}: a malformed request changed files"
        );
    }
}
