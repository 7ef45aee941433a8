//! The `aws` backend against moto's server on loopback (started here, stopped at the end):
//! `gitsync aws setup` twice, the two-machine push -> pull, the conditional write that
//! refuses an older state, a malformed message, and an outage at start-up.

use crate::common;

use std::time::Duration;

use common::moto::{Moto, TOPIC};
use common::{Env, find, wait_for};
use gitsync::backend::StateStore;
use gitsync::backend::aws::dynamo::DynamoStore;

const WAIT: Duration = Duration::from_secs(30);

fn setup_host(env: &Env, moto: &Moto, host: &str, root: &std::path::Path) -> std::path::PathBuf {
    let home = env.home(host);
    std::fs::create_dir_all(root).expect("mkdir root");
    env.config(&home, &moto.host_config(host, root));
    let out = env.gitsync(&home, &["aws", "setup"]);
    assert!(
        out.status.success(),
        "aws setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .expect("queue url")
        .queue_url()
        .expect("url")
        .to_string()
}

/// Publishes, as host A would, that `proj`'s main moved from `old` to `new` on `bare`.
async fn publish_as_host_a(
    sdk: &aws_config::SdkConfig,
    bare: &std::path::Path,
    old: &str,
    new: &str,
) {
    let event = gitsync::model::PushEvent::new(
        "host-a",
        "proj",
        &bare.display().to_string(),
        "refs/heads/main",
        old,
        new,
    );
    let bus = gitsync::backend::aws::queue::SnsSqsBus::new(sdk, TOPIC, "host-a.fifo", "host-a");
    gitsync::backend::EventBus::publish(&bus, &event)
        .await
        .expect("publish");
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn aws_setup_twice_changes_nothing_the_second_time() {
    let env = Env::new();
    let moto = Moto::start();
    let home = env.home("a");
    std::fs::create_dir_all(env.path("root")).expect("mkdir root");
    env.config(&home, &moto.host_config("a", &env.path("root")));
    let first = env.gitsync(&home, &["aws", "setup"]);
    let text = stdout(&first);
    assert!(first.status.success(), "{text}");
    for line in [
        "DynamoDB table git: created",
        &format!("SNS FIFO topic {TOPIC}: created"),
        "SQS FIFO queue host-a.fifo: created",
        "queue policy allowing the topic to deliver: created",
        "subscription of the queue to the topic (raw message delivery): created",
        "sqs: {queue: host-a.fifo}",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let second = env.gitsync(&home, &["aws", "setup"]);
    let text = stdout(&second);
    assert!(second.status.success(), "{text}");
    assert!(
        !text.contains(": created") && !text.contains(": updated"),
        "{text}"
    );
    assert_eq!(text.matches("exists, unchanged").count(), 5, "{text}");
    assert!(text.contains("nothing to do"), "{text}");

    let down = env.gitsync(&home, &["aws", "teardown"]);
    let text = stdout(&down);
    assert!(down.status.success(), "{text}");
    assert_eq!(text.matches(": deleted").count(), 2, "{text}");
    let again = env.gitsync(&home, &["aws", "teardown"]);
    assert_eq!(
        stdout(&again).matches(": not there").count(),
        2,
        "{}",
        stdout(&again)
    );
}

#[test]
fn a_push_on_a_brings_b_to_the_new_commit_over_aws() {
    let env = Env::new();
    let moto = Moto::start();
    let (bare, a_clone) = env.remote_and_clone("proj", "root-a/proj");
    let b_clone = env.clone_of(&bare, "root-b/proj");
    let home_a = setup_host(&env, &moto, "a", &env.path("root-a"));
    let home_b = setup_host(&env, &moto, "b", &env.path("root-b"));
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    wait_for("hook installed", WAIT, || {
        a_clone.join(".git/hooks/pre-push").exists().then_some(())
    });
    let sha = env.commit(&a_clone, "new.txt", "over aws\n", "from a");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "{push:?}");
    wait_for("B at the pushed commit", WAIT, || {
        (env.head(&b_clone) == sha).then_some(())
    });
    for home in [&home_a, &home_b] {
        wait_for("status shows both hosts", WAIT, || {
            let states = env.status(home, &[]);
            let on_a = find(&states, Some("host-a"), "proj")?;
            let on_b = find(&states, Some("host-b"), "proj")?;
            (on_a["head"] == sha.as_str() && on_b["head"] == sha.as_str()).then_some(())
        });
    }
    assert!(!b.log_text().contains("ERROR"), "{}", b.log_text());
    // Tearing down the queue a running daemon reads is refused, and removes nothing.
    let down = env.gitsync(&home_b, &["aws", "teardown"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(down.status.code(), Some(2), "{said}");
    assert!(said.contains("gitsync runs here"), "{said}");
    assert!(said.contains("hint: stop it first"), "{said}");
    assert!(!said.contains("deleted"), "{said}");
    let again = env.gitsync(&home_b, &["aws", "setup"]);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("SQS FIFO queue host-b.fifo: exists, unchanged"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[tokio::test]
async fn an_older_state_written_after_a_newer_one_is_refused() {
    let env = Env::new();
    let moto = Moto::start();
    setup_host(&env, &moto, "a", &env.path("root"));
    let store = DynamoStore::new(&moto.sdk(), "git");
    let mut newer = gitsync::model::RepoState::error("host-a", "proj", "newer".to_string());
    newer.head = Some("2".repeat(40));
    let mut older = newer.clone();
    older.head = Some("1".repeat(40));
    older.updated_at = newer.updated_at - chrono::Duration::seconds(60);
    assert!(store.put_if_newer(&newer).await.expect("newer"));
    assert!(
        !store
            .put_if_newer(&older)
            .await
            .expect("older is refused, not an error")
    );
    assert!(
        !store
            .put_if_newer(&newer)
            .await
            .expect("same seq is refused too")
    );
    let states = store.list(Some("host-a")).await.expect("list");
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].head, newer.head);
    // A still newer one goes through.
    let mut newest = newer.clone();
    newest.head = Some("3".repeat(40));
    newest.updated_at = newer.updated_at + chrono::Duration::seconds(1);
    assert!(store.put_if_newer(&newest).await.expect("newest"));
    let all = store.list(None).await.expect("scan");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].head, newest.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_logged_and_deleted_and_the_next_event_works() {
    let env = Env::new();
    let moto = Moto::start();
    let (bare, b_clone) = env.remote_and_clone("proj", "root-b/proj");
    let home_b = setup_host(&env, &moto, "b", &env.path("root-b"));
    let b = env.spawn(&home_b, &[]);
    b.wait_log("ready", WAIT);
    let sdk = moto.sdk();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue_url(&sqs, "host-b.fifo").await;
    sqs.send_message()
        .queue_url(&url)
        .message_body("{this is not an event")
        .message_group_id("garbage")
        .message_deduplication_id("garbage-1")
        .send()
        .await
        .expect("send garbage");
    let old = env.head(&b_clone);
    let sha = env.push_new_commit(&bare, "c.txt", "c\n");
    publish_as_host_a(&sdk, &bare, &old, &sha).await;
    b.wait_log("malformed message deleted", WAIT);
    tokio::task::block_in_place(|| {
        wait_for("B pulled after the garbage", WAIT, || {
            (env.head(&b_clone) == sha).then_some(())
        });
    });
    // Nothing is left in the queue: the garbage was deleted, the event acknowledged.
    let start = std::time::Instant::now();
    loop {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .expect("attributes");
        let count = |name: aws_sdk_sqs::types::QueueAttributeName| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let left = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        if left == 0 {
            break;
        }
        assert!(start.elapsed() < WAIT, "messages left in the queue: {left}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!b.log_text().contains("ERROR"), "{}", b.log_text());
}

#[test]
fn aws_unreachable_at_start_up_the_daemon_syncs_with_git_and_publishes_once_back() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("proj", "root/proj");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let home = env.home("a");
    // Nothing listens on the port yet: AWS is "down".
    let config = format!(
        "hostname: host-a\nroot: {}\nbackend: aws\naws:\n  region: us-east-1\n  endpoint_url: http://127.0.0.1:{port}\n  dynamodb: {{table: git}}\n  sqs: {{queue: host-a.fifo}}\n  sns: {{topic: {{arn: \"{TOPIC}\"}}}}\npull:\n  interval: 1h\n",
        env.path("root").display()
    );
    env.config(&home, &config);
    let sha = env.push_new_commit(&bare, "x.txt", "x\n");
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);
    assert_eq!(env.head(&clone), sha, "git sync goes on while AWS is down");
    // More local changes, more failed writes: still one warning for the outage.
    env.write(&clone, "a.txt", "edit 1\n");
    daemon.wait_log("still failing", WAIT);
    let text = daemon.log_text();
    assert_eq!(
        text.matches("failing; retrying with backoff").count(),
        1,
        "{text}"
    );

    // AWS answers again: the latest state is published without any new change.
    let moto = Moto::start_on(port);
    let setup = env.gitsync(&home, &["aws", "setup"]);
    assert!(setup.status.success(), "{}", stdout(&setup));
    let state = wait_for("the latest state published once AWS is back", WAIT, || {
        let out = env.gitsync(&home, &["status", "--json"]);
        let states: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        find(&states, Some("host-a"), "proj").cloned()
    });
    assert_eq!(state["head"], sha.as_str());
    assert_eq!(state["unstaged"], 1);
    daemon.wait_log("reachable again", WAIT);
    drop(moto);
}

#[test]
fn the_endpoint_goes_away_for_30_s_and_the_state_arrives_when_it_is_back() {
    let env = Env::new();
    let moto = Moto::start();
    let port: u16 = moto
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (bare, clone) = env.remote_and_clone("proj", "root/proj");
    let home = setup_host(&env, &moto, "a", &env.path("root"));
    // A short interval: git syncing on its own timer is what must go on.
    let config = moto
        .host_config("a", &env.path("root"))
        .replace("interval: 1h", "interval: 2s");
    env.config(&home, &config);
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);

    drop(moto);
    let outage = std::time::Instant::now();
    let sha = env.push_new_commit(&bare, "during.txt", "while AWS is away\n");
    wait_for("git keeps syncing during the outage", WAIT, || {
        (env.head(&clone) == sha).then_some(())
    });
    daemon.wait_log("failing; retrying with backoff", WAIT);
    let left = Duration::from_secs(30).saturating_sub(outage.elapsed());
    std::thread::sleep(left);
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "the daemon must stay up:\n{}",
        daemon.log_text()
    );

    // Back on the same port (moto keeps nothing: the resources are made again).
    let moto = Moto::start_on(port);
    let setup = env.gitsync(&home, &["aws", "setup"]);
    assert!(setup.status.success(), "{}", stdout(&setup));
    wait_for(
        "the state reaches DynamoDB",
        Duration::from_secs(90),
        || {
            let states = env.status(&home, &[]);
            let s = find(&states, Some("host-a"), "proj")?;
            (s["head"] == sha.as_str()).then_some(())
        },
    );
    let text = daemon.log_text();
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("state store"))
            .count(),
        1,
        "the store outage is logged once:\n{text}"
    );
    assert_eq!(lines("cannot receive events"), 1, "{text}");
    daemon.wait_log("service=\"state store\"", WAIT);
    assert!(lines("reachable again") >= 1, "{text}");
    assert_eq!(daemon.stop(), Some(0));
    drop(moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_handling_an_event_handles_it_after_restart() {
    let env = Env::new();
    let moto = Moto::start();
    let (bare, b_clone) = env.remote_and_clone("proj", "root-b/proj");
    // Every fetch of B takes 3 s: time to kill the daemon in the middle of one.
    let slow = env.path("slow-upload-pack");
    std::fs::write(&slow, "#!/bin/sh\nsleep 3\nexec git-upload-pack \"$@\"\n").expect("write");
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    env.git(
        &b_clone,
        &[
            "config",
            "remote.origin.uploadpack",
            slow.to_str().expect("utf8"),
        ],
    );
    let home_b = setup_host(&env, &moto, "b", &env.path("root-b"));
    let sdk = moto.sdk();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue_url(&sqs, "host-b.fifo").await;
    // A short visibility timeout, so that the test need not wait a minute.
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "5",
        )
        .send()
        .await
        .expect("visibility");
    let mut b = env.spawn(&home_b, &[]);
    tokio::task::block_in_place(|| b.wait_log("ready", WAIT));

    let old = env.head(&b_clone);
    let sha = env.push_new_commit(&bare, "k.txt", "k\n");
    publish_as_host_a(&sdk, &bare, &old, &sha).await;
    tokio::task::block_in_place(|| b.wait_log("fetch=Remote(\"origin\")", WAIT));
    b.child.kill().expect("SIGKILL");
    b.child.wait().expect("reaped");
    assert_eq!(env.head(&b_clone), old, "killed before the pull");
    assert!(!b.log_text().contains("push event handled"));

    let b2 = env.spawn(&home_b, &[]);
    tokio::task::block_in_place(|| {
        b2.wait_log("ready", WAIT);
        b2.wait_log(&format!("new={sha}"), WAIT);
        b2.wait_log("push event handled", WAIT);
    });
    assert_eq!(env.head(&b_clone), sha);
    assert!(!b2.log_text().contains("ERROR"), "{}", b2.log_text());
}

#[test]
fn a_gitargus_table_keyed_by_hostname_alone_is_refused_with_the_fix() {
    let env = Env::new();
    let moto = Moto::start();
    let root = env.path("root");
    let (_bare, _clone) = env.remote_and_clone("proj", "root/proj");
    let home = env.home("a");
    env.config(&home, &moto.host_config("a", &root));
    // GitArgus's own table: partition key `hostname`, no sort key.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        aws_sdk_dynamodb::Client::new(&moto.sdk())
            .create_table()
            .table_name("git")
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("hostname")
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key"),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("hostname")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("create the GitArgus table");
    });
    for args in [
        vec!["aws", "setup"],
        vec!["sync", "--root", root.to_str().expect("utf8")],
        vec!["doctor"],
    ] {
        let out = env.gitsync(&home, &args);
        let text = stdout(&out);
        assert!(!out.status.success(), "{args:?} accepted the table: {text}");
        assert!(
            text.contains("key schema hostname (HASH)")
                && text.contains("set aws.dynamodb.table to another name"),
            "{args:?}: {text}"
        );
    }
}

