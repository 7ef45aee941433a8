//! Issue 24, item 2: the post-receive hook of a bare repository on a server
//! (`gitsync hooks install --server DIR.git`). Pushes are made with plain git over ssh
//! (Debian's sshd on loopback) by a machine without gitsync; the server's hook publishes
//! them on the local hub, and hosts A and B (one keeping the repository under the server's
//! name, one under another name, found by its remote URL) fast-forward. A push while the
//! hub's share is gone still succeeds, and its event is delivered at the next push,
//! exactly once. The hook chains the server's own post-receive hook, and uninstall puts
//! it back byte for byte.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::Env;
use common::sshd::Sshd;

const WAIT: Duration = Duration::from_secs(60);

/// Appends `core.sshCommand` for `sshd` to the git config of `home`.
fn use_sshd(home: &Path, sshd: &Sshd) {
    let config = home.join(".gitconfig");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!(
        "[core]\n\tsshCommand = ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new\n",
        sshd.key().display(),
        sshd.known_hosts().display()
    ));
    std::fs::write(config, text).expect("gitconfig");
}

/// The events of the hub's log for the server hook on `nas`, as (ref, new) pairs.
fn published(hub: &Path) -> Vec<(String, String)> {
    let log = hub.join("events").join("server hook via nas.jsonl");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("an event");
            assert_eq!(v["repo"], "proj", "{l}");
            (
                v["ref"].as_str().expect("ref").to_string(),
                v["new"].as_str().expect("new").to_string(),
            )
        })
        .collect()
}

/// How many events wait in the spool folder `dir`.
fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    })
}

#[test]
fn a_push_over_ssh_to_a_server_with_the_hook_reaches_both_hosts() {
    let env = Env::new();
    let sshd = Sshd::start(&env.path("sshd"));
    use_sshd(&env.home("default"), &sshd);
    // The server: a bare repository with a post-receive hook of its own.
    let seed = env.path("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    env.git(&seed, &["init", "-q", "-b", "main"]);
    env.commit(&seed, "a.txt", "one\n", "first");
    let bare = env.path("srv/git/proj.git");
    std::fs::create_dir_all(bare.parent().expect("parent")).expect("mkdir");
    env.git(
        &seed,
        &["clone", "-q", "--bare", ".", bare.to_str().expect("utf8")],
    );
    let own_hook = bare.join("hooks/post-receive");
    let own_log = env.path("own-hook.log");
    let own = format!("#!/bin/sh\ncat >> '{}'\nexit 0\n", own_log.display());
    std::fs::write(&own_hook, &own).expect("hook");
    std::fs::set_permissions(&own_hook, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, bare.display());

    // The server's gitsync: only a config naming the hub (through a share that can go).
    let hub = env.path("hub");
    std::fs::create_dir_all(&hub).expect("hub");
    let share = env.path("share");
    std::os::unix::fs::symlink(&hub, &share).expect("share");
    let server_home = env.home("server");
    env.config(
        &server_home,
        &format!("hostname: nas\nlocal:\n  path: {}\n", share.display()),
    );
    let bare_arg = bare.to_str().expect("utf8");
    let out = env.gitsync(
        &server_home,
        &["hooks", "install", "--server", bare_arg, "--url", &url],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("installed; your hook is kept as post-receive.gitsync-chained"),
        "{said}"
    );
    let out = env.gitsync(
        &server_home,
        &["hooks", "status", "--server", bare_arg, "--url", &url],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("installed (chains your post-receive hook)"),
        "{said}"
    );

    // Hosts A and B: A keeps it as `proj` (the server's name), B as `code/site` (found
    // by its remote URL); someone else pushes with plain git.
    let clone = |at: &str| {
        let dir = env.path(at);
        std::fs::create_dir_all(dir.parent().expect("parent")).expect("mkdir");
        env.git(
            env.dir.path(),
            &["clone", "-q", &url, dir.to_str().expect("utf8")],
        );
        dir
    };
    let (a_clone, b_clone, elsewhere) = (
        clone("root-a/proj"),
        clone("root-b/code/site"),
        clone("elsewhere"),
    );
    let host = |name: &str| {
        let home = env.home(name);
        use_sshd(&home, &sshd);
        env.config(
            &home,
            &format!(
                "hostname: host-{name}\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
                env.path(&format!("root-{name}")).display(),
                hub.display()
            ),
        );
        home
    };
    let (home_a, home_b) = (host("a"), host("b"));
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    let push = |file: &str| {
        let sha = env.commit(&elsewhere, file, &format!("{file}\n"), "pushed elsewhere");
        let out = env.git_try(&elsewhere, &["push", "origin", "main"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("gitsync"),
            "the hook said something to the pusher: {stderr}"
        );
        sha
    };

    // 1. A push over ssh: both hosts fast-forward; the server's own hook got the same lines.
    let first = push("b.txt");
    common::wait_for_logged("A and B at the pushed commit", WAIT, &[&a, &b], || {
        (env.head(&a_clone) == first && env.head(&b_clone) == first).then_some(())
    });
    let own_seen = std::fs::read_to_string(&own_log).expect("the chained hook ran");
    assert!(
        own_seen.contains(&format!(" {first} refs/heads/main")),
        "{own_seen}"
    );

    // 2. The hub's share is gone: the push succeeds all the same, and waits in the spool.
    std::fs::remove_file(&share).expect("unmount the share");
    let second = push("c.txt");
    let spool = server_home.join(".gitsync/spool/post-receive");
    common::wait_for("the event in the spool", WAIT, || {
        (spooled(&spool) == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.head(&a_clone),
        first,
        "nothing was published, nothing moved"
    );

    // 3. The share is back: the next push delivers both, in order, each exactly once.
    std::os::unix::fs::symlink(&hub, &share).expect("share");
    let third = push("d.txt");
    common::wait_for_logged("A and B at the third push", WAIT, &[&a, &b], || {
        (env.head(&a_clone) == third && env.head(&b_clone) == third).then_some(())
    });
    common::wait_for("the spool emptied", WAIT, || {
        (spooled(&spool) == 0).then_some(())
    });
    let main = |sha: &str| ("refs/heads/main".to_string(), sha.to_string());
    assert_eq!(published(&hub), [main(&first), main(&second), main(&third)]);

    // 4. status says pushes reach both hosts through the server hook.
    for (home, repo) in [(&home_a, "proj"), (&home_b, "code/site")] {
        common::wait_for("the server hook in status", WAIT, || {
            let out = env.gitsync(home, &["status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .any(|l| l.contains(repo) && l.contains("server hook (last"))
                .then_some(())
        });
    }

    // 5. Uninstall puts the server's own hook back exactly.
    let out = env.gitsync(
        &server_home,
        &["hooks", "uninstall", "--server", bare_arg, "--url", &url],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("removed; your hook is back"), "{said}");
    assert_eq!(std::fs::read_to_string(&own_hook).expect("hook"), own);
    let mode = std::fs::metadata(&own_hook)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);
    assert!(!bare.join("hooks/post-receive.gitsync-chained").exists());
}
