//! Bad configuration exits 2, names the file, line and key, and writes nothing.

use crate::common;

use std::path::Path;

use common::Env;

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Runs `gitsync run` and `gitsync sync` on `config` and checks both refuse it.
fn refused(env: &Env, name: &str, config: &str, must_say: &[&str]) {
    let home = env.home(name);
    let path = home.join("config.yml");
    std::fs::write(&path, config).expect("write config");
    let before = listing(&home);
    for command in ["run", "sync"] {
        let out = env.gitsync(&home, &["--config", path.to_str().expect("utf8"), command]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}/{command}: exit code; stderr: {stderr}"
        );
        assert!(
            stderr.contains(path.to_str().expect("utf8")),
            "{name}: names the file: {stderr}"
        );
        for needle in must_say {
            assert!(
                stderr.contains(needle),
                "{name}: expected {needle:?} in: {stderr}"
            );
        }
    }
    assert_eq!(listing(&home), before, "{name}: something was written");
}

#[test]
fn bad_configs_exit_2_with_file_line_and_key() {
    let env = Env::new();
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    let root = root.display();
    refused(
        &env,
        "unknown-key",
        &format!("root: {root}\ncolour: blue\n"),
        &[":2: colour: unknown field `colour`"],
    );
    refused(
        &env,
        "nested-unknown",
        &format!("root: {root}\npull:\n  fast_forward: true\n  intervall: 5m\n"),
        &[":4: pull.intervall: unknown field"],
    );
    refused(
        &env,
        "wrong-type",
        &format!("root: {root}\npull:\n  fast_forward: sometimes\n"),
        &[":3: pull.fast_forward: invalid type"],
    );
    refused(
        &env,
        "bad-duration",
        &format!("root: {root}\npull:\n  interval: soon\n"),
        &[":3: pull.interval: invalid duration \"soon\""],
    );
    refused(&env, "missing-root", "timezone: UTC\n", &["root: missing"]);
    // Issue 25: the observe and notify sections.
    refused(
        &env,
        "observe-and-notify",
        &format!(
            "root: {root}\nobserve:\n  listen: nope\nnotify:\n  - webhook: ftp://x\n  - desktop: true\n    webhook: https://ntfy.sh/t\n  - {{}}\n"
        ),
        &[
            ":3: observe.listen: \"nope\" is not an address",
            ":5: notify[0].webhook: \"ftp://x\" is not an http:// or https:// URL",
            ":6: notify[1]: a target is one of",
            ":8: notify[2]: a target is one of",
        ],
    );
    refused(
        &env,
        "root-not-there",
        "root: /nonexistent/gitsync-test\n",
        &[":1: root: /nonexistent/gitsync-test is not an existing folder"],
    );
    refused(
        &env,
        "invalid-yaml",
        &format!("root: {root}\nrepositories: [a, b\n"),
        &["invalid YAML"],
    );
    refused(
        &env,
        "all-at-once",
        &format!("root: {root}\nbogus: 1\ntimezone: Mars/Olympus\npull:\n  interval: soon\n"),
        &[
            ":2: bogus",
            ":3: timezone: unknown time zone",
            ":5: pull.interval",
        ],
    );
    let hooks = |mirror: &str| {
        format!(
            "root: {root}\nrepositories: []\nwebhooks:\n  mirrors:\n    - name: api\n      source: file:///src.git\n{mirror}"
        )
    };
    refused(
        &env,
        "webhook-backlog-unguarded",
        &hooks("      provider: backlog\n      target: https://example.invalid/t.git\n"),
        &[
            ":5: webhooks.mirrors[0].path_token_env: required for backlog",
            "webhooks.mirrors[0].allow_from: required for backlog",
        ],
    );
    refused(
        &env,
        "webhook-credential-in-url",
        &hooks(
            "      provider: github\n      secret_env: S\n      target: https://u:hunter2@example.invalid/t.git\n",
        ),
        &["webhooks.mirrors[0].target: carries a credential"],
    );
    refused(
        &env,
        "webhook-secret-twice",
        &hooks(
            "      provider: github\n      secret_env: S\n      secret_file: /s\n      target: https://example.invalid/t.git\n",
        ),
        &["webhooks.mirrors[0].secret_file: `secret_env` is set too"],
    );
    // Closed sets are enums of the schema: a word outside them is named with its line,
    // with the words that are allowed, and the other problems are reported with it.
    refused(
        &env,
        "closed-sets",
        &format!(
            "root: {root}\nrepositories: []\nwebhooks:\n  queue: kafka\n  mirrors:\n    - name: api\n      source: file:///src.git\n      provider: gitlabb\n      secret_env: S\n      target: https://example.invalid/t.git\ndeploy:\n  - name: site\n    repo: site\n    targets: [{{name: web, host: h, path: /srv/site}}]\n    scan:\n      tool: trufflehog\n"
        ),
        &[
            ":4: webhooks.queue: unknown variant `kafka`, expected `local` or `sqs`",
            ":8: webhooks.mirrors[0].provider: unknown variant `gitlabb`, expected one of `github`, `gitlab`",
            ":16: deploy[0].scan.tool: \"trufflehog\": use one of auto, gitleaks",
        ],
    );
    // The partition section is checked at load, not only when partition sync starts.
    refused(
        &env,
        "partition-without-store",
        &format!("root: {root}\npartition:\n  role: producer\n"),
        &[":3: partition.role: needs `partition.store`"],
    );
    refused(
        &env,
        "partition-bad-store",
        &format!("root: {root}\npartition:\n  store: https://bucket\n"),
        &[":3: partition.store: \"https://bucket\": use s3://bucket/prefix or file:///path"],
    );

    // A configuration file that cannot be read at all: a folder in its place.
    let home = env.home("unreadable");
    let path = home.join("config.yml");
    std::fs::create_dir_all(&path).expect("mkdir");
    let before = listing(&home);
    let out = env.gitsync(&home, &["--config", path.to_str().expect("utf8"), "sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "unreadable: {stderr}");
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
    assert_eq!(listing(&home), before);
}

#[test]
fn gitargus_config_loads_with_a_warning_for_python_bin() {
    let env = Env::new();
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    let home = env.home("argus");
    // Seed 002's example, with `root` pointing at a real folder and the local backend so
    // that no AWS account is needed to load it.
    let config = format!(
        "hostname: machine\nroot: {}\nrepositories:\n    - repo1\n    - project1/repo1\nbackend: local\naws:\n    dynamodb:\n        table: git\n    sqs:\n        queue: machine.fifo\n    sns:\n        topic:\n            arn: arn:aws:sns:{{region}}:{{userId}}:{{topicName}}\ntimezone: Europe/Budapest\npython: \n    bin: /usr/bin/python3.11\n",
        root.display()
    );
    env.config(&home, &config);
    let out = env.gitsync(&home, &["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("python.bin"),
        "warns about python.bin: {stderr}"
    );
    // The two repositories do not exist: they are reported, and the run fails with 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let states = env.status(&home, &[]);
    assert_eq!(states.len(), 2);
    assert!(
        states
            .iter()
            .all(|s| s["state"] == "error" && s["host"] == "machine")
    );
}

#[test]
fn init_writes_a_config_that_loads() {
    let env = Env::new();
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    let home = env.home("init");
    let out = env.gitsync(&home, &["init", "--root", root.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(home.join(".gitsync/config.yml")).expect("written");
    assert!(text.contains(root.to_str().expect("utf8")));
    let again = env.gitsync(&home, &["init"]);
    assert_eq!(again.status.code(), Some(1), "refuses to overwrite");
    let out = env.gitsync(&home, &["sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