/// `aws setup` without a topic ARN in the config, run twice, finds the topic the second
/// time; a queue whose attributes drifted is brought back; `--write-config` writes the
/// lines and keeps the file's comments; `status` reads states before the ARN is there;
/// `teardown --forget` removes the host's rows.
#[test]
fn aws_setup_reconciles_finds_the_topic_and_writes_the_config() {
    let env = Env::new();
    let moto = Moto::start();
    let home = env.home("a");
    let root = env.path("root");
    env.remote_and_clone("proj", "root/proj");
    let without_arn = format!(
        "# my laptop's gitsync\nhostname: host-a\nroot: {}\n# the shared AWS account\naws:\n  region: us-east-1\n  endpoint_url: {}\n  dynamodb: {{table: git}}\n  sqs: {{queue: host-a.fifo}}\n# pulls\npull:\n  interval: 1h\n",
        root.display(),
        moto.url
    );
    let file = env.config(&home, &without_arn);
    let first = env.gitsync(&home, &["aws", "setup"]);
    assert!(first.status.success(), "{}", stdout(&first));
    assert!(
        stdout(&first).contains("SNS FIFO topic arn:aws:sns:"),
        "{}",
        stdout(&first)
    );
    let second = env.gitsync(&home, &["aws", "setup"]);
    let text = stdout(&second);
    assert!(second.status.success(), "{text}");
    assert!(
        !text.contains(": created"),
        "claims to create again:\n{text}"
    );
    assert!(text.contains("(found): exists, unchanged"), "{text}");

    // The queue's attributes drift; setup brings them back and says so.
    let sdk = moto.sdk();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let url = queue_url(&sqs, "host-a.fifo").await;
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "30",
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                "0",
            )
            .send()
            .await
            .expect("set attributes");
    });
    let third = env.gitsync(&home, &["aws", "setup"]);
    let text = stdout(&third);
    assert!(
        text.contains("VisibilityTimeout 30 -> 60")
            && text.contains("ReceiveMessageWaitTimeSeconds 0 -> 20")
            && text.contains(": updated"),
        "{text}"
    );
    rt.block_on(async {
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let url = queue_url(&sqs, "host-a.fifo").await;
        let got = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .expect("get attributes");
        assert_eq!(
            got.attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout))
                .map(String::as_str),
            Some("60")
        );
    });

    // status reads the table before the topic ARN is in the config.
    assert!(env.status(&home, &[]).is_empty());

    let write = env.gitsync(&home, &["aws", "setup", "--write-config"]);
    assert!(write.status.success(), "{}", stdout(&write));
    let written = std::fs::read_to_string(&file).expect("read config");
    for kept in [
        "# my laptop's gitsync",
        "# pulls",
        "interval: 1h",
        "backend: aws",
        "sns: {topic: {arn: \"arn:aws:sns:",
    ] {
        assert!(written.contains(kept), "{kept:?} missing:\n{written}");
    }
    assert!(file.with_extension("yml.bak").exists());
    let sync = env.gitsync(&home, &["sync", "--quiet"]);
    assert!(sync.status.success(), "{}", stdout(&sync));
    let rows = env.status(&home, &[]);
    assert!(rows.iter().any(|r| r["repo"] == "proj"), "{rows:?}");

    let down = env.gitsync(&home, &["aws", "teardown", "--forget"]);
    let text = stdout(&down);
    assert!(down.status.success(), "{text}");
    assert!(text.contains("host-a: 1 row forgotten"), "{text}");
    assert!(env.status(&home, &[]).is_empty());
}

