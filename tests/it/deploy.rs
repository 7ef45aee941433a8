//! `gitsync deploy` against a real sshd and rsync on loopback (Debian's openssh-server, per
//! tests/support/sshd-rsync-recipe.sh), with gitleaks and detect-secrets installed by
//! `make deps` into .venv/bin.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Env;
use common::sshd::Sshd;

/// A key the gitleaks rules do not allow-list, and a GitHub token (both made up).
const AWS_KEY: &str = "AKIAQ3EGRWXYZ4NPLK7T";
const GH_TOKEN: &str = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8";

struct Scene {
    env: Env,
    home: PathBuf,
    /// The user's clone that is shipped, under the root.
    repo: PathBuf,
    /// Its remote, where "another host" pushes.
    bare: PathBuf,
    sshd: Sshd,
}

fn venv_path() -> String {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(
        venv.join("gitleaks").exists() && venv.join("detect-secrets").exists(),
        "gitleaks and detect-secrets are required in .venv/bin: run `make deps`"
    );
    format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

impl Scene {
    fn new() -> Scene {
        let env = Env::new();
        let home = env.home("deployer");
        let (bare, repo) = env.remote_and_clone("site", "root/site");
        env.write(&repo, "index.html", "<h1>one</h1>\n");
        env.write(&repo, "css/site.css", "body {}\n");
        env.write(&repo, "debug.log", "tracked but excluded\n");
        env.git(&repo, &["add", "."]);
        env.git(&repo, &["commit", "-qm", "site"]);
        env.git(&repo, &["push", "-q", "origin", "main"]);
        let sshd = Sshd::start(&env.path("sshd"));
        Scene {
            env,
            home,
            repo,
            bare,
            sshd,
        }
    }

    fn target_dir(&self, name: &str) -> PathBuf {
        self.env.path(&format!("targets/{name}"))
    }

    /// Writes the config with deploy `web` to `targets` (name, port), and `extra` keys.
    fn configure(&self, targets: &[(&str, u16)], extra: &str) {
        self.configure_home(&self.home, "deployer", targets, extra);
    }

    /// [`Scene::configure`] for the machine whose home is `home`, named `hostname`.
    fn configure_home(&self, home: &Path, hostname: &str, targets: &[(&str, u16)], extra: &str) {
        let targets: String = targets
            .iter()
            .map(|(name, port)| {
                format!(
                    "      - {{name: {name}, host: root@127.0.0.1, port: {port}, path: {}}}\n",
                    self.target_dir(name).display()
                )
            })
            .collect();
        let yaml = format!(
            "hostname: {hostname}\nroot: {root}\nlocal:\n  path: {hub}\npull:\n  interval: 1s\ndeploy:\n  - name: web\n    repo: site\n    branch: main\n    excludes: [\"*.log\"]\n    keep: 3\n    targets:\n{targets}    ssh: {{identity: {key}, known_hosts: {kh}, strict_host_key_checking: accept-new, connect_timeout: 5}}\n{extra}",
            root = self.env.path("root").display(),
            hub = self.env.path("hub").display(),
            key = self.sshd.key().display(),
            kh = self.sshd.known_hosts().display(),
        );
        self.env.config(home, &yaml);
    }

    fn gitsync(&self, args: &[&str]) -> (i32, String) {
        self.gitsync_path(args, &venv_path())
    }

    fn gitsync_path(&self, args: &[&str], path: &str) -> (i32, String) {
        let out = self
            .env
            .gitsync_command(&self.home, args)
            .env("PATH", path)
            .output()
            .expect("run gitsync");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Starts this machine's daemon (`gitsync run`) with the scanners on its PATH.
    fn daemon(&self) -> common::Daemon {
        let mut cmd = self.env.gitsync_command(&self.home, &["run"]);
        cmd.env("PATH", venv_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.home.join("daemon.log")).expect("log"));
        common::Daemon {
            child: cmd.spawn().expect("spawn"),
            log: self.home.join("daemon.log"),
        }
    }

    fn ship(&self) -> String {
        let (code, text) = self.gitsync(&["deploy", "web"]);
        assert_eq!(code, 0, "{text}");
        text
    }

    fn commit(&self, file: &str, content: &str) -> String {
        self.env
            .commit(&self.repo, file, content, &format!("edit {file}"))
    }

    fn current(&self, target: &str) -> Option<String> {
        std::fs::read_link(self.target_dir(target).join("current"))
            .ok()
            .map(|p| {
                p.display()
                    .to_string()
                    .trim_start_matches("releases/")
                    .to_string()
            })
    }
}

/// What `git archive` of `rev` holds, minus `*.log` (as rsync excludes it: any path with a
/// component, file or folder, ending in `.log`).
fn archive(env: &Env, repo: &Path, rev: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let dir = env.path(&format!("archive-{rev}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let tar = env.path(&format!("archive-{rev}.tar"));
    env.git(repo, &["archive", "-o", tar.to_str().expect("utf8"), rev]);
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(ok.success());
    common::tree_bytes(&dir)
        .into_iter()
        .filter(|(p, _)| {
            !p.components()
                .any(|c| c.as_os_str().to_string_lossy().ends_with(".log"))
        })
        .collect()
}

fn shipped(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::tree_bytes(dir)
}

#[test]
fn ships_exactly_the_commit_as_atomic_releases_with_hard_links() {
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: gitleaks}\n");
    // An uncommitted edit and an untracked file: never shipped.
    scene
        .env
        .write(&scene.repo, "index.html", "<h1>NOT COMMITTED</h1>\n");
    scene.env.write(&scene.repo, "scratch.txt", "untracked\n");
    let out = scene.ship();
    assert!(out.contains("gitleaks: no secrets found"), "{out}");
    // Issue 22: the ship says where its time went.
    assert!(
        out.contains("(export and scan ")
            && out.contains("(prepare ")
            && out.contains(" s, transfer ")
            && out.contains(" s, flip "),
        "{out}"
    );
    let rev = scene
        .env
        .git(&scene.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    assert_eq!(scene.current("vm01").as_deref(), Some(rev.as_str()));
    let release = scene.target_dir("vm01").join("releases").join(&rev);
    assert_eq!(
        shipped(&release),
        archive(&scene.env, &scene.repo, &rev),
        "the release is the commit"
    );
    assert!(!release.join(".git").exists() && !release.join("debug.log").exists());
    // Nothing of gitsync's is in the release, which is often a web server's document root.
    assert!(!release.join(".sync_rev").exists() && !release.join(".sync_manifest").exists());

    // The next commit deletes a file: gone; unchanged files are hard links.
    scene
        .env
        .git(&scene.repo, &["checkout", "--", "index.html"]);
    scene.env.git(&scene.repo, &["rm", "-q", "css/site.css"]);
    let next = scene.commit("about.html", "about\n");
    let out = scene.ship();
    assert!(out.contains("->"), "{out}");
    let next_release = scene.target_dir("vm01").join("releases").join(&next);
    assert_eq!(scene.current("vm01").as_deref(), Some(next.as_str()));
    assert!(!next_release.join("css/site.css").exists());
    assert_eq!(
        shipped(&next_release),
        archive(&scene.env, &scene.repo, &next)
    );
    let ino = |p: PathBuf| std::fs::metadata(p).expect("meta").ino();
    assert_eq!(
        ino(release.join("a.txt")),
        ino(next_release.join("a.txt")),
        "unchanged files are hard links"
    );

    // verify: in sync; a file edited by hand is tampered; rollback restores the previous.
    let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("in sync"), "{text}");
    std::fs::write(next_release.join("about.html"), "defaced\n").expect("tamper");
    let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("tampered") && text.contains("about.html"),
        "{text}"
    );
    let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(rev.as_str()));
    let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
    assert_eq!(
        code, 1,
        "after a rollback the target is behind the branch: {text}"
    );
    assert!(text.contains("behind"), "{text}");

    // --dry-run names what would change and changes nothing.
    let third = scene.commit("index.html", "<h1>three</h1>\n");
    let (code, text) = scene.gitsync(&["deploy", "web", "--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("index.html"), "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(rev.as_str()));
    assert!(
        !scene
            .target_dir("vm01")
            .join("releases")
            .join(&third)
            .exists()
    );
}

#[test]
fn a_reader_never_sees_a_mixed_tree_across_50_ships() {
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    scene.commit("pair/a.txt", "0\n");
    scene.commit("pair/b.txt", "0\n");
    scene.ship();
    let current = scene.target_dir("vm01").join("current");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let current = current.clone();
        std::thread::spawn(move || {
            let (mut reads, mut mixed, mut missing) = (0u64, Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Resolve the link once, as a reader that opens one release does. A flip
                // by unlink-then-link would leave moments with no `current` at all.
                let Ok(release) = std::fs::canonicalize(&current) else {
                    missing += 1;
                    continue;
                };
                let a = std::fs::read_to_string(release.join("pair/a.txt"));
                let b = std::fs::read_to_string(release.join("pair/b.txt"));
                if let (Ok(a), Ok(b)) = (a, b) {
                    reads += 1;
                    if a != b {
                        mixed.push((a, b));
                    }
                }
            }
            (reads, mixed, missing)
        })
    };
    for i in 1..=50 {
        scene
            .env
            .write(&scene.repo, "pair/a.txt", &format!("{i}\n"));
        scene
            .env
            .write(&scene.repo, "pair/b.txt", &format!("{i}\n"));
        scene
            .env
            .git(&scene.repo, &["commit", "-qam", &format!("pair {i}")]);
        scene.ship();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, mixed, missing) = reader.join().expect("reader");
    assert!(reads > 100, "the reader read {reads} times");
    assert_eq!(
        missing, 0,
        "`current` was missing {missing} times during the flips"
    );
    assert!(mixed.is_empty(), "mixed trees seen: {mixed:?}");
    let releases = std::fs::read_dir(scene.target_dir("vm01").join("releases"))
        .expect("releases")
        .count();
    assert!(releases <= 3, "keep: 3 leaves {releases} releases");
}

