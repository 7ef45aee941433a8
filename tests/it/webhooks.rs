//! Webhook-triggered mirrors, end to end: a real `gitsync run` with its intake on loopback,
//! a `file://` source, and targets served over smart HTTP with basic auth (`git
//! http-backend` behind tests/support/git_http_server.py). Every forge's payload shape and
//! signature, duplicates and bursts, refs the payload leaves out, diverged targets, a
//! daemon killed after its 202, wrong credentials, and an attack of mutated requests.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::servers::{self, Server};
use common::{Daemon, Env};

const SECRET: &str = "hook-s3cret";
const TARGET_AUTH: &str = "mirror:t4rget-pw";

fn sign(body: &[u8]) -> String {
    gitsync::webhook::verify::sign_hex(SECRET.as_bytes(), body)
}

struct Scene {
    env: Env,
    home: PathBuf,
    bare: PathBuf,
    work: PathBuf,
    served: PathBuf,
    server: Server,
    port: u16,
    daemon: Option<Daemon>,
    vars: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

impl Scene {
    /// A source with one commit, `targets` bare repositories served with basic auth.
    fn new(targets: &[&str]) -> Scene {
        let env = Env::new();
        let home = env.home("hooks");
        let (bare, work) = env.empty_source();
        env.commit(&work, "a.txt", "one\n", "first");
        env.git(&work, &["push", "-q", "origin", "main"]);
        let served = env.path("served");
        std::fs::create_dir_all(&served).expect("mkdir");
        for t in targets {
            let repo = served.join(format!("{t}.git"));
            std::fs::create_dir_all(&repo).expect("mkdir");
            env.git(&repo, &["init", "--bare", "-q", "-b", "main"]);
        }
        let server = servers::git_http(&served, None, Some(TARGET_AUTH), &env.path("http.log"));
        Scene {
            env,
            home,
            bare,
            work,
            served,
            server,
            port: free_port(),
            daemon: None,
            vars: vec![
                ("HOOK_SECRET".to_string(), SECRET.to_string()),
                ("TARGET_TOKEN".to_string(), TARGET_AUTH.to_string()),
                ("PATH_TOKEN".to_string(), "p4th-t0ken".to_string()),
            ],
        }
    }

