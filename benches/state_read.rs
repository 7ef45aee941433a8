//! Benchmark: reading the state of 200 repositories of ~1,000 files each (some dirty),
//! gitsync's in-process gix read against GitArgus's approach, a shell loop of
//! `git status --porcelain=v2 --branch` over the same repositories.
//!
//! Run: `cargo bench --bench state_read` (set GITSYNC_BENCH_DIR to reuse generated
//! repositories; GITSYNC_BENCH_ROUNDS for more rounds). Prints medians and the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitsync::discover::{self, Repo};
use gitsync::git::state;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads every repository with `threads` threads, as the daemon's syncer does.
fn read_all(repos: &[Repo], threads: usize) -> usize {
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(repo) = repos.get(i) else { break };
                    let snap = state::read("bench", &repo.name, &repo.path);
                    if snap.state.error.is_some() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    errors.into_inner()
}

fn git_loop(root: &Path, home: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("bash")
        .arg("-c")
        .arg("for r in \"$1\"/*/; do git -C \"$r\" status --porcelain=v2 --branch >/dev/null || exit 1; done")
        .arg("loop")
        .arg(root)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("bash");
    assert!(status.success(), "git status loop failed");
    start.elapsed()
}

fn main() {
    let dir = std::env::var_os("GITSYNC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gitsync-bench-200x1000"));
    let rounds: usize = std::env::var("GITSYNC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let made = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/make-repos.sh"
        ))
        .arg(&dir)
        .args(["200", "1000"])
        .status()
        .expect("make-repos.sh");
    assert!(made.success(), "generating repositories failed");
    let home = dir.join("home");
    // SAFETY of intent: the benchmark is single-threaded here; gix reads HOME for config.
    unsafe { std::env::set_var("HOME", &home) };
    let repos = discover::walk(&dir.join("root"));
    assert_eq!(repos.len(), 200, "expected 200 repositories");

    // Warm the page cache and git's index stat data for both sides.
    assert_eq!(
        read_all(&repos, 4),
        0,
        "every repository reads without error"
    );
    git_loop(&dir.join("root"), &home);

    let (mut ours4, mut ours1, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        read_all(&repos, 4);
        ours4.push(t.elapsed());
        let t = Instant::now();
        read_all(&repos, 1);
        ours1.push(t.elapsed());
        theirs.push(git_loop(&dir.join("root"), &home));
    }
    let (o4, o1, g) = (median(ours4), median(ours1), median(theirs));
    println!("state of 200 repositories x 1000 files, median of {rounds} rounds");
    println!(
        "  git status --porcelain=v2 --branch loop (GitArgus): {:>8.1} ms",
        g.as_secs_f64() * 1e3
    );
    println!(
        "  gitsync in-process, 4 threads (the daemon):       {:>8.1} ms  ratio {:.2}x",
        o4.as_secs_f64() * 1e3,
        o4.as_secs_f64() / g.as_secs_f64()
    );
    println!(
        "  gitsync in-process, 1 thread:                     {:>8.1} ms  ratio {:.2}x",
        o1.as_secs_f64() * 1e3,
        o1.as_secs_f64() / g.as_secs_f64()
    );
    println!("  goal: at most 0.50x");
}
