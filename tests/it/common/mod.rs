//! Test harness: temporary HOMEs, real git repositories and bare remotes, and the real
//! `gitsync` binary. Every git and gitsync command runs with a temporary HOME and no system
//! config, so the developer's own git settings never leak in.
#![allow(dead_code)]

pub mod chromium;
pub mod disk;
pub mod ff;
pub mod moto;
pub mod servers;
pub mod sshd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Env {
    pub dir: tempfile::TempDir,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_gitsync");

impl Env {
    pub fn new() -> Env {
        let git = Command::new("git").arg("--version").output();
        assert!(
            git.is_ok_and(|o| o.status.success()),
            "git is required: apt-get install -y git"
        );
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        env.home("default");
        // The shared hub the tests configure as `local.path`, made as a user makes it: a
        // configured hub must exist (gitsync creates only its default one).
        std::fs::create_dir_all(env.path("hub")).expect("hub");
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A HOME folder named `name`, with a git identity and `init.defaultBranch=main`.
    pub fn home(&self, name: &str) -> PathBuf {
        let home = self.path(&format!("homes/{name}"));
        if !home.exists() {
            std::fs::create_dir_all(&home).expect("mkdir home");
            std::fs::write(
                home.join(".gitconfig"),
                "[user]\n\tname = Test\n\temail = test@example.invalid\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n[protocol \"file\"]\n\tallow = always\n",
            )
            .expect("write gitconfig");
        }
        home
    }

    /// `git` in `dir` with the test's HOME, dates and locale, not yet run.
    pub fn git_command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .env("HOME", self.home("default"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        cmd
    }

    /// Runs git in `dir` and returns stdout; panics with stderr when it fails.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_try(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn git_try(&self, dir: &Path, args: &[&str]) -> Output {
        self.git_command(dir).args(args).output().expect("run git")
    }

    /// Runs git in `dir` as the user whose HOME is `home` (so that the pre-push hook finds
    /// that user's daemon); returns the output whatever the exit status.
    pub fn git_as(&self, home: &Path, dir: &Path, args: &[&str]) -> Output {
        self.git_command(dir)
            .env("HOME", home)
            .args(args)
            .output()
            .expect("run git")
    }

    pub fn git_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.git_command(dir);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run git")
    }

    /// A bare remote `remotes/<name>.git` with one commit on main (a.txt), and a clone of
    /// it at `clone_at` (relative to the env).
    pub fn remote_and_clone(&self, name: &str, clone_at: &str) -> (PathBuf, PathBuf) {
        let bare = self.path(&format!("remotes/{name}.git"));
        if !bare.exists() {
            std::fs::create_dir_all(&bare).expect("mkdir bare");
            self.git(&bare, &["init", "--bare", "-q"]);
            let seed = self.path(&format!("seeds/{name}"));
            std::fs::create_dir_all(&seed).expect("mkdir seed");
            self.git(&seed, &["init", "-q"]);
            self.write(&seed, "a.txt", "one\n");
            self.write(&seed, "b.txt", "bee\n");
            self.git(&seed, &["add", "."]);
            self.git(&seed, &["commit", "-qm", "first"]);
            self.git(
                &seed,
                &["remote", "add", "origin", bare.to_str().expect("utf8")],
            );
            self.git(&seed, &["push", "-q", "origin", "main"]);
        }
        let clone = self.clone_of(&bare, clone_at);
        (bare, clone)
    }

    /// An empty bare remote `remotes/src.git` (branch `main`) and a new repository `work`
    /// whose `origin` is it; returns (bare, work).
    pub fn empty_source(&self) -> (PathBuf, PathBuf) {
        let bare = self.path("remotes/src.git");
        std::fs::create_dir_all(&bare).expect("mkdir");
        self.git(&bare, &["init", "--bare", "-q", "-b", "main"]);
        let work = self.path("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        self.git(&work, &["init", "-q", "-b", "main"]);
        self.git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf8")],
        );
        (bare, work)
    }

