//! Partition sync with real git repositories, against a directory store and against moto's
//! S3 on loopback: full then incremental exports, branch renaming, restarts, rollback,
//! tampering, pagination and dry runs.

use crate::common;

use std::path::{Path, PathBuf};

use common::Env;
use common::moto::Moto;
use gitsync::store::{BlobStore, S3Store};

/// A producer and a consumer sharing a store, with their own HOMEs and keys.
struct Scene {
    env: Env,
    source: PathBuf,
    dest: PathBuf,
    work: PathBuf,
    producer: PathBuf,
    consumer: PathBuf,
    store_dir: PathBuf,
    _moto: Option<Moto>,
}

fn out_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn create_bucket(moto: &Moto, name: &str) {
    let conf = aws_sdk_s3::config::Builder::from(&moto.sdk())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("bucket");
}

fn keygen(env: &Env, dir: &Path) -> (String, String) {
    let out = env.gitsync(
        &env.home("keys"),
        &["partition", "keygen", dir.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", out_text(&out));
    let recipient = std::fs::read_to_string(dir.join("recipient.txt")).expect("recipient");
    let public = std::fs::read_to_string(dir.join("signing.pub")).expect("public");
    (recipient.trim().to_string(), public.trim().to_string())
}

impl Scene {
    /// `s3`: use moto's S3 (bucket `parts`, prefix `sync`) instead of a directory.
    fn new(s3: bool) -> Scene {
        let env = Env::new();
        // The source: branch master with two commits.
        let source = env.path("source.git");
        std::fs::create_dir_all(&source).expect("mkdir");
        env.git(&source, &["init", "--bare", "-q", "-b", "master"]);
        let work = env.path("work");
        env.git(
            env.dir.path(),
            &[
                "clone",
                "-q",
                source.to_str().expect("utf8"),
                work.to_str().expect("utf8"),
            ],
        );
        env.git(&work, &["checkout", "-q", "-b", "master"]);
        env.commit(&work, "a.txt", "one\n", "first");
        env.commit(&work, "b.txt", "two\n", "second");
        env.git(&work, &["push", "-q", "origin", "master"]);
        let dest = env.path("dest.git");
        std::fs::create_dir_all(&dest).expect("mkdir");
        env.git(&dest, &["init", "--bare", "-q"]);

        let keys = env.path("keys");
        let (recipient, public) = keygen(&env, &keys);
        let store_dir = env.path("store");
        let (store, extra, moto) = if s3 {
            let moto = Moto::start();
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(create_bucket(&moto, "parts"));
            let extra = format!("  endpoint_url: {}\n  region: us-east-1\n", moto.url);
            ("s3://parts/sync".to_string(), extra, Some(moto))
        } else {
            (
                format!("file://{}", store_dir.display()),
                String::new(),
                None,
            )
        };
        let pairs = format!(
            "  pairs:\n    - source: {{url: \"file://{}\", branch: master}}\n      destination: {{url: \"{}\", branch: main}}\n",
            source.display(),
            dest.display()
        );
        let producer = env.home("producer");
        env.config(
            &producer,
            &format!(
                "partition:\n  role: producer\n  store: {store}\n{extra}  recipients: [{recipient}]\n  signing_key: {}\n{pairs}",
                keys.join("signing.key").display()
            ),
        );
        let consumer = env.home("consumer");
        env.config(
            &consumer,
            &format!(
                "partition:\n  role: consumer\n  store: {store}\n{extra}  identity: {}\n  producer_public_key: \"{public}\"\n{pairs}",
                keys.join("identity.age").display()
            ),
        );
        Scene {
            env,
            source,
            dest,
            work,
            producer,
            consumer,
            store_dir,
            _moto: moto,
        }
    }

    fn produce(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["partition", "produce", "--once"];
        args.extend_from_slice(extra);
        self.env.gitsync(&self.producer, &args)
    }

    fn consume(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["partition", "consume", "--once"];
        args.extend_from_slice(extra);
        self.env.gitsync(&self.consumer, &args)
    }

    fn source_tip(&self) -> String {
        self.env
            .git(&self.source, &["rev-parse", "master"])
            .trim()
            .to_string()
    }

    fn dest_main(&self) -> Option<String> {
        let out = self.env.git_try(
            &self.dest,
            &["rev-parse", "--verify", "-q", "refs/heads/main"],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn ok(out: &std::process::Output) -> String {
    let text = out_text(out);
    assert!(out.status.success(), "{text}");
    text
}

fn full_then_increment(s3: bool) {
    let scene = Scene::new(s3);
    let text = ok(&scene.produce(&[]));
    assert!(text.contains("exported a full bundle"), "{text}");
    let text = ok(&scene.consume(&[]));
    assert!(text.contains("pushed"), "{text}");
    // master on the source lands on main on the destination.
    assert_eq!(
        scene.dest_main().as_deref(),
        Some(scene.source_tip().as_str())
    );
    assert!(
        scene
            .env
            .git_try(
                &scene.dest,
                &["rev-parse", "--verify", "-q", "refs/heads/master"]
            )
            .stdout
            .is_empty()
    );

    // One small commit: only an increment travels.
    scene.env.commit(&scene.work, "c.txt", "three\n", "third");
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "master"]);
    let text = ok(&scene.produce(&[]));
    assert!(text.contains("exported an increment"), "{text}");
    let size: u64 = text
        .split("exported an increment (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the increment's size");
    assert!(
        size < 2048,
        "an increment of one small commit is small: {size} bytes"
    );
    let text = ok(&scene.consume(&[]));
    assert!(
        text.contains("(1 bundle(s) fetched)"),
        "only the increment is fetched: {text}"
    );
    assert_eq!(
        scene.dest_main().as_deref(),
        Some(scene.source_tip().as_str())
    );

    // Nothing new: nothing exported, nothing pushed.
    let text = ok(&scene.produce(&[]));
    assert!(text.contains("nothing new"), "{text}");
    let text = ok(&scene.consume(&[]));
    assert!(text.contains("nothing new"), "{text}");
}

#[test]
fn directory_store_full_then_increment_master_to_main() {
    full_then_increment(false);
}

#[test]
fn s3_store_full_then_increment_master_to_main() {
    full_then_increment(true);
}

#[test]
fn a_restarted_consumer_pushes_nothing_again_and_an_older_manifest_is_refused() {
    let scene = Scene::new(false);
    ok(&scene.produce(&[]));
    let first = std::fs::read(scene.store_dir.join("manifest")).expect("manifest");
    ok(&scene.consume(&[]));
    scene.env.commit(&scene.work, "c.txt", "three\n", "third");
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "master"]);
    ok(&scene.produce(&[]));
    ok(&scene.consume(&[]));
    // A destination hook records every push that reaches it.
    let hook = scene.dest.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho pushed >> \"$(dirname \"$0\")/../pushes\"\n",
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let text = ok(&scene.consume(&[]));
    assert!(text.contains("nothing new"), "{text}");
    assert!(
        !scene.dest.join("pushes").exists(),
        "a restart pushed again"
    );

    // The generation-1 manifest put back: a rollback, refused.
    std::fs::write(scene.store_dir.join("manifest"), &first).expect("put back");
    let out = scene.consume(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    assert!(
        out_text(&out).contains("older than generation 2"),
        "{}",
        out_text(&out)
    );
    assert!(!scene.dest.join("pushes").exists());
}

#[test]
fn tampered_foreign_and_misaddressed_objects_are_rejected_and_nothing_is_pushed() {
    // A flipped byte in a bundle.
    let scene = Scene::new(false);
    ok(&scene.produce(&[]));
    let bundle = std::fs::read_dir(scene.store_dir.join("b"))
        .expect("bundles")
        .flatten()
        .next()
        .expect("a bundle")
        .path();
    let mut bytes = std::fs::read(&bundle).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bundle, &bytes).expect("write");
    let out = scene.consume(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out_text(&out).contains("corrupt"), "{}", out_text(&out));
    assert_eq!(scene.dest_main(), None, "nothing pushed");

    // A manifest signed by another key.
    let scene = Scene::new(false);
    let stranger = scene.env.path("stranger");
    keygen(&scene.env, &stranger);
    let config = scene.producer.join(".gitsync/config.yml");
    let text = std::fs::read_to_string(&config).expect("config");
    let keys = scene.env.path("keys");
    std::fs::write(
        &config,
        text.replace(
            &keys.join("signing.key").display().to_string(),
            &stranger.join("signing.key").display().to_string(),
        ),
    )
    .expect("write");
    ok(&scene.produce(&[]));
    let out = scene.consume(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out_text(&out).contains("bad signature"),
        "{}",
        out_text(&out)
    );
    assert_eq!(scene.dest_main(), None, "nothing pushed");

    // Objects for a different recipient.
    let scene = Scene::new(false);
    let other = scene.env.path("other");
    let (other_recipient, _) = keygen(&scene.env, &other);
    let config = scene.producer.join(".gitsync/config.yml");
    let text = std::fs::read_to_string(&config).expect("config");
    let start = text.find("recipients: [").expect("recipients") + "recipients: [".len();
    let end = start + text[start..].find(']').expect("]");
    std::fs::write(
        &config,
        format!("{}{other_recipient}{}", &text[..start], &text[end..]),
    )
    .expect("write");
    ok(&scene.produce(&[]));
    let out = scene.consume(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out_text(&out).contains("cannot decrypt"),
        "{}",
        out_text(&out)
    );
    assert_eq!(scene.dest_main(), None, "nothing pushed");
}

#[test]
fn dry_runs_change_nothing_anywhere() {
    let scene = Scene::new(false);
    let text = ok(&scene.produce(&["--dry-run"]));
    assert!(text.contains("would export a full bundle"), "{text}");
    assert!(!scene.store_dir.exists(), "the store was touched");
    assert!(
        !scene.producer.join(".gitsync/partition").exists(),
        "no mirror, no state"
    );
    ok(&scene.produce(&[]));
    let before: Vec<_> = std::fs::read_dir(scene.store_dir.join("b"))
        .expect("bundles")
        .flatten()
        .map(|e| e.path())
        .collect();
    let text = ok(&scene.consume(&["--dry-run"]));
    assert!(text.contains("would fetch"), "{text}");
    assert_eq!(scene.dest_main(), None, "nothing pushed");
    assert!(
        !scene.consumer.join(".gitsync/partition").exists(),
        "no cache, no state"
    );
    let after: Vec<_> = std::fs::read_dir(scene.store_dir.join("b"))
        .expect("bundles")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_more_than_1000_objects_is_complete_on_both_stores() {
    let moto = Moto::start();
    create_bucket(&moto, "many").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one");
    std::fs::write(&one, b"x").expect("write");
    let store_dir = dir.path().join("store");
    let s3: Box<dyn BlobStore> = Box::new(S3Store::new(&moto.sdk(), "many", "p", true));
    let directory = gitsync::store::open(
        &format!("file://{}", store_dir.display()),
        &Default::default(),
    )
    .await
    .expect("open");
    for store in [s3, directory] {
        let url = store.describe();
        let mut uploads = tokio::task::JoinSet::new();
        let store = std::sync::Arc::new(store);
        for i in 0..1005 {
            let store = store.clone();
            let one = one.clone();
            uploads.spawn(async move { store.put_file(&format!("b/{i:05}"), &one).await });
            if uploads.len() >= 16 {
                uploads
                    .join_next()
                    .await
                    .expect("task")
                    .expect("join")
                    .expect("put");
            }
        }
        while let Some(done) = uploads.join_next().await {
            done.expect("join").expect("put");
        }
        let listed = store.list("b/").await.expect("list");
        assert_eq!(listed.len(), 1005, "{url}");
        assert_eq!(listed[1004], "b/01004");
    }
}

#[test]
fn the_roles_run_as_daemon_components() {
    let scene = Scene::new(false);
    let root = scene.env.path("empty-root");
    std::fs::create_dir_all(&root).expect("mkdir");
    for home in [&scene.producer, &scene.consumer] {
        let config = home.join(".gitsync/config.yml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen("partition:\n", "partition:\n  interval: 1s\n", 1);
        std::fs::write(&config, format!("root: {}\n{text}", root.display())).expect("write");
    }
    let producer = scene.env.spawn(&scene.producer, &[]);
    let consumer = scene.env.spawn(&scene.consumer, &[]);
    let tip = scene.source_tip();
    common::wait_for_logged(
        "the destination at the source's tip",
        std::time::Duration::from_secs(30),
        &[&producer, &consumer],
        || (scene.dest_main().as_deref() == Some(tip.as_str())).then_some(()),
    );
    // A new commit travels too, with no command run by hand.
    scene.env.commit(&scene.work, "d.txt", "four\n", "fourth");
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", "master"]);
    let tip = scene.source_tip();
    common::wait_for_logged(
        "the increment applied",
        std::time::Duration::from_secs(30),
        &[&producer, &consumer],
        || (scene.dest_main().as_deref() == Some(tip.as_str())).then_some(()),
    );
}

#[test]
fn tags_force_pairs_and_compaction() {
    let scene = Scene::new(false);
    for home in [&scene.producer, &scene.consumer] {
        let config = home.join(".gitsync/config.yml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replacen(
            "branch: main}\n",
            "branch: main}\n      tags: true\n      force: true\n",
            1,
        );
        std::fs::write(&config, text).expect("write");
    }
    scene
        .env
        .git(&scene.work, &["tag", "-a", "v1", "-m", "release one"]);
    scene.env.git(&scene.work, &["push", "-q", "origin", "v1"]);
    ok(&scene.produce(&[]));
    ok(&scene.consume(&[]));
    let tag = scene.env.git(&scene.dest, &["rev-parse", "v1^{commit}"]);
    assert_eq!(tag.trim(), scene.source_tip(), "the tag travelled");

    // The source rewrites its branch: a force pair follows it.
    scene
        .env
        .git(&scene.work, &["reset", "-q", "--hard", "HEAD~1"]);
    scene
        .env
        .commit(&scene.work, "r.txt", "rewritten\n", "rewritten");
    scene
        .env
        .git(&scene.work, &["push", "-q", "-f", "origin", "master"]);
    let text = ok(&scene.produce(&[]));
    assert!(text.contains("exported"), "{text}");
    ok(&scene.consume(&[]));
    assert_eq!(
        scene.dest_main().as_deref(),
        Some(scene.source_tip().as_str())
    );

    // Compaction: one full bundle left, and a fresh consumer still gets everything.
    let text = ok(&scene.produce(&["--compact"]));
    assert!(text.contains("exported a full bundle"), "{text}");
    let left = std::fs::read_dir(scene.store_dir.join("b"))
        .expect("b")
        .count();
    assert_eq!(left, 1, "only the full bundle is kept");
    std::fs::remove_dir_all(scene.consumer.join(".gitsync/partition")).expect("fresh consumer");
    let text = ok(&scene.consume(&[]));
    assert!(text.contains("(1 bundle(s) fetched)"), "{text}");
    assert_eq!(
        scene.dest_main().as_deref(),
        Some(scene.source_tip().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_up_in_parts_and_comes_back_whole() {
    use std::io::Write;
    let moto = Moto::start();
    create_bucket(&moto, "large").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big");
    let mut file = std::fs::File::create(&big).expect("create");
    // 70 MiB, above a 32 MiB multipart threshold: five 16 MiB parts, four in flight.
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..70u8 {
        let mut chunk = block.clone();
        chunk[0] = i;
        file.write_all(&chunk).expect("write");
    }
    drop(file);
    let store = S3Store::new(&moto.sdk(), "large", "p", true).multipart_above(32 << 20);
    store
        .put_file("b/large", &big)
        .await
        .expect("multipart upload");
    let back = dir.path().join("back");
    store.get_file("b/large", &back).await.expect("download");
    let same = std::fs::read(&big).expect("read") == std::fs::read(&back).expect("read");
    assert!(same, "the object came back different");
    assert!(matches!(
        store.get_file("b/missing", &back).await,
        Err(gitsync::store::StoreError::NotFound(_))
    ));
}
