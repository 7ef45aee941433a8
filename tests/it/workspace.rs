//! A workspace that looks after itself (issue 12): clones found and dropped without a
//! restart, host liveness, one hostname on two machines, bootstrap, and branches that are
//! not checked out.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, wait_for_logged};

fn repos_of(env: &Env, home: &Path, host: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .status(home, &[])
        .iter()
        .filter(|s| s["host"] == host)
        .filter_map(|s| s["repo"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A daemon of `host-a` on `root` with the shared hub; the pull interval and the rescan are
/// an hour, so only the root's watch can explain a repository found within seconds.
fn daemon_on(env: &Env, root: &Path, extra: &str) -> (std::path::PathBuf, common::Daemon) {
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n  rescan: 1h\n{extra}",
            root.display(),
            env.path("hub").display()
        ),
    );
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    (home, daemon)
}

#[test]
fn clones_appear_and_deleted_ones_leave_without_a_restart() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("first", "root/first");
    let (bare, _) = env.remote_and_clone("second", "elsewhere/second");
    let (home, daemon) = daemon_on(&env, &root, "");
    assert_eq!(repos_of(&env, &home, "host-a"), ["first"]);

    let within = |what: &str, want: &[&str]| {
        let start = Instant::now();
        wait_for_logged(what, Duration::from_secs(5), &[&daemon], || {
            (repos_of(&env, &home, "host-a") == want).then_some(())
        });
        start.elapsed()
    };
    let bare = bare.to_str().expect("utf8").to_string();
    env.git(&root, &["clone", "-q", &bare, "newclone"]);
    within("a clone to appear", &["first", "newclone"]);
    // Deeper down, in folders that did not exist when the daemon started.
    std::fs::create_dir_all(root.join("team/deep")).expect("mkdir");
    env.git(&root.join("team/deep"), &["clone", "-q", &bare, "nested"]);
    within(
        "a nested clone to appear",
        &["first", "newclone", "team/deep/nested"],
    );
    let row = env
        .status(&home, &[])
        .into_iter()
        .find(|s| s["repo"] == "team/deep/nested")
        .expect("row");
    assert_eq!(row["state"], "up_to_date", "{row}");
    assert_eq!(row["branch"], "main", "{row}");

    std::fs::remove_dir_all(root.join("newclone")).expect("rm");
    within("a deleted clone to leave", &["first", "team/deep/nested"]);
    std::fs::rename(root.join("team/deep/nested"), root.join("moved")).expect("mv");
    within("a moved clone to follow", &["first", "moved"]);
    // The hook went into the new clone, as into the others.
    assert!(
        root.join("moved/.git/hooks/pre-push").exists(),
        "no hook in a found clone"
    );
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn only_clones_matching_the_patterns_are_picked_up() {
    let env = Env::new();
    let root = env.path("root");
    let (bare, _) = env.remote_and_clone("r", "elsewhere/r");
    std::fs::create_dir_all(root.join("work")).expect("mkdir");
    std::fs::create_dir_all(root.join("other")).expect("mkdir");
    let (home, daemon) = daemon_on(&env, &root, "repositories: [\"work/*\"]\n");
    let bare = bare.to_str().expect("utf8").to_string();
    env.git(&root.join("other"), &["clone", "-q", &bare, "skipped"]);
    env.git(&root.join("work"), &["clone", "-q", &bare, "taken"]);
    wait_for_logged("work/taken", Duration::from_secs(5), &[&daemon], || {
        (repos_of(&env, &home, "host-a") == ["work/taken"]).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(repos_of(&env, &home, "host-a"), ["work/taken"]);
}

/// The `host_state` that `status --json` gives with repository `repo`'s row.
fn host_state_of(env: &Env, home: &Path, repo: &str) -> Option<String> {
    env.status(home, &[])
        .iter()
        .find(|s| s["repo"] == repo)
        .map(|s| s["host_state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_killed_host_shows_offline_after_its_heartbeat_window() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("r", "root/r");
    let (home, mut daemon) = daemon_on(&env, &root, "  heartbeat: 1s\n");
    let host_state = |env: &Env| host_state_of(env, &home, "r");
    assert_eq!(host_state(&env).as_deref(), Some("online"));
    let table = env.gitsync(&home, &["status"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(text.contains("host host-a: online"), "{text}");
    assert!(text.contains("CHECKED"), "{text}");
    daemon.child.kill().expect("SIGKILL");
    let _ = daemon.child.wait();
    // The heartbeat is 1 s, so the window is seconds (the default is minutes): the wait's
    // limit tells the two apart.
    common::wait_for("offline", Duration::from_secs(10), || {
        (host_state(&env).as_deref() == Some("offline")).then_some(())
    });
    let text = String::from_utf8_lossy(&env.gitsync(&home, &["status"]).stdout).to_string();
    assert!(text.contains("host host-a: offline for"), "{text}");
    assert!(text.contains("host-a (offline)"), "{text}");
    // A restarted daemon is online again.
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    assert_eq!(host_state(&env).as_deref(), Some("online"));
}

/// A configured hub folder that does not exist (a share that is not mounted) is refused by
/// every command, with what to do, and not created; a hub that is swapped for another
/// folder under a running daemon (unmounted) is noticed, and nothing is written there.
#[test]
fn a_missing_or_unmounted_hub_is_refused_not_created() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    let share = env.path("share/gitsync-hub");
    env.config(
        &home,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
            root.display(),
            share.display()
        ),
    );
    for args in [&["status"][..], &["sync"][..], &["run"][..]] {
        let out = env.gitsync(&home, args);
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("does not exist: mount the share it lives on"),
            "{args:?}: {said}"
        );
        assert!(!share.exists(), "{args:?} created the hub");
    }
    let doctor = env.gitsync(&home, &["doctor"]);
    let said = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(said.contains("does not exist"), "{said}");
    assert!(!share.exists(), "doctor created the hub");

    // Mounted (made), a daemon runs; then the share goes away under it.
    let (_, daemon) = daemon_on(&env, &root, "  heartbeat: 1s\n");
    let hub = env.path("hub");
    std::fs::rename(&hub, env.path("hub-mounted")).expect("unmount");
    std::fs::create_dir(&hub).expect("the empty mount point");
    daemon.wait_log(
        "is gone or is another folder than at start-up",
        Duration::from_secs(20),
    );
    env.write(&env.path("root/r"), "edit.txt", "a change to publish\n");
    std::thread::sleep(Duration::from_secs(2));
    let written: Vec<_> = std::fs::read_dir(&hub).expect("read").collect();
    assert!(
        written.is_empty(),
        "written into the mount point: {written:?}"
    );
}

/// A graceful stop is published: the host shows `stopped` at once (its heartbeat window is
/// an hour here, so only the stop can explain it), and a restart brings it back online.
#[test]
fn a_stopped_host_shows_stopped_at_once() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("r", "root/r");
    let (home, mut daemon) = daemon_on(&env, &root, "  heartbeat: 1h\n");
    let host_state = |env: &Env| host_state_of(env, &home, "r");
    assert_eq!(host_state(&env).as_deref(), Some("online"));
    // CHECKED moves when the start-up update ends, not at the next heartbeat (an hour).
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("hub/hosts/host-a.json")).expect("host record"),
    )
    .expect("JSON");
    assert!(record["checked_at"].is_string(), "{record}");
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
    assert_eq!(host_state(&env).as_deref(), Some("stopped"));
    let text = String::from_utf8_lossy(&env.gitsync(&home, &["status"]).stdout).to_string();
    assert!(text.contains("host host-a: stopped"), "{text}");
    assert!(text.contains("host-a (stopped)"), "{text}");
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    assert_eq!(host_state(&env).as_deref(), Some("online"));
}

#[test]
fn a_second_machine_with_the_same_hostname_is_refused() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("r", "root/r");
    let (_home, daemon) = daemon_on(&env, &root, "");
    // Another HOME is another machine id; its config names the same host.
    let other = env.home("copy");
    let other_root = env.path("root-copy");
    env.remote_and_clone("r", "root-copy/r");
    env.write(&other_root.join("r"), "a.txt", "dirty on the copy\n");
    env.config(
        &other,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\n",
            other_root.display(),
            env.path("hub").display()
        ),
    );
    let mut copy = env.spawn(&other, &[]);
    let status = common::wait_for("the copy to exit", Duration::from_secs(30), || {
        copy.child.try_wait().ok().flatten()
    });
    let log = copy.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("in use by another machine"), "{log}");
    let sync = env.gitsync(&other, &["sync"]);
    let err = String::from_utf8_lossy(&sync.stderr).to_string();
    assert!(
        !sync.status.success() && err.contains("in use by another machine"),
        "{err}"
    );
    let doctor = env.gitsync(&other, &["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(out.contains("fail hostname host-a"), "{out}");
    // host-a's row still says what host-a has: clean.
    let row = env
        .status(&other, &[])
        .into_iter()
        .find(|s| s["repo"] == "r")
        .expect("row");
    assert_eq!(row["unstaged"], 0, "the copy overwrote the row: {row}");
    drop(daemon);
}

/// Host b has four repositories: `alpha` over file://, `team/beta` on branch `dev`, `web`
/// over smart HTTP on loopback and `private` over an HTTP server that wants a password
/// this machine does not have. Host a starts with an empty root.
#[test]
fn bootstrap_clones_what_another_host_has_on_the_same_branches() {
    let env = Env::new();
    let hub = env.path("hub");
    let served = env.path("remotes");
    let open = common::servers::git_http(&served, None, None, &env.path("open.log"));
    let locked =
        common::servers::git_http(&served, None, Some("bob:s3cret"), &env.path("locked.log"));
    let root_b = env.path("root-b");
    let (alpha_bare, _) = env.remote_and_clone("alpha", "root-b/alpha");
    let file_url = format!("file://{}", alpha_bare.display());
    env.git(
        &root_b.join("alpha"),
        &["remote", "set-url", "origin", &file_url],
    );
    let (beta_bare, beta) = env.remote_and_clone("beta", "root-b/team/beta");
    env.git(&beta, &["checkout", "-qb", "dev"]);
    env.commit(&beta, "d.txt", "dev\n", "on dev");
    env.git(&beta, &["push", "-qu", "origin", "dev"]);
    let _ = beta_bare;
    env.remote_and_clone("web", "elsewhere/web");
    let web_url = format!("{}/web.git", open.url());
    env.git(&root_b, &["clone", "-q", &web_url, "web"]);
    env.remote_and_clone("private", "elsewhere/private");
    let private_url = format!("http://bob:s3cret@127.0.0.1:{}/private.git", locked.port);
    env.git(&root_b, &["clone", "-q", &private_url, "private"]);
    let home_b = common::host_config(&env, "b", &root_b, &hub);
    let _ = home_b;
    let sync = env.gitsync(&env.home("b"), &["sync"]);
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );

    let root_a = env.path("root-a");
    std::fs::create_dir_all(&root_a).expect("mkdir");
    common::host_config(&env, "a", &root_a, &hub);
    let home_a = env.home("a");
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let status = String::from_utf8_lossy(&env.gitsync(&home_a, &["status"]).stdout).to_string();
    for repo in ["alpha", "team/beta", "web", "private"] {
        assert!(
            status.lines().any(|l| l.starts_with("host-a ")
                && l.contains(repo)
                && l.contains("missing here")),
            "{repo} not marked missing here:\n{status}"
        );
    }
    let dry = env.gitsync(&home_a, &["bootstrap", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("team/beta: would clone"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        std::fs::read_dir(&root_a).expect("ls").count(),
        0,
        "a dry run cloned"
    );

    let run = env.gitsync(&home_a, &["bootstrap", "--from", "host-b"]);
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "private must fail: {out}");
    assert!(out.contains("private: clone failed"), "{out}");
    assert!(
        out.contains("credential"),
        "no hint about credentials: {out}"
    );
    assert!(!out.contains("s3cret"), "a password in the output: {out}");
    assert!(
        out.contains("4 repositories: 3 cloned, 0 already here, 1 failed"),
        "{out}"
    );
    assert!(
        !root_a.join("private").exists(),
        "a failed clone left a folder"
    );
    for (repo, branch) in [("alpha", "main"), ("team/beta", "dev"), ("web", "main")] {
        let here = root_a.join(repo);
        assert_eq!(
            env.git(&here, &["rev-parse", "--abbrev-ref", "HEAD"])
                .trim(),
            branch,
            "{repo}"
        );
        assert_eq!(env.head(&here), env.head(&root_b.join(repo)), "{repo}");
        assert_eq!(
            env.git(&here, &["rev-parse", "--abbrev-ref", "@{u}"])
                .trim(),
            format!("origin/{branch}"),
            "{repo}"
        );
        assert!(here.join(".git/hooks/pre-push").exists(), "{repo}: no hook");
    }
    // Run again: what is there is skipped.
    let again = env.gitsync(&home_a, &["bootstrap"]);
    assert!(
        text(&again).contains("alpha: skipped (already here)"),
        "{}",
        text(&again)
    );
    assert!(
        text(&again).contains("0 cloned, 3 already here, 1 failed"),
        "{}",
        text(&again)
    );
    assert_eq!(
        env.gitsync(&home_a, &["bootstrap", "--from", "nosuch"])
            .status
            .code(),
        Some(2)
    );
    drop((open, locked));
}

#[test]
fn a_one_off_sync_of_another_root_leaves_no_permanent_rows() {
    let env = Env::new();
    let root = env.path("root");
    env.remote_and_clone("kept", "root/kept");
    env.remote_and_clone("elsewhere", "scratch/elsewhere");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n  rescan: 1s\n",
            root.display(),
            env.path("hub").display()
        ),
    );
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    let other = env.path("scratch");
    let sync = env.gitsync(
        &home,
        &["sync", "--quiet", "--root", other.to_str().expect("utf8")],
    );
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    // The one-off sync published as host-a; the daemon owns host-a's rows.
    wait_for_logged(
        "the foreign row to go",
        Duration::from_secs(10),
        &[&daemon],
        || (repos_of(&env, &home, "host-a") == ["kept"]).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        repos_of(&env, &home, "host-a"),
        ["kept"],
        "the daemon's own row stays"
    );
}