    fn target_url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.server.url())
    }

    /// Writes the config: `mirrors` is YAML for the entries of `webhooks.mirrors` (each
    /// line indented by 4), `extra` more keys of `webhooks`.
    fn configure(&self, mirrors: &str, extra: &str) {
        let yaml = format!(
            "hostname: hooks\nroot: {root}\nrepositories: []\nlocal:\n  path: {hub}\nwebhooks:\n  listen: 127.0.0.1:{port}\n{extra}  mirrors:\n{mirrors}",
            root = self.env.dir.path().display(),
            hub = self.env.path("hub").display(),
            port = self.port,
        );
        self.env.config(&self.home, &yaml);
    }

    /// A mirror entry of `provider` named `name` to the target of the same name.
    fn mirror(&self, name: &str, provider: &str, more: &str) -> String {
        let secret = if provider == "backlog" {
            "      path_token_env: PATH_TOKEN\n      allow_from: [127.0.0.1/32]\n".to_string()
        } else {
            "      secret_env: HOOK_SECRET\n".to_string()
        };
        format!(
            "    - name: {name}\n      provider: {provider}\n{secret}      source: file://{}\n      target: {}\n      target_token_env: TARGET_TOKEN\n{more}",
            self.bare.display(),
            self.target_url(name)
        )
    }

    fn start(&mut self) {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let daemon = self.env.spawn_env(&self.home, &[], &vars);
        let port = self.port;
        common::wait_for_logged("the intake", Duration::from_secs(30), &[&daemon], || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        self.daemon = Some(daemon);
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("daemon.log")).unwrap_or_default()
    }

    /// The heads and tags of target `name`, read on disk.
    fn target_refs(&self, name: &str) -> BTreeMap<String, String> {
        refs_of(&self.env, &self.served.join(format!("{name}.git")))
    }

    fn source_refs(&self) -> BTreeMap<String, String> {
        refs_of(&self.env, &self.bare)
    }

    /// A clone of target `name` (as someone pushing to the target directly has).
    fn clone_target(&self, name: &str) -> PathBuf {
        let work = self.env.path(&format!("{name}-target-work"));
        self.env.git(
            self.env.dir.path(),
            &[
                "clone",
                "-q",
                self.served
                    .join(format!("{name}.git"))
                    .to_str()
                    .expect("utf8"),
                work.to_str().expect("utf8"),
            ],
        );
        work
    }

    fn wait_in_sync(&self, name: &str, what: &str) {
        let daemons: Vec<&Daemon> = self.daemon.iter().collect();
        common::wait_for_logged(what, Duration::from_secs(60), &daemons, || {
            (self.target_refs(name) == self.source_refs()).then_some(())
        });
    }

    fn commit_and_push(&self, file: &str) -> String {
        let sha = self.env.commit(
            &self.work,
            file,
            &format!("{file} {:?}\n", Instant::now()),
            "change",
        );
        self.env.git(&self.work, &["push", "-q", "origin", "main"]);
        sha
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `gitsync webhooks status --json`.
    fn status(&self) -> Vec<serde_json::Value> {
        let out = self
            .env
            .gitsync(&self.home, &["webhooks", "status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn runs(&self, name: &str) -> u64 {
        self.status()
            .iter()
            .find(|r| r["mirror"] == name)
            .and_then(|r| r["runs"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.kill();
    }
}

fn refs_of(env: &Env, repo: &std::path::Path) -> BTreeMap<String, String> {
    let out = env.git_try(
        repo,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect()
}

/// POSTs `body` with `headers`; returns the status and the answer's text (status 0 and
/// the error when no answer came within 30 s).
/// POSTs `body` with `headers` to `url`: the status (0 when no answer came within 30 s)
/// and the answer's text.
pub(crate) fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
    let url = url.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let mut req = client.post(&url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            // No answer within 30 s is status 0, with the error as the text.
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    (status, resp.text().await.unwrap_or_default())
                }
                Err(err) => (0, format!("no answer: {err}")),
            }
        })
}

/// A push webhook as `provider` sends it (its documented payload shape and headers), for
/// `after` on main. The payload's repository URL points elsewhere on purpose: it must be
/// ignored.
fn push_hook(
    provider: &str,
    after: &str,
    delivery: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let zero = "0".repeat(40);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let elsewhere = "https://attacker.invalid/evil.git";
    match provider {
        "github" => {
            let body = json(serde_json::json!({
                "ref": "refs/heads/main", "before": zero, "after": after, "created": false,
                "deleted": false, "forced": false,
                "repository": {"full_name": "acme/api", "clone_url": elsewhere}
            }));
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-github-event", "push".into()),
                    ("x-github-delivery", delivery.into()),
                    ("x-hub-signature-256", format!("sha256={}", sign(&body))),
                ],
                body,
            )
        }
        "gitlab" => {
            let body = json(serde_json::json!({
                "object_kind": "push", "ref": "refs/heads/main", "before": zero, "after": after,
                "checkout_sha": after, "project": {"git_http_url": elsewhere}
            }));
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-gitlab-event", "Push Hook".into()),
                    ("x-gitlab-event-uuid", delivery.into()),
                    ("x-gitlab-token", SECRET.into()),
                ],
                body,
            )
        }
        "gitea" | "forgejo" => {
            let payload = json(serde_json::json!({
                "ref": "refs/heads/main", "before": zero, "after": after,
                "repository": {"clone_url": elsewhere}
            }));
            // Gitea's form-encoded delivery: the HMAC covers the JSON, not the form.
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", std::str::from_utf8(&payload).expect("utf8"))
                .finish();
            let (event, sig, id) = if provider == "gitea" {
                ("x-gitea-event", "x-gitea-signature", "x-gitea-delivery")
            } else {
                (
                    "x-forgejo-event",
                    "x-forgejo-signature",
                    "x-forgejo-delivery",
                )
            };
            (
                vec![
                    ("content-type", "application/x-www-form-urlencoded".into()),
                    (event, "push".into()),
                    (id, delivery.into()),
                    (sig, sign(&payload)),
                ],
                form.into_bytes(),
            )
        }
        "bitbucket" => {
            let body = json(serde_json::json!({
                "push": {"changes": [{"old": null, "new": {"type": "branch", "name": "main",
                    "target": {"hash": after}}, "created": true, "closed": false, "forced": false,
                    "truncated": false}]},
                "repository": {"full_name": "acme/api", "links": {"html": {"href": elsewhere}}}
            }));
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-event-key", "repo:push".into()),
                    ("x-request-uuid", delivery.into()),
                    ("x-hub-signature", format!("sha256={}", sign(&body))),
                ],
                body,
            )
        }
        "bitbucket-server" => {
            let body = json(serde_json::json!({
                "eventKey": "repo:refs_changed",
                "changes": [{"refId": "refs/heads/main", "fromHash": zero, "toHash": after, "type": "UPDATE"}],
                "repository": {"slug": "api", "project": {"key": "ACME"}}
            }));
            (
                vec![
                    ("content-type", "application/json; charset=utf-8".into()),
                    ("x-event-key", "repo:refs_changed".into()),
                    ("x-request-id", delivery.into()),
                    ("x-hub-signature", format!("sha256={}", sign(&body))),
                ],
                body,
            )
        }
        "backlog" => {
            let payload = json(serde_json::json!({
                "before": zero, "after": after, "ref": "refs/heads/main",
                "repository": {"url": elsewhere, "name": "api", "description": ""},
                "revisions": []
            }));
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", std::str::from_utf8(&payload).expect("utf8"))
                .finish();
            (
                vec![("content-type", "application/x-www-form-urlencoded".into())],
                form.into_bytes(),
            )
        }
        "generic" => {
            let body = json(serde_json::json!({"after": after}));
            (
                vec![
                    ("content-type", "application/json".into()),
                    ("x-delivery-id", delivery.into()),
                    ("x-signature-256", format!("sha256={}", sign(&body))),
                ],
                body,
            )
        }
        other => panic!("no payload for {other}"),
    }
}

fn hook_path(provider: &str) -> String {
    if provider == "backlog" {
        format!("/hooks/{provider}/p4th-t0ken")
    } else {
        format!("/hooks/{provider}")
    }
}

/// The header that authenticates a provider's request (`None`: the path token does).
fn auth_header(provider: &str) -> Option<&'static str> {
    match provider {
        "github" => Some("x-hub-signature-256"),
        "gitlab" => Some("x-gitlab-token"),
        "gitea" => Some("x-gitea-signature"),
        "forgejo" => Some("x-forgejo-signature"),
        "bitbucket" | "bitbucket-server" => Some("x-hub-signature"),
        "generic" => Some("x-signature-256"),
        _ => None,
    }
}

const PROVIDERS: [&str; 8] = [
    "github",
    "gitlab",
    "gitea",
    "forgejo",
    "bitbucket",
    "bitbucket-server",
    "backlog",
    "generic",
];