#[test]
fn secrets_block_the_ship_and_a_repository_cannot_switch_the_rules_off() {
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: gitleaks}\n");
    scene.ship();
    let before = scene.current("vm01");
    scene.commit("config/aws.env", &format!("AWS_ACCESS_KEY_ID={AWS_KEY}\n"));
    scene.commit("deploy/token.txt", &format!("token = {GH_TOKEN}\n"));
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("config/aws.env") && text.contains("aws-access-token"),
        "{text}"
    );
    assert!(
        text.contains("deploy/token.txt") && text.contains("github-pat"),
        "{text}"
    );
    assert!(
        !text.contains(AWS_KEY) && !text.contains(GH_TOKEN),
        "the secret itself is shown: {text}"
    );
    assert_eq!(scene.current("vm01"), before, "nothing was shipped");
    // The repository's own .gitleaks.toml that switches every rule off changes nothing.
    scene.commit(
        ".gitleaks.toml",
        "title = \"no rules\"\n[allowlist]\npaths = ['''.*''']\n",
    );
    scene.commit("more.txt", "# gitleaks:allow\n");
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("aws-access-token"), "{text}");
    assert_eq!(scene.current("vm01"), before);
    let (_, status) = scene.gitsync(&["deploy", "status"]);
    assert!(
        status.contains("blocked") && status.contains("gitleaks found"),
        "{status}"
    );

    // detect-secrets, the other real scanner installed here, blocks too.
    scene.configure(
        &[("vm01", scene.sshd.port)],
        "    scan: {tool: detect-secrets}\n",
    );
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("detect-secrets found") && text.contains("config/aws.env"),
        "{text}"
    );
    assert_eq!(scene.current("vm01"), before);
}

#[test]
fn a_scanner_that_is_missing_fails_or_lies_blocks_the_ship() {
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: gitleaks}\n");
    // Missing: a PATH without it.
    let (code, text) = scene.gitsync_path(&["deploy", "web"], "/usr/bin:/bin");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no secret scanner found"), "{text}");
    assert!(
        text.contains("set scan.tool to its path") && !text.contains("tool: off"),
        "the hint must point at the scanner, not at switching the gate off: {text}"
    );
    assert_eq!(scene.current("vm01"), None);
    // doctor says so before any ship is tried.
    let (code, text) = scene.gitsync_path(&["doctor"], "/usr/bin:/bin");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("fail deploy web") && text.contains("no secret scanner found"),
        "{text}"
    );
    // Stand-ins (exit-code handling only): an unexpected exit code, and a clean exit with
    // an unreadable report.
    let fake = scene.env.path("fake-bin");
    std::fs::create_dir_all(&fake).expect("mkdir");
    let script = fake.join("gitleaks");
    let path = format!("{}:/usr/bin:/bin", fake.display());
    std::fs::write(&script, "#!/bin/sh\nexit 7\n").expect("write");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    let (code, text) = scene.gitsync_path(&["deploy", "web"], &path);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("exited with code 7"), "{text}");
    std::fs::write(
        &script,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --report-path ]; then echo 'not json' > \"$2\"; fi; shift; done\nexit 0\n",
    )
    .expect("write");
    let (code, text) = scene.gitsync_path(&["deploy", "web"], &path);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("unreadable"), "{text}");
    assert_eq!(scene.current("vm01"), None, "nothing was shipped");
    // Only `off` ships unscanned, and says so.
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    let (code, text) = scene.gitsync_path(&["deploy", "web"], "/usr/bin:/bin");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shipped unscanned"), "{text}");
}

/// Issue 21, item 8: a scanner outside `PATH` (a systemd unit's `PATH` has neither
/// `~/.local/bin` nor a virtualenv) is named by its path in `scan.tool`, and gates as well.
#[test]
fn a_scanner_named_by_its_path_gates_with_a_bare_path() {
    let scene = Scene::new();
    let gitleaks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/gitleaks");
    assert!(
        gitleaks.exists(),
        "run `make deps` (it installs gitleaks into .venv)"
    );
    scene.configure(
        &[("vm01", scene.sshd.port)],
        &format!("    scan: {{tool: {}}}\n", gitleaks.display()),
    );
    let (code, text) = scene.gitsync_path(&["deploy", "web"], "/usr/bin:/bin");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("gitleaks: no secrets found"), "{text}");
    scene.commit("deploy/token.txt", &format!("token = {GH_TOKEN}\n"));
    let (code, text) = scene.gitsync_path(&["deploy", "web"], "/usr/bin:/bin");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("deploy/token.txt"), "{text}");
    // A path that names no scanner is a configuration error with its key.
    scene.configure(
        &[("vm01", scene.sshd.port)],
        "    scan: {tool: /usr/bin/true}\n",
    );
    let (code, text) = scene.gitsync_path(&["deploy", "web"], "/usr/bin:/bin");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("scan.tool"), "{text}");
}

#[test]
fn one_target_down_does_not_stop_the_other_and_status_shows_both() {
    let scene = Scene::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    scene.configure(
        &[("vm01", scene.sshd.port), ("vm02", dead)],
        "    scan: {tool: off}\n",
    );
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("vm02: failed") && text.contains("cannot connect"),
        "{text}"
    );
    let rev = scene
        .env
        .git(&scene.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    assert_eq!(scene.current("vm01").as_deref(), Some(rev.as_str()));
    let (_, status) = scene.gitsync(&["deploy", "status"]);
    assert!(
        status.contains("vm01") && status.contains("shipped"),
        "{status}"
    );
    assert!(
        status.contains("vm02") && status.contains("failed"),
        "{status}"
    );
    // A folder that is not a release layout is refused, and left as it was.
    std::fs::create_dir_all(scene.target_dir("vm03")).expect("mkdir");
    std::fs::write(scene.target_dir("vm03").join("precious.txt"), "keep me\n").expect("write");
    scene.configure(&[("vm03", scene.sshd.port)], "    scan: {tool: off}\n");
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not a gitsync release layout"), "{text}");
    assert!(!scene.target_dir("vm03").join("releases").exists());
    let (code, text) = scene.gitsync(&["deploy", "web", "--init"]);
    assert_eq!(code, 0, "{text}");
    assert!(scene.target_dir("vm03").join("precious.txt").exists());
    // Unknown names are usage errors.
    assert_eq!(scene.gitsync(&["deploy", "nosuch"]).0, 2);
    assert_eq!(scene.gitsync(&["deploy", "web", "--target", "nosuch"]).0, 2);
}

