//! Issue 25, item 1: `/metrics`, `/healthz` and `/readyz` on `observe.listen`. Two daemons
//! on one hub; host B's start-up update waits on a remote that accepts and never answers,
//! so `/readyz` says 503 until it is let go. Then a real push from A and a pull B refuses
//! (an edit not committed) show in B's metrics, which Prometheus' own `promtool check
//! metrics` reads without a complaint. `/readyz` says 503 again when the hub is gone.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, host_config, wait_for_logged};

const WAIT: Duration = Duration::from_secs(60);

/// GET `path` on 127.0.0.1:`port`: the status code and the body (`None` when nothing
/// answers).
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_accepting(port, path, "*/*")
}

/// [`get`] with an `Accept` header.
fn get_accepting(port: u16, path: &str, accept: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    // axum answers with a length, not chunks, for these bodies.
    Some((code, body))
}

/// The value of the sample `name{labels}` in an exposition (`labels` as written, sorted
/// as the encoder writes them), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required: apt-get install -y --no-install-recommends prometheus (make deps)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// Appends `yaml` to the config file of `home`.
fn append_config(home: &Path, yaml: &str) {
    let config = home.join(".gitsync/config.yml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}{yaml}")).expect("config");
}

fn add_observe(home: &Path, port: u16) {
    append_config(
        home,
        &format!("  fetch_timeout: 5m\nobserve:\n  listen: 127.0.0.1:{port}\n"),
    );
}

/// A deploy `web` of `proj` to a target that is never reached: `on_update` is off, so it
/// ships only when told, which the tests never do.
const WEB_DEPLOY: &str = "deploy:\n  - name: web\n    repo: proj\n    branch: main\n    targets:\n      - {name: vm, host: root@127.0.0.1, path: /srv/nowhere}\n";