/// This host's queue deleted under its running daemon (a teardown from elsewhere): the
/// daemon says so as an error, every machine's `status` shows the host as online but not
/// working, with what to do, and `/readyz` answers 503 with the reason, until the queue
/// is back.
#[test]
fn a_missing_queue_is_the_hosts_problem_until_it_is_back() {
    let env = Env::new();
    let moto = Moto::start();
    env.remote_and_clone("proj", "root-b/proj");
    let root = env.path("root-b");
    let home = env.home("b");
    let port = crate::observe::free_port();
    let config = format!(
        "{}  heartbeat: 1s\nobserve:\n  listen: 127.0.0.1:{port}\n",
        moto.host_config("b", &root)
    );
    env.config(&home, &config);
    let setup = env.gitsync(&home, &["aws", "setup"]);
    assert!(setup.status.success(), "{setup:?}");
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", WAIT);
    // The same host's configuration in another home, where no daemon runs.
    let elsewhere = env.home("b-elsewhere");
    env.config(&elsewhere, &config);
    let down = env.gitsync(&elsewhere, &["aws", "teardown"]);
    assert!(down.status.success(), "{down:?}");
    let problem = |home: &std::path::Path| {
        let states = env.status(home, &[]);
        find(&states, Some("host-b"), "proj")?["host_problem"]
            .as_str()
            .map(str::to_string)
    };
    let said = wait_for(
        "the missing queue in status",
        Duration::from_secs(60),
        || problem(&home),
    );
    assert!(said.contains("event queue is missing"), "{said}");
    assert!(said.contains("`gitsync aws setup` creates it"), "{said}");
    let text = String::from_utf8_lossy(&env.gitsync(&home, &["status"]).stdout).to_string();
    assert!(
        text.contains("host host-b: online but not working"),
        "{text}"
    );
    assert!(daemon.log_text().contains("ERROR"), "{}", daemon.log_text());
    let (code, body) = crate::observe::get(port, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the event bus does not answer") && body.contains("event queue is missing"),
        "{body}"
    );
    // Back: the problem goes away.
    let up = env.gitsync(&elsewhere, &["aws", "setup"]);
    assert!(up.status.success(), "{up:?}");
    wait_for("the problem to clear", Duration::from_secs(120), || {
        problem(&home).is_none().then_some(())
    });
    wait_for("ready again", Duration::from_secs(60), || {
        crate::observe::get(port, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(daemon.stop(), Some(0));
}