/// A target whose disk fills up in the middle of a ship: that target alone fails, saying
/// why; its `current` is the old release, whole; the half-written release is removed, so
/// the space comes back and the next commit that fits ships there.
#[test]
fn a_full_target_disk_fails_that_target_alone_and_leaves_current_whole() {
    let scene = Scene::new();
    let full = scene.target_dir("full");
    let _disk = common::disk::Tmpfs::mount(&full, "1m");
    scene.configure(
        &[("vm01", scene.sshd.port), ("full", scene.sshd.port)],
        "    scan: {tool: off}\n",
    );
    scene.ship();
    let first = scene
        .env
        .git(&scene.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let before = shipped(&full.join("releases").join(&first));
    assert_eq!(before, archive(&scene.env, &scene.repo, &first));

    let big = scene.commit("big.bin", &"x".repeat(3 << 20));
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("full: failed")
            && text.contains("No space left on device")
            && text.contains("the current release is untouched"),
        "{text}"
    );
    assert_eq!(scene.current("vm01").as_deref(), Some(big.as_str()));
    assert_eq!(scene.current("full").as_deref(), Some(first.as_str()));
    assert_eq!(shipped(&full.join("releases").join(&first)), before);
    assert!(
        !full.join("releases").join(&big).exists(),
        "the half-written release is removed"
    );

    scene.env.git(&scene.repo, &["rm", "-q", "big.bin"]);
    let small = scene.commit("small.txt", "fits\n");
    scene.ship();
    assert_eq!(scene.current("full").as_deref(), Some(small.as_str()));
    assert_eq!(
        shipped(&full.join("releases").join(&small)),
        archive(&scene.env, &scene.repo, &small)
    );
}