/// Writes the state file of `home`'s deploy `web` as a ship that ended with `result`
/// (`failed`, `shipped`, ...) after 2.5 s leaves it.
fn web_deploy_ended(home: &Path, result: &str) {
    let state = home.join(".gitsync/deploy/web/state.json");
    std::fs::create_dir_all(state.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &state,
        format!(r#"{{"targets": {{"vm": {{"rev": null, "at": "2026-12-01T10:00:00Z", "result": "{result}", "took_ms": 2500}}}}, "rev": null}}"#),
    )
    .expect("deploy state");
}

#[test]
fn metrics_and_health_follow_the_daemon() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, a_clone) = env.remote_and_clone("proj", "root-a/proj");
    let b_clone = env.clone_of(&bare, "root-b/proj");
    // B's second repository: its remote accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_port = hang.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in hang.incoming().flatten() {
            keep.lock().expect("lock").push(stream);
        }
    });
    let slow = env.clone_of(&bare, "root-b/slow");
    env.git(
        &slow,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("git://127.0.0.1:{hang_port}/slow.git"),
        ],
    );
    let (home_a, home_b) = (env.home("a"), env.home("b"));
    host_config(&env, "a", &env.path("root-a"), &hub);
    host_config(&env, "b", &env.path("root-b"), &hub);
    let port = free_port();
    add_observe(&home_b, port);
    // A deploy of B's whose last ship failed: shown as a replication job that is not ok.
    append_config(&home_b, WEB_DEPLOY);
    web_deploy_ended(&home_b, "failed");
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);

    // Up before the start-up update; not ready while it waits on the silent remote.
    common::wait_for("/healthz", WAIT, || {
        get(port, "/healthz").filter(|(c, _)| *c == 200)
    });
    let (code, body) = get(port, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("start-up update"), "{body}");
    common::wait_for("the silent remote asked", WAIT, || {
        (!held.lock().expect("lock").is_empty()).then_some(())
    });
    // Let it go: the fetch fails at once, the start-up update ends, B is ready.
    held.lock().expect("lock").clear();
    wait_for_logged("B ready", WAIT, &[&b], || {
        get(port, "/readyz").filter(|(c, b)| *c == 200 && b == "ready\n")
    });
    a.wait_log("ready", WAIT);

    // A real push from A: B fetches and fast-forwards.
    let sha = env.commit(&a_clone, "new.txt", "from a\n", "from a");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    wait_for_logged("B at the pushed commit", WAIT, &[&a, &b], || {
        (env.head(&b_clone) == sha).then_some(())
    });
    // A pull B refuses: an edit of B's not committed, then another push.
    env.write(&b_clone, "a.txt", "B's edit, not committed\n");
    std::thread::sleep(Duration::from_millis(300));
    let refused = env.commit(&a_clone, "a.txt", "from a again\n", "again");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    let text = wait_for_logged("the refusal in /metrics", WAIT, &[&a, &b], || {
        let (code, text) = get(port, "/metrics")?;
        (code == 200
            && sample(
                &text,
                "gitsync_pull_refusals_total{repo=\"proj\",reason=\"uncommitted\"}",
            )? >= 1.0)
            .then_some(text)
    });
    assert_ne!(
        env.head(&b_clone),
        refused,
        "B's edit was kept, the pull refused"
    );
    promtool_check(&text);
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value("gitsync_fast_forwards_total{repo=\"proj\"}"), 1.0);
    assert!(value("gitsync_fetches_total{repo=\"proj\",result=\"updated\"}") >= 2.0);
    assert!(value("gitsync_fetches_total{repo=\"slow\",result=\"failed\"}") >= 1.0);
    assert_eq!(value("gitsync_repository_pull_blocked{repo=\"proj\"}"), 1.0);
    assert_eq!(
        value("gitsync_repository_behind_commits{repo=\"proj\"}"),
        1.0
    );
    assert_eq!(
        value("gitsync_repository_uncommitted_paths{repo=\"proj\"}"),
        1.0
    );
    assert_eq!(
        value("gitsync_repository_state{repo=\"proj\",state=\"behind\"}"),
        1.0
    );
    assert_eq!(value("gitsync_ready"), 1.0);
    assert_eq!(
        value("gitsync_job_last_run_ok{kind=\"deploy\",name=\"web\"}"),
        0.0
    );
    assert_eq!(
        value("gitsync_job_last_run_timestamp_seconds{kind=\"deploy\",name=\"web\"}"),
        1_796_119_200.0
    );
    assert_eq!(
        value("gitsync_job_last_run_duration_seconds{kind=\"deploy\",name=\"web\"}"),
        2.5
    );
    assert!(value("gitsync_fast_forward_duration_seconds_count") >= 1.0);
    // A's two push events reached B through the hub.
    assert!(value("gitsync_event_lag_seconds_count") >= 2.0, "{text}");
    let age = value("gitsync_host_heartbeat_age_seconds{host=\"host-a\"}");
    assert!((0.0..3600.0).contains(&age), "{age}");
    assert!(!text.contains("# EOF"), "{text}");
    // What Prometheus asks for: OpenMetrics, counters named without `_total` in their
    // family, and the end marker.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (code, open) = get_accepting(port, "/metrics", accept).expect("metrics");
    assert_eq!(code, 200);
    assert!(open.contains("# TYPE gitsync_fetches counter"), "{open}");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");

    // The hub is gone: not ready, and why.
    std::fs::rename(&hub, env.path("hub-away")).expect("move the hub");
    let (code, body) = wait_for_logged("/readyz 503 without the hub", WAIT, &[&b], || {
        get(port, "/readyz").filter(|(c, _)| *c == 503)
    });
    assert!(body.contains("state store"), "{code} {body}");
}

/// The POSTs a [`receiver`] got: each one's `Title` header and body, in order.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A loopback HTTP receiver on the port it returns.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let message = loop {
                let Ok(n) = stream.read(&mut buf) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some((
                        header("title").unwrap_or_default(),
                        body[..length].to_string(),
                    ));
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Some(message) = message {
                keep.lock().expect("lock").push(message);
            }
        }
    });
    (port, got)
}

/// The home of host `n` (root `root`, hub `hub`), which fetches every second and sends
/// its notifications to `targets` (the YAML list under `notify:`).
fn notifying_host(env: &Env, hub: &Path, targets: &str) -> std::path::PathBuf {
    let home = env.home("n");
    let config = host_config(env, "n", &env.path("root"), hub);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("interval: 1h", "interval: 1s")).expect("config");
    append_config(&home, &format!("notify:\n{targets}"));
    home
}

