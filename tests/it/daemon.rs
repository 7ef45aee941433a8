//! The daemon with real repositories: two hosts sharing a hub, and a repository that
//! breaks while the daemon runs.

use crate::common;

use std::time::Duration;

use common::{Env, find, wait_for, wait_for_logged};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn two_daemons_sharing_a_hub_see_each_other() {
    let env = Env::new();
    let hub = env.path("hub");
    env.remote_and_clone("shared", "root-a/shared");
    env.remote_and_clone("only-a", "root-a/only-a");
    env.remote_and_clone("shared", "root-b/shared");
    env.remote_and_clone("only-b", "root-b/only-b");
    let mut daemons = Vec::new();
    for host in ["a", "b"] {
        let home = env.home(host);
        env.config(
            &home,
            &format!(
                "hostname: host-{host}\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
                env.path(&format!("root-{host}")).display(),
                hub.display()
            ),
        );
        let daemon = env.spawn(&home, &[]);
        daemons.push((home, daemon));
    }
    // Both ready first: host-a's start-up can end before host-b has published anything.
    for (_, daemon) in &daemons {
        daemon.wait_log("ready", Duration::from_secs(30));
    }
    for (home, _) in &daemons {
        let states = env.status(home, &[]);
        for (host, repo) in [
            ("host-a", "shared"),
            ("host-a", "only-a"),
            ("host-b", "shared"),
            ("host-b", "only-b"),
        ] {
            let s = find(&states, Some(host), repo)
                .unwrap_or_else(|| panic!("{host}/{repo} missing from {states:?}"));
            assert_eq!(s["state"], "up_to_date");
        }
        let only_b = env.status(home, &["--host", "host-b"]);
        assert!(only_b.iter().all(|s| s["host"] == "host-b") && only_b.len() == 2);
        let out = env.gitsync(home, &["status", "--host", "nosuch"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("host-a") && stderr.contains("host-b"),
            "{stderr}"
        );
    }
    for (_, daemon) in &mut daemons {
        assert_eq!(daemon.stop(), Some(0));
    }
}

#[test]
fn a_broken_repository_is_an_error_and_the_others_keep_syncing() {
    let env = Env::new();
    let (_, deleted) = env.remote_and_clone("deleted", "root/deleted");
    let (_, corrupted) = env.remote_and_clone("corrupted", "root/corrupted");
    let (bare, healthy) = env.remote_and_clone("healthy", "root/healthy");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\nrepositories: [deleted, corrupted, healthy]\npull:\n  interval: 1s\n",
            env.path("root").display()
        ),
    );
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));

    std::fs::remove_dir_all(&deleted).expect("delete repo");
    std::fs::write(corrupted.join(".git/HEAD"), "garbage\n").expect("corrupt HEAD");
    let new = env.push_new_commit(&bare, "a.txt", "two\n");

    wait_for(
        "the healthy repository to be pulled",
        Duration::from_secs(20),
        || (env.head(&healthy) == new).then_some(()),
    );
    wait_for(
        "error states for the broken ones",
        Duration::from_secs(20),
        || {
            let states = env.status(&home, &[]);
            let err = |r: &str| find(&states, None, r).is_some_and(|s| s["state"] == "error");
            (err("deleted") && err("corrupted")).then_some(())
        },
    );
    // The pull moved HEAD a moment before the state saying so was stored.
    let states = wait_for("the healthy state stored", Duration::from_secs(20), || {
        let states = env.status(&home, &[]);
        let head = find(&states, None, "healthy")?["head"].clone();
        (head == new.as_str()).then_some(states)
    });
    assert!(
        find(&states, None, "deleted").expect("deleted")["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist"))
    );
    assert_eq!(
        daemon.stop(),
        Some(0),
        "the daemon is still up and stops cleanly"
    );
}

#[test]
fn local_edits_and_commits_reach_the_store_without_waiting_for_the_interval() {
    let env = Env::new();
    let (_, clone) = env.remote_and_clone("r", "root/r");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "root: {}\npull:\n  interval: 1h\n",
            env.path("root").display()
        ),
    );
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(30));
    let state = |key: &str| {
        let states = env.status(&home, &[]);
        find(&states, None, "r").map(|s| s[key].clone())
    };

    env.write(&clone, "b.txt", "edited\n");
    wait_for_logged("the edit to be seen", WAIT, &[&daemon], || {
        (state("unstaged")? == 1).then_some(())
    });
    // A new folder appearing after start-up is watched too.
    env.write(&clone, "newdir/inner.txt", "x\n");
    wait_for_logged("the new folder to be seen", WAIT, &[&daemon], || {
        (state("untracked")? == 1).then_some(())
    });
    env.write(&clone, "newdir/second.txt", "y\n");
    env.git(&clone, &["add", "."]);
    env.git(&clone, &["commit", "-qm", "local"]);
    let head = env.head(&clone);
    wait_for_logged("the commit to be seen", WAIT, &[&daemon], || {
        (state("head")? == head.as_str() && state("state")? == "ahead").then_some(())
    });
    // Ignored files change nothing.
    env.commit(&clone, ".gitignore", "*.log\n", "ignore logs");
    wait_for_logged("the ignore commit", WAIT, &[&daemon], || {
        (state("ahead")? == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    let refreshes = daemon.log_text().matches("syncing").count();
    for i in 0..20 {
        env.write(&clone, "noise.log", &format!("{i}\n"));
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        daemon.log_text().matches("syncing").count(),
        refreshes,
        "changes to ignored files caused a refresh"
    );
    // The same writes to a tracked file do cause one.
    env.write(&clone, "a.txt", "tracked edit\n");
    wait_for(
        "a refresh for a tracked edit",
        Duration::from_secs(5),
        || (daemon.log_text().matches("syncing").count() > refreshes).then_some(()),
    );
    assert_eq!(daemon.stop(), Some(0));
}