    pub fn clone_of(&self, bare: &Path, at: &str) -> PathBuf {
        let clone = self.path(at);
        std::fs::create_dir_all(clone.parent().expect("parent")).expect("mkdir");
        self.git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                bare.to_str().expect("utf8"),
                clone.to_str().expect("utf8"),
            ],
        );
        clone
    }

    pub fn write(&self, repo: &Path, file: &str, content: &str) {
        let path = repo.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write file");
    }

    /// Writes, commits and returns the new HEAD.
    pub fn commit(&self, repo: &Path, file: &str, content: &str, msg: &str) -> String {
        self.write(repo, file, content);
        self.git(repo, &["add", file]);
        self.git(repo, &["commit", "-qm", msg]);
        self.head(repo)
    }

    pub fn head(&self, repo: &Path) -> String {
        self.git(repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Commits in a scratch clone of `bare` and pushes; returns the pushed sha.
    pub fn push_new_commit(&self, bare: &Path, file: &str, content: &str) -> String {
        let name = format!(
            "scratch/{}",
            bare.file_name().expect("name").to_string_lossy()
        );
        let scratch = self.path(&name);
        if !scratch.exists() {
            self.clone_of(bare, &name);
        } else {
            self.git(&scratch, &["pull", "-q", "--ff-only"]);
        }
        let sha = self.commit(&scratch, file, content, &format!("change {file}"));
        self.git(&scratch, &["push", "-q", "origin", "main"]);
        sha
    }

    /// Writes `~/.gitsync/config.yml` under `home`.
    pub fn config(&self, home: &Path, yaml: &str) -> PathBuf {
        let path = home.join(".gitsync/config.yml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, yaml).expect("write config");
        path
    }

    pub fn gitsync_command(&self, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GITSYNC_CONFIG")
            .env_remove("GITSYNC_LOG")
            // AWS: static test credentials, nothing from the developer's profiles, and no
            // instance-metadata lookups: all traffic stays on loopback.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .stdin(Stdio::null());
        cmd
    }

    pub fn gitsync(&self, home: &Path, args: &[&str]) -> Output {
        self.gitsync_command(home, args)
            .output()
            .expect("run gitsync")
    }

    /// `gitsync sync --root <env>/root`, asserting it succeeds.
    pub fn sync_root(&self, home: &Path) {
        let root = self.path("root");
        let out = self.gitsync(home, &["sync", "--root", root.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `gitsync run` in the background, logging into `<home>/daemon.log`.
    pub fn spawn(&self, home: &Path, args: &[&str]) -> Daemon {
        self.spawn_env(home, args, &[])
    }

    /// As [`Env::spawn`], with extra environment variables (secrets named in the config).
    pub fn spawn_env(&self, home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(home.join("daemon.log")).expect("log file");
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut command = self.gitsync_command(home, &full);
        command.envs(vars.iter().copied());
        let child = command
            .env("GITSYNC_LOG", "gitsync=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gitsync run");
        Daemon {
            child,
            log: home.join("daemon.log"),
        }
    }

    /// `gitsync status --json` as parsed JSON records.
    pub fn status(&self, home: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["status", "--json"];
        args.extend_from_slice(extra);
        let out = self.gitsync(home, &args);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon log never said {needle:?}:\n{}", self.log_text());
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("daemon did not stop on SIGTERM:\n{}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon config of a test host `host`: its own root, the shared hub, and a pull
/// interval of an hour so that only events can explain a pull.
pub fn host_config(env: &Env, host: &str, root: &Path, hub: &Path) -> PathBuf {
    env.config(
        &env.home(host),
        &format!(
            "hostname: host-{host}\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
            root.display(),
            hub.display()
        ),
    )
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// As [`wait_for`], but a timeout panics with the logs of `daemons`, to show why.
pub fn wait_for_logged<T>(
    what: &str,
    timeout: Duration,
    daemons: &[&Daemon],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            let logs: Vec<String> = daemons
                .iter()
                .map(|d| format!("--- {}:\n{}", d.log.display(), d.log_text()))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir` except `.git`, with its bytes.
pub fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("prefix").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// The record of `repo` (and `host`, when given) in a status listing.
pub fn find<'a>(
    states: &'a [serde_json::Value],
    host: Option<&str>,
    repo: &str,
) -> Option<&'a serde_json::Value> {
    states
        .iter()
        .find(|s| s["repo"] == repo && host.is_none_or(|h| s["host"] == h))
}

/// The seed of a randomized attack: `GITSYNC_ATTACK_SEED`, or a random one, printed as
/// `GITSYNC_ATTACK_SEED=<n>` so that a failure can be replayed.
pub fn attack_seed() -> u64 {
    let seed = std::env::var("GITSYNC_ATTACK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("GITSYNC_ATTACK_SEED={seed}");
    seed
}