#[test]
fn every_provider_mirrors_a_signed_push_and_refuses_a_tampered_one() {
    let mut scene = Scene::new(&PROVIDERS);
    let mirrors: String = PROVIDERS.iter().map(|p| scene.mirror(p, p, "")).collect();
    scene.configure(&mirrors, "");
    scene.start();
    for p in PROVIDERS {
        scene.wait_in_sync(p, &format!("{p}: the start-up run"));
    }
    for (i, p) in PROVIDERS.iter().enumerate() {
        let sha = scene.commit_and_push(&format!("{p}.txt"));
        let before = scene.target_refs(p);
        if *p == "gitlab" {
            // GitLab's token does not cover the body: a wrong token is its refusal.
            let (mut headers, body) = push_hook(p, &sha, &format!("tampered-{i}"));
            headers.retain(|(k, _)| *k != "x-gitlab-token");
            headers.push(("x-gitlab-token", "not-the-secret".into()));
            let (status, text) = post(&scene.url(&hook_path(p)), &headers, body);
            assert_eq!(status, 401, "{p}: {text}");
        } else if *p != "backlog" {
            // Tampered: one byte of the body changed after signing.
            let (headers, mut body) = push_hook(p, &sha, &format!("tampered-{i}"));
            let last = body.len() - 2;
            body[last] ^= 0x01;
            let (status, text) = post(&scene.url(&hook_path(p)), &headers, body);
            assert_eq!(status, 401, "{p}: {text}");
            std::thread::sleep(Duration::from_millis(700));
            assert_eq!(
                scene.target_refs(p),
                before,
                "{p}: a tampered webhook pushed"
            );
        } else {
            // Backlog signs nothing: a wrong path token is its refusal.
            let (headers, body) = push_hook(p, &sha, "");
            let (status, _) = post(&scene.url("/hooks/backlog/wrong"), &headers, body);
            assert_eq!(status, 401);
        }
        let (headers, body) = push_hook(p, &sha, &format!("good-{i}"));
        let (status, text) = post(&scene.url(&hook_path(p)), &headers, body);
        assert_eq!(status, 202, "{p}: {text}");
        scene.wait_in_sync(p, &format!("{p}: the push in the target"));
    }
    let log = scene.log();
    assert!(
        !log.contains(SECRET) && !log.contains("t4rget-pw"),
        "a secret is in the log"
    );
    assert!(
        !log.contains("attacker.invalid"),
        "the payload's URL was used"
    );
}

/// Starts the daemon of `scene` under `prlimit --nofile=N:N` (the shipped units' limit
/// before they set `LimitNOFILE`), with the scene's variables.
fn start_limited(scene: &mut Scene, nofile: u64) {
    let base = scene.env.gitsync_command(&scene.home, &["run"]);
    let mut command = std::process::Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(base.get_program())
        .args(base.get_args());
    for (key, value) in base.get_envs() {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    command.envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let log = std::fs::File::create(scene.home.join("daemon.log")).expect("log");
    let child = command
        .env("GITSYNC_LOG", "gitsync=debug,info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) runs gitsync");
    let daemon = Daemon {
        child,
        log: scene.home.join("daemon.log"),
    };
    let port = scene.port;
    common::wait_for_logged("the intake", Duration::from_secs(30), &[&daemon], || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    scene.daemon = Some(daemon);
}

/// Issue 21, item 10: 1,100 connections that never finish their headers, held open against
/// a daemon limited to 1,024 file descriptors, made every valid delivery time out. Now the
/// intake keeps at most half its descriptors in connections and closes the oldest past
/// that: every delivery sent during the flood gets its 202 and is mirrored.
#[test]
fn a_flood_of_slow_connections_does_not_keep_deliveries_out() {
    use std::io::Write;
    // This test process holds the flood's 1,100 sockets itself.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise this test's descriptor limit");
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    start_limited(&mut scene, 1024);
    scene.wait_in_sync("api", "the start-up run");
    let mut flood = Vec::new();
    for _ in 0..1100 {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", scene.port)).expect("connect");
        // Headers begun, never finished.
        let _ = conn.write_all(b"POST /hooks/api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        flood.push(conn);
    }
    for i in 0..5 {
        let sha = scene.commit_and_push(&format!("flood-{i}.txt"));
        let (headers, body) = push_hook("github", &sha, &format!("during-flood-{i}"));
        let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
        assert_eq!(
            status,
            202,
            "delivery {i} during the flood: {text}\n{}",
            scene.log()
        );
        // More slow clients keep coming.
        for _ in 0..100 {
            if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", scene.port)) {
                let _ = conn.write_all(b"POST /hooks/api HTTP/1.1\r\n");
                flood.push(conn);
            }
        }
    }
    scene.wait_in_sync("api", "the deliveries sent during the flood");
    drop(flood);
}

/// Issue 21, item 9: a delivery answered 503 (its job could not be stored: a full disk, a
/// read-only queue) was recorded all the same, so the forge's retry got "200 duplicate
/// delivery; already queued" and the push waited for the hourly reconciliation. Now the
/// retry is queued and mirrored.
#[test]
fn a_delivery_answered_503_is_queued_when_the_forge_retries_it() {
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    let queue = scene.home.join(".gitsync/webhooks/queue");
    std::fs::create_dir_all(&queue).expect("mkdir");
    common::wait_for(
        "the start-up job to leave the queue",
        Duration::from_secs(10),
        || (std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0) == 0).then_some(()),
    );
    let sha = scene.commit_and_push("b.txt");
    let (headers, body) = push_hook("github", &sha, "retry-me");
    let frozen = common::disk::Immutable::set(&queue);
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body.clone());
    assert_eq!(status, 503, "{text}");
    drop(frozen);
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
    assert_eq!(status, 202, "the forge's retry was dropped: {text}");
    scene.wait_in_sync("api", "the retried delivery");
}

#[test]
fn duplicates_are_dropped_and_a_burst_is_at_most_two_runs() {
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    common::wait_for("the start-up run recorded", Duration::from_secs(10), || {
        (scene.runs("api") >= 1).then_some(())
    });
    let runs = scene.runs("api");
    let sha = scene.commit_and_push("b.txt");
    let (headers, body) = push_hook("github", &sha, "same-id");
    assert_eq!(
        post(&scene.url("/hooks/api"), &headers, body.clone()).0,
        202
    );
    scene.wait_in_sync("api", "the first delivery");
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("duplicate"), "{text}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(scene.runs("api"), runs + 1, "the same delivery ran twice");

    // 20 webhooks at once: at most one run in flight plus one queued.
    let runs = scene.runs("api");
    let sha = scene.commit_and_push("c.txt");
    let url = scene.url("/hooks/api");
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            let sha = sha.clone();
            std::thread::spawn(move || {
                let (headers, body) = push_hook("github", &sha, &format!("burst-{i}"));
                post(&url, &headers, body).0
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), 202);
    }
    scene.wait_in_sync("api", "the burst");
    std::thread::sleep(Duration::from_secs(2));
    let made = scene.runs("api") - runs;
    assert!((1..=2).contains(&made), "20 webhooks made {made} runs");
}

