//! Races against a large fast-forward (issue 11): saves while it runs, branch switching
//! while it is decided on, and stop, SIGTERM and SIGKILL in the middle of it.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use common::ff::{assert_whole, big_push, kept_texts};

/// Saves made by the writer: (file, the line it added). A save is lost when its line is
/// neither in the file when the writer looks again nor in a file kept aside.
struct Writer {
    clone: PathBuf,
    saves: usize,
    lost: Vec<String>,
}

impl Writer {
    /// One save and its undo on a random file: append (`>>`) or write-then-rename, then a
    /// look that the save is still there, then the file put back as it was.
    fn save_once(&mut self, rng: &mut fastrand::Rng, files: usize) {
        let rel = format!("f/{:04}.txt", rng.usize(..files));
        let path = self.clone.join(&rel);
        let Ok(before) = std::fs::read_to_string(&path) else {
            return;
        };
        if before.contains("rewritten") {
            return; // The push has landed for this file: nothing to undo against.
        }
        self.saves += 1;
        let line = format!("save {} by the user\n", self.saves);
        if rng.bool() {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open for append");
            f.write_all(line.as_bytes()).expect("append");
        } else {
            let tmp = path.with_extension("txt.swp");
            std::fs::write(&tmp, format!("{before}{line}")).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..20)));
        // The look: the file (briefly absent while a fast-forward puts it back) or a kept copy.
        let mut seen = false;
        for _ in 0..50 {
            if let Ok(now) = std::fs::read_to_string(&path) {
                seen = now.contains(&line);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !seen && !kept_texts(&self.clone).iter().any(|t| t.contains(&line)) {
            self.lost.push(format!("{rel}: {}", line.trim()));
        }
        if seen {
            let tmp = path.with_extension("txt.swp");
            std::fs::write(&tmp, &before).expect("write");
            std::fs::rename(&tmp, &path).expect("undo");
        }
    }
}

fn write_while(
    clone: &Path,
    files: usize,
    seed: u64,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Writer> {
    let clone = clone.to_path_buf();
    std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut writer = Writer {
            clone,
            saves: 0,
            lost: Vec::new(),
        };
        while running.load(Ordering::SeqCst) {
            writer.save_once(&mut rng, files);
            std::thread::sleep(Duration::from_millis(rng.u64(0..30)));
        }
        writer
    })
}

#[test]
fn saves_during_a_3000_file_fast_forward_through_sync_are_never_lost() {
    let env = Env::new();
    let files = 3000;
    let (_bare, clone, old, new) = big_push(&env, "big", files);
    let home = env.home("a");
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let running = Arc::new(AtomicBool::new(true));
    let writer = write_while(&clone, files, seed, running.clone());
    // `gitsync sync` again and again while the user saves: each try either finds the
    // worktree dirty, or starts and is undone by a save, or lands.
    let mut tries = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) && env.head(&clone) == old {
        let out = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
        assert!(out.status.code().is_some(), "sync died");
        tries += 1;
    }
    running.store(false, Ordering::SeqCst);
    let writer = writer.join().expect("writer");
    eprintln!("{} saves, {tries} tries", writer.saves);
    assert!(
        writer.saves > 20,
        "the writer hardly saved: the race proves nothing"
    );
    assert!(writer.lost.is_empty(), "saves lost: {:?}", writer.lost);
    // The writer stopped and put everything back: the pull happens.
    let left = env.git(&clone, &["status", "--porcelain"]);
    assert!(left.is_empty(), "the writer left changes behind:\n{left}");
    env.sync_root(&home);
    assert_eq!(assert_whole(&env, &clone, &old, &new), new);
    assert_eq!(
        std::fs::read_to_string(clone.join("f/0042.txt")).expect("read"),
        "line 42, rewritten by the push\n"
    );
}

