//! The push -> pull path with two daemons (two HOMEs, one hub, real bare remotes): the
//! pre-push hook hands the push to A's daemon, which publishes it once it landed; B's
//! daemon fetches and fast-forwards. `pull.interval: 1h`, so only events explain a pull.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Env, find, host_config, wait_for, wait_for_logged};

const WAIT: Duration = Duration::from_secs(20);

fn hook_installed(repo: &Path) -> bool {
    std::fs::read_to_string(repo.join(".git/hooks/pre-push"))
        .is_ok_and(|t| t.contains("gitsync-managed-hook"))
}

fn head_of(env: &Env, repo: &Path) -> String {
    env.head(repo)
}

/// Hosts `a` and `b` sharing one hub, each with a clone of the bare remote `proj` under its
/// own root. Returns (bare, a's clone, b's clone, a's HOME, b's HOME).
fn proj_on_two_hosts(env: &Env) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    let hub = env.path("hub");
    let (bare, a_clone) = env.remote_and_clone("proj", "root-a/proj");
    let b_clone = env.clone_of(&bare, "root-b/proj");
    let (home_a, home_b) = (env.home("a"), env.home("b"));
    host_config(env, "a", &env.path("root-a"), &hub);
    host_config(env, "b", &env.path("root-b"), &hub);
    (bare, a_clone, b_clone, home_a, home_b)
}