#[test]
fn on_update_ships_a_push_from_another_host_without_any_command() {
    let scene = Scene::new();
    scene.configure(
        &[("vm01", scene.sshd.port)],
        "    on_update: true\n    scan: {tool: gitleaks}\n",
    );
    let path = venv_path();
    let mut daemon = {
        let mut cmd = scene.env.gitsync_command(&scene.home, &["run"]);
        cmd.env("PATH", &path)
            .env("GITSYNC_LOG", "gitsync=debug,info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(scene.home.join("daemon.log")).expect("log"));
        common::Daemon {
            child: cmd.spawn().expect("spawn"),
            log: scene.home.join("daemon.log"),
        }
    };
    let first = scene
        .env
        .git(&scene.repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    common::wait_for_logged(
        "the first ship",
        Duration::from_secs(60),
        &[&daemon],
        || (scene.current("vm01").as_deref() == Some(first.as_str())).then_some(()),
    );
    // Another host pushes to the remote; the daemon fetches, fast-forwards, ships.
    let pushed = scene
        .env
        .push_new_commit(&scene.bare, "news.html", "news\n");
    common::wait_for_logged(
        "the pushed commit on the target",
        Duration::from_secs(60),
        &[&daemon],
        || (scene.current("vm01").as_deref() == Some(pushed.as_str())).then_some(()),
    );
    assert!(scene.target_dir("vm01").join("current/news.html").exists());
    daemon.stop();
}

/// Random histories (files added, changed, deleted, renamed, turned into folders and back,
/// execute bits flipped, in the commit or by hand in the live release, symlinks, excluded
/// files, binary content; names with spaces, quotes, glob and shell
/// characters, a leading dash, non-ASCII, a backslash, a tab, a newline) shipped step by step, with rollbacks thrown
/// in: after every ship the release equals `git archive` of the commit minus the excludes,
/// and every entry's kind, bits, size and time equal the export's, the release that was
/// live is unchanged (inodes too), `current` names the new one, and `verify` says in sync. Cases: `GITSYNC_DEPLOY_CASES` (default 3).
#[test]
fn randomized_histories_always_ship_exactly_the_commit() {
    let cases: u64 = std::env::var("GITSYNC_DEPLOY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    let mut rng = fastrand::Rng::with_seed(20261123);
    // Names as users have them: spaces, quotes, shell and glob characters, a
    // leading dash, non-ASCII, a backslash, a tab and a newline.
    const STEMS: [&str; 12] = [
        "f",
        "f",
        "f",
        "sp ace",
        "quo'te\"",
        "$HOME*?[x]",
        "-dash",
        "café-日本",
        "back\\slash",
        "tab\tbed",
        "new\nline",
        "#hash",
    ];
    let mut stems_used = std::collections::BTreeSet::new();
    let mut drawn = 0;
    for case in 0..cases {
        // Every other case scans: the record then takes its hashes from the scan's view,
        // else it reads the tree itself.
        let scan = if case % 2 == 1 { "gitleaks" } else { "off" };
        scene.configure(
            &[("vm01", scene.sshd.port)],
            &format!("    scan: {{tool: {scan}}}\n"),
        );
        for step in 0..rng.usize(4..8) {
            for _ in 0..rng.usize(1..5) {
                // Each kind of name once first, then at random.
                let stem = STEMS
                    .get(drawn)
                    .copied()
                    .unwrap_or_else(|| STEMS[rng.usize(0..STEMS.len())]);
                drawn += 1;
                stems_used.insert(stem);
                let name = format!(
                    "d{}/{}{}.{}",
                    rng.u8(0..3),
                    stem,
                    rng.u8(0..6),
                    if rng.u8(0..5) == 0 { "log" } else { "txt" }
                );
                let path = scene.repo.join(&name);
                match rng.u8(0..7) {
                    0 if path.symlink_metadata().is_ok() => {
                        if path.is_dir() && !path.is_symlink() {
                            std::fs::remove_dir_all(&path).expect("rm");
                        } else {
                            std::fs::remove_file(&path).expect("rm");
                        }
                    }
                    1 if path.is_file() => {
                        let to = format!("moved/{case}-{step}-{}.txt", rng.u8(..));
                        std::fs::create_dir_all(scene.repo.join("moved")).expect("mkdir");
                        std::fs::rename(&path, scene.repo.join(&to)).expect("rename");
                    }
                    2 => {
                        let _ = std::fs::remove_file(&path);
                        let _ = std::fs::remove_dir_all(&path);
                        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                        let _ = std::os::unix::fs::symlink("../a.txt", &path);
                    }
                    4 if path.is_file() && !path.is_symlink() => {
                        // The execute bit alone: the copy's inode is shared with the live
                        // release, so this must not be a chmod in place.
                        use std::os::unix::fs::PermissionsExt;
                        let mode = path.metadata().expect("meta").permissions().mode() ^ 0o111;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                            .expect("chmod");
                    }
                    3 => {
                        // A file where a folder was, or the other way round.
                        let _ = std::fs::remove_file(&path);
                        let _ = std::fs::remove_dir_all(&path);
                        std::fs::create_dir_all(&path).expect("mkdir");
                        std::fs::write(path.join("inner.txt"), format!("{case} {step}\n"))
                            .expect("write");
                    }
                    _ => {
                        if path.is_dir() {
                            let _ = std::fs::remove_dir_all(&path);
                        }
                        let _ = std::fs::remove_file(&path);
                        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                        let body: Vec<u8> = (0..rng.usize(0..3000)).map(|_| rng.u8(..)).collect();
                        std::fs::write(&path, body).expect("write");
                    }
                }
            }
            scene.env.git(&scene.repo, &["add", "-A"]);
            let status = scene.env.git(&scene.repo, &["status", "--porcelain"]);
            if !status.trim().is_empty() || step == 0 {
                scene.env.git(
                    &scene.repo,
                    &[
                        "commit",
                        "-qm",
                        &format!("case {case} step {step}"),
                        "--allow-empty",
                    ],
                );
            }
            let rev = scene
                .env
                .git(&scene.repo, &["rev-parse", "HEAD"])
                .trim()
                .to_string();
            let live = scene.current("vm01").map(|r| {
                let dir = scene.target_dir("vm01").join("releases").join(r);
                // Drift on the target: someone flips a bit of a live file by hand. The
                // next release must have the commit's bits, and the live file keep its own.
                let files: Vec<PathBuf> = walkdir(&dir)
                    .into_iter()
                    .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
                    .collect();
                if !files.is_empty() && rng.u8(0..3) == 0 {
                    use std::os::unix::fs::PermissionsExt;
                    let file = &files[rng.usize(0..files.len())];
                    let mode = file.metadata().expect("meta").permissions().mode() ^ 0o100;
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
                        .expect("chmod");
                }
                let before = entries_on_disk(&dir, true);
                (dir, before)
            });
            let (code, text) = scene.gitsync(&["deploy", "web"]);
            assert_eq!(code, 0, "case {case} step {step}: {text}");
            assert_eq!(
                scene.current("vm01").as_deref(),
                Some(rev.as_str()),
                "{text}"
            );
            let release = scene.target_dir("vm01").join("releases").join(&rev);
            // Every entry as a whole `rsync -a` of the export would leave it: kind, bits,
            // size, time to the nanosecond, symlink target, bytes.
            let export = scene.home.join(".gitsync/deploy/web/tree");
            let (got, want) = (
                entries_on_disk(&release, false),
                entries_on_disk(&export, false),
            );
            let differ: Vec<(&PathBuf, Option<&DiskEntry>, Option<&DiskEntry>)> = got
                .keys()
                .chain(want.keys())
                .filter(|k| got.get(*k) != want.get(*k))
                .map(|k| (k, got.get(k), want.get(k)))
                .collect();
            assert!(
                differ.is_empty(),
                "case {case} step {step}: the release's entries differ from the export's: {differ:?}\n{text}"
            );
            if let Some((dir, before)) = live.filter(|(dir, _)| dir != &release) {
                assert_eq!(
                    entries_on_disk(&dir, true),
                    before,
                    "case {case} step {step}: the release that was live changed\n{text}"
                );
            }
            let (got, want) = (shipped(&release), archive(&scene.env, &scene.repo, &rev));
            let differ: Vec<&PathBuf> = got
                .keys()
                .chain(want.keys())
                .filter(|k| got.get(*k) != want.get(*k))
                .collect();
            assert!(
                differ.is_empty(),
                "case {case} step {step}: the release differs from the commit in {differ:?}"
            );
            let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
            assert_eq!(code, 0, "case {case} step {step}: {text}");
            if rng.u8(0..4) == 0 {
                let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
                assert_eq!(code, 0, "{text}");
            }
        }
    }
    assert!(
        cases < 3 || stems_used == STEMS.into_iter().collect(),
        "every kind of name was drawn: {stems_used:?}"
    );
}

/// One entry of a tree on disk: kind (`f`, `d`, `l`), permission bits, size, modification
/// time in nanoseconds, symlink target or file bytes, and (when asked) the inode.
type DiskEntry = (char, u32, u64, i128, Vec<u8>, u64);

/// Every entry under `dir` (not `dir` itself) but `.git` and any path with a component
/// ending in `.log` (the scene's exclude), as [`DiskEntry`]; inodes only `with_inodes`.
fn entries_on_disk(dir: &Path, with_inodes: bool) -> BTreeMap<PathBuf, DiskEntry> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    for path in walkdir(dir) {
        let rel = path.strip_prefix(dir).expect("prefix").to_path_buf();
        if rel.components().any(|c| {
            let name = c.as_os_str();
            name == ".git" || name.as_bytes().ends_with(b".log")
        }) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        let kind = if meta.is_dir() {
            'd'
        } else if meta.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        let body = match kind {
            'l' => std::fs::read_link(&path)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes(),
            'f' => std::fs::read(&path).expect("read"),
            _ => Vec::new(),
        };
        let size = if kind == 'd' { 0 } else { meta.len() };
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let ino = if with_inodes { meta.ino() } else { 0 };
        out.insert(rel, (kind, meta.mode() & 0o7777, size, mtime, body, ino));
    }
    out
}

/// Every release folder on the target `dir`, by the commit it is named after.
fn releases(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("releases"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // A ship under way writes `.<rev>.partial`: not a release.
                .filter(|name| !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Two to four deploys and rollbacks of one name at once, at random delays, from two
/// machines (two homes, each with its own export and lock), of random commits, some of
/// which hold a secret, while the first machine's daemon ships the branch's tip on its own
/// (`on_update`). Issue 21, item 1: every run shared one export folder, so a commit the
/// scan blocked shipped under a clean commit's name; item 2: the daemon undid rollbacks.
/// After each round (the daemon stopped): no secret ever reached the target; every
/// release there equals `git archive` of the commit it is named after; `current` is a
/// clean commit; `deploy verify` says "in sync" exactly when `current` is the tip.
/// Rounds: `GITSYNC_DEPLOY_CASES` (default 3).
#[test]
fn overlapping_deploys_never_ship_a_blocked_secret() {
    let scene = Scene::new();
    let first = scene.env.head(&scene.repo);
    let targets = [("vm01", scene.sshd.port)];
    scene.configure(
        &targets,
        "    on_update: true\n    scan: {tool: gitleaks}\n",
    );
    let other = scene.env.home("deployer2");
    scene.configure_home(
        &other,
        "deployer2",
        &targets,
        "    scan: {tool: gitleaks}\n",
    );
    // A: a clean commit with 150 larger files; B: A plus a token; C: B without it (the tip).
    for i in 0..150 {
        scene.env.write(
            &scene.repo,
            &format!("assets/f{i:03}.txt"),
            &format!("asset {i}\n").repeat(400),
        );
    }
    scene.env.git(&scene.repo, &["add", "-A"]);
    scene.env.git(&scene.repo, &["commit", "-qm", "assets"]);
    let a = scene.env.head(&scene.repo);
    let b = scene.commit("leak.env", &format!("GITHUB_TOKEN={GH_TOKEN}\n"));
    scene.env.git(&scene.repo, &["rm", "-q", "leak.env"]);
    let c = scene.commit("index.html", "<h1>two</h1>\n");
    let clean = [first.clone(), a.clone(), c.clone()];
    let path = venv_path();
    // The first machine has shipped the tip once, so it has a record to verify against.
    scene.ship();
    let rounds: u64 = std::env::var("GITSYNC_DEPLOY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // GITSYNC_DEPLOY_SEED replays a failure.
    let seed = std::env::var("GITSYNC_DEPLOY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..rounds {
        let mut daemon = scene.daemon();
        // (home, Some(rev) for a deploy, None for a rollback)
        let runs: Vec<(&Path, Option<&String>)> = (0..2 + rng.usize(..3))
            .map(|_| {
                let home: &Path = if rng.bool() { &scene.home } else { &other };
                let what = match rng.usize(..4) {
                    0 => None,
                    n => Some([&a, &b, &c][n - 1]),
                };
                (home, what)
            })
            .collect();
        let mut children = Vec::new();
        for (home, what) in &runs {
            std::thread::sleep(Duration::from_millis(rng.u64(..400)));
            let args: Vec<&str> = match what {
                Some(rev) => vec!["deploy", "web", "--rev", rev],
                None => vec!["deploy", "rollback", "web"],
            };
            let child = scene
                .env
                .gitsync_command(home, &args)
                .env("PATH", &path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a deploy");
            children.push((what, child));
        }
        for (what, child) in children {
            let out = child.wait_with_output().expect("wait for a deploy");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            match what {
                Some(rev) if **rev == b => {
                    assert_eq!(
                        out.status.code(),
                        Some(1),
                        "seed {seed}: B was not refused: {text}"
                    );
                    assert!(text.contains("secret"), "seed {seed}: {text}");
                }
                Some(_) => assert_eq!(
                    out.status.code(),
                    Some(0),
                    "seed {seed}: a clean deploy failed: {text}"
                ),
                None => assert!(
                    out.status.success() || text.contains("no release older"),
                    "seed {seed}: a rollback failed: {text}"
                ),
            }
        }
        assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
        let target = scene.target_dir("vm01");
        for name in releases(&target) {
            let release = target.join("releases").join(&name);
            let files = shipped(&release);
            for (file, bytes) in &files {
                assert!(
                    !String::from_utf8_lossy(bytes).contains(GH_TOKEN),
                    "seed {seed} round {round}: the blocked secret reached the target in {}/{}",
                    name,
                    file.display()
                );
            }
            let want = archive(&scene.env, &scene.repo, &name);
            let differ: Vec<String> = files
                .keys()
                .chain(want.keys())
                .filter(|p| files.get(*p) != want.get(*p))
                .map(|p| {
                    format!(
                        "{} ({:?} bytes shipped, {:?} in the commit)",
                        p.display(),
                        files.get(p).map(Vec::len),
                        want.get(p).map(Vec::len)
                    )
                })
                .collect();
            assert!(
                differ.is_empty(),
                "seed {seed} round {round}: release {name} is not its commit: {differ:?}"
            );
        }
        let current = scene.current("vm01").expect("a current release");
        assert!(
            clean.contains(&current),
            "seed {seed}: current is {current}"
        );
        let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
        assert_eq!(
            code == 0,
            current == c,
            "seed {seed} round {round}: verify is wrong with current at {current}: {text}"
        );
    }
}

/// Two machines shipping to one target are kept apart by the target's own lock (issue 21:
/// "a per-target lock on the server, so two hosts cannot interleave"). While another
/// holder has `<path>/.gitsync-lock` (here a `flock(1)` the test runs, as another machine's
/// ship would hold it), a deploy says it waits and flips nothing; once the lock is let go,
/// it ships.
#[test]
fn a_deploy_waits_for_the_lock_another_machine_holds_on_the_target() {
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    scene.ship();
    let first = scene.env.head(&scene.repo);
    let second = scene.commit("index.html", "<h1>two</h1>\n");
    let lock = scene.target_dir("vm01").join(".gitsync-lock");
    // One process holds the lock (flock(1) on a descriptor, then exec), so stopping it by
    // its id lets the lock go.
    let mut holder = std::process::Command::new("sh")
        .args([
            "-c",
            "exec 9>>\"$1\" && flock 9 && exec sleep 600",
            "holder",
        ])
        .arg(&lock)
        .spawn()
        .expect("run flock (util-linux)");
    let free = || {
        std::process::Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock")
            .success()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while free() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the deploy says goes to a file, read while it runs: it must say it waits.
    let said = scene.env.path("deploy.out");
    let mut deploy = scene
        .env
        .gitsync_command(&scene.home, &["deploy", "web"])
        .env("PATH", venv_path())
        .stdout(std::fs::File::create(&said).expect("output file"))
        .stderr(std::fs::File::create(scene.env.path("deploy.err")).expect("error file"))
        .spawn()
        .expect("start a deploy");
    common::wait_for(
        "the deploy to say it waits for the target's lock",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(scene.env.path("deploy.err"))
                .ok()
                .filter(|t| t.contains("another deploy holds the target's lock"))
        },
    );
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(first.as_str()),
        "the deploy flipped current while another machine held the target's lock"
    );
    assert!(
        !releases(&scene.target_dir("vm01")).contains(&second),
        "the deploy wrote a release while another machine held the target's lock"
    );
    holder.kill().expect("stop the lock holder");
    let _ = holder.wait();
    let status = deploy.wait().expect("wait for the deploy");
    let text = std::fs::read_to_string(&said).unwrap_or_default()
        + &std::fs::read_to_string(scene.env.path("deploy.err")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("another deploy holds the target's lock"),
        "{text}"
    );
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(second.as_str()),
        "{text}"
    );
    assert!(free(), "the deploy left the target locked");
}

/// Rollback walks back one release each time (issue 21, item 3: a second rollback flipped
/// back to the release just left) and refuses at the oldest kept one; it pins the deploy,
/// so the daemon's `on_update` does not ship the tip again (item 2), until a person runs
/// `gitsync deploy`, which ships the tip and lifts the pin.
#[test]
fn rollback_walks_back_and_pins_the_deploy_until_the_next_deploy() {
    let scene = Scene::new();
    scene.configure(
        &[("vm01", scene.sshd.port)],
        "    on_update: true\n    scan: {tool: off}\n",
    );
    let first = scene.ship();
    let a = scene.env.head(&scene.repo);
    let b = scene.commit("index.html", "<h1>b</h1>\n");
    scene.ship();
    let c = scene.commit("index.html", "<h1>c</h1>\n");
    scene.ship();
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(c.as_str()),
        "{first}"
    );

    let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(b.as_str()), "{text}");
    let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(a.as_str()),
        "a second rollback did not walk back: {text}"
    );
    let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no release older"), "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(a.as_str()));
    let (_, status) = scene.gitsync(&["deploy", "status"]);
    assert!(status.contains("pinned at"), "{status}");

    // The daemon sees the pin and leaves the rollback alone.
    let mut daemon = scene.daemon();
    daemon.wait_log("pinned at", Duration::from_secs(60));
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(a.as_str()),
        "the daemon undid the rollback: {}",
        daemon.log_text()
    );
    // A person's deploy ships the tip and lifts the pin.
    scene.ship();
    assert_eq!(scene.current("vm01").as_deref(), Some(c.as_str()));
    let (_, status) = scene.gitsync(&["deploy", "status"]);
    assert!(!status.contains("pinned at"), "{status}");
}

