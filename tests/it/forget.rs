//! `gitsync forget` removes rows from the shared store, on the local backend and on moto's
//! DynamoDB.

use crate::common;

use std::path::{Path, PathBuf};

use common::Env;
use common::moto::Moto;

fn rows(env: &Env, home: &Path) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = env
        .status(home, &[])
        .iter()
        .map(|s| {
            (
                s["host"].as_str().unwrap_or_default().to_string(),
                s["repo"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two hosts: `a` with r1 and r2, `b` with r3; each has synced once. `config` writes a
/// host's config file for its root.
fn scenario(env: &Env, config: &dyn Fn(&str, &Path) -> PathBuf) -> (PathBuf, PathBuf) {
    let mut homes = Vec::new();
    for (host, repos) in [("a", &["r1", "r2"][..]), ("b", &["r3"][..])] {
        let root = env.path(&format!("root-{host}"));
        for r in repos {
            env.remote_and_clone(r, &format!("root-{host}/{r}"));
        }
        let home = config(host, &root);
        let o = env.gitsync(&home, &["sync", "--root", root.to_str().expect("utf8")]);
        assert!(o.status.success(), "{}", out(&o));
        homes.push(home);
    }
    (homes[0].clone(), homes[1].clone())
}

fn check(env: &Env, a: &Path) {
    let all = rows(env, a);
    assert_eq!(all.len(), 3, "{all:?}");
    let o = env.gitsync(a, &["forget", "r1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("r1 (host-a): forgotten"), "{}", out(&o));
    let left = rows(env, a);
    assert!(!left.iter().any(|(_, r)| r == "r1"), "{left:?}");
    assert_eq!(left.len(), 2);
    let o = env.gitsync(a, &["forget", "r1"]);
    assert!(
        o.status.success() && out(&o).contains("not in the store"),
        "{}",
        out(&o)
    );
    let o = env.gitsync(a, &["forget", "--host", "host-b"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("host-b: 1 row forgotten"), "{}", out(&o));
    assert_eq!(rows(env, a), vec![("host-a".to_string(), "r2".to_string())]);
    assert_eq!(env.gitsync(a, &["forget"]).status.code(), Some(2));
}

#[test]
fn forget_removes_rows_on_the_local_backend() {
    let env = Env::new();
    let hub = env.path("hub");
    let (a, _) = scenario(&env, &|host, root| {
        common::host_config(&env, host, root, &hub);
        env.home(host)
    });
    check(&env, &a);
}

#[test]
fn forget_removes_rows_on_dynamodb() {
    let env = Env::new();
    let moto = Moto::start();
    let (a, _) = scenario(&env, &|host, root| {
        let home = env.home(host);
        env.config(&home, &moto.host_config(host, root));
        let o = env.gitsync(&home, &["aws", "setup"]);
        assert!(o.status.success(), "{}", out(&o));
        home
    });
    check(&env, &a);
}

/// `forget --host` of a host whose daemon runs is refused (its rows would come back at
/// once, and it had said nothing); with `--force` the rows go, and the running daemon
/// publishes them all again at its next heartbeat instead of leaving them missing.
#[test]
fn a_live_host_is_forgotten_only_with_force_and_publishes_its_rows_again() {
    let env = Env::new();
    let hub = env.path("hub");
    let root = env.path("root-a");
    for r in ["r1", "r2"] {
        env.remote_and_clone(r, &format!("root-a/{r}"));
    }
    let a = env.home("a");
    env.config(
        &a,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n  heartbeat: 1s\n",
            root.display(),
            hub.display()
        ),
    );
    let mut daemon = env.spawn(&a, &[]);
    daemon.wait_log("ready", std::time::Duration::from_secs(30));
    let b = env.home("b");
    common::host_config(&env, "b", &env.path("root-b"), &hub);
    std::fs::create_dir_all(env.path("root-b")).expect("root-b");
    let both = vec![
        ("host-a".to_string(), "r1".to_string()),
        ("host-a".to_string(), "r2".to_string()),
    ];
    assert_eq!(rows(&env, &b), both);

    let o = env.gitsync(&b, &["forget", "--host", "host-a"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("host host-a is online"), "{}", out(&o));
    assert!(
        out(&o).contains("hint: stop gitsync on host-a first"),
        "{}",
        out(&o)
    );
    assert_eq!(rows(&env, &b), both, "nothing forgotten");

    let o = env.gitsync(&b, &["forget", "--host", "host-a", "--force"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("host-a: 2 rows forgotten"), "{}", out(&o));
    common::wait_for_logged(
        "host-a's rows to come back",
        std::time::Duration::from_secs(20),
        &[&daemon],
        || (rows(&env, &b) == both).then_some(()),
    );
    assert_eq!(daemon.stop(), Some(0));
}
