//! Issue 24, item 1: forge push webhooks for the core (`webhooks.sync`). A bare repository
//! served by `git http-backend` on loopback gets a push made with plain git (no gitsync on
//! that machine); a signed GitHub (then GitLab) webhook to host A's intake brings hosts A
//! and B to the pushed commit, over the local hub and over moto's SNS/SQS. A forged
//! webhook, a replayed one and one for a repository nobody keeps move nothing.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::webhooks::post;
use common::moto::Moto;
use common::{Env, servers};

const SECRET: &str = "sync-s3cret";
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// A forge's push webhook for `url`'s `refs/heads/main` moving to `after`: its headers
/// (signed with `secret`) and body.
fn forge_push(
    provider: &str,
    url: &str,
    before: &str,
    after: &str,
    delivery: &str,
    secret: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    match provider {
        "github" => {
            let body = serde_json::to_vec(&serde_json::json!({
                "ref": "refs/heads/main", "before": before, "after": after,
                "repository": {"full_name": "me/proj", "clone_url": url, "html_url": "https://example.invalid/me/proj"}
            }))
            .expect("json");
            let sig = gitsync::webhook::verify::sign_hex(secret.as_bytes(), &body);
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-github-event", "push".into()),
                    ("x-github-delivery", delivery.into()),
                    ("x-hub-signature-256", format!("sha256={sig}")),
                ],
                body,
            )
        }
        _ => {
            let body = serde_json::to_vec(&serde_json::json!({
                "object_kind": "push", "ref": "refs/heads/main", "before": before, "after": after,
                "project": {"git_http_url": url}
            }))
            .expect("json");
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-gitlab-event", "Push Hook".into()),
                    ("x-gitlab-event-uuid", delivery.into()),
                    ("x-gitlab-token", secret.into()),
                ],
                body,
            )
        }
    }
}

fn pushes_reach_both_hosts(aws: Option<&Moto>) {
    let env = Env::new();
    // The forge: a bare repository over smart HTTP, no credentials.
    let served = env.path("served");
    let seed = env.path("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    env.git(&seed, &["init", "-q", "-b", "main"]);
    env.commit(&seed, "a.txt", "one\n", "first");
    std::fs::create_dir_all(&served).expect("mkdir");
    let bare = served.join("proj.git");
    env.git(
        &seed,
        &["clone", "-q", "--bare", ".", bare.to_str().expect("utf8")],
    );
    let server = servers::git_http(&served, None, None, &env.path("http.log"));
    let url = format!("{}/proj.git", server.url());
    // Hosts A and B each keep a clean clone; someone else pushes with plain git.
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
        clone("root-b/proj"),
        clone("elsewhere"),
    );
    let port = free_port();
    let hooks = format!(
        "webhooks:\n  listen: 127.0.0.1:{port}\n  sync:\n    - provider: github\n      secret_env: SYNC_SECRET\n    - provider: gitlab\n      secret_env: SYNC_SECRET\n"
    );
    let base = |host: &str| match aws {
        Some(moto) => moto.host_config(host, &env.path(&format!("root-{host}"))),
        None => format!(
            "hostname: host-{host}\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
            env.path(&format!("root-{host}")).display(),
            env.path("hub").display()
        ),
    };
    let home_a = env.home("a");
    let home_b = env.home("b");
    env.config(&home_a, &format!("{}{hooks}", base("a")));
    env.config(&home_b, &base("b"));
    if aws.is_some() {
        for home in [&home_a, &home_b] {
            let out = env.gitsync(home, &["aws", "setup"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let a = env.spawn_env(&home_a, &[], &[("SYNC_SECRET", SECRET)]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    let hook_url = |provider: &str| format!("http://127.0.0.1:{port}/hooks/sync/{provider}");
    let head = |dir: &Path| env.head(dir);

    for (round, provider) in ["github", "gitlab"].iter().enumerate() {
        let before = head(&elsewhere);
        let sha = env.commit(
            &elsewhere,
            &format!("f{round}.txt"),
            "x\n",
            "pushed elsewhere",
        );
        env.git(&elsewhere, &["push", "-q", "origin", "main"]);

        // A forged webhook (wrong secret): 401, and nobody moves.
        let (headers, body) = forge_push(
            provider,
            &url,
            &before,
            &sha,
            &format!("forged-{round}"),
            "not-the-secret",
        );
        let (code, said) = post(&hook_url(provider), &headers, body);
        assert_eq!(code, 401, "{said}");
        // A webhook for a repository nobody keeps: 200 with a word, nothing moves.
        let (headers, body) = forge_push(
            provider,
            "https://example.invalid/other/repo.git",
            &before,
            &sha,
            &format!("other-{round}"),
            SECRET,
        );
        let (code, said) = post(&hook_url(provider), &headers, body);
        assert_eq!(code, 200, "{said}");
        assert!(said.contains("not a repository this host keeps"), "{said}");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            head(&a_clone),
            before,
            "a forged or foreign webhook moved A"
        );
        assert_eq!(
            head(&b_clone),
            before,
            "a forged or foreign webhook moved B"
        );

        // The real one: 202, and both hosts fast-forward.
        let delivery = format!("real-{round}");
        let (headers, body) = forge_push(provider, &url, &before, &sha, &delivery, SECRET);
        let (code, said) = post(&hook_url(provider), &headers, body.clone());
        assert_eq!(code, 202, "{said}");
        assert!(said.contains("proj"), "{said}");
        common::wait_for_logged("A and B at the pushed commit", WAIT, &[&a, &b], || {
            (head(&a_clone) == sha && head(&b_clone) == sha).then_some(())
        });
        // Its replay is answered as a duplicate.
        let (code, said) = post(&hook_url(provider), &headers, body);
        assert_eq!(code, 200, "{said}");
        assert!(said.contains("duplicate"), "{said}");
    }
    // Issue 24, item 4: status says how pushes reach each repository of its host.
    for (home, host) in [(&home_a, "host-a"), (&home_b, "host-b")] {
        common::wait_for("the webhook in status", WAIT, || {
            let rows = env.status(home, &[]);
            let row = common::find(&rows, Some(host), "proj")?;
            let ways = row["reach"].as_array()?;
            (ways[0].as_str()?.starts_with("webhook gitlab (last ")
                && ways.last()?.as_str()? == "every 1h")
                .then_some(())
        });
        let out = env.gitsync(home, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains(&format!("pushes made elsewhere reach {host}:"))
                && text.contains("at once (pre-push hook)")
                && text.contains("webhook gitlab (last "),
            "{text}"
        );
    }
    // A provider that is not configured: 404.
    let (headers, body) = forge_push("github", &url, "0", "0", "x", SECRET);
    assert_eq!(post(&hook_url("gitea"), &headers, body).0, 404);
    assert!(!a.log_text().contains("ERROR"), "{}", a.log_text());
    assert!(!b.log_text().contains("ERROR"), "{}", b.log_text());
}

#[test]
fn a_forge_webhook_brings_every_host_to_a_push_made_without_gitsync() {
    pushes_reach_both_hosts(None);
}

#[test]
fn a_forge_webhook_brings_every_host_to_a_push_over_aws() {
    let moto = Moto::start();
    pushes_reach_both_hosts(Some(&moto));
}
