//! gitsync as a service: the systemd units, `run --daemon` with its pidfile and `stop`,
//! SIGHUP reload, `doctor`, and the Debian package.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Env, find, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: u32) -> bool {
    gitsync::daemon::pidfile::process_alive(pid)
}

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is required: apt-get install -y {package} (or `make deps`)"
    );
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    require("systemd-analyze", "systemd");
    require("man", "man-db");
    let env = Env::new();
    let dir = env.path("units");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The Documentation= man page must exist: the one the package ships, generated here.
    let man = env.path("man");
    let out = Command::new(BIN)
        .args(["generate", "man"])
        .arg(man.join("man1"))
        .output()
        .expect("generate man");
    assert!(out.status.success(), "{}", text(&out));
    // Every subcommand's page says what the main page says of files, environment and exit
    // codes, and points at gitsync(1); what gitsync itself calls has no page.
    for sub in ["status", "run", "deploy", "forget"] {
        let page = std::fs::read_to_string(man.join(format!("man1/gitsync-{sub}.1")))
            .expect("a subcommand page");
        for section in [
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH EXIT STATUS",
            ".SH SEE ALSO",
        ] {
            assert!(page.contains(section), "gitsync-{sub}(1) lacks {section}");
        }
    }
    for hidden in ["hook", "fast-forward-helper", "generate", "names"] {
        assert!(
            !man.join(format!("man1/gitsync-{hidden}.1")).exists(),
            "a page for {hidden}"
        );
    }
    let runtime = env.path("xdg-runtime");
    std::fs::create_dir_all(&runtime).expect("mkdir");
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for (source, target, user) in [
        ("gitsync@.service", "gitsync@alice.service", false),
        ("gitsync.service", "gitsync.service", true),
    ] {
        let unit = std::fs::read_to_string(units.join(source)).expect("unit");
        assert!(unit.contains("ExecStart=/usr/bin/gitsync run"), "{unit}");
        // Verified against this build's binary (the package puts it at /usr/bin/gitsync).
        std::fs::write(dir.join(target), unit.replace("/usr/bin/gitsync", BIN)).expect("write");
        let mut verify = Command::new("systemd-analyze");
        if user {
            verify.arg("--user");
        }
        let out = verify
            .arg("verify")
            .arg(dir.join(target))
            .env("MANPATH", &man)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .expect("systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{source}: {}",
            text(&out)
        );
        for needed in [
            "Type=notify",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "NoNewPrivileges=yes",
            "RestrictSUIDSGID=yes",
        ] {
            assert!(unit.contains(needed), "{source} lacks {needed}");
        }
    }
    // A user manager has no network-online.target; the units read an optional environment
    // file for AWS variables and webhook secrets, and the README says how to use both with
    // a binary from `cargo install` and with systemd credentials.
    let user = std::fs::read_to_string(units.join("gitsync.service")).expect("unit");
    assert!(!user.contains("network-online.target"), "{user}");
    assert!(
        user.contains("EnvironmentFile=-%h/.gitsync/environment"),
        "{user}"
    );
    let readme = std::fs::read_to_string(units.join("../README.md")).expect("README");
    for needed in [
        "ExecStart=%h/.cargo/bin/gitsync run",
        "LoadCredential=",
        "~/.gitsync/environment",
    ] {
        assert!(readme.contains(needed), "the README lacks {needed}");
    }
    let system = std::fs::read_to_string(units.join("gitsync@.service")).expect("unit");
    assert!(
        system.contains("EnvironmentFile=-/etc/gitsync/%i.env"),
        "{system}"
    );
    for needed in [
        "User=%i",
        "ProtectSystem=full",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
    ] {
        assert!(system.contains(needed), "gitsync@.service lacks {needed}");
    }
}