/// Issue 21, item 4: the gate let secrets through in paths the scanners' built-in
/// allowlists skip (`node_modules/`, `package-lock.json`, a text file named `keys.pdf`, a
/// path holding `gitleaks.toml`), in UTF-16 files, and behind a committed
/// `.gitleaksignore`. What ships is what is scanned: with gitleaks and with detect-secrets,
/// each of these files alone blocks the ship and is named.
#[test]
fn the_gate_scans_every_path_and_encoding_with_both_scanners() {
    let scene = Scene::new();
    let token = format!("GITHUB_TOKEN={GH_TOKEN}\n");
    let utf16 = |text: &str, bom: bool| {
        let mut bytes: Vec<u8> = if bom { vec![0xff, 0xfe] } else { Vec::new() };
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("node_modules/pkg/config.js", token.clone().into_bytes()),
        (
            "package-lock.json",
            format!("{{\"token\": \"{GH_TOKEN}\"}}\n").into_bytes(),
        ),
        ("docs/keys.pdf", token.clone().into_bytes()),
        ("conf/gitleaks.toml.d/app.env", token.clone().into_bytes()),
        ("win/settings.ini", utf16(&token, true)),
        ("win/nobom.txt", utf16(&token, false)),
        ("ignored.env", token.clone().into_bytes()),
    ];
    for tool in ["gitleaks", "detect-secrets"] {
        scene.configure(
            &[("vm01", scene.sshd.port)],
            &format!("    scan: {{tool: {tool}}}\n"),
        );
        for (path, bytes) in &cases {
            let file = scene.repo.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, bytes).expect("write");
            let tree = scene.home.join(".gitsync/deploy/web/tree");
            if *path == "ignored.env" {
                // The repository's own ignore file, naming the finding every way gitleaks
                // fingerprints it.
                std::fs::write(
                    scene.repo.join(".gitleaksignore"),
                    format!(
                        "ignored.env:github-pat:1\n{}/ignored.env:github-pat:1\n",
                        tree.display()
                    ),
                )
                .expect("write");
            }
            scene.env.git(&scene.repo, &["add", "-A", "-f"]);
            scene.env.git(&scene.repo, &["commit", "-qm", path]);
            let (code, text) = scene.gitsync(&["deploy", "web"]);
            assert_eq!(code, 1, "{tool}: {path} shipped: {text}");
            assert!(
                text.contains(path),
                "{tool}: the finding does not name {path}: {text}"
            );
            scene.env.git(&scene.repo, &["rm", "-q", "-f", path]);
            let _ = std::fs::remove_file(scene.repo.join(".gitleaksignore"));
            scene.env.git(&scene.repo, &["add", "-A"]);
            scene
                .env
                .git(&scene.repo, &["commit", "-qm", "clean again"]);
        }
        for name in releases(&scene.target_dir("vm01")) {
            let files = shipped(&scene.target_dir("vm01").join("releases").join(&name));
            assert!(
                files
                    .values()
                    .all(|b| !String::from_utf8_lossy(b).contains("ghp_")
                        && !String::from_utf16_lossy(
                            &b.chunks_exact(2)
                                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                                .collect::<Vec<_>>()
                        )
                        .contains("ghp_")),
                "{tool}: a token reached the target"
            );
        }
    }
}