/// Through `gitsync sync`: a branch that is not checked out and is behind its upstream is
/// moved, the worktree's bytes stay as they were; with `pull.other_branches: false` it is
/// not, and `status` counts it.
#[test]
fn sync_moves_branches_that_are_not_checked_out_unless_told_not_to() {
    for enabled in [true, false] {
        let env = Env::new();
        let (bare, clone) = env.remote_and_clone("r", "root/r");
        let bare = bare.to_str().expect("utf8").to_string();
        let seed = env.path("seeds/r");
        env.git(&seed, &["push", "-q", &bare, "main:release"]);
        env.git(&clone, &["fetch", "-q"]);
        env.git(&clone, &["branch", "--track", "release", "origin/release"]);
        env.commit(&seed, "rel.txt", "release notes\n", "for release");
        env.git(&seed, &["push", "-q", &bare, "main:release"]);
        env.git(&clone, &["checkout", "-q", "-b", "topic"]);
        env.write(&clone, "wip.txt", "work in progress\n");
        let before = common::tree_bytes(&clone);
        let home = env.home("a");
        env.config(
            &home,
            &format!(
                "hostname: host-a\nroot: {}\npull:\n  other_branches: {enabled}\n",
                env.path("root").display()
            ),
        );
        let sync = env.gitsync(&home, &["sync"]);
        assert!(
            sync.status.success(),
            "{}",
            String::from_utf8_lossy(&sync.stderr)
        );
        let release = env.git(&clone, &["rev-parse", "release"]);
        let upstream = env.git(&clone, &["rev-parse", "origin/release"]);
        assert_eq!(release == upstream, enabled, "enabled: {enabled}");
        assert_eq!(
            common::tree_bytes(&clone),
            before,
            "a worktree byte changed"
        );
        let row = env
            .status(&home, &[])
            .into_iter()
            .find(|s| s["repo"] == "r")
            .expect("row");
        assert_eq!(row["branch"], "topic");
        assert_eq!(
            row["branches_behind"].as_u64().unwrap_or(0),
            if enabled { 0 } else { 1 },
            "{row}"
        );
    }
}