/// A daemon killed while it forked a child (a `git push` of a webhook job) leaves that
/// child holding a copy of the pidfile's lock until its exec. A restart in that moment
/// must wait for the lock, not exit "already running" for a process that is gone (seen in
/// CI, where the restarted daemon of a webhook test exited and nothing ran after it).
#[test]
fn a_lock_held_for_a_dead_daemon_is_waited_for_not_reported_running() {
    require("flock", "util-linux");
    let env = Env::new();
    env.remote_and_clone("proj", "root/proj");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 1h\n",
            env.path("root").display()
        ),
    );
    // The pid of a process that has exited, as a killed daemon leaves in the file.
    let mut gone = Command::new("true").spawn().expect("true");
    let dead = gone.id();
    gone.wait().expect("wait");
    let pidfile = home.join(".gitsync/gitsync.pid");
    std::fs::write(&pidfile, format!("{dead}\n")).expect("pidfile");
    // The orphaned child: holds the lock for a moment, then lets go.
    let mut holder = Command::new("flock")
        .arg(&pidfile)
        .args(["sleep", "1"])
        .spawn()
        .expect("flock");
    wait_for("the holder's lock", WAIT, || {
        let free = Command::new("flock")
            .args(["-n", "-s"])
            .arg(&pidfile)
            .arg("true")
            .status()
            .expect("flock -n");
        (!free.success()).then_some(())
    });
    let status = env.gitsync(&home, &["status"]);
    assert!(
        text(&status).contains("daemon: not running"),
        "{}",
        text(&status)
    );
    let mut daemon = env.spawn(&home, &[]);
    let pid = daemon.child.id();
    wait_for("the daemon to take the pidfile", WAIT, || {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", daemon.log_text());
        }
        let text = std::fs::read_to_string(&pidfile).ok()?;
        (text.trim() == pid.to_string()).then_some(())
    });
    holder.wait().expect("flock exits");
    wait_for("the daemon ready", WAIT, || {
        daemon.log_text().contains("ready").then_some(())
    });
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
}