/// Issue 21, items 5-7: `verify` compared `current/` with a manifest read from the same
/// server, so a file edited together with its manifest line, new or retargeted symlinks,
/// `chmod 4777`, a FIFO or files under `current/.git/` all passed as "in sync"; a tampered
/// target could not be repaired ("already on"); and gitsync's files were served from the
/// document root while repository files of the same names vanished. Now verify compares
/// with this machine's record of what it shipped, every tampering is named, and `deploy
/// --repair` ships the commit again whole.
#[test]
fn every_kind_of_tampering_is_found_and_repaired() {
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    // Repository files named like gitsync's old metadata ship like any other.
    scene.env.write(&scene.repo, ".sync_manifest.tmp", "mine\n");
    scene.env.write(&scene.repo, ".sync_rev", "mine too\n");
    std::os::unix::fs::symlink("index.html", scene.repo.join("home.html")).expect("symlink");
    scene
        .env
        .write(&scene.repo, "bin/run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        scene.repo.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    scene.env.git(&scene.repo, &["add", "-A"]);
    scene.env.git(&scene.repo, &["commit", "-qm", "more"]);
    scene.ship();
    let rev = scene.env.head(&scene.repo);
    let current = scene.target_dir("vm01").join("current");
    assert_eq!(
        shipped(&current),
        archive(&scene.env, &scene.repo, &rev),
        "the release is exactly the commit"
    );
    let kinds = [
        "edit",
        "add-file",
        "add-symlink",
        "retarget-symlink",
        "setuid",
        "fifo",
        "git-folder",
        "delete",
        "exec-bit",
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut order = kinds.to_vec();
    rng.shuffle(&mut order);
    for kind in order {
        let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
        assert_eq!(code, 0, "seed {seed}: before {kind}: {text}");
        let named = match kind {
            "edit" => {
                std::fs::write(current.join("index.html"), "<h1>defaced</h1>\n").expect("edit");
                "index.html"
            }
            "add-file" => {
                std::fs::write(current.join("shell.php"), "<?php system($_GET[0]);").expect("add");
                "shell.php"
            }
            "add-symlink" => {
                std::os::unix::fs::symlink("/etc/passwd", current.join("pw")).expect("symlink");
                "pw"
            }
            "retarget-symlink" => {
                std::fs::remove_file(current.join("home.html")).expect("rm");
                std::os::unix::fs::symlink("/etc/shadow", current.join("home.html"))
                    .expect("symlink");
                "home.html"
            }
            "setuid" => {
                std::fs::set_permissions(
                    current.join("bin/run.sh"),
                    std::fs::Permissions::from_mode(0o4777),
                )
                .expect("chmod");
                "bin/run.sh"
            }
            "fifo" => {
                let ok = std::process::Command::new("mkfifo")
                    .arg(current.join("pipe"))
                    .status()
                    .expect("mkfifo");
                assert!(ok.success());
                "pipe"
            }
            "git-folder" => {
                std::fs::create_dir_all(current.join(".git")).expect("mkdir");
                std::fs::write(current.join(".git/config"), "[core]\n").expect("write");
                ".git"
            }
            "delete" => {
                std::fs::remove_file(current.join("css/site.css")).expect("rm");
                "css/site.css"
            }
            "exec-bit" => {
                std::fs::set_permissions(
                    current.join("index.html"),
                    std::fs::Permissions::from_mode(0o755),
                )
                .expect("chmod");
                "index.html"
            }
            other => panic!("unknown kind {other}"),
        };
        let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
        assert_eq!(code, 1, "seed {seed}: {kind} passed verify: {text}");
        assert!(
            text.contains("tampered") && text.contains(named) && text.contains("--repair"),
            "seed {seed}: {kind}: {text}"
        );
        let (code, text) = scene.gitsync(&["deploy", "web"]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("already on") && text.contains("--repair"),
            "{text}"
        );
        let (code, text) = scene.gitsync(&["deploy", "web", "--repair"]);
        assert_eq!(code, 0, "seed {seed}: {kind}: repair failed: {text}");
        assert_eq!(
            shipped(&current),
            archive(&scene.env, &scene.repo, &rev),
            "seed {seed}: {kind}: the repaired release is not the commit"
        );
        assert_eq!(scene.current("vm01").as_deref(), Some(rev.as_str()));
    }
    let (code, text) = scene.gitsync(&["deploy", "verify", "web"]);
    assert_eq!(code, 0, "{text}");
}

/// One policy for a corrupt state file (issue 26: the deploy, mirror and webhook state
/// readers silently started over, which for a deploy forgets a rollback's pin and lets the
/// daemon ship the tip again). A corrupt `state.json` is named, with what to do, by the
/// person's deploy and by the daemon, and nothing is shipped over the rollback.
#[test]
fn a_corrupt_deploy_state_is_named_and_nothing_ships_over_a_rollback() {
    let scene = Scene::new();
    scene.configure(
        &[("vm01", scene.sshd.port)],
        "    on_update: true\n    scan: {tool: off}\n",
    );
    scene.ship();
    let first = scene.env.head(&scene.repo);
    scene.commit("index.html", "<h1>two</h1>\n");
    scene.ship();
    let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(first.as_str()));
    let state = scene.home.join(".gitsync/deploy/web/state.json");
    std::fs::write(&state, "{\"targets\": [oops").expect("corrupt the state");

    let mut daemon = scene.daemon();
    daemon.wait_log("state.json is corrupt", Duration::from_secs(60));
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(first.as_str()),
        "the daemon shipped over the rollback: {}",
        daemon.log_text()
    );
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("state.json is corrupt") && text.contains("move it aside"),
        "{text}"
    );
    assert_eq!(scene.current("vm01").as_deref(), Some(first.as_str()));
}

/// Issue 22: a later ship scans only the contents not scanned clean before (a wrapper
/// around gitleaks counts the files each scan sees), and new rules scan everything again,
/// so a secret in an unchanged file that only the new rule finds still blocks.
#[test]
fn a_later_ship_scans_only_new_contents_and_new_rules_scan_everything() {
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new();
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/gitleaks");
    assert!(
        real.exists(),
        "run `make deps` (it installs gitleaks into .venv)"
    );
    let bin = scene.env.path("scanners");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let seen = scene.env.path("scanned.log");
    let asked = scene.env.path("versions.log");
    let wrapper = bin.join("gitleaks");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = dir ]; then for a; do last=\"$a\"; done; ls \"$last\" | wc -l >> '{}'; fi\nif [ \"$1\" = version ]; then echo asked >> '{}'; fi\nexec '{}' \"$@\"\n",
            seen.display(),
            asked.display(),
            real.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rules = scene.env.path("rules.toml");
    std::fs::write(&rules, "[extend]\nuseDefault = true\n").expect("rules");
    scene.configure(
        &[("vm01", scene.sshd.port)],
        &format!(
            "    scan: {{tool: {}, config: {}}}\n",
            wrapper.display(),
            rules.display()
        ),
    );
    for i in 0..30 {
        scene.env.write(
            &scene.repo,
            &format!("pages/{i}.html"),
            &format!("<p>{i}</p>\n"),
        );
    }
    scene.env.git(&scene.repo, &["add", "."]);
    scene.env.git(&scene.repo, &["commit", "-qm", "pages"]);
    let counts = || -> Vec<usize> {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a count"))
            .collect()
    };

    scene.ship();
    let first = counts();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0] >= 32, "the first ship scans everything: {first:?}");

    // One file changed: one file scanned.
    scene.commit("pages/7.html", "<p>seven</p>\n");
    scene.ship();
    assert_eq!(counts()[1..], [1], "only the new content is scanned");

    // A file with a value that gitleaks' default rules do not know: it ships.
    scene.commit("notes/ids.txt", "reference MYCORP-SECRET-4711\n");
    let out = scene.ship();
    assert_eq!(counts()[2..], [1], "{out}");

    // A rule that knows it: everything is scanned again, and the unchanged file blocks.
    std::fs::write(
        &rules,
        "[extend]\nuseDefault = true\n\n[[rules]]\nid = \"mycorp-secret\"\ndescription = \"MyCorp secret\"\nregex = '''MYCORP-SECRET-[0-9]{4}'''\n",
    )
    .expect("rules");
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("notes/ids.txt"), "{text}");
    let last = *counts().last().expect("a scan");
    assert!(last >= 33, "new rules scan every file: {:?}", counts());

    // The scanner's version is asked once while its binary stays the same file (gitleaks
    // takes half a second to say it); a new binary is asked again, and everything is
    // scanned under its version.
    let versions = || {
        std::fs::read_to_string(&asked)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(versions(), 1, "one binary, asked once over four ships");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = dir ]; then for a; do last=\"$a\"; done; ls \"$last\" | wc -l >> '{}'; fi\nif [ \"$1\" = version ]; then echo asked >> '{}'; echo 9.99.0; exit 0; fi\nexec '{}' \"$@\"\n",
            seen.display(),
            asked.display(),
            real.display()
        ),
    )
    .expect("a new scanner");
    std::fs::write(&rules, "[extend]\nuseDefault = true\n").expect("rules");
    let before = counts().len();
    scene.ship();
    assert_eq!(versions(), 2, "a new binary is asked again");
    assert!(
        counts()[before..].iter().sum::<usize>() >= 33,
        "a new scanner version scans every file: {:?}",
        counts()
    );
}

