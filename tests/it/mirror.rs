//! `gitsync mirror` against moto's S3 and against a directory store served by
//! `python3 -m http.server`: a stock `git clone` over dumb HTTP must see exactly the
//! source's branches and tags, after every kind of change, crash and race.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::Env;
use common::moto::Moto;
use common::servers::{self, Server};

/// Where a scene mirrors to.
enum Target {
    S3 { moto: Moto },
    Dir { dir: PathBuf, server: Server },
}

struct Scene {
    env: Env,
    home: PathBuf,
    /// The source: a bare repository, and a worktree that pushes to it.
    bare: PathBuf,
    work: PathBuf,
    target: Target,
    prefix: String,
}

/// An S3 client of moto's (path-style, as moto serves buckets on loopback).
fn s3_client(moto: &Moto) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&moto.sdk())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn public_bucket(moto: &Moto, bucket: &str) {
    let client = s3_client(moto);
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("bucket");
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::{bucket}","arn:aws:s3:::{bucket}/*"]}}]}}"#
    );
    client
        .put_bucket_policy()
        .bucket(bucket)
        .policy(policy)
        .send()
        .await
        .expect("bucket policy");
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Scene {
    fn new(s3: bool) -> Scene {
        let env = Env::new();
        let home = env.home("mirror");
        let (bare, work) = env.empty_source();
        let target = if s3 {
            let moto = Moto::start_logged(&env.path("moto.log"));
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(public_bucket(&moto, "pub"));
            Target::S3 { moto }
        } else {
            let dir = env.path("www");
            std::fs::create_dir_all(&dir).expect("mkdir");
            let server = servers::static_files(&dir);
            Target::Dir { dir, server }
        };
        Scene {
            env,
            home,
            bare,
            work,
            target,
            prefix: "team/api".to_string(),
        }
    }

    fn target_url(&self) -> String {
        match &self.target {
            Target::S3 { .. } => format!("s3://pub/{}", self.prefix),
            Target::Dir { dir, .. } => format!("file://{}/{}", dir.display(), self.prefix),
        }
    }

    fn clone_url(&self) -> String {
        match &self.target {
            Target::S3 { moto } => format!("{}/pub/{}", moto.url, self.prefix),
            Target::Dir { server, .. } => format!("{}/{}", server.url(), self.prefix),
        }
    }

    fn endpoint(&self) -> Option<String> {
        match &self.target {
            Target::S3 { moto } => Some(moto.url.clone()),
            Target::Dir { .. } => None,
        }
    }

    fn source_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes a config with one mirror `api` and the given extra keys.
    fn configure(&self, extra: &str) {
        let mut yaml = format!(
            "root: {}\nrepositories: []\nmirrors:\n  - name: api\n    source: {}\n    target: {}\n",
            self.env.dir.path().display(),
            self.source_url(),
            self.target_url()
        );
        if let Some(endpoint) = self.endpoint() {
            yaml.push_str(&format!(
                "    endpoint_url: {endpoint}\n    region: us-east-1\n"
            ));
        }
        yaml.push_str(extra);
        self.env.config(&self.home, &yaml);
    }

    /// `gitsync mirror run api --once`, asserting success; returns its output.
    fn run(&self) -> String {
        let out = self
            .env
            .gitsync(&self.home, &["mirror", "run", "api", "--once"]);
        let t = text(&out);
        assert!(out.status.success(), "mirror run failed: {t}");
        t
    }

    fn commit(&self, file: &str, content: &str) -> String {
        self.env
            .commit(&self.work, file, content, &format!("edit {file}"))
    }

    fn push(&self, refspecs: &[&str]) {
        let mut args = vec!["push", "-q", "--force", "origin"];
        args.extend_from_slice(refspecs);
        self.env.git(&self.work, &args);
    }

    /// The source's heads and tags as `info/refs` would list them (peeled lines included).
    fn source_refs(&self) -> BTreeMap<String, String> {
        let out = self
            .env
            .git_try(&self.bare, &["show-ref", "-d", "--heads", "--tags"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(oid, name)| (name.to_string(), oid.to_string()))
            .collect()
    }

    /// What a dumb client sees at the clone URL (`git ls-remote`), HEAD left out.
    fn mirror_refs(&self) -> BTreeMap<String, String> {
        let out = self
            .env
            .git_try(self.env.dir.path(), &["ls-remote", &self.clone_url()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, name)| name.starts_with("refs/"))
            .map(|(oid, name)| (name.to_string(), oid.to_string()))
            .collect()
    }

    /// A fresh stock clone of the mirror: every source branch and tag at the same id, fsck
    /// clean. Returns the clone's path.
    fn assert_clone_matches(&self, at: &str) -> PathBuf {
        let clone = self.env.path(at);
        let _ = std::fs::remove_dir_all(&clone);
        self.env.git(
            self.env.dir.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                &self.clone_url(),
                clone.to_str().expect("utf8"),
            ],
        );
        self.env.git(&clone, &["fsck", "--full", "--strict"]);
        let out = self
            .env
            .git_try(&clone, &["show-ref", "-d", "--heads", "--tags"]);
        let cloned: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(oid, name)| (name.to_string(), oid.to_string()))
            .collect();
        assert_eq!(
            cloned,
            self.source_refs(),
            "the clone differs from the source"
        );
        assert_eq!(self.mirror_refs(), self.source_refs(), "info/refs differs");
        clone
    }

    /// The pack names the target lists.
    fn packs(&self) -> Vec<String> {
        let text = match &self.target {
            Target::Dir { dir, .. } => {
                std::fs::read_to_string(dir.join(&self.prefix).join("objects/info/packs"))
                    .unwrap_or_default()
            }
            Target::S3 { .. } => self.get(&format!("{}/objects/info/packs", self.clone_url())),
        };
        text.lines()
            .filter_map(|l| l.strip_prefix("P "))
            .map(str::to_string)
            .collect()
    }

    /// The body of a GET of `url`.
    fn get(&self, url: &str) -> String {
        let url = url.to_string();
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async move {
                reqwest::get(&url)
                    .await
                    .expect("get")
                    .text()
                    .await
                    .expect("text")
            })
    }
}

/// First mirror, one commit later, nothing new, then a deleted branch, a force-push and a
/// new annotated tag.
fn follows_the_source(s3: bool) {
    let scene = Scene::new(s3);
    scene.configure("");
    scene.commit("a.txt", "one\n");
    scene.env.git(&scene.work, &["branch", "dev"]);
    scene.commit("b.bin", "\u{0}\u{1}binary\n");
    scene
        .env
        .git(&scene.work, &["tag", "-a", "v1", "-m", "release one"]);
    scene.env.git(&scene.work, &["tag", "light"]);
    scene.env.git(
        &scene.work,
        &["tag", "-a", "nested", "-m", "a tag of a tag", "v1"],
    );
    scene.push(&["main", "dev", "--tags"]);
    let out = scene.run();
    assert!(out.contains("api: published"), "{out}");
    assert!(out.contains("git clone"), "the clone URL is printed: {out}");
    let first = scene.assert_clone_matches("clone1");
    assert_eq!(scene.packs().len(), 1);
    let refs_text = scene.get(&format!("{}/info/refs", scene.clone_url()));
    assert!(refs_text.ends_with('\n') && refs_text.contains("refs/tags/v1^{}"));
    assert_eq!(
        scene.get(&format!("{}/HEAD", scene.clone_url())),
        "ref: refs/heads/main\n"
    );

    // One commit later: exactly one new pack, and an earlier clone fetches it.
    let tip = scene.commit("a.txt", "two\n");
    scene.push(&["main"]);
    let out = scene.run();
    assert!(out.contains("1 updated"), "{out}");
    assert_eq!(scene.packs().len(), 2);
    scene.env.git(&first, &["fetch", "-q", "origin"]);
    assert_eq!(
        scene
            .env
            .git(&first, &["rev-parse", "refs/heads/main"])
            .trim(),
        tip
    );
    scene.env.git(&first, &["fsck", "--full"]);

    // Nothing new: at most 2 requests, no upload.
    if let Target::S3 { moto } = &scene.target {
        let before = moto.requests().len();
        let out = scene.run();
        assert!(out.contains("up to date"), "{out}");
        let made: Vec<String> = moto.requests()[before..].to_vec();
        assert!(made.len() <= 2, "a run with nothing new made {made:?}");
        assert!(made.iter().all(|r| r.starts_with("GET ")), "{made:?}");
    } else {
        let out = scene.run();
        assert!(out.contains("up to date"), "{out}");
    }

    // A deleted branch, a force-pushed branch, a new annotated tag.
    scene
        .env
        .git(&scene.work, &["push", "-q", "origin", ":dev"]);
    scene
        .env
        .git(&scene.work, &["reset", "-q", "--hard", "HEAD~1"]);
    scene.commit("c.txt", "rewritten\n");
    scene
        .env
        .git(&scene.work, &["tag", "-a", "v2", "-m", "release two"]);
    scene.push(&["main", "v2"]);
    let out = scene.run();
    assert!(out.contains("deleted") && out.contains("new"), "{out}");
    let refs = scene.mirror_refs();
    assert!(!refs.contains_key("refs/heads/dev"));
    assert!(refs.contains_key("refs/tags/v2^{}"));
    scene.assert_clone_matches("clone2");
    scene.env.git(&first, &["fetch", "-q", "--prune", "origin"]);
    scene.env.git(&first, &["fsck", "--full"]);
}

#[test]
fn s3_mirror_follows_the_source_and_idles_in_two_requests() {
    follows_the_source(true);
}

#[test]
fn folder_mirror_served_by_a_static_web_server_follows_the_source() {
    follows_the_source(false);
}

#[test]
fn consolidation_leaves_one_pack_and_old_clones_still_fetch() {
    let scene = Scene::new(false);
    scene.configure("    max_packs: 3\n    grace: 1h\n");
    scene.commit("a.txt", "0\n");
    scene.push(&["main"]);
    scene.run();
    let early = scene.assert_clone_matches("early");
    for i in 1..=2 {
        scene.commit("a.txt", &format!("{i}\n"));
        scene.push(&["main"]);
        scene.run();
    }
    assert_eq!(scene.packs().len(), 3);
    scene.commit("a.txt", "3\n");
    scene.push(&["main"]);
    let out = scene.run();
    assert!(out.contains("replacing 3 packs"), "{out}");
    assert_eq!(scene.packs().len(), 1, "one full pack listed");
    let Target::Dir { dir, .. } = &scene.target else {
        unreachable!()
    };
    let pack_dir = dir.join(&scene.prefix).join("objects/pack");
    let on_disk = std::fs::read_dir(&pack_dir).expect("packs").count();
    assert_eq!(on_disk, 8, "the replaced packs stay for the grace period");
    scene.env.git(&early, &["fetch", "-q", "origin"]);
    scene.env.git(&early, &["fsck", "--full"]);
    scene.assert_clone_matches("late");

    // After the grace period (here: set to zero), the next run deletes them.
    scene.configure("    max_packs: 3\n    grace: 0s\n");
    scene.commit("a.txt", "4\n");
    scene.push(&["main"]);
    let out = scene.run();
    assert!(out.contains("3 old packs deleted"), "{out}");
    let on_disk = std::fs::read_dir(&pack_dir).expect("packs").count();
    assert_eq!(on_disk, 4, "two listed packs, their indexes");
    scene.assert_clone_matches("after");
}

#[test]
fn a_run_killed_before_info_refs_leaves_the_old_mirror_and_the_next_run_completes() {
    let scene = Scene::new(false);
    scene.configure("");
    scene.commit("a.txt", "one\n");
    scene.push(&["main"]);
    scene.run();
    let old = scene.mirror_refs();

    // Hold info/refs' lock (as another writer would): the run uploads its pack, lists it,
    // then keeps losing the conditional write of info/refs. Kill it there.
    scene.commit("a.txt", "two\n");
    scene.push(&["main"]);
    let Target::Dir { dir, .. } = &scene.target else {
        unreachable!()
    };
    let lock = dir.join(&scene.prefix).join("info/.info_refs.lock");
    std::fs::write(&lock, "").expect("lock");
    let mut child = scene
        .env
        .gitsync_command(&scene.home, &["mirror", "run", "api", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    common::wait_for("the new pack to be listed", Duration::from_secs(30), || {
        (scene.packs().len() == 2).then_some(())
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    assert_eq!(scene.mirror_refs(), old, "no ref was published");
    let clone = scene.env.path("old");
    scene.env.git(
        scene.env.dir.path(),
        &[
            "clone",
            "-q",
            &scene.clone_url(),
            clone.to_str().expect("utf8"),
        ],
    );
    scene.env.git(&clone, &["fsck", "--full"]);
    std::fs::remove_file(&lock).expect("unlock");
    // What a kill inside a file's copy leaves (issue 21, item 14: they stayed for good):
    // half-written files more than an hour old go, a younger one (another writer's, under
    // way) stays.
    let base = dir.join(&scene.prefix);
    let stale = [
        base.join("objects/pack/.incoming-aB3dE9"),
        base.join("info/.tmp-Zx81Qa"),
    ];
    let young = base.join("objects/pack/.incoming-young1");
    for file in stale.iter().chain([&young]) {
        std::fs::write(file, "half a pack").expect("write");
    }
    for file in &stale {
        let ok = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(file)
            .status()
            .expect("touch");
        assert!(ok.success());
    }
    scene.run();
    scene.assert_clone_matches("new");
    for file in &stale {
        assert!(!file.exists(), "{} was left", file.display());
    }
    assert!(young.exists(), "a write under way was removed");
}

#[test]
fn a_failed_run_publishes_nothing_and_the_other_mirrors_go_on() {
    let scene = Scene::new(true);
    scene.commit("a.txt", "one\n");
    scene.push(&["main"]);
    let Target::S3 { moto } = &scene.target else {
        unreachable!()
    };
    // A corrupt source: a bare repository whose only object is damaged.
    let corrupt = scene.env.path("remotes/corrupt.git");
    scene.env.git(
        scene.env.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            scene.bare.to_str().expect("utf8"),
            corrupt.to_str().expect("utf8"),
        ],
    );
    scene.env.git(&corrupt, &["repack", "-adq"]);
    for entry in std::fs::read_dir(corrupt.join("objects/pack")).expect("packs") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pack") {
            let mut bytes = std::fs::read(&path).expect("read");
            let middle = bytes.len() / 2;
            for b in &mut bytes[middle..middle + 16] {
                *b ^= 0xff;
            }
            let mut perms = std::fs::metadata(&path).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&path, perms).expect("chmod");
            std::fs::write(&path, bytes).expect("write");
        }
    }
    let yaml = format!(
        "repositories: []\nmirrors:\n  - name: good\n    source: {}\n    target: s3://pub/good\n    endpoint_url: {url}\n  - name: unreachable\n    source: http://user:s3cr3t@127.0.0.1:9/x.git\n    target: s3://pub/bad1\n    endpoint_url: {url}\n  - name: nobucket\n    source: {}\n    target: s3://no-such-bucket/x\n    endpoint_url: {url}\n  - name: corrupt\n    source: file://{}\n    target: s3://pub/bad2\n    endpoint_url: {url}\n",
        scene.source_url(),
        scene.source_url(),
        corrupt.display(),
        url = moto.url
    );
    scene.env.config(&scene.home, &yaml);
    // Every log line goes to stderr at debug level, so the check below sees the logs too.
    let out = scene
        .env
        .gitsync_command(&scene.home, &["mirror", "run", "--once"])
        .env("GITSYNC_LOG", "debug")
        .output()
        .expect("run");
    let t = text(&out);
    println!("{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("good: published"), "{t}");
    for name in ["unreachable", "nobucket", "corrupt"] {
        assert!(t.contains(&format!("{name}: failed")), "{name}: {t}");
    }
    assert!(!t.contains("s3cr3t"), "a credential leaked: {t}");
    for prefix in ["bad1", "bad2"] {
        let url = format!("{}/pub/{prefix}/info/refs", moto.url);
        let status = tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async { reqwest::get(&url).await.expect("get").status() });
        assert_eq!(status.as_u16(), 404, "{prefix} published something");
    }
}

/// A bucket the mirror's credentials may read but not write (moto enforcing IAM, a user
/// with `s3:GetObject` and `s3:ListBucket` only): one clear line naming the mirror and
/// AccessDenied, no secret in it, and nothing written under the prefix.
#[test]
fn access_denied_is_a_clear_error_and_writes_nothing() {
    let moto = Moto::start_enforcing_iam(4);
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let setup = format!(
        r#"
import boto3, json
kw = dict(endpoint_url="{url}", region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
boto3.client("s3", **kw).create_bucket(Bucket="pub")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="reader")
iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({{
    "Version": "2012-10-17", "Statement": [{{"Effect": "Allow",
    "Action": ["s3:GetObject", "s3:ListBucket"],
    "Resource": ["arn:aws:s3:::pub", "arn:aws:s3:::pub/*"]}}]}}))
key = iam.create_access_key(UserName="reader")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
"#,
        url = moto.url
    );
    // boto3 comes with moto in .venv: the test's own AWS calls, as an operator would make.
    let boto3 = |script: &str| {
        let out = std::process::Command::new(&python)
            .args(["-c", script])
            .output()
            .expect("run .venv/bin/python (make deps)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let keys = boto3(&setup);
    let (id, secret) = keys.split_once(' ').expect("two keys");

    let env = Env::new();
    let home = env.home("mirror");
    let (bare, work) = env.empty_source();
    env.commit(&work, "a.txt", "one\n", "one");
    env.git(&work, &["push", "-q", "origin", "main"]);
    let out = env
        .gitsync_command(
            &home,
            &[
                "mirror",
                "--source",
                &format!("file://{}", bare.display()),
                "--target",
                "s3://pub/api",
                "--endpoint-url",
                &moto.url,
            ],
        )
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .expect("run");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("src: failed")
            && t.contains("AccessDenied")
            && t.contains("Nothing was published"),
        "{t}"
    );
    assert!(!t.contains(secret), "the secret key leaked: {t}");
    let listing = format!(
        r#"
import boto3
s3 = boto3.client("s3", endpoint_url="{url}", region_name="us-east-1",
                  aws_access_key_id="{id}", aws_secret_access_key="{secret}")
print(s3.list_objects_v2(Bucket="pub", Prefix="api/")["KeyCount"])
"#,
        url = moto.url
    );
    assert_eq!(
        boto3(&listing),
        "0",
        "objects were written under the prefix"
    );
}

/// Two mirrors of different sources started at once on one prefix, round after round
/// (issue 21, item 14: they overwrote each other silently). The first to claim the prefix
/// keeps it: every round exactly one of them publishes, always the same one, the other is
/// refused with what to do, and the published ref list is always that source's, complete.
#[test]
fn two_sources_racing_on_one_prefix_one_keeps_it_and_the_other_is_refused() {
    let scene = Scene::new(true);
    // Two different sources, one prefix.
    scene.commit("a.txt", "one\n");
    scene.push(&["main"]);
    let other = scene.env.path("remotes/other.git");
    std::fs::create_dir_all(&other).expect("mkdir");
    scene
        .env
        .git(&other, &["init", "--bare", "-q", "-b", "main"]);
    let other_work = scene.env.path("other-work");
    std::fs::create_dir_all(&other_work).expect("mkdir");
    scene.env.git(&other_work, &["init", "-q", "-b", "main"]);
    for i in 0..5 {
        scene
            .env
            .commit(&other_work, "o.txt", &format!("{i}\n"), "other");
    }
    scene.env.git(&other_work, &["branch", "feature"]);
    scene.env.git(
        &other_work,
        &[
            "push",
            "-q",
            other.to_str().expect("utf8"),
            "main",
            "feature",
        ],
    );
    let endpoint = scene.endpoint().expect("s3");
    let mut owner: Option<bool> = None;
    for round in 0..4 {
        scene.commit("a.txt", &format!("round {round}\n"));
        scene.push(&["main"]);
        let spawn = |source: String, home: &str| {
            let home = scene.env.home(home);
            scene
                .env
                .gitsync_command(
                    &home,
                    &[
                        "mirror",
                        "--source",
                        &source,
                        "--target",
                        &scene.target_url(),
                        "--endpoint-url",
                        &endpoint,
                    ],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let a = spawn(scene.source_url(), "racer-a");
        let b = spawn(format!("file://{}", other.display()), "racer-b");
        let (a, b) = (
            a.wait_with_output().expect("a"),
            b.wait_with_output().expect("b"),
        );
        let published = scene.mirror_refs();
        let from_a = scene.source_refs();
        let out = scene
            .env
            .git(&other, &["show-ref", "-d", "--heads", "--tags"]);
        let from_b: BTreeMap<String, String> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(oid, name)| (name.to_string(), oid.to_string()))
            .collect();
        let (a_ok, b_ok) = (a.status.success(), b.status.success());
        assert!(
            a_ok != b_ok,
            "round {round}: not exactly one mirror published\n{}\n{}",
            text(&a),
            text(&b)
        );
        let refused = if a_ok { text(&b) } else { text(&a) };
        assert!(
            refused.contains("another source") && refused.contains("its own prefix"),
            "round {round}: {refused}"
        );
        let owner = *owner.get_or_insert(a_ok);
        assert_eq!(a_ok, owner, "round {round}: the prefix changed hands");
        assert_eq!(
            published,
            if a_ok { from_a } else { from_b },
            "round {round}: info/refs is not the owner's\n{}\n{}",
            text(&a),
            text(&b)
        );
        let clone = scene.env.path(&format!("race{round}"));
        scene.env.git(
            scene.env.dir.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                &scene.clone_url(),
                clone.to_str().expect("utf8"),
            ],
        );
        scene.env.git(&clone, &["fsck", "--full"]);
    }
}

/// A random history of pushes (commits, new and deleted branches, force-pushes,
/// lightweight and annotated tags, tag deletions) with a mirror run after a random number
/// of them, under a random `max_packs`: after every run a fresh stock clone must equal the
/// source exactly, and an older clone must fetch cleanly. Cases: `GITSYNC_MIRROR_CASES`
/// (default 4; CI sets more).
#[test]
fn randomized_histories_always_mirror_exactly() {
    let cases: u64 = std::env::var("GITSYNC_MIRROR_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("GITSYNC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261123);
    for case in 0..cases {
        let mut rng = fastrand::Rng::with_seed(seed + case);
        let scene = Scene::new(false);
        let max_packs = rng.usize(2..6);
        scene.configure(&format!("    max_packs: {max_packs}\n    grace: 0s\n"));
        scene.commit("base.txt", "base\n");
        scene.push(&["main"]);
        let mut branches = vec!["main".to_string()];
        let mut tags: Vec<String> = Vec::new();
        let mut old_clone: Option<PathBuf> = None;
        for step in 0..rng.usize(6..14) {
            let what = rng.u8(0..8);
            let branch = branches[rng.usize(0..branches.len())].clone();
            scene.env.git(&scene.work, &["checkout", "-q", &branch]);
            match what {
                0..=2 => {
                    let file = format!("f{}.txt", rng.u8(0..5));
                    let body: String = (0..rng.usize(1..200)).map(|_| rng.alphanumeric()).collect();
                    scene.commit(&file, &body);
                    scene.push(&[&branch]);
                }
                3 => {
                    let name = format!("b{step}");
                    scene.env.git(&scene.work, &["checkout", "-q", "-b", &name]);
                    scene.commit("new.txt", &format!("{case} {step}\n"));
                    scene.push(&[&name]);
                    branches.push(name);
                }
                4 if branches.len() > 1 && branch != "main" => {
                    scene.env.git(&scene.work, &["checkout", "-q", "main"]);
                    scene.env.git(
                        &scene.work,
                        &["push", "-q", "origin", &format!(":{branch}")],
                    );
                    scene.env.git(&scene.work, &["branch", "-qD", &branch]);
                    branches.retain(|b| *b != branch);
                }
                5 => {
                    let parent = scene
                        .env
                        .git_try(&scene.work, &["rev-parse", "-q", "--verify", "HEAD~1"]);
                    if parent.status.success() {
                        scene
                            .env
                            .git(&scene.work, &["reset", "-q", "--hard", "HEAD~1"]);
                    }
                    scene.commit("forced.txt", &format!("rewrite {step}\n"));
                    scene.push(&[&format!("+{branch}")]);
                }
                6 => {
                    let name = format!("t{step}");
                    if rng.bool() {
                        scene
                            .env
                            .git(&scene.work, &["tag", "-a", &name, "-m", &name]);
                    } else {
                        scene.env.git(&scene.work, &["tag", &name]);
                    }
                    scene.push(&[&format!("refs/tags/{name}")]);
                    tags.push(name);
                }
                _ if !tags.is_empty() => {
                    let name = tags.remove(rng.usize(0..tags.len()));
                    scene.env.git(
                        &scene.work,
                        &["push", "-q", "origin", &format!(":refs/tags/{name}")],
                    );
                }
                _ => {}
            }
            if rng.u8(0..3) > 0 {
                scene.run();
                let clone = scene.assert_clone_matches(&format!("c{case}-{step}"));
                if let Some(old) = &old_clone {
                    scene.env.git(old, &["fetch", "-q", "--prune", "origin"]);
                    scene.env.git(old, &["fsck", "--full"]);
                }
                if old_clone.is_none() {
                    old_clone = Some(clone);
                }
                assert!(
                    scene.packs().len() <= max_packs,
                    "case {case}: too many packs"
                );
            }
        }
        scene.run();
        scene.assert_clone_matches(&format!("c{case}-final"));
    }
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let env = Env::new();
    let home = env.home("u");
    let out = env.gitsync(&home, &["mirror", "--source", "file:///x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--target"));
    let out = env.gitsync(
        &home,
        &["mirror", "--source", "file:///x", "--target", "ftp://y"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("s3://bucket/prefix"));
    let out = env.gitsync(&home, &["mirror", "run", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no `mirrors`"), "{}", text(&out));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An LFS pointer file (git-lfs docs/spec.md) for `content`.
fn pointer(content: &[u8]) -> String {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        sha256_hex(content),
        content.len()
    )
}

#[test]
fn lfs_objects_are_verified_stored_and_read_back_by_the_agent() {
    let ok = std::process::Command::new("git-lfs")
        .arg("version")
        .output();
    assert!(
        ok.is_ok_and(|o| o.status.success()),
        "git-lfs is required: apt-get install -y git-lfs (make deps)"
    );
    let scene = Scene::new(true);
    let Target::S3 { moto } = &scene.target else {
        unreachable!()
    };
    // The source: served over smart HTTP with an LFS batch API holding the objects.
    let lfs_dir = scene.env.path("lfs-objects");
    std::fs::create_dir_all(&lfs_dir).expect("mkdir");
    let served = scene.env.path("remotes");
    let server = servers::git_http(
        &served,
        Some(&lfs_dir),
        None,
        &scene.env.path("git-http.log"),
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let contents: Vec<Vec<u8>> = (0..3)
        .map(|i| (0..(1000 + i * 70_000)).map(|_| rng.u8(..)).collect())
        .collect();
    scene.env.write(
        &scene.work,
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    for (i, content) in contents.iter().enumerate() {
        std::fs::write(lfs_dir.join(sha256_hex(content)), content).expect("object");
        scene
            .env
            .write(&scene.work, &format!("data/{i}.bin"), &pointer(content));
    }
    scene.env.git(&scene.work, &["add", "."]);
    scene.env.git(&scene.work, &["commit", "-qm", "lfs files"]);
    scene.push(&["main"]);
    let source = format!("{}/src.git", server.url());
    let yaml = format!(
        "repositories: []\nmirrors:\n  - name: api\n    source: {source}\n    target: s3://pub/lfs\n    endpoint_url: {}\n    lfs: true\n",
        moto.url
    );
    scene.env.config(&scene.home, &yaml);
    let out = scene.run();
    assert!(out.contains("3 LFS objects"), "{out}");
    let clone_url = format!("{}/pub/lfs", moto.url);
    for content in &contents {
        let oid = sha256_hex(content);
        let url = format!("{clone_url}/lfs/objects/{}/{}/{oid}", &oid[..2], &oid[2..4]);
        let stored = tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                reqwest::get(&url)
                    .await
                    .expect("get")
                    .bytes()
                    .await
                    .expect("body")
            });
        assert_eq!(stored.as_ref(), content.as_slice(), "object {oid}");
    }

    // A clone from the bucket, with the agent, has the real contents.
    let clone = scene.env.path("lfs-clone");
    let agent = [
        "-c",
        "filter.lfs.process=git-lfs filter-process",
        "-c",
        "filter.lfs.smudge=git-lfs smudge -- %f",
        "-c",
        "filter.lfs.clean=git-lfs clean -- %f",
        "-c",
        "filter.lfs.required=true",
        "-c",
        "lfs.standalonetransferagent=gitsync",
        "-c",
        &format!("lfs.customtransfer.gitsync.path={}", common::BIN),
        "-c",
        "lfs.customtransfer.gitsync.args=lfs-agent",
    ];
    let mut args: Vec<&str> = agent.to_vec();
    let clone_str = clone.to_str().expect("utf8").to_string();
    args.extend(["clone", "-q", &clone_url, &clone_str]);
    scene.env.git(scene.env.dir.path(), &args);
    for (i, content) in contents.iter().enumerate() {
        let got = std::fs::read(clone.join(format!("data/{i}.bin"))).expect("file");
        assert_eq!(&got, content, "data/{i}.bin has its real content");
    }

    // A tampered object fails the run, and nothing is published.
    let before = scene.get(&format!("{clone_url}/info/refs"));
    let bad = b"the real content".to_vec();
    std::fs::write(lfs_dir.join(sha256_hex(&bad)), b"something else!!").expect("tamper");
    scene.env.write(&scene.work, "data/bad.bin", &pointer(&bad));
    scene.env.git(&scene.work, &["add", "."]);
    scene.env.git(&scene.work, &["commit", "-qm", "tampered"]);
    scene.push(&["main"]);
    let out = scene.env.gitsync(&scene.home, &["mirror", "run", "--once"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("does not match"), "{t}");
    assert_eq!(
        scene.get(&format!("{clone_url}/info/refs")),
        before,
        "nothing published"
    );
    // A missing object fails the same way.
    std::fs::remove_file(lfs_dir.join(sha256_hex(&bad))).expect("rm");
    let out = scene.env.gitsync(&scene.home, &["mirror", "run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert_eq!(scene.get(&format!("{clone_url}/info/refs")), before);
}

#[test]
fn under_the_daemon_a_push_reaches_the_mirror_within_seconds() {
    let scene = Scene::new(false);
    scene.commit("a.txt", "one\n");
    scene.push(&["main"]);
    // The user's clone of the source, under the daemon's root.
    let root = scene.env.path("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let clone = scene.env.clone_of(&scene.bare, "root/api");
    let Target::Dir { dir, .. } = &scene.target else {
        unreachable!()
    };
    let yaml = format!(
        "hostname: laptop\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\nmirrors:\n  - name: api\n    source: {}\n    target: file://{}/{}\n    interval: 1h\n    on_push: true\n",
        root.display(),
        scene.env.path("hub").display(),
        scene.source_url(),
        dir.display(),
        scene.prefix
    );
    scene.env.config(&scene.home, &yaml);
    let daemon = scene.env.spawn(&scene.home, &[]);
    common::wait_for_logged(
        "the first mirror run",
        Duration::from_secs(30),
        &[&daemon],
        || (scene.mirror_refs() == scene.source_refs()).then_some(()),
    );
    // A push from the user's clone (through the pre-push hook the daemon installed).
    scene
        .env
        .commit(&clone, "a.txt", "pushed\n", "from the laptop");
    let pushed = scene.env.head(&clone);
    let out = scene
        .env
        .git_as(&scene.home, &clone, &["push", "-q", "origin", "main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The interval is 1h: only on_push can explain the push arriving within the wait.
    common::wait_for_logged(
        "the push in the mirror",
        Duration::from_secs(15),
        &[&daemon],
        || (scene.mirror_refs().get("refs/heads/main") == Some(&pushed)).then_some(()),
    );
    scene.assert_clone_matches("after-push");
}

/// Issue 21, item 13: `gitsync mirror` created `~/.gitsync` 0755 and kept the source URL's
/// password in a 0644 bare-cache `config`, readable by every user of the machine. Now the
/// folder is 0700 and no file holding the password is readable by others.
#[test]
fn a_source_password_is_kept_where_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let home = env.home("u");
    assert!(!home.join(".gitsync").exists());
    let served = env.path("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let seed = env.path("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    env.git(&seed, &["init", "-q"]);
    env.commit(&seed, "a.txt", "one\n", "first");
    let bare = served.join("src.git");
    env.git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            seed.to_str().expect("utf8"),
            bare.to_str().expect("utf8"),
        ],
    );
    let password = "s3cret-pass-7";
    let server = servers::git_http(
        &served,
        None,
        Some(&format!("reader:{password}")),
        &env.path("http.log"),
    );
    let source = server
        .url()
        .replacen("http://", &format!("http://reader:{password}@"), 1)
        + "/src.git";
    let target = format!("file://{}", env.path("mirror").display());
    let out = env.gitsync(&home, &["mirror", "--source", &source, "--target", &target]);
    assert!(out.status.success(), "{}", text(&out));
    let gitsync = home.join(".gitsync");
    let mode = std::fs::metadata(&gitsync)
        .expect("~/.gitsync")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "~/.gitsync is {mode:o}");
    let mut holders = 0;
    let mut stack = vec![gitsync];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let meta = entry.path().symlink_metadata().expect("lstat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && String::from_utf8_lossy(&std::fs::read(entry.path()).expect("read"))
                    .contains(password)
            {
                holders += 1;
                assert_eq!(
                    meta.permissions().mode() & 0o077,
                    0,
                    "{} holds the password and others may read it",
                    entry.path().display()
                );
            }
        }
    }
    assert!(
        holders > 0,
        "the bare cache keeps the URL: the test looked at nothing"
    );
}

/// Issue 21, item 14: the printed clone URL answered 403 until the bucket policy was set,
/// with no word; missing credentials gave the SDK's whole provider chain down to the
/// instance metadata service, and without AWS_REGION every command printed the SDK's
/// warnings. Now the first publish says what an anonymous reader meets and what to set,
/// and a failure says in one line what is missing.
#[test]
fn a_private_bucket_and_missing_credentials_are_named_with_what_to_do() {
    let scene = Scene::new(true);
    scene.commit("a.txt", "one\n");
    scene.push(&["main"]);
    let Target::S3 { moto } = &scene.target else {
        unreachable!()
    };
    let client = s3_client(moto);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // `gitsync mirror` of the source to `target`, as a command to run.
    let mirror_to = |target: &str| {
        let mut cmd = scene.env.gitsync_command(
            &scene.home,
            &[
                "mirror",
                "--source",
                &scene.source_url(),
                "--target",
                target,
                "--endpoint-url",
                &moto.url,
            ],
        );
        cmd.env_remove("AWS_DEFAULT_REGION");
        cmd
    };
    for (bucket, said) in [
        ("private", Some("anonymous readers get HTTP 403 there")),
        ("pub", None),
    ] {
        if bucket == "private" {
            runtime.block_on(async {
                client
                    .create_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .expect("bucket");
            });
        }
        let out = mirror_to(&format!("s3://{bucket}/team/api"))
            .env_remove("AWS_REGION")
            .output()
            .expect("mirror");
        let t = text(&out);
        assert!(out.status.success(), "{bucket}: {t}");
        assert!(t.contains("clone with: git clone"), "{bucket}: {t}");
        match said {
            Some(words) => assert!(t.contains(words), "{bucket}: {t}"),
            None => assert!(!t.contains("  but "), "{bucket}: {t}"),
        }
        assert!(
            !t.contains("WARN"),
            "{bucket}: the SDK's warnings were shown: {t}"
        );
    }
    // doctor reads each mirror's target as a run does and says the same.
    let yaml = format!(
        "root: {}\nrepositories: []\nmirrors:\n  - name: api\n    source: {}\n    target: s3://private/team/api\n    endpoint_url: {}\n    region: us-east-1\n",
        scene.env.dir.path().display(),
        scene.source_url(),
        moto.url
    );
    scene.env.config(&scene.home, &yaml);
    let doctor = |strip_keys: bool| {
        let mut cmd = scene.env.gitsync_command(&scene.home, &["doctor"]);
        if strip_keys {
            cmd.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
        }
        text(&cmd.output().expect("doctor"))
    };
    let said = doctor(false);
    assert!(
        said.contains("mirror api: published at")
            && said.contains("anonymous readers get HTTP 403"),
        "{said}"
    );
    let said = doctor(true);
    assert!(
        said.contains("fail mirror api") && said.contains("no AWS credentials found"),
        "{said}"
    );
    let out = mirror_to("s3://pub/team/other")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("mirror");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no AWS credentials found") && t.contains("AWS_ACCESS_KEY_ID"),
        "{t}"
    );
    assert!(
        !t.contains("IMDS") && !t.contains("WARN") && t.lines().count() <= 2,
        "the SDK's provider chain was shown: {t}"
    );
}

/// The other bucket-policy mistake: readers may get objects but not list the bucket, so S3
/// answers 403 (not 404) for a file that does not exist, and git's client gives up. moto
/// answers 404 there whatever the policy, so an HTTP server on loopback plays that bucket:
/// 200 for `info/refs`, 403 for anything else.
#[test]
fn a_bucket_readers_cannot_list_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let status = if line.contains("/info/refs ") {
                "200 OK"
            } else {
                "403 Forbidden"
            };
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let said = tokio::runtime::Runtime::new().expect("runtime").block_on(
        gitsync::mirror::reach::anonymous_problem(&format!(
            "http://127.0.0.1:{port}/bucket/team/api"
        )),
    );
    let said = said.expect("a word about the policy");
    assert!(
        said.contains("allow s3:ListBucket on the bucket for this prefix too"),
        "{said}"
    );
}