#[test]
fn run_daemon_takes_the_pidfile_refuses_a_second_and_stops() {
    let env = Env::new();
    env.remote_and_clone("proj", "root/proj");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 1h\n",
            env.path("root").display()
        ),
    );
    let out = env.gitsync(&home, &["run", "--daemon"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let pidfile = home.join(".gitsync/gitsync.pid");
    let pid = wait_for("the pidfile", WAIT, || {
        let pid = std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()?;
        alive(pid).then_some(pid)
    });
    // It says what it started, where it logs and how to stop it.
    assert!(
        said.contains(&format!("gitsync runs in the background (pid {pid})"))
            && said.contains(".gitsync/gitsync.log.")
            && said.contains("stop: gitsync stop"),
        "{said}"
    );
    wait_for("the daemon ready", WAIT, || {
        let log = std::fs::read_dir(home.join(".gitsync"))
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("gitsync.log"))?;
        std::fs::read_to_string(log.path())
            .ok()?
            .contains("ready")
            .then_some(())
    });

    for args in [&["run", "--daemon"][..], &["run"][..]] {
        let second = env.gitsync(&home, args);
        assert_eq!(second.status.code(), Some(1), "{}", text(&second));
        assert!(
            text(&second).contains(&format!("already running for this user (pid {pid}")),
            "{}",
            text(&second)
        );
    }
    let status = env.gitsync(&home, &["status"]);
    assert!(
        text(&status).contains(&format!("daemon: running (pid {pid}, version")),
        "{}",
        text(&status)
    );

    let stop = env.gitsync(&home, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!pidfile.exists(), "pidfile removed");
    assert!(!alive(pid), "the daemon process is gone");
    let again = env.gitsync(&home, &["stop"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("not running"));
    let status = env.gitsync(&home, &["status"]);
    assert!(
        text(&status).contains("daemon: not running"),
        "{}",
        text(&status)
    );
}

#[test]
fn sighup_adds_a_repository_and_a_broken_config_keeps_the_old_one() {
    let env = Env::new();
    env.remote_and_clone("one", "root/one");
    let (_, two) = env.remote_and_clone("two", "root/two");
    let home = env.home("a");
    let root = env.path("root");
    let config = env.config(
        &home,
        &format!(
            "root: {}\nrepositories: [one]\npull:\n  interval: 1h\n",
            root.display()
        ),
    );
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);
    assert!(find(&env.status(&home, &[]), None, "two").is_none());
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    };

    std::fs::write(
        &config,
        format!(
            "root: {}\nrepositories: [one, two]\npull:\n  interval: 1h\n",
            root.display()
        ),
    )
    .expect("write");
    hup(daemon.child.id());
    daemon.wait_log("configuration reloaded", WAIT);
    assert!(
        !daemon.log_text().contains("next restart"),
        "{}",
        daemon.log_text()
    );
    wait_for("two synced without a restart", WAIT, || {
        find(&env.status(&home, &[]), None, "two").map(|_| ())
    });
    // And watched: a local edit shows up without waiting for the 1 h interval.
    env.write(&two, "a.txt", "edited after the reload\n");
    wait_for("the edit in two seen by the watcher", WAIT, || {
        let states = env.status(&home, &[]);
        (find(&states, None, "two")?["unstaged"] == 1).then_some(())
    });
    assert!(
        two.join(".git/hooks/pre-push").exists(),
        "hook installed in the new repository"
    );

    std::fs::write(&config, "root: [unclosed\nrepositories: 3\n").expect("write broken");
    hup(daemon.child.id());
    daemon.wait_log("configuration not reloaded", WAIT);
    let log = daemon.log_text();
    let named = format!("{}:", config.display());
    let at = log.find(&named).expect("the error names the file");
    let line_number: String = log[at + named.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!line_number.is_empty(), "and the line: {log}");
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    env.write(&two, "new-file.txt", "still watched\n");
    // `status` would refuse the broken file too: read the hub's record directly.
    wait_for("the old configuration still in force", WAIT, || {
        let hosts = std::fs::read_dir(home.join(".gitsync/hub/state")).ok()?;
        hosts.flatten().find_map(|host| {
            let record = std::fs::read(host.path().join("two.json")).ok()?;
            let state: serde_json::Value = serde_json::from_slice(&record).ok()?;
            (state["untracked"] == 1).then_some(())
        })
    });

    // Sections started once (a mirror here) are named as needing a restart, on this
    // reload and on the next one, not passed over with "configuration reloaded".
    let with_mirror = format!(
        "root: {}\nrepositories: [one, two]\npull:\n  interval: 1h\nmirrors:\n  - name: m\n    source: {}\n    target: file://{}\n",
        root.display(),
        root.join("one").display(),
        env.path("mirror-target").display()
    );
    std::fs::write(&config, &with_mirror).expect("write");
    for round in 1..=2 {
        let before = daemon
            .log_text()
            .matches("take effect at the next restart")
            .count();
        hup(daemon.child.id());
        wait_for("the reload to name the mirrors", WAIT, || {
            let log = daemon.log_text();
            (log.matches("configuration reloaded; mirrors take effect at the next restart")
                .count()
                > before)
                .then_some(())
        });
        assert!(
            daemon
                .log_text()
                .contains("mirrors changed in the configuration; takes effect at the next restart"),
            "round {round}: {}",
            daemon.log_text()
        );
    }
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn doctor_passes_a_healthy_set_up_and_names_each_problem() {
    let env = Env::new();
    env.remote_and_clone("proj", "root/proj");
    let (_, other) = env.remote_and_clone("other", "root/other");
    let home = env.home("a");
    let root = env.path("root");
    env.config(
        &home,
        &format!(
            "root: {}\nrepositories: [proj, other]\npull:\n  interval: 1h\n",
            root.display()
        ),
    );
    let installed = env.gitsync(&home, &["hooks", "install"]);
    assert!(installed.status.success(), "{}", text(&installed));
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);
    let healthy = env.gitsync(&home, &["doctor"]);
    let report = text(&healthy);
    assert!(healthy.status.success(), "{report}");
    for line in [
        "ok   config:",
        "ok   git:",
        "ok   repository proj:",
        "ok   backend local: reachable",
        "ok   daemon: running",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    drop(daemon);

    // A missing hook: named, a warning.
    std::fs::remove_file(other.join(".git/hooks/pre-push")).expect("remove hook");
    let out = env.gitsync(&home, &["doctor"]);
    assert!(
        text(&out).contains("warn repository other: pre-push hook missing"),
        "{}",
        text(&out)
    );
    // A missing repository: a failure, exit 1.
    std::fs::remove_dir_all(&other).expect("remove repo");
    let out = env.gitsync(&home, &["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("fail repository other:") && text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );
    // An unreachable backend: a failure naming it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    env.config(
        &home,
        &format!(
            "root: {}\nrepositories: [proj]\nbackend: aws\naws:\n  region: us-east-1\n  endpoint_url: http://127.0.0.1:{port}\n  dynamodb: {{table: git}}\n  sqs: {{queue: a.fifo}}\n  sns: {{topic: {{arn: \"arn:aws:sns:us-east-1:123456789012:git.fifo\"}}}}\n",
            root.display()
        ),
    );
    let out = env.gitsync(&home, &["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("fail backend aws: unreachable"),
        "{}",
        text(&out)
    );
}

/// Builds the package of the test binary with packaging/build-deb.sh; returns the .deb.
fn build_deb(env: &Env) -> std::path::PathBuf {
    let out_dir = env.path("deb");
    let built = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build-deb.sh"))
        .arg(&out_dir)
        .env("GITSYNC_BIN", BIN)
        .output()
        .expect("build-deb.sh");
    assert!(built.status.success(), "{}", text(&built));
    std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb")
}

#[test]
fn the_deb_has_everything_and_its_binary_runs() {
    require("dpkg-deb", "dpkg");
    let env = Env::new();
    let deb = build_deb(&env);
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .expect("dpkg-deb -c");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for path in [
        "./usr/bin/gitsync",
        "./usr/lib/systemd/system/gitsync@.service",
        "./usr/lib/systemd/user/gitsync.service",
        "./usr/share/gitsync/hooks/pre-push",
        "./usr/share/man/man1/gitsync.1.gz",
        "./usr/share/man/man1/gitsync-run.1.gz",
        "./usr/share/bash-completion/completions/gitsync",
        "./usr/share/zsh/vendor-completions/_gitsync",
        "./usr/share/fish/vendor_completions.d/gitsync.fish",
        "./usr/share/doc/gitsync/copyright",
        "./usr/share/doc/gitsync/changelog.gz",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} missing from:\n{listing}"
        );
    }
    let scratch = env.path("extracted");
    let extracted = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&scratch)
        .status()
        .expect("dpkg-deb -x");
    assert!(extracted.success());
    let version = Command::new(scratch.join("usr/bin/gitsync"))
        .arg("--version")
        .output()
        .expect("run the packaged binary");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("gitsync {}", env!("CARGO_PKG_VERSION"))
    );
    // The completions know the subcommands (generated from the CLI definition).
    let bash =
        std::fs::read_to_string(scratch.join("usr/share/bash-completion/completions/gitsync"))
            .expect("bash completion");
    assert!(bash.contains("doctor") && bash.contains("hooks"));
    // Stripped: no symbol table.
    require("readelf", "binutils");
    let sections = Command::new("readelf")
        .arg("-S")
        .arg(scratch.join("usr/bin/gitsync"))
        .output()
        .expect("readelf");
    assert!(
        !String::from_utf8_lossy(&sections.stdout).contains(".symtab"),
        "the packaged binary is not stripped"
    );
    // The man page carries more than --help: configuration, files, environment, exit status.
    let man = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | MANWIDTH=100 man -l - 2>/dev/null",
            scratch.join("usr/share/man/man1/gitsync.1.gz").display()
        ))
        .output()
        .expect("man");
    let man = String::from_utf8_lossy(&man.stdout);
    for section in ["CONFIGURATION", "FILES", "ENVIRONMENT", "EXIT STATUS"] {
        assert!(
            man.contains(section),
            "no {section} section in gitsync(1):\n{man}"
        );
    }
    for key in [
        "pull.other_branches",
        "pull.heartbeat",
        "webhooks.listen",
        "GITSYNC_CONFIG",
        "~/.gitsync/config.yml",
    ] {
        assert!(man.contains(key), "gitsync(1) does not mention {key}");
    }
    // lintian, Debian's package checker: no error.
    require("lintian", "lintian");
    let lint = Command::new("lintian")
        .args(["--no-tag-display-limit", "--allow-root"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = text(&lint);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

/// Removes the test's own installation of the package, whatever happens.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "gitsync"]).output();
    }
}