/// The scan started ahead of the export (issue 22) reads a commit's new files from git's
/// objects; the export's own scan leaves it only the files whose exported bytes it read.
/// Random commits add, rewrite and delete files that hold a key or not, as plain text,
/// as UTF-16, under an extension the scanners' allowlists skip, and through a checkout
/// filter that writes the key only into the export (the blob never holds it). After every
/// commit the ship is blocked exactly when the export holds a key, the block names every
/// file that holds one, and a ship that goes puts exactly the commit on the target.
/// A one-file commit runs the scanner once, over the folder scanned ahead.
/// `GITSYNC_DEPLOY_CASES` (halved) sets the cases, `GITSYNC_DEPLOY_SEED` replays one.
#[test]
fn the_scan_ahead_blocks_every_secret_the_export_holds() {
    use std::os::unix::fs::PermissionsExt;
    let cases = std::env::var("GITSYNC_DEPLOY_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(1, |n| (n / 2).max(1));
    let seed = std::env::var("GITSYNC_DEPLOY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/gitleaks");
    assert!(
        real.exists(),
        "run `make deps` (it installs gitleaks into .venv)"
    );
    for case in 0..cases {
        let scene = Scene::new();
        let bin = scene.env.path("scanners");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let seen = scene.env.path("scanned.log");
        let wrapper = bin.join("gitleaks");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nif [ \"$1\" = dir ]; then for a; do last=\"$a\"; done; echo \"$(ls \"$last\" | wc -l) $last\" >> '{}'; fi\nexec '{}' \"$@\"\n",
                seen.display(),
                real.display()
            ),
        )
        .expect("wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        scene.configure(
            &[("vm01", scene.sshd.port)],
            &format!("    scan: {{tool: {}}}\n", wrapper.display()),
        );
        // The checkout filter writes the key into what is checked out (the export), never
        // into the blob.
        let key_line = format!("AWS_ACCESS_KEY_ID={AWS_KEY}");
        scene.env.git(
            &scene.repo,
            &[
                "config",
                "filter.inject.smudge",
                &format!("sed s/PLACEHOLDER/{key_line}/"),
            ],
        );
        scene.commit(".gitattributes", "*.cfg filter=inject\n");
        scene.ship();
        let runs = || -> Vec<(usize, String)> {
            std::fs::read_to_string(&seen)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let (n, dir) = l.trim().split_once(' ').expect("count and folder");
                    (n.parse().expect("a count"), dir.to_string())
                })
                .collect()
        };
        let before = runs().len();
        let one = scene.commit("index.html", &format!("<h1>case {case}</h1>\n"));
        scene.ship();
        let after = &runs()[before..];
        assert!(
            after.len() == 1 && after[0].0 == 1 && after[0].1.contains("/scan/ahead/"),
            "seed {seed}: a one-file commit is scanned once, ahead of the export: {after:?}"
        );
        assert_eq!(scene.current("vm01").as_deref(), Some(one.as_str()));

        // path -> whether the export holds a key there
        let mut model: BTreeMap<String, bool> = BTreeMap::new();
        let dirs = ["", "a/", "a/b c/", "node_modules/"];
        let names = ["x", "y", "z"];
        for step in 0..6 {
            let secrets: Vec<String> = model
                .iter()
                .filter(|(_, s)| **s)
                .map(|(p, _)| p.clone())
                .collect();
            let what = if !secrets.is_empty() && rng.bool() {
                let gone = secrets[rng.usize(..secrets.len())].clone();
                scene.env.git(&scene.repo, &["rm", "-q", &gone]);
                model.remove(&gone);
                format!("remove {gone}")
            } else {
                let stem = format!(
                    "{}{}",
                    dirs[rng.usize(..dirs.len())],
                    names[rng.usize(..names.len())]
                );
                // Keep one file per stem: a stem is one path at a time.
                if let Some(old) = model
                    .keys()
                    .find(|p| p.starts_with(&format!("{stem}.")))
                    .cloned()
                {
                    scene.env.git(&scene.repo, &["rm", "-q", &old]);
                    model.remove(&old);
                }
                let kind = rng.usize(..6);
                let (ext, bytes, secret): (&str, Vec<u8>, bool) = match kind {
                    0 => (
                        "txt",
                        format!("clean {step} {}\n", rng.u32(..)).into_bytes(),
                        false,
                    ),
                    1 => ("env", format!("{key_line}\n").into_bytes(), true),
                    2 => ("png", format!("{key_line}\n").into_bytes(), true),
                    3 => {
                        let mut b = vec![0xff, 0xfe];
                        for unit in format!("{key_line}\r\n").encode_utf16() {
                            b.extend(unit.to_le_bytes());
                        }
                        ("txt", b, true)
                    }
                    4 => ("cfg", b"key = PLACEHOLDER\n".to_vec(), true),
                    _ => (
                        "cfg",
                        format!("key = plain {}\n", rng.u32(..)).into_bytes(),
                        false,
                    ),
                };
                let path = format!("{stem}.{ext}");
                let file = scene.repo.join(&path);
                std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
                std::fs::write(&file, &bytes).expect("write");
                scene.env.git(&scene.repo, &["add", "--", &path]);
                model.insert(path.clone(), secret);
                format!("write {path} (kind {kind})")
            };
            // A stem written again with the bytes it had (a key file for a key file) leaves
            // the tree as it was: the step is then a commit of the same tree.
            scene.env.git(
                &scene.repo,
                &[
                    "commit",
                    "-q",
                    "--allow-empty",
                    "-m",
                    &format!("step {step}"),
                ],
            );
            let head = scene.env.head(&scene.repo);
            let live = scene.current("vm01");
            let (code, text) = scene.gitsync(&["deploy", "web"]);
            let holding: Vec<&String> = model.iter().filter(|(_, s)| **s).map(|(p, _)| p).collect();
            if holding.is_empty() {
                assert_eq!(
                    code, 0,
                    "seed {seed} case {case} step {step} ({what}): {text}"
                );
                assert_eq!(scene.current("vm01").as_deref(), Some(head.as_str()));
                let release = scene.target_dir("vm01").join("releases").join(&head);
                assert_eq!(
                    shipped(&release),
                    archive(&scene.env, &scene.repo, &head),
                    "seed {seed} case {case} step {step}: the release is not the commit"
                );
            } else {
                assert_eq!(
                    code, 1,
                    "seed {seed} case {case} step {step} ({what}): a key in {holding:?} was not blocked: {text}"
                );
                for path in &holding {
                    assert!(
                        text.contains(path.as_str()),
                        "seed {seed} case {case} step {step} ({what}): {path} is not named: {text}"
                    );
                }
                assert!(!text.contains(AWS_KEY), "the key itself is shown: {text}");
                assert_eq!(
                    scene.current("vm01"),
                    live,
                    "seed {seed}: something shipped"
                );
            }
        }
    }
}