/// Takes the remote `bare` of the daemon's one repository away until `sent()` (the
/// messages sent so far) is 1 and five more fetches failed, then puts it back until
/// `sent()` is 2 and three more syncs went by. The daemon fetches every second.
fn fail_and_recover(env: &Env, daemon: &common::Daemon, bare: &Path, sent: &dyn Fn() -> usize) {
    // The remote goes away: a fetch fails every second.
    let away = env.path("proj-away.git");
    std::fs::rename(bare, &away).expect("remote away");
    wait_for_logged("the failing message", WAIT, &[daemon], || {
        (sent() == 1).then_some(())
    });
    let count = |what: &str| daemon.log_text().matches(what).count();
    let first = count("fetch failed");
    wait_for_logged("five more failed tries", WAIT, &[daemon], || {
        (count("fetch failed") >= first + 5).then_some(())
    });
    // Back: one more message, and no more after further tries.
    std::fs::rename(&away, bare).expect("remote back");
    wait_for_logged("the recovered message", WAIT, &[daemon], || {
        (sent() == 2).then_some(())
    });
    let synced = count("syncing");
    wait_for_logged("three more syncs", WAIT, &[daemon], || {
        (count("syncing") >= synced + 3).then_some(())
    });
}

/// Issue 25, item 3: a repository whose remote fails at every try (a fetch each second)
/// sends one "failing" message to the `notify` webhook however many tries fail, and one
/// "recovered" when the remote is back.
#[test]
fn a_failing_repository_notifies_once_and_once_when_it_recovers() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, _clone) = env.remote_and_clone("proj", "root/proj");
    let (port, got) = receiver();
    let home = notifying_host(
        &env,
        &hub,
        &format!("  - webhook: http://127.0.0.1:{port}/gitsync-alerts\n"),
    );
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);
    let messages = || got.lock().expect("lock").clone();
    assert!(messages().is_empty(), "nothing wrong yet: {:?}", messages());

    fail_and_recover(&env, &daemon, &bare, &|| messages().len());
    let all = messages();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].0, "gitsync");
    assert!(
        all[0]
            .1
            .starts_with("proj on host-n is failing: fetch failed"),
        "{all:?}"
    );
    assert_eq!(all[1].1, "proj on host-n recovered (it was failing)");
}

/// Issue 25, item 3: another host that goes offline, and a deploy whose last run failed,
/// each give one message when it starts and one when it is over, however many times they
/// are looked at meanwhile. A host that stops cleanly (`gitsync stop`) gives none.
#[test]
fn a_host_going_offline_and_a_failing_deploy_notify_once_each_way() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, _a) = env.remote_and_clone("proj", "root-a/proj");
    env.clone_of(&bare, "root-b/proj");
    let (home_a, home_b) = (env.home("a"), env.home("b"));
    let (port, got) = receiver();
    for name in ["a", "b"] {
        host_config(&env, name, &env.path(&format!("root-{name}")), &hub);
        append_config(&env.home(name), "  heartbeat: 1s\n");
    }
    append_config(
        &home_a,
        &format!("notify:\n  - webhook: http://127.0.0.1:{port}/alerts\n{WEB_DEPLOY}"),
    );
    web_deploy_ended(&home_a, "failed");
    let a = env.spawn(&home_a, &[]);
    let mut b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    let messages = || {
        got.lock()
            .expect("lock")
            .iter()
            .map(|(_, body)| body.clone())
            .collect::<Vec<_>>()
    };
    let looked = |d: &common::Daemon| d.log_text().matches("notify: looked at").count();
    wait_for_logged("the failing deploy", WAIT, &[&a, &b], || {
        messages()
            .contains(&"deploy web on host-a is failing: its last run failed".to_string())
            .then_some(())
    });
    web_deploy_ended(&home_a, "shipped");
    wait_for_logged("the deploy recovered", WAIT, &[&a, &b], || {
        messages()
            .contains(&"deploy web on host-a recovered (it was failing)".to_string())
            .then_some(())
    });

    // B is killed: no clean stop, its heartbeat ends.
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();
    wait_for_logged("B offline", WAIT, &[&a], || {
        messages()
            .iter()
            .any(|m| m.starts_with("host-b is offline: no heartbeat for"))
            .then_some(())
    });
    let at = looked(&a);
    wait_for_logged("A's further heartbeats", WAIT, &[&a], || {
        (looked(&a) >= at + 4).then_some(())
    });
    let b = env.spawn(&home_b, &[]);
    b.wait_log("ready", WAIT);
    wait_for_logged("B back", WAIT, &[&a, &b], || {
        messages()
            .contains(&"host-b recovered (it was offline)".to_string())
            .then_some(())
    });
    // A clean stop says nothing.
    let out = env.gitsync(&home_b, &["stop"]);
    assert!(out.status.success(), "{out:?}");
    let at = looked(&a);
    wait_for_logged("A's heartbeats after B's stop", WAIT, &[&a], || {
        (looked(&a) >= at + 6).then_some(())
    });
    let all = messages();
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_eq!(
        all.iter()
            .filter(|m| m.contains("host-b is offline"))
            .count(),
        1,
        "{all:#?}"
    );
}