/// A repository another host keeps without a remote (local-only) cannot be cloned: it is
/// skipped and said so, and bootstrap still succeeds (it counted it failed, exit 1, on
/// every run).
#[test]
fn bootstrap_skips_a_local_only_repository_of_another_host() {
    let env = Env::new();
    let hub = env.path("hub");
    let root_b = env.path("root-b");
    let notes = root_b.join("notes");
    std::fs::create_dir_all(&notes).expect("mkdir");
    env.git(&notes, &["init", "-q", "-b", "main"]);
    env.commit(&notes, "n.txt", "mine\n", "local only");
    common::host_config(&env, "b", &root_b, &hub);
    let sync = env.gitsync(&env.home("b"), &["sync"]);
    assert!(sync.status.success(), "{sync:?}");
    let root_a = env.path("root-a");
    std::fs::create_dir_all(&root_a).expect("mkdir");
    common::host_config(&env, "a", &root_a, &hub);
    let run = env.gitsync(&env.home("a"), &["bootstrap"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(
        out.contains("notes: skipped (local to host-b: it has no remote to clone from)"),
        "{out}"
    );
    assert!(
        out.contains("1 repository: 0 cloned, 0 already here, 1 local to another host, 0 failed"),
        "{out}"
    );
    assert!(!root_a.join("notes").exists());
}

/// A clone that bootstrap is still making, or that fails, is never adopted by the daemon
/// running on that machine (it was: hook installed and an error row published until the
/// failed clone's folder went away).
#[test]
fn a_running_daemon_never_adopts_a_clone_bootstrap_is_making() {
    let env = Env::new();
    let hub = env.path("hub");
    // Host b keeps `slow`, whose remote is reached over ssh: a stand-in ssh that runs the
    // command here serves it.
    let (bare, _) = env.remote_and_clone("slow", "elsewhere/slow");
    let root_b = env.path("root-b");
    std::fs::create_dir_all(&root_b).expect("root-b");
    let url = format!("ssh://gitsync.invalid{}", bare.display());
    env.git(
        &root_b,
        &["clone", "-q", bare.to_str().expect("utf8"), "slow"],
    );
    env.git(&root_b.join("slow"), &["remote", "set-url", "origin", &url]);
    let script = |name: &str, body: &str| {
        let path = env.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path
    };
    let serving = script("serving-ssh", "for last; do :; done\nexec sh -c \"$last\"");
    common::host_config(&env, "b", &root_b, &hub);
    let sync = env
        .gitsync_command(&env.home("b"), &["sync"])
        .env("GIT_SSH_COMMAND", &serving)
        .env("GIT_SSH_VARIANT", "ssh")
        .output()
        .expect("sync");
    assert!(sync.status.success(), "{sync:?}");

    // Host a runs its daemon; its bootstrap reaches the remote slowly, then fails.
    let root_a = env.path("root-a");
    std::fs::create_dir_all(&root_a).expect("root-a");
    common::host_config(&env, "a", &root_a, &hub);
    let home_a = env.home("a");
    let mut daemon = env.spawn(&home_a, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    let failing = script(
        "failing-ssh",
        "sleep 4\necho 'ssh: connect to host gitsync.invalid port 22: Connection refused' >&2\nexit 255",
    );
    let run = env
        .gitsync_command(&home_a, &["bootstrap"])
        .env("GIT_SSH_COMMAND", &failing)
        .env("GIT_SSH_VARIANT", "ssh")
        .output()
        .expect("bootstrap");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.log_text();
    assert!(
        !log.contains("repository added"),
        "the daemon adopted a clone in the making:\n{log}"
    );
    assert!(!root_a.join("slow").exists());
    assert!(
        std::fs::read_dir(&root_a).expect("ls").next().is_none(),
        "something was left in the root"
    );
    assert_eq!(daemon.stop(), Some(0));
}