#[test]
fn a_user_who_keeps_saving_is_told_and_the_daemon_pulls_once_they_stop() {
    let env = Env::new();
    let files = 3000;
    let (_bare, clone, old, new) = big_push(&env, "big", files);
    // The daemon starts before the push reaches this clone: reset it to the old commit.
    env.git(&clone, &["reset", "-q", "--hard", &old]);
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 1s\nhooks:\n  install: false\n",
            env.path("root").display()
        ),
    );
    let running = Arc::new(AtomicBool::new(true));
    let writer = write_while(&clone, files, fastrand::u64(..), running.clone());
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    let told = common::wait_for_logged(
        "status to say the worktree is being edited",
        Duration::from_secs(20),
        &[&daemon],
        || {
            let states = env.status(&home, &[]);
            let s = common::find(&states, None, "big")?;
            s["pull_blocked"]
                .as_str()
                .filter(|w| w.contains("being edited") || w.contains("not committed"))
                .map(str::to_string)
        },
    );
    eprintln!("status said: {told}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.head(&clone), old, "pulled while the user kept saving");
    running.store(false, Ordering::SeqCst);
    let writer = writer.join().expect("writer");
    assert!(writer.lost.is_empty(), "saves lost: {:?}", writer.lost);
    common::wait_for_logged(
        "the pull once the user stopped",
        Duration::from_secs(20),
        &[&daemon],
        || (env.head(&clone) == new).then_some(()),
    );
    assert_eq!(daemon.stop(), Some(0));
    assert_whole(&env, &clone, &old, &new);
}

#[test]
fn only_the_branch_decided_on_moves_while_the_user_switches_branches() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    let mut pushed = Vec::new();
    let running = Arc::new(AtomicBool::new(true));
    let switcher = {
        let (running, clone) = (running.clone(), clone.clone());
        let home = env.home("default");
        std::thread::spawn(move || {
            let git = |args: &[&str]| {
                Command::new("git")
                    .current_dir(&clone)
                    .env("HOME", &home)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .args(args)
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            };
            let mut made = Vec::new();
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let name = format!("t{n}");
                if git(&["checkout", "-q", "-b", &name]) {
                    made.push(name);
                }
                git(&["checkout", "-q", "main"]);
                git(&["checkout", "-q", "--detach"]);
                git(&["checkout", "-q", "main"]);
                n += 1;
            }
            made
        })
    };
    for i in 0..8 {
        pushed.push(env.push_new_commit(&bare, "a.txt", &format!("push {i}\n")));
        for _ in 0..3 {
            let _ = env.gitsync(&home, &["sync", "--root", clone.to_str().expect("utf8")]);
        }
    }
    running.store(false, Ordering::SeqCst);
    let made = switcher.join().expect("switcher");
    assert!(made.len() > 3, "the switcher hardly switched");
    // Every branch tN was made at some commit of main's and never moved after.
    for name in &made {
        let log = env.git(&clone, &["reflog", "show", "--format=%gs", name]);
        assert_eq!(
            log.lines().count(),
            1,
            "{name} moved after it was made:\n{log}"
        );
        assert!(
            !log.contains("gitsync"),
            "gitsync moved {name}, a branch it never decided on"
        );
    }
    // main moved only by gitsync's fast-forwards, each from a commit to a pushed one.
    let log = env.git(&clone, &["reflog", "show", "--format=%H %gs", "main"]);
    for line in log.lines().filter(|l| l.contains("gitsync")) {
        let sha = line.split(' ').next().expect("sha");
        assert!(
            pushed.iter().any(|p| p == sha),
            "main moved to {sha}, which was never pushed"
        );
    }
    let status = env.git(&clone, &["status", "--porcelain"]);
    assert!(
        status.is_empty(),
        "worktree left dirty:\n{status}\nHEAD: {}\nmain's reflog:\n{log}",
        env.git(&clone, &["rev-parse", "--abbrev-ref", "HEAD"])
    );
}

/// Starts a daemon on `home`, waits until a fast-forward of `clone` is in the middle of
/// moving files (its journal exists), then calls `strike` with the daemon.
fn strike_mid_fast_forward(
    env: &Env,
    files: usize,
    strike: impl FnOnce(&mut common::Daemon, &Path),
    after: impl FnOnce(&Env, &Path, &str, &str),
) {
    let (_bare, clone, old, new) = big_push(env, "big", files);
    env.git(&clone, &["fetch", "-q"]);
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 1h\nhooks:\n  install: false\n",
            env.path("root").display()
        ),
    );
    let mut daemon = env.spawn(&home, &[]);
    let journal = clone.join(".git/gitsync/ff/journal");
    let start = Instant::now();
    while !journal.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60)
                && head_from_files(&clone).as_deref() != Some(new.as_str()),
            "never caught the fast-forward in the middle:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_micros(300));
    }
    strike(&mut daemon, &clone);
    after(env, &clone, &old, &new);
}