/// The notifications a [`NotificationServer`] was asked to show: (application, summary,
/// body), in order.
type Shown = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A desktop's notification server (the Desktop Notifications Specification's
/// `org.freedesktop.Notifications`), which only records what it is asked to show.
struct NotificationServer {
    shown: Shown,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl NotificationServer {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: std::collections::HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.shown.lock().expect("lock");
        shown.push((app_name, summary, body));
        shown.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".to_string()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        let s = |v: &str| v.to_string();
        (s("test"), s("gitsync tests"), s("1"), s("1.2"))
    }
}

/// Issue 25, item 3: `desktop: true` shows one notification when a repository starts
/// failing and one when it recovers, on a session bus the test starts with `dbus-daemon`
/// and a notification server of its own on it.
#[test]
fn desktop_notifications_reach_the_session_bus_once_each_way() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, _clone) = env.remote_and_clone("proj", "root/proj");
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", env.path("bus").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is required: apt-get install -y dbus-daemon (make deps)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(bus.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the bus's address");
    let address = line.trim().to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let shown = Shown::default();
    let _server = runtime
        .block_on(async {
            zbus::connection::Builder::address(address.as_str())
                .name("org.freedesktop.Notifications")
                .serve_at(
                    "/org/freedesktop/Notifications",
                    NotificationServer {
                        shown: shown.clone(),
                    },
                )
                .build()
                .await
        })
        .expect("the notification server");
    let home = notifying_host(&env, &hub, "  - desktop: true\n");
    let daemon = env.spawn_env(&home, &[], &[("DBUS_SESSION_BUS_ADDRESS", &address)]);
    daemon.wait_log("ready", WAIT);
    let seen = || shown.lock().expect("lock").clone();
    fail_and_recover(&env, &daemon, &bare, &|| seen().len());
    let all = seen();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[0].0.as_str(), all[0].1.as_str()),
        ("gitsync", "gitsync")
    );
    assert!(
        all[0]
            .2
            .starts_with("proj on host-n is failing: fetch failed"),
        "{all:?}"
    );
    assert_eq!(all[1].2, "proj on host-n recovered (it was failing)");
    let _ = bus.kill();
    let _ = bus.wait();
}