#[test]
fn refs_the_payload_leaves_out_arrive_and_deletions_are_only_our_own() {
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "gitlab", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    // A branch that exists only at the target.
    let target_work = scene.clone_target("api");
    scene
        .env
        .git(&target_work, &["checkout", "-q", "-b", "theirs"]);
    scene
        .env
        .commit(&target_work, "t.txt", "theirs\n", "target only");
    scene
        .env
        .git(&target_work, &["push", "-q", "origin", "theirs"]);

    // 5 branches and 5 tags in one push; the payload names one of them.
    for i in 0..5 {
        scene.env.git(&scene.work, &["branch", &format!("b{i}")]);
        scene
            .env
            .git(&scene.work, &["tag", "-a", &format!("v{i}"), "-m", "tag"]);
    }
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "--all"]);
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "--tags"]);
    let sha = scene.env.head(&scene.work);
    let (headers, body) = push_hook("gitlab", &sha, "ten-refs");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    let daemons: Vec<&Daemon> = scene.daemon.iter().collect();
    common::wait_for_logged("10 refs", Duration::from_secs(30), &daemons, || {
        let t = scene.target_refs("api");
        let s = scene.source_refs();
        s.iter().all(|(k, v)| t.get(k) == Some(v)).then_some(())
    });
    assert!(
        scene.target_refs("api").contains_key("refs/heads/theirs"),
        "the target-only branch survives"
    );

    // A branch the mirror created, deleted at the source: deleted at the target.
    scene.env.git(&scene.work, &["push", "-q", "origin", ":b3"]);
    let (headers, body) = push_hook("gitlab", &sha, "delete-b3");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    common::wait_for_logged("b3 deleted", Duration::from_secs(30), &daemons, || {
        (!scene.target_refs("api").contains_key("refs/heads/b3")).then_some(())
    });
    assert!(scene.target_refs("api").contains_key("refs/heads/theirs"));
}

#[test]
fn a_ref_moved_at_the_target_is_refused_as_diverged_unless_force() {
    let mut scene = Scene::new(&["api"]);
    scene.env.git(&scene.work, &["branch", "other"]);
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "other"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    // Someone pushes to the target's main directly.
    let target_work = scene.clone_target("api");
    scene.env.commit(
        &target_work,
        "direct.txt",
        "pushed to the target\n",
        "direct",
    );
    scene
        .env
        .git(&target_work, &["push", "-q", "origin", "main"]);
    let direct = scene.env.head(&target_work);
    // The source moves main and other.
    let sha = scene.commit_and_push("s.txt");
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "main:other"]);
    let (headers, body) = push_hook("github", &sha, "diverge");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    let daemons: Vec<&Daemon> = scene.daemon.iter().collect();
    common::wait_for_logged("other mirrored", Duration::from_secs(30), &daemons, || {
        (scene.target_refs("api").get("refs/heads/other") == Some(&sha)).then_some(())
    });
    assert_eq!(
        scene.target_refs("api")["refs/heads/main"],
        direct,
        "the direct commit stays"
    );
    // The state is saved once the run ends, a moment after the push landed.
    common::wait_for_logged(
        "main reported as diverged",
        Duration::from_secs(10),
        &daemons,
        || {
            scene
                .status()
                .iter()
                .find(|r| r["diverged"][0] == "refs/heads/main")
                .cloned()
        },
    );
    let table = scene.env.gitsync(&scene.home, &["webhooks", "status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("diverged: refs/heads/main"));
    let status = scene.env.gitsync(&scene.home, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("webhook mirrors:") && text.contains("diverged: refs/heads/main"),
        "{text}"
    );

    // Issue 21, item 12: `webhooks run` (from cron) exits 1 while a ref is refused as
    // diverged, and says what to do.
    scene.stop();
    let out = scene
        .env
        .gitsync_command(&scene.home, &["webhooks", "run", "api"])
        .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("webhooks run");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("diverged") && said.contains("force: true"),
        "{said}"
    );

    // With force: overwritten through the lease.
    let m = scene.mirror("api", "github", "      force: true\n");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "main overwritten with force");
}

#[test]
fn a_job_accepted_before_a_kill_runs_after_the_restart() {
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    // The target goes away (its server answers 404): the run fails and the job stays
    // queued.
    let target = scene.served.join("api.git");
    let away = scene.served.join("api.git.away");
    std::fs::rename(&target, &away).expect("rename");
    let sha = scene.commit_and_push("k.txt");
    let (headers, body) = push_hook("github", &sha, "before-kill");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    let queue = scene.home.join(".gitsync/webhooks/queue");
    std::thread::sleep(Duration::from_millis(500));
    scene.kill();
    let queued = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
    assert!(queued >= 1, "the job is on disk after the kill");
    std::fs::rename(&away, &target).expect("rename back");
    scene.start();
    scene.wait_in_sync("api", "the job after the restart");
    common::wait_for("the queue to empty", Duration::from_secs(10), || {
        (std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0) == 0).then_some(())
    });

    // Killed right after the 202, whatever the worker had done by then.
    let sha = scene.commit_and_push("k2.txt");
    let (headers, body) = push_hook("github", &sha, "right-after");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    scene.kill();
    scene.start();
    scene.wait_in_sync("api", "after the second kill");
}

/// Credentials from files, as systemd's `LoadCredential=` hands them over: the webhook
/// secret and the target's password are read from files, not the environment.
#[test]
fn secrets_and_tokens_can_come_from_files() {
    let mut scene = Scene::new(&["api"]);
    let secret = scene.env.path("secret");
    let token = scene.env.path("target-token");
    let value = |k: &str| {
        scene
            .vars
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .expect("a test variable")
    };
    std::fs::write(&secret, format!("{}\n", value("HOOK_SECRET"))).expect("secret");
    std::fs::write(&token, value("TARGET_TOKEN")).expect("token");
    scene
        .vars
        .retain(|(k, _)| k != "TARGET_TOKEN" && k != "HOOK_SECRET");
    let m = scene
        .mirror("api", "github", "")
        .replace(
            "target_token_env: TARGET_TOKEN",
            &format!("target_token_file: {}", token.display()),
        )
        .replace(
            "secret_env: HOOK_SECRET",
            &format!("secret_file: {}", secret.display()),
        );
    assert!(
        m.contains("target_token_file") && m.contains("secret_file"),
        "{m}"
    );
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    let sha = scene.commit_and_push("f.txt");
    let (headers, body) = push_hook("github", &sha, "from-files");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    scene.wait_in_sync("api", "the webhook's run");
}