#[test]
fn the_deb_installs_and_removes_without_leaving_a_file() {
    require("dpkg", "dpkg");
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs a package: run the suite as root (as CI does)"
    );
    let before = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "gitsync"])
        .output()
        .expect("dpkg-query");
    assert!(
        !String::from_utf8_lossy(&before.stdout).contains("ok installed"),
        "a gitsync package is installed on this machine; this test installs and removes its own: `dpkg -r gitsync` first"
    );
    let env = Env::new();
    let deb = build_deb(&env);
    let files: Vec<String> = String::from_utf8_lossy(
        &Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .expect("dpkg-deb -c")
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with('-'))
    .filter_map(|l| l.split_whitespace().last())
    .map(|p| p.trim_start_matches('.').to_string())
    .collect();
    assert!(files.len() > 10, "{files:?}");
    let installed = Installed;
    let install = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("dpkg -i");
    assert!(install.status.success(), "dpkg -i: {}", text(&install));
    let version = Command::new("/usr/bin/gitsync")
        .arg("--version")
        .output()
        .expect("installed binary");
    assert!(version.status.success());
    for f in &files {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let remove = Command::new("dpkg")
        .args(["-r", "gitsync"])
        .output()
        .expect("dpkg -r");
    assert!(remove.status.success(), "dpkg -r: {}", text(&remove));
    assert!(
        text(&remove).contains("gitsync hooks uninstall"),
        "removal does not mention the hooks: {}",
        text(&remove)
    );
    drop(installed);
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left behind after dpkg -r: {left:?}");
    for dir in ["/usr/share/gitsync", "/usr/share/doc/gitsync"] {
        assert!(!Path::new(dir).exists(), "{dir} left behind");
    }
}