/// Every file of a release as it is on disk: inode, mode, modification time and bytes.
fn files_on_disk(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in walkdir(dir) {
        let meta = std::fs::symlink_metadata(&entry).expect("meta");
        if meta.is_file() {
            let rel = entry.strip_prefix(dir).expect("prefix").to_path_buf();
            let bytes = std::fs::read(&entry).expect("read");
            out.insert(rel, (meta.ino(), meta.mode(), meta.mtime(), bytes));
        }
    }
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if std::fs::symlink_metadata(&path).expect("meta").is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Replaces `from` with `to` in the config of the scene's machine.
fn edit_config(scene: &Scene, from: &str, to: &str) {
    let path = scene.home.join(".gitsync/config.yml");
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(&path, text.replace(from, to)).expect("config");
}

/// Issue 22: a release is laid down as a hard-linked copy of the live one while the scan
/// runs, and rsync brings it to the commit. Nothing of the live release may change on the
/// way: not a byte, a mode or a time, whatever the commit changes (content, the execute
/// bit alone, files newly excluded, every file's time after the export is rebuilt, the
/// shipped `.git`), and a ship the scan blocks leaves no copy behind.
#[test]
fn a_release_is_a_linked_copy_and_the_live_one_never_changes() {
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new();
    let port = scene.sshd.port;
    let git_key = "    include_git: true\n    scan: {tool: gitleaks}\n";
    scene.configure(&[("vm01", port)], git_key);
    scene.commit("tool.sh", "echo tool\n");
    scene.commit("notes.txt", "plain notes\n");
    let out = scene.ship();
    assert!(out.contains("(prepare "), "{out}");
    let releases = scene.target_dir("vm01").join("releases");
    let mut live = scene.current("vm01").expect("current");
    let head = |s: &Scene| {
        s.env
            .git(&s.repo, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    };
    let git_log = |release: &Path| {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(release.join(".git"))
            .args(["log", "-1", "--format=%H"])
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        git_log(&releases.join(&live)),
        live,
        "include_git ships .git"
    );

    type Step = fn(&Scene);
    let steps: [(&str, Step); 5] = [
        ("a content change", |s| {
            s.commit("index.html", "<h1>two</h1>\n");
        }),
        ("the execute bit alone", |s| {
            s.env
                .git(&s.repo, &["update-index", "--chmod=+x", "tool.sh"]);
            s.env.git(&s.repo, &["commit", "-qm", "executable"]);
        }),
        ("a file newly excluded", |s| {
            s.commit("index.html", "<h1>three</h1>\n");
            edit_config(
                s,
                "excludes: [\"*.log\"]",
                "excludes: [\"*.log\", notes.txt]",
            );
        }),
        ("every file rewritten by a rebuilt export", |s| {
            let dir = s.home.join(".gitsync/deploy/web");
            std::fs::remove_file(dir.join("index")).expect("drop the export's index");
            std::thread::sleep(Duration::from_millis(1100));
            s.commit("index.html", "<h1>four</h1>\n");
        }),
        ("no .git any more", |s| {
            s.commit("index.html", "<h1>five</h1>\n");
            edit_config(s, "    include_git: true\n", "");
        }),
    ];
    for (what, step) in steps {
        let before = files_on_disk(&releases.join(&live));
        step(&scene);
        let out = scene.ship();
        let rev = head(&scene);
        assert_eq!(
            scene.current("vm01").as_deref(),
            Some(rev.as_str()),
            "{what}: {out}"
        );
        assert_eq!(
            files_on_disk(&releases.join(&live)),
            before,
            "{what}: the release that was live changed while the next was written"
        );
        let new = releases.join(&rev);
        let mut want = archive(&scene.env, &scene.repo, &rev);
        if !matches!(what, "a content change" | "the execute bit alone") {
            want.remove(Path::new("notes.txt"));
        }
        assert_eq!(shipped(&new), want, "{what}: the new release is its commit");
        let exec = std::fs::metadata(new.join("tool.sh"))
            .expect("tool.sh")
            .permissions()
            .mode()
            & 0o111;
        assert_eq!(
            exec != 0,
            what != "a content change",
            "{what}: the execute bit"
        );
        let has_git = what != "no .git any more";
        assert_eq!(new.join(".git").exists(), has_git, "{what}: .git");
        if has_git {
            assert_eq!(
                git_log(&new),
                rev,
                "{what}: the shipped .git is the commit's"
            );
        }
        live = rev;
    }

    // A ship the scan blocks: the copy laid down during the scan is gone, the lock free.
    scene.commit("config.env", &format!("AWS_ACCESS_KEY_ID={AWS_KEY}\n"));
    let (code, text) = scene.gitsync(&["deploy", "web"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(scene.current("vm01").as_deref(), Some(live.as_str()));
    let left: Vec<String> = std::fs::read_dir(&releases)
        .expect("releases")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "a blocked ship left {left:?}");
    scene.env.git(&scene.repo, &["rm", "-q", "config.env"]);
    scene.env.git(&scene.repo, &["commit", "-qm", "no secret"]);
    let out = scene.ship();
    assert_eq!(
        scene.current("vm01").as_deref(),
        Some(head(&scene).as_str()),
        "{out}"
    );
}

/// A ship killed at a random instant (its process group: gitsync, rsync and ssh, as a
/// daemon stopped mid-ship aborts it) never leaves a `releases/<rev>` that is not whole:
/// a release is written as `releases/.<rev>.partial` and renamed at the flip, so a
/// rollback cannot land on a half-written tree. On the code before, the killed transfer
/// wrote into `releases/<rev>` itself.
#[test]
fn a_ship_killed_halfway_leaves_no_half_written_release() {
    use std::os::unix::process::CommandExt;
    let scene = Scene::new();
    scene.configure(&[("vm01", scene.sshd.port)], "    scan: {tool: off}\n");
    scene.ship();
    let cases: u64 = std::env::var("GITSYNC_DEPLOY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        * 2;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    // A commit of 300 new files of 100 KiB: a transfer that takes a while.
    let big_commit = |case: u64| {
        for i in 0..300 {
            scene.env.write(
                &scene.repo,
                &format!("big/c{case}/f{i:03}.bin"),
                &format!("{case}-{i:03} ").repeat(10_000),
            );
        }
        scene.env.git(&scene.repo, &["add", "-A"]);
        scene
            .env
            .git(&scene.repo, &["commit", "-qm", &format!("case {case}")]);
    };
    // How long a whole ship of such a commit takes here: the kills land within it.
    big_commit(cases);
    let started = std::time::Instant::now();
    scene.ship();
    let whole = started.elapsed().as_millis() as u64;
    for case in 0..cases {
        big_commit(case);
        let mut child = scene
            .env
            .gitsync_command(&scene.home, &["deploy", "web"])
            .env("PATH", venv_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start a ship");
        std::thread::sleep(Duration::from_millis(rng.u64(whole / 5..whole.max(10))));
        let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        // The server's side of the killed session (rsync's receiver, a flip script already
        // started) runs to its end on its own: wait until nothing works in the target.
        let target = scene.target_dir("vm01");
        common::wait_for(
            "the server side of the killed ship to end",
            Duration::from_secs(30),
            || {
                let busy = std::process::Command::new("pgrep")
                    .args(["-f", target.to_str().expect("utf8")])
                    .output()
                    .expect("pgrep (Debian package procps)");
                (!busy.status.success()).then_some(())
            },
        );
        // Whatever the instant: every release is its commit, and current is one of them.
        for name in releases(&target) {
            let files = shipped(&target.join("releases").join(&name));
            assert!(
                files == archive(&scene.env, &scene.repo, &name),
                "seed {seed} case {case}: releases/{name} is not its commit"
            );
        }
        let current = scene.current("vm01").expect("a current release");
        assert!(
            releases(&target).contains(&current),
            "seed {seed}: {current}"
        );
        // A rollback lands on a whole release too.
        let (code, text) = scene.gitsync(&["deploy", "rollback", "web"]);
        if code == 0 {
            let back = scene.current("vm01").expect("current");
            assert_eq!(
                shipped(&target.join("releases").join(&back)),
                archive(&scene.env, &scene.repo, &back),
                "seed {seed} case {case}: the rollback landed on a partial release: {text}"
            );
        }
        // The next ship completes.
        let (code, text) = scene.gitsync(&["deploy", "web"]);
        assert_eq!(code, 0, "seed {seed}: {text}");
    }
}