#[test]
fn a_wrong_target_password_is_a_clear_error_and_never_shown() {
    let mut scene = Scene::new(&["api"]);
    scene.vars.retain(|(k, _)| k != "TARGET_TOKEN");
    scene
        .vars
        .push(("TARGET_TOKEN".into(), "mirror:WR0NG-pw".into()));
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    let daemons: Vec<&Daemon> = scene.daemon.iter().collect();
    common::wait_for_logged("the failed run", Duration::from_secs(30), &daemons, || {
        scene
            .status()
            .iter()
            .find(|r| r["result"] == "failed")
            .cloned()
    });
    let status = scene.env.gitsync(&scene.home, &["webhooks", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("failed"), "{text}");
    assert!(
        text.contains("401") || text.to_lowercase().contains("authentication"),
        "the error says what is wrong: {text}"
    );
    let json = String::from_utf8_lossy(
        &scene
            .env
            .gitsync(&scene.home, &["webhooks", "status", "--json"])
            .stdout,
    )
    .into_owned();
    for shown in [&text, &json, &scene.log()] {
        assert!(
            !shown.contains("WR0NG-pw"),
            "the password is shown: {shown}"
        );
    }
}

#[test]
fn bad_requests_get_their_answers_and_the_server_keeps_serving() {
    let mut scene = Scene::new(&["api", "backlog", "open"]);
    let mirrors = format!(
        "{}{}{}",
        scene.mirror("api", "github", ""),
        scene
            .mirror("backlog", "backlog", "")
            .replace("[127.0.0.1/32]", "[10.0.0.0/8]"),
        scene.mirror("open", "backlog", "")
    );
    scene.configure(
        &mirrors,
        "  max_body: 4096\n  trusted_proxies: [127.0.0.1/32]\n",
    );
    scene.start();
    let sha = scene.env.head(&scene.work);
    let (headers, body) = push_hook("github", &sha, "x");
    assert_eq!(
        post(&scene.url("/hooks/nosuch"), &headers, body.clone()).0,
        404
    );
    let (s, _) = post(
        &scene.url("/hooks/api"),
        &[("content-type", "text/plain".into())],
        body.clone(),
    );
    assert_eq!(s, 415);
    let mut big = headers.clone();
    big.retain(|(k, _)| *k != "x-hub-signature-256");
    let huge = vec![b'{'; 100_000];
    big.push(("x-hub-signature-256", format!("sha256={}", sign(&huge))));
    assert_eq!(post(&scene.url("/hooks/api"), &big, huge).0, 413);
    let garbage = b"\x00\xffnot json".to_vec();
    let mut g = headers.clone();
    g.retain(|(k, _)| *k != "x-hub-signature-256");
    g.push(("x-hub-signature-256", format!("sha256={}", sign(&garbage))));
    assert_eq!(post(&scene.url("/hooks/api"), &g, garbage).0, 400);
    let mut unsigned = headers.clone();
    unsigned.retain(|(k, _)| *k != "x-hub-signature-256");
    assert_eq!(
        post(&scene.url("/hooks/api"), &unsigned, body.clone()).0,
        401
    );
    let mut ping = headers.clone();
    ping.retain(|(k, _)| *k != "x-github-event");
    ping.push(("x-github-event", "ping".into()));
    assert_eq!(post(&scene.url("/hooks/api"), &ping, body.clone()).0, 200);
    // Backlog from an address outside its allow-list, then behind a trusted proxy that
    // forwards an allowed one.
    let (bh, bb) = push_hook("backlog", &sha, "");
    assert_eq!(
        post(&scene.url("/hooks/backlog/p4th-t0ken"), &bh, bb.clone()).0,
        403
    );
    let mut fwd = bh.clone();
    fwd.push(("x-forwarded-for", "10.1.2.3".into()));
    assert_eq!(
        post(&scene.url("/hooks/backlog/p4th-t0ken"), &fwd, bb.clone()).0,
        202
    );
    assert_eq!(post(&scene.url("/hooks/open/p4th-t0ken"), &bh, bb).0, 202);
    // A GET is not a webhook.
    let get = tokio::runtime::Runtime::new().expect("rt").block_on(async {
        reqwest::get(scene.url("/hooks/api"))
            .await
            .expect("get")
            .status()
            .as_u16()
    });
    assert_eq!(get, 405);
    // A slow client: headers, then a body that never comes.
    use std::io::Write;
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", scene.port)).expect("connect");
    write!(slow, "POST /hooks/api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").expect("write");
    // Meanwhile the server answers others: the 401 comes while the slow request is still
    // open and unanswered.
    assert_eq!(post(&scene.url("/hooks/api"), &unsigned, body).0, 401);
    slow.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let pending = std::io::Read::read(&mut slow, &mut byte);
    assert!(
        pending
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the slow request was answered before the other: {pending:?}"
    );
    slow.set_nonblocking(false).expect("blocking");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

/// Mutated requests (bit flips, dropped and swapped headers, other providers' headers,
/// truncation, random bodies) against the running intake: only an untouched signed push
/// may get a 202, every answer is one the intake documents, and the server keeps serving.
/// Cases: `GITSYNC_WEBHOOK_CASES` (default 150).
#[test]
fn mutated_requests_never_get_a_202_and_never_stop_the_server() {
    let cases: u64 = std::env::var("GITSYNC_WEBHOOK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut scene = Scene::new(&PROVIDERS);
    let mirrors: String = PROVIDERS
        .iter()
        .map(|p| scene.mirror(p, p, "      interval: 1h\n"))
        .collect();
    scene.configure(&mirrors, "");
    scene.start();
    let sha = scene.env.head(&scene.work);
    let mut rng = fastrand::Rng::with_seed(20261123);
    let allowed = [200u16, 202, 400, 401, 403, 404, 413, 415];
    let mut tally: BTreeMap<u16, usize> = BTreeMap::new();
    for case in 0..cases {
        let provider = PROVIDERS[rng.usize(0..PROVIDERS.len())];
        let (mut headers, mut body) = push_hook(provider, &sha, &format!("attack-{case}"));
        // What the request still proves: an unchanged body, and the provider's own
        // signature, token or path token.
        let auth = auth_header(provider);
        let mut body_changed = false;
        let mut auth_lost = false;
        match rng.u8(0..6) {
            0 if !body.is_empty() => {
                let i = rng.usize(0..body.len());
                body[i] ^= 1 << rng.u8(0..8);
                body_changed = true;
            }
            1 if !headers.is_empty() => {
                let (name, _) = headers.remove(rng.usize(0..headers.len()));
                auth_lost = Some(name) == auth;
            }
            2 => {
                let keep = rng.usize(0..body.len().max(1));
                body_changed = keep < body.len();
                body.truncate(keep);
            }
            3 => {
                body = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect();
                body_changed = true;
            }
            4 => {
                let other = PROVIDERS[rng.usize(0..PROVIDERS.len())];
                let (h, _) = push_hook(other, &sha, "x");
                let same_scheme = matches!(
                    (provider, other),
                    ("gitea" | "forgejo", "gitea" | "forgejo")
                );
                if other != provider && !same_scheme {
                    headers = h;
                    // Backlog's proof is its path token and address, which another
                    // forge's headers leave as they were.
                    auth_lost = auth.is_some();
                }
            }
            _ => {}
        }
        let (status, text) = post(&scene.url(&hook_path(provider)), &headers, body);
        *tally.entry(status).or_default() += 1;
        assert!(
            allowed.contains(&status),
            "case {case} ({provider}): {status} {text}"
        );
        if status == 202 {
            assert!(
                !auth_lost,
                "case {case} ({provider}): accepted without its signature"
            );
            // Backlog signs nothing, and GitLab's token does not cover the body (its
            // `webhook-signature` scheme does): a changed body that is still a push is
            // accepted there as it would be from the forge. Every other provider signs
            // the body, and refuses any change.
            if !matches!(provider, "backlog" | "gitlab") {
                assert!(
                    !body_changed,
                    "case {case} ({provider}): a changed body was accepted"
                );
            }
        }
    }
    println!("answers: {tally:?}");
    let (headers, body) = push_hook("github", &sha, "final");
    assert!(matches!(
        post(&scene.url("/hooks/github"), &headers, body).0,
        200 | 202
    ));
}

#[test]
fn with_an_sqs_queue_the_intake_and_the_worker_run_on_different_hosts() {
    let moto = common::moto::Moto::start();
    let mut scene = Scene::new(&["api"]);
    let mirror = scene.mirror("api", "github", "      interval: 1h\n");
    let sqs = format!(
        "  queue: sqs\n  sqs_queue: hooks.fifo\n  endpoint_url: {}\n  region: us-east-1\n",
        moto.url
    );
    // Host A: the intake only.
    scene.configure(&mirror, &format!("{sqs}  worker: false\n"));
    let out = scene.env.gitsync(&scene.home, &["aws", "setup"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("hooks.fifo") && text.contains("created"),
        "{text}"
    );
    scene.start();
    // Host B: the worker only, another HOME.
    let worker_home = scene.env.home("worker");
    std::fs::create_dir_all(scene.env.path("hub-b")).expect("hub-b");
    let yaml = format!(
        "hostname: worker\nroot: {}\nrepositories: []\nlocal:\n  path: {}\nwebhooks:\n{sqs}  intake: false\n  mirrors:\n{mirror}",
        scene.env.dir.path().display(),
        scene.env.path("hub-b").display(),
    );
    scene.env.config(&worker_home, &yaml);
    let vars: Vec<(&str, &str)> = scene
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let worker = scene.env.spawn_env(&worker_home, &[], &vars);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        scene.target_refs("api").is_empty(),
        "nothing runs before a webhook"
    );
    let sha = scene.env.head(&scene.work);
    let (headers, body) = push_hook("github", &sha, "over-sqs");
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
    assert_eq!(status, 202, "{text}");
    let daemons: Vec<&Daemon> = scene
        .daemon
        .iter()
        .chain(std::iter::once(&worker))
        .collect();
    common::wait_for_logged(
        "the worker host's run",
        Duration::from_secs(30),
        &daemons,
        || (scene.target_refs("api") == scene.source_refs()).then_some(()),
    );
    // The worker host saves its state once the run ends, a moment after the push landed;
    // the intake host ran nothing itself.
    let state = worker_home.join(".gitsync/webhooks/state/api.json");
    common::wait_for_logged(
        "the worker's state",
        Duration::from_secs(10),
        &daemons,
        || state.exists().then_some(()),
    );
    assert!(!scene.home.join(".gitsync/webhooks/state/api.json").exists());
    // The intake host's status reads the shared queue's depth from SQS.
    let status = || {
        let out = scene.env.gitsync(&scene.home, &["webhooks", "status"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    common::wait_for_logged(
        "the queue emptied in status",
        Duration::from_secs(10),
        &daemons,
        || {
            status()
                .contains("SQS queue hooks.fifo: 0 waiting, 0 in flight")
                .then_some(())
        },
    );
}

#[test]
fn the_intake_serves_https_and_webhooks_test_checks_it_end_to_end() {
    let mut scene = Scene::new(&["api"]);
    let cert = scene.env.path("cert.pem");
    let key = scene.env.path("key.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = scene.mirror("api", "github", "");
    scene.configure(
        &m,
        &format!(
            "  tls: {{cert: {}, key: {}}}\n",
            cert.display(),
            key.display()
        ),
    );
    scene.start();
    let out = scene
        .env
        .gitsync_command(&scene.home, &["webhooks", "test", "api"])
        .env("HOOK_SECRET", SECRET)
        .env("TARGET_TOKEN", TARGET_AUTH)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("https://") && text.contains("pong"), "{text}");
    // A wrong secret is refused, and said so.
    let out = scene
        .env
        .gitsync_command(&scene.home, &["webhooks", "test", "api"])
        .env("HOOK_SECRET", "not-it")
        .env("TARGET_TOKEN", TARGET_AUTH)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("401"));
}

/// Issue 21: `doctor` checked no replication job, so a webhook secret whose variable was
/// unset passed as "all well". Now it reads each mirror's secrets as the daemon does.
#[test]
fn doctor_names_a_webhook_secret_that_is_not_set() {
    let scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    let out = scene
        .env
        .gitsync_command(&scene.home, &["doctor"])
        .env_remove("HOOK_SECRET")
        .output()
        .expect("doctor");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fail webhook mirror api") && said.contains("HOOK_SECRET"),
        "{said}"
    );
    let out = scene
        .env
        .gitsync_command(&scene.home, &["doctor"])
        .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("doctor");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("ok   webhook mirror api: secrets, tokens and ssh files readable"),
        "{said}"
    );
}

/// Issue 21, item 12: a webhook mirror had no `known_hosts` setting, so an ssh target was
/// checked against whatever the user's own file held. With `known_hosts`, the target's
/// host key must be in that file: a file with another key is refused with ssh's word and
/// nothing is pushed; the right file mirrors every ref.
#[test]
fn an_ssh_target_is_checked_against_the_mirrors_known_hosts() {
    let scene = Scene::new(&[]);
    let sshd = common::sshd::Sshd::start(&scene.env.path("sshd"));
    let target = scene.env.path("ssh-target.git");
    std::fs::create_dir_all(&target).expect("mkdir");
    scene
        .env
        .git(&target, &["init", "--bare", "-q", "-b", "main"]);
    let host_key = std::fs::read_to_string(sshd.dir.join("host_key.pub")).expect("host key");
    let right = scene.env.path("known_hosts");
    std::fs::write(&right, format!("[127.0.0.1]:{} {host_key}", sshd.port)).expect("write");
    let other = scene.env.path("other_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let wrong = scene.env.path("known_hosts_wrong");
    let other_key = std::fs::read_to_string(other.with_extension("pub")).expect("key");
    std::fs::write(&wrong, format!("[127.0.0.1]:{} {other_key}", sshd.port)).expect("write");
    let run = |known_hosts: &std::path::Path| {
        let entry = format!(
            "    - name: viassh\n      provider: github\n      secret_env: HOOK_SECRET\n      source: file://{}\n      target: ssh://root@127.0.0.1:{}{}\n      target_ssh_key: {}\n      known_hosts: {}\n",
            scene.bare.display(),
            sshd.port,
            target.display(),
            sshd.key().display(),
            known_hosts.display()
        );
        scene.configure(&entry, "");
        let out = scene
            .env
            .gitsync_command(&scene.home, &["webhooks", "run", "viassh"])
            .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("webhooks run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&wrong);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        text.to_lowercase().contains("host key"),
        "the refusal does not say why: {text}"
    );
    assert!(refs_of(&scene.env, &target).is_empty(), "{text}");
    let (code, text) = run(&right);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(refs_of(&scene.env, &target), scene.source_refs(), "{text}");
}

/// Issue 21, item 12: a run killed after its push landed, before it saved what it pushed,
/// left the pushed branch unknown to the mirror, so when the source deleted it the target
/// kept it for good. The plan is saved before the push: the next run knows the branch as
/// its own and deletes it.
#[test]
fn a_branch_pushed_by_a_killed_run_is_deleted_when_the_source_deletes_it() {
    let scene = Scene::new(&[]);
    let target = scene.env.path("local-target.git");
    std::fs::create_dir_all(&target).expect("mkdir");
    scene
        .env
        .git(&target, &["init", "--bare", "-q", "-b", "main"]);
    let entry = format!(
        "    - name: local\n      provider: github\n      secret_env: HOOK_SECRET\n      source: file://{}\n      target: file://{}\n",
        scene.bare.display(),
        target.display()
    );
    scene.configure(&entry, "");
    let run = || {
        scene
            .env
            .gitsync_command(&scene.home, &["webhooks", "run", "local"])
            .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("webhooks run")
    };
    let out = run();
    assert!(out.status.success(), "{out:?}");
    // A new branch, pushed by a run that is killed while the target's post-receive hook
    // (the refs are updated by then) holds the push open.
    scene.env.git(
        &scene.work,
        &["push", "-q", "origin", "main:refs/heads/topic"],
    );
    let marker = scene.env.path("hook-pid");
    let hook = target.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho $$ > {}\nexec sleep 60\n", marker.display()),
    )
    .expect("hook");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .expect("chmod");
    let mut child = scene
        .env
        .gitsync_command(&scene.home, &["webhooks", "run", "local"])
        .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("webhooks run");
    let hook_pid = common::wait_for("the target's hook", Duration::from_secs(60), || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
    });
    child.kill().expect("kill the run");
    let _ = child.wait();
    let _ = std::process::Command::new("kill")
        .arg(hook_pid.to_string())
        .status();
    std::fs::remove_file(&hook).expect("remove the hook");
    assert!(
        refs_of(&scene.env, &target).contains_key("refs/heads/topic"),
        "the killed run's push did not land, so this test shows nothing"
    );
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", ":refs/heads/topic"]);
    let out = run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        refs_of(&scene.env, &target),
        scene.source_refs(),
        "the branch the killed run pushed was left at the target: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Issue 21, "disk-full and SQS-down retries end mirrored": with the queue in SQS and SQS
/// unreachable, a delivery is answered 503 (never a 2xx for a job not stored); once SQS is
/// back, the forge's retry of the same delivery is queued (not "duplicate") and the worker,
/// which kept polling through the outage, mirrors it.
#[test]
fn a_delivery_refused_while_sqs_is_down_is_mirrored_on_the_retry() {
    let moto = common::moto::Moto::start();
    let port: u16 = moto
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("moto's port");
    let mut scene = Scene::new(&["api"]);
    let mirror = scene.mirror("api", "github", "      interval: 1h\n");
    scene.configure(
        &mirror,
        &format!(
            "  queue: sqs\n  sqs_queue: hooks.fifo\n  endpoint_url: {}\n  region: us-east-1\n",
            moto.url
        ),
    );
    let setup = |scene: &Scene| {
        let out = scene.env.gitsync(&scene.home, &["aws", "setup"]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    setup(&scene);
    scene.start();
    let sha = scene.env.head(&scene.work);
    let (headers, body) = push_hook("github", &sha, "while-sqs-is-up");
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
    assert_eq!(status, 202, "{text}");
    scene.wait_in_sync("api", "the first delivery, through SQS");

    drop(moto);
    let sha = scene.commit_and_push("down.txt");
    let (headers, body) = push_hook("github", &sha, "while-sqs-is-down");
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body.clone());
    assert_eq!(
        status, 503,
        "a delivery SQS never got was answered {status}: {text}"
    );
    assert_ne!(scene.target_refs("api"), scene.source_refs());

    let _moto = common::moto::Moto::start_on(port);
    setup(&scene);
    let (status, text) = post(&scene.url("/hooks/api"), &headers, body);
    assert_eq!(status, 202, "the forge's retry was not queued: {text}");
    scene.wait_in_sync("api", "the retried delivery, through SQS");
}

/// Issue 22: a run lists the target's refs once (`git ls-remote`) and pushes once; what
/// landed is read from the push's own report, not from a second listing.
#[test]
fn a_run_lists_the_targets_refs_once_and_reads_what_landed_from_the_push() {
    let scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    let run = || {
        let out = scene
            .env
            .gitsync_command(&scene.home, &["webhooks", "run", "api"])
            .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("webhooks run");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    assert_eq!(scene.target_refs("api"), scene.source_refs());

    // A new commit and a new tag at the source; the log is read from here on.
    scene.env.commit(&scene.work, "b.txt", "two\n", "second");
    scene
        .env
        .git(&scene.work, &["tag", "-a", "v2", "-m", "two"]);
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "main", "v2"]);
    let log = scene.env.path("http.log");
    let before = std::fs::read_to_string(&log).expect("server log").len();
    run();
    assert_eq!(scene.target_refs("api"), scene.source_refs());
    let text = std::fs::read_to_string(&log).expect("server log");
    let listings: Vec<&str> = text[before..]
        .lines()
        .filter(|l| l.contains("\"GET /api.git/info/refs"))
        .collect();
    assert_eq!(
        listings.len(),
        2,
        "one ls-remote and one push, no listing after it: {listings:#?}"
    );
    assert_eq!(
        listings
            .iter()
            .filter(|l| l.contains("service=git-receive-pack"))
            .count(),
        1,
        "{listings:#?}"
    );
}

/// Issue 22: a run a webhook asks for, after the start-up run, lists the target once (the
/// push's own listing), not once more with `ls-remote` first.
#[test]
fn a_webhook_run_lists_the_target_once() {
    let mut scene = Scene::new(&["api"]);
    let m = scene.mirror("api", "github", "");
    scene.configure(&m, "");
    scene.start();
    scene.wait_in_sync("api", "the start-up run");
    let log = scene.env.path("http.log");
    let before = std::fs::read_to_string(&log).expect("server log").len();
    let sha = scene.commit_and_push("b.txt");
    let (headers, body) = push_hook("github", &sha, "once");
    assert_eq!(post(&scene.url("/hooks/api"), &headers, body).0, 202);
    scene.wait_in_sync("api", "the pushed commit");
    let text = std::fs::read_to_string(&log).expect("server log");
    let listings: Vec<&str> = text[before..]
        .lines()
        .filter(|l| l.contains("\"GET /api.git/info/refs"))
        .collect();
    assert_eq!(listings.len(), 1, "the push's listing only: {listings:#?}");
    assert!(
        listings[0].contains("service=git-receive-pack"),
        "{listings:#?}"
    );
}

/// Issue 22: a first fill of many refs goes out in one push (a wildcard refspec, or refs
/// staged in the cache), refuses the one the target already has at another commit, and
/// leaves no staged ref behind in the cache.
#[test]
fn a_first_fill_of_many_refs_lands_every_ref_but_the_targets_own() {
    let scene = Scene::new(&["whole", "partial"]);
    // 80 branches and 80 tags, at commits along a short history.
    let mut commits = Vec::new();
    for i in 0..8 {
        commits.push(
            scene
                .env
                .commit(&scene.work, "h.txt", &format!("{i}\n"), &format!("c{i}")),
        );
    }
    for i in 0..80 {
        let at = &commits[i % commits.len()];
        scene
            .env
            .git(&scene.work, &["branch", &format!("b{i:03}"), at]);
        scene
            .env
            .git(&scene.work, &["tag", &format!("t{i:03}"), at]);
    }
    scene.env.git(
        &scene.work,
        &[
            "push",
            "-q",
            "origin",
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ],
    );
    // The partial target has b007 at a commit of its own.
    let own = scene.env.path("own");
    scene.env.git(
        scene.env.dir.path(),
        &["init", "-q", "-b", "main", own.to_str().expect("utf8")],
    );
    let theirs = scene.env.commit(&own, "x.txt", "theirs\n", "their own");
    let partial = scene.served.join("partial.git");
    scene.env.git(
        &own,
        &[
            "push",
            "-q",
            partial.to_str().expect("utf8"),
            "main:refs/heads/b007",
        ],
    );
    let mirrors = format!(
        "{}{}",
        scene.mirror("whole", "github", ""),
        scene.mirror("partial", "github", "")
    );
    scene.configure(&mirrors, "");
    let run = |name: &str| {
        scene
            .env
            .gitsync_command(&scene.home, &["webhooks", "run", name])
            .envs(scene.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("webhooks run")
    };
    let out = run("whole");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(scene.target_refs("whole"), scene.source_refs());

    let out = run("partial");
    assert_eq!(out.status.code(), Some(1), "b007 is diverged");
    let mut want = scene.source_refs();
    want.insert("refs/heads/b007".to_string(), theirs);
    assert_eq!(scene.target_refs("partial"), want);
    let caches = scene.home.join(".gitsync/webhooks/cache");
    for cache in std::fs::read_dir(&caches).expect("caches").flatten() {
        let path = cache.path();
        if path.extension().is_some_and(|e| e == "git") {
            let left = scene.env.git(&path, &["for-each-ref", "refs/gitsync-push"]);
            assert!(left.trim().is_empty(), "staged refs left behind: {left}");
        }
    }
}