/// The commit the checked-out branch of `clone` names, read from git's files rather than
/// by running git: a git command running in the worktree is the user's to the
/// fast-forward, which then refuses and is tried again later, and a test that polls HEAD
/// with git while it waits for the fast-forward's journal would cause what it then
/// stops the daemon in the middle of.
fn head_from_files(clone: &Path) -> Option<String> {
    let head = std::fs::read_to_string(clone.join(".git/HEAD")).ok()?;
    let name = head.trim().strip_prefix("ref: ")?.to_string();
    if let Ok(id) = std::fs::read_to_string(clone.join(".git").join(&name)) {
        return Some(id.trim().to_string());
    }
    let packed = std::fs::read_to_string(clone.join(".git/packed-refs")).ok()?;
    packed
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" {name}")).map(str::to_string))
}

fn pid_of_helper(clone: &Path) -> Option<i32> {
    let journal = std::fs::read_to_string(clone.join(".git/gitsync/ff/journal")).ok()?;
    journal
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
}

fn signal(sig: &str, pid: i32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn wait_gone(pid: i32) {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split(' ').nth(2) == Some("Z") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{pid} never ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every process whose parent is `pid`, from /proc.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn sigterm_in_the_middle_of_a_5000_file_fast_forward_finishes_it() {
    let env = Env::new();
    strike_mid_fast_forward(
        &env,
        5000,
        |daemon, _| assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text()),
        |env, clone, old, new| {
            assert_eq!(assert_whole(env, clone, old, new), new);
        },
    );
}

#[test]
fn gitsync_stop_in_the_middle_of_a_5000_file_fast_forward_finishes_it() {
    let env = Env::new();
    strike_mid_fast_forward(
        &env,
        5000,
        |daemon, _| {
            let out = env.gitsync(&env.home("a"), &["stop"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = daemon.child.wait();
        },
        |env, clone, old, new| {
            assert_eq!(assert_whole(env, clone, old, new), new);
        },
    );
}

#[test]
fn sigkill_of_the_daemon_alone_lets_the_fast_forward_finish() {
    let env = Env::new();
    strike_mid_fast_forward(
        &env,
        5000,
        |daemon, clone| {
            let helper = pid_of_helper(clone);
            daemon.child.kill().expect("SIGKILL");
            let _ = daemon.child.wait();
            if let Some(helper) = helper {
                wait_gone(helper);
            }
        },
        |env, clone, old, new| {
            assert_eq!(assert_whole(env, clone, old, new), new);
        },
    );
}

#[test]
fn sigterm_to_the_daemon_and_all_its_children_together_leaves_one_whole_commit() {
    let env = Env::new();
    strike_mid_fast_forward(
        &env,
        5000,
        |daemon, clone| {
            let pid = daemon.child.id() as i32;
            let helper = pid_of_helper(clone);
            let mut all = vec![pid];
            all.extend(children(pid));
            if let Some(h) = helper {
                all.push(h);
                all.extend(children(h));
            }
            for p in &all {
                signal("TERM", *p);
            }
            let _ = daemon.child.wait();
            if let Some(helper) = helper {
                wait_gone(helper);
            }
        },
        |env, clone, old, new| {
            assert_whole(env, clone, old, new);
        },
    );
}

#[test]
fn sigkill_of_the_fast_forward_itself_is_rolled_back_by_the_next_sync() {
    let env = Env::new();
    strike_mid_fast_forward(
        &env,
        5000,
        |daemon, clone| {
            let helper = pid_of_helper(clone).expect("the helper's pid in the journal");
            signal("KILL", helper);
            wait_gone(helper);
            assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
        },
        |env, clone, old, new| {
            // Whatever the kill left, the repair puts it wholly at one commit...
            let out = env.gitsync(
                &env.home("a"),
                &[
                    "fast-forward-helper",
                    "--recover",
                    "--worktree",
                    clone.to_str().expect("utf8"),
                ],
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("recovered"));
            assert_whole(env, clone, old, new);
            // ...and the next sync pulls.
            env.sync_root(&env.home("a"));
            assert_eq!(assert_whole(env, clone, old, new), new);
        },
    );
}