/// Issue 25, item 2: the status page in headless Chromium. It shows both hosts' rows; a
/// push from host B moves host A's row (its head, through a fast-forward) without a
/// reload, through the event stream; a repository whose name is HTML shows as text; the
/// page asks nothing of anyone but the daemon; on a phone's width nothing scrolls
/// sideways. Screenshots go to the test's output folder.
#[test]
fn the_status_page_shows_a_push_from_another_host_without_a_reload() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, a_clone) = env.remote_and_clone("proj", "root-a/proj");
    let b_clone = env.clone_of(&bare, "root-b/proj");
    // A repository whose folder name is markup: the page must show it as text.
    let hostile = "x<img src=y onerror=\"document.body.dataset.pwned=1;window.pwned=1\">";
    env.remote_and_clone("other", &format!("root-a/{hostile}"));
    let (home_a, home_b) = (env.home("a"), env.home("b"));
    host_config(&env, "a", &env.path("root-a"), &hub);
    host_config(&env, "b", &env.path("root-b"), &hub);
    let port = free_port();
    add_observe(&home_a, port);
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    wait_for_logged("A ready", WAIT, &[&a, &b], || {
        get(port, "/readyz").filter(|(c, _)| *c == 200)
    });
    b.wait_log("ready", WAIT);

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&out).expect("output folder");
    let mut page = common::chromium::Chromium::start(&env.path("chromium-profile"));
    let url = format!("http://127.0.0.1:{port}/");
    page.navigate(&url);
    let head_of = |page: &mut common::chromium::Chromium, host: &str| {
        page.eval(&format!(
            "(() => {{ const r = document.querySelector('#repos tr[data-host=\"{host}\"][data-repo=\"proj\"]'); return r ? r.querySelector('td.head').textContent : null; }})()"
        ))
    };
    let before = env.head(&a_clone)[..7].to_string();
    wait_for_logged("both rows on the page", WAIT, &[&a, &b], || {
        (head_of(&mut page, "host-a") == before && head_of(&mut page, "host-b") == before)
            .then_some(())
    });
    let origin = page.eval("performance.timeOrigin");
    // Record, in the page, when host A's row first shows the pushed commit.
    let sha = env.commit(&b_clone, "new.txt", "from b\n", "from b");
    let short = sha[..7].to_string();
    page.eval(&format!(
        "window.__seen = null; new MutationObserver(() => {{ const r = document.querySelector('#repos tr[data-host=\"host-a\"][data-repo=\"proj\"] td.head'); if (r && r.textContent === '{short}' && !window.__seen) window.__seen = Date.now(); }}).observe(document.body, {{subtree: true, childList: true, characterData: true}}); 0"
    ));
    let push = env.git_as(&home_b, &b_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    wait_for_logged("A's row at the pushed commit", WAIT, &[&a, &b], || {
        (head_of(&mut page, "host-a") == short).then_some(())
    });
    assert_eq!(env.head(&a_clone), sha, "A fast-forwarded");
    assert_eq!(
        page.eval("performance.timeOrigin"),
        origin,
        "the page was not reloaded"
    );
    // How long after A's state changed the page showed it (A's `updated_at` is when its
    // daemon recorded the fast-forward): reported, not bounded, as CI machines are busy.
    let seen = page.eval("window.__seen").as_f64().expect("seen");
    let updated = env
        .status(&home_a, &[])
        .into_iter()
        .find(|s| s["host"] == "host-a" && s["repo"] == "proj")
        .and_then(|s| s["updated_at"].as_str().map(str::to_string))
        .expect("A's state");
    let updated = chrono::DateTime::parse_from_rfc3339(&updated)
        .expect("time")
        .timestamp_millis() as f64;
    eprintln!(
        "status page: A's row changed {:.0} ms after A recorded the fast-forward",
        seen - updated
    );
    assert!(
        seen >= updated - 1000.0,
        "seen before the change: {seen} {updated}"
    );

    // The markup name is text, and nothing of it ran.
    let names = page
        .eval("Array.from(document.querySelectorAll('#repos td.repo')).map(td => td.textContent)");
    assert!(
        names
            .as_array()
            .expect("names")
            .iter()
            .any(|n| n.as_str() == Some(hostile)),
        "{names}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#repos img').length"),
        0
    );
    assert_eq!(
        page.eval("document.body.dataset.pwned || null"),
        serde_json::Value::Null
    );
    assert_eq!(
        page.eval("document.getElementById('live').dataset.live"),
        "live"
    );
    // A laptop's window and a phone: nothing reaches past the right edge.
    let fits = "document.documentElement.scrollWidth <= window.innerWidth + 1 && Array.from(document.querySelectorAll('td, li, h1, p')).every(e => e.scrollWidth <= e.clientWidth + 1 && e.getBoundingClientRect().right <= window.innerWidth + 1)";
    for (name, width, height, mobile) in [("laptop", 1024, 700, false), ("phone", 390, 844, true)] {
        page.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        let fit = page.eval(fits);
        page.screenshot(&out.join(format!("{name}.png")));
        assert_eq!(
            fit, true,
            "the page reaches past the right edge on a {name}"
        );
    }

    let asked = page.requested();
    assert!(asked.iter().any(|u| u.ends_with("/events")), "{asked:?}");
    for u in &asked {
        assert!(u.starts_with(&url), "a request left the daemon: {u}");
    }
    eprintln!("status page screenshots: {}", out.display());
}