#[test]
fn a_push_on_a_brings_b_to_the_new_commit() {
    let env = Env::new();
    let (bare, a_clone, b_clone, home_a, home_b) = proj_on_two_hosts(&env);
    let hub = env.path("hub");
    // Same remote, different paths: matched by URL.
    let (tool_bare, a_tool) = env.remote_and_clone("tool", "root-a/work/tool");
    let b_tool = env.clone_of(&tool_bare, "root-b/elsewhere/tool-copy");
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    wait_for("hooks installed at start-up", WAIT, || {
        (hook_installed(&a_clone) && hook_installed(&a_tool)).then_some(())
    });

    let sha = env.commit(&a_clone, "new.txt", "from a\n", "from a");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    assert!(
        push.stderr.is_empty() && push.stdout.is_empty(),
        "push printed: {push:?}"
    );
    wait_for("B at the pushed commit", WAIT, || {
        (head_of(&env, &b_clone) == sha).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(b_clone.join("new.txt")).expect("pulled"),
        "from a\n"
    );

    let tool_sha = env.commit(&a_tool, "t.txt", "tool\n", "tool change");
    let push = env.git_as(&home_a, &a_tool, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    wait_for(
        "B's copy under another path at the pushed commit",
        WAIT,
        || (head_of(&env, &b_tool) == tool_sha).then_some(()),
    );

    // status on either host shows B at the new commit.
    for home in [&home_a, &home_b] {
        wait_for("status shows B up to date at the new commit", WAIT, || {
            let states = env.status(home, &[]);
            let b_state = find(&states, Some("host-b"), "proj")?;
            (b_state["head"] == sha.as_str() && b_state["state"] == "up_to_date").then_some(())
        });
    }

    // A push the remote rejects (its pre-receive hook says no) publishes nothing; nor does
    // one git refuses before the hook runs (not a fast-forward).
    let pre_receive = bare.join("hooks/pre-receive");
    std::fs::write(&pre_receive, "#!/bin/sh\necho no >&2\nexit 1\n").expect("write hook");
    std::fs::set_permissions(
        &pre_receive,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let rejected = env.commit(&a_clone, "other.txt", "refused\n", "refused by the remote");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(!push.status.success(), "the remote must refuse the push");
    a.wait_log("push did not land", WAIT);
    std::fs::remove_file(&pre_receive).expect("remove hook");
    env.git(&a_clone, &["reset", "-q", "--hard", "HEAD~2"]);
    let diverged = env.commit(&a_clone, "other.txt", "diverged\n", "diverged");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(!push.status.success(), "the diverged push must be rejected");
    std::thread::sleep(Duration::from_millis(300));
    let events = std::fs::read_to_string(hub.join("events/host-a.jsonl")).expect("events");
    assert!(
        events.contains(&sha),
        "the landed push was published: {events}"
    );
    for refused in [&rejected, &diverged] {
        assert!(
            !events.contains(refused.as_str()),
            "a rejected push was published: {events}"
        );
    }
    assert_eq!(head_of(&env, &b_clone), sha);

    // A tag and a branch deletion are published; B fetches them and deletes nothing.
    env.git(&a_clone, &["reset", "-q", "--hard", &sha]);
    env.git(&a_clone, &["tag", "-a", "v1", "-m", "release"]);
    let push = env.git_as(
        &home_a,
        &a_clone,
        &["push", "-q", "origin", "v1", "main:topic"],
    );
    assert!(push.status.success(), "push: {push:?}");
    wait_for("B fetched the tag and the branch", WAIT, || {
        let tags = env.git(&b_clone, &["tag", "--list"]);
        let topic = env.git_try(&b_clone, &["rev-parse", "--verify", "-q", "origin/topic"]);
        (tags.contains("v1") && topic.status.success()).then_some(())
    });
    env.git(&b_clone, &["branch", "topic", "origin/topic"]);
    let push = env.git_as(
        &home_a,
        &a_clone,
        &["push", "-q", "origin", "--delete", "topic"],
    );
    assert!(push.status.success(), "push: {push:?}");
    wait_for("the deletion event published", WAIT, || {
        let events = std::fs::read_to_string(hub.join("events/host-a.jsonl")).ok()?;
        events
            .lines()
            .any(|l| {
                l.contains("refs/heads/topic")
                    && l.contains("\"new\":\"0000000000000000000000000000000000000000\"")
            })
            .then_some(())
    });
    b.wait_log(
        "ref_name=refs/heads/topic new=0000000000000000000000000000000000000000",
        WAIT,
    );
    let local = env.git(&b_clone, &["branch", "--list", "topic"]);
    assert!(
        local.contains("topic"),
        "B's local branch must survive a remote deletion"
    );
    assert!(!b.log_text().contains("ERROR"), "{}", b.log_text());
}

#[test]
fn a_push_while_the_daemon_is_down_succeeds_quietly_and_reaches_b_later() {
    let env = Env::new();
    let (bare, a_clone, b_clone, home_a, home_b) = proj_on_two_hosts(&env);
    let mut a = env.spawn(&home_a, &[]);
    a.wait_log("ready", WAIT);
    wait_for("hook installed", WAIT, || {
        hook_installed(&a_clone).then_some(())
    });
    assert_eq!(a.stop(), Some(0));
    assert!(
        !home_a.join(".gitsync/gitsync.sock").exists(),
        "socket removed at stop"
    );

    let b = env.spawn(&home_b, &[]);
    b.wait_log("ready", WAIT);
    let sha = env.commit(&a_clone, "late.txt", "late\n", "while down");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    assert!(
        push.stderr.is_empty() && push.stdout.is_empty(),
        "push printed: {push:?}"
    );
    assert_eq!(env.git(&bare, &["rev-parse", "main"]).trim(), sha);
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(head_of(&env, &b_clone), sha, "nothing can have told B yet");

    let a = env.spawn(&home_a, &[]);
    wait_for_logged(
        "B catches up once A's daemon is back",
        WAIT,
        &[&a, &b],
        || (head_of(&env, &b_clone) == sha).then_some(()),
    );
    let spool = home_a.join(".gitsync/spool");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the spooled push is removed once handled");
}

#[test]
fn a_dirty_b_is_not_pulled_and_says_why() {
    let env = Env::new();
    let (_, a_clone, b_clone, home_a, home_b) = proj_on_two_hosts(&env);
    env.write(&b_clone, "a.txt", "local edit, not committed\n");
    let before = head_of(&env, &b_clone);
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    wait_for("hook installed", WAIT, || {
        hook_installed(&a_clone).then_some(())
    });
    let sha = env.commit(&a_clone, "new.txt", "x\n", "from a");
    let push = env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    let state = wait_for("B shows behind with the reason", WAIT, || {
        let states = env.status(&home_b, &[]);
        let s = find(&states, Some("host-b"), "proj")?.clone();
        (s["state"] == "behind").then_some(s)
    });
    assert_eq!(state["behind"], 1);
    let reason = state["pull_blocked"].as_str().expect("a reason");
    assert!(reason.contains("unstaged"), "{reason}");
    assert_eq!(head_of(&env, &b_clone), before);
    assert_ne!(before, sha);
    assert_eq!(
        std::fs::read_to_string(b_clone.join("a.txt")).expect("kept"),
        "local edit, not committed\n"
    );
}

#[test]
fn the_same_event_twice_is_one_fetch_and_pull_and_garbage_is_skipped() {
    let env = Env::new();
    let hub = env.path("hub");
    let (bare, b_clone) = env.remote_and_clone("proj", "root-b/proj");
    let home_b = env.home("b");
    host_config(&env, "b", &env.path("root-b"), &hub);
    let b = env.spawn(&home_b, &[]);
    b.wait_log("ready", WAIT);
    let old = head_of(&env, &b_clone);
    let sha = env.push_new_commit(&bare, "c.txt", "c\n");
    let event = serde_json::json!({
        "id": "same-id", "host": "host-a", "repo": "proj",
        "remote_url": bare.display().to_string(), "ref": "refs/heads/main",
        "old": old, "new": sha, "at": "2026-11-21T00:00:00Z"
    })
    .to_string();
    let log = hub.join("events/host-a.jsonl");
    std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
    std::fs::write(&log, format!("{event}\nnot json at all\n{event}\n")).expect("write");
    wait_for("B pulled", WAIT, || {
        (head_of(&env, &b_clone) == sha).then_some(())
    });
    // Delivered once more, later: still nothing to do.
    let mut text = std::fs::read_to_string(&log).expect("read");
    text.push_str(&format!("{event}\n"));
    std::fs::write(&log, text).expect("append");
    wait_for("every delivery acknowledged", WAIT, || {
        let offset = std::fs::read_to_string(hub.join("offsets/host-b/host-a")).ok()?;
        let len = std::fs::metadata(&log).ok()?.len();
        // `<bytes> <inode of the log>`.
        let bytes = offset.split_whitespace().next()?;
        (bytes.parse::<u64>().ok()? == len).then_some(())
    });
    let text = b.log_text();
    assert_eq!(text.matches("fast-forwarded").count(), 1, "{text}");
    assert_eq!(text.matches("push event handled").count(), 1, "{text}");
    assert!(text.contains("malformed event skipped"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn a_flood_of_events_for_one_repository_delays_no_other() {
    let env = Env::new();
    let (bare, _a_clone, _b_clone, home_a, home_b) = proj_on_two_hosts(&env);
    let hub = env.path("hub");
    let (_other_bare, a_other) = env.remote_and_clone("other", "root-a/other");
    let b_other = env.clone_of(&_other_bare, "root-b/other");
    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    wait_for("hooks installed at start-up", WAIT, || {
        hook_installed(&a_other).then_some(())
    });
    // 10,000 well-formed events for proj, as if host a had sent them, all different.
    let mut flood = String::new();
    for i in 0..10_000u32 {
        let new = format!("{:040x}", 0xabc000 + i);
        let event = gitsync::model::PushEvent::new(
            "host-a",
            "proj",
            &bare.display().to_string(),
            "refs/heads/main",
            gitsync::model::ZERO_OID,
            &new,
        );
        flood.push_str(&serde_json::to_string(&event).expect("json"));
        flood.push('\n');
    }
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(hub.join("events/host-a.jsonl"))
            .expect("open the log");
        log.write_all(flood.as_bytes()).expect("flood");
    }
    // A real push of the other repository, right behind the flood.
    let sha = env.commit(&a_other, "o.txt", "other\n", "other change");
    let push = env.git_as(&home_a, &a_other, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "push: {push:?}");
    wait_for_logged("B's other at the pushed commit", WAIT, &[&a, &b], || {
        (head_of(&env, &b_other) == sha).then_some(())
    });
    // The periodic fetch is an hour away (host_config), so only the push itself can have
    // brought it; how long that took is the benchmarks' business (a wall-clock bound here
    // failed on a loaded machine).
    // The flood cost a handful of fetches, not ten thousand.
    let fetches = b
        .log_text()
        .lines()
        .filter(|l| l.contains("push event handled") && l.contains("repo=proj"))
        .count();
    assert!(fetches <= 20, "{fetches} syncs for one flooded repository");
}

#[test]
fn hooks_folders_in_the_worktree_or_shared_are_left_alone_and_pushes_still_arrive() {
    let env = Env::new();
    let (_bare, a_clone, b_clone, home_a, home_b) = proj_on_two_hosts(&env);
    // proj keeps its hooks in a tracked folder (husky, lefthook, .githooks).
    env.write(&a_clone, ".githooks/post-commit", "#!/bin/sh\nexit 0\n");
    env.git(&a_clone, &["add", ".githooks"]);
    env.git(&a_clone, &["commit", "-qm", "tracked hooks"]);
    env.git_as(&home_a, &a_clone, &["push", "-q", "origin", "main"]);
    env.git(&a_clone, &["config", "core.hooksPath", ".githooks"]);
    env.git(&b_clone, &["pull", "-q", "--ff-only"]);
    // tool's hooks folder is the machine-wide one of host a's user.
    let (tool_bare, a_tool) = env.remote_and_clone("tool", "root-a/tool");
    let b_tool = env.clone_of(&tool_bare, "root-b/tool");
    let shared = env.path("shared-hooks");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let gitconfig = home_a.join(".gitconfig");
    let mut text = std::fs::read_to_string(&gitconfig).expect("read");
    text.push_str(&format!("[core]\n\thooksPath = {}\n", shared.display()));
    std::fs::write(&gitconfig, text).expect("write");

    let a = env.spawn(&home_a, &[]);
    let b = env.spawn(&home_b, &[]);
    a.wait_log("ready", WAIT);
    b.wait_log("ready", WAIT);
    assert!(
        !a_clone.join(".githooks/pre-push").exists(),
        "wrote into a tracked hooks folder"
    );
    assert!(
        !shared.join("pre-push").exists(),
        "wrote into the machine-wide hooks folder"
    );
    let status = env.git(&a_clone, &["status", "--porcelain"]);
    assert!(status.is_empty(), "proj made dirty: {status}");
    let out = env.gitsync(&home_a, &["hooks", "status"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("proj: missing; core.hooksPath is inside the worktree")
            && said.contains("tool: missing; core.hooksPath is shared")
            && said.contains("through the watcher"),
        "{said}"
    );

    // Pushes in both reach host b through the watcher alone.
    for (a_repo, b_repo) in [(&a_clone, &b_clone), (&a_tool, &b_tool)] {
        let sha = env.commit(a_repo, "w.txt", "seen by the watcher\n", "hookless");
        let push = env.git_as(&home_a, a_repo, &["push", "-q", "origin", "main"]);
        assert!(push.status.success(), "push: {push:?}");
        wait_for_logged(
            "b at the commit pushed without a hook",
            WAIT,
            &[&a, &b],
            || (head_of(&env, b_repo) == sha).then_some(()),
        );
    }
    assert!(
        a.log_text().contains("seen_by=\"watcher\"") || a.log_text().contains("seen_by=watcher")
    );
}

/// Issue 24, item 3: with `pull.poll`, a push made without gitsync (plain git, no event)
/// is pulled at the next poll, and a poll that finds nothing new fetches nothing (git
/// writes FETCH_HEAD on every fetch).
#[test]
fn a_poll_fetches_only_when_a_tracked_ref_moved() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("proj", "root/proj");
    let home = env.home("a");
    env.config(
        &home,
        &format!(
            "hostname: host-a\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\n  poll: 5s\n",
            env.path("root").display(),
            env.path("hub").display()
        ),
    );
    let daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", Duration::from_secs(60));
    let fetch_head = clone.join(".git/FETCH_HEAD");
    let stamp = || {
        std::fs::metadata(&fetch_head)
            .and_then(|m| m.modified())
            .ok()
    };
    let before = stamp();
    // Two polls with nothing new.
    common::wait_for_logged("two polls", Duration::from_secs(60), &[&daemon], || {
        (daemon.log_text().matches("poll done").count() >= 2).then_some(())
    });
    assert_eq!(stamp(), before, "a poll with nothing new fetched");
    let sha = env.push_new_commit(&bare, "later.txt", "pushed without gitsync\n");
    common::wait_for_logged(
        "the clone at the pushed commit",
        Duration::from_secs(60),
        &[&daemon],
        || (env.head(&clone) == sha).then_some(()),
    );
    assert!(
        daemon.log_text().contains("poll: a tracked ref moved"),
        "{}",
        daemon.log_text()
    );
}
