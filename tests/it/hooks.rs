//! `gitsync hooks install|uninstall|status` on real repositories: a user's pre-push hook
//! is chained (same arguments and input, and its veto still stops the push),
//! `core.hooksPath` and linked worktrees are honoured, and uninstall restores the user's
//! hook byte for byte.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Env;

const USER_HOOK: &str = "#!/bin/sh\n# my own hook\necho \"$@\" >\"$(dirname \"$0\")/../seen-args\"\ncat >\"$(dirname \"$0\")/../seen-input\"\n[ ! -e \"$(dirname \"$0\")/../veto\" ]\n";

fn hooks(env: &Env, home: &Path, root: &Path, args: &[&str]) -> (bool, String) {
    let mut full = vec!["hooks"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--root", root.to_str().expect("utf8")]);
    let out = env.gitsync(home, &full);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_user_hook_in_core_hooks_path_is_chained_keeps_its_veto_and_comes_back_exactly() {
    let env = Env::new();
    let (bare, clone) = env.remote_and_clone("proj", "root/proj");
    let home = env.home("a");
    let root = env.path("root");
    // The user's hooks live in a folder of their own, named by core.hooksPath.
    let custom = clone.join("my-hooks");
    std::fs::create_dir_all(&custom).expect("mkdir");
    env.git(&clone, &["config", "core.hooksPath", "my-hooks"]);
    let user_hook = custom.join("pre-push");
    std::fs::write(&user_hook, USER_HOOK).expect("write");
    std::fs::set_permissions(&user_hook, std::fs::Permissions::from_mode(0o750)).expect("chmod");

    let (ok, text) = hooks(&env, &home, &root, &["status"]);
    assert!(ok, "{text}");
    assert!(text.contains("a pre-push hook of yours"), "{text}");
    let (ok, text) = hooks(&env, &home, &root, &["install", "--force"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("my-hooks/pre-push"),
        "core.hooksPath honoured: {text}"
    );
    assert!(!clone.join(".git/hooks/pre-push").exists());
    let (ok, text) = hooks(&env, &home, &root, &["install", "--force"]);
    assert!(
        ok && text.contains("already installed"),
        "idempotent: {text}"
    );
    let (_, text) = hooks(&env, &home, &root, &["status"]);
    assert!(
        text.contains("installed (chains your pre-push hook)"),
        "{text}"
    );

    // The veto of the user's hook still stops the push.
    std::fs::write(clone.join("veto"), "").expect("veto");
    let before = env.git(&bare, &["rev-parse", "main"]);
    env.commit(&clone, "x.txt", "x\n", "vetoed");
    let push = env.git_as(&home, &clone, &["push", "-q", "origin", "main"]);
    assert!(!push.status.success(), "the user's hook vetoes the push");
    assert_eq!(env.git(&bare, &["rev-parse", "main"]), before);

    // Without the veto it goes through, and the user's hook saw git's arguments and input.
    std::fs::remove_file(clone.join("veto")).expect("unveto");
    let sha = env.head(&clone);
    let push = env.git_as(&home, &clone, &["push", "-q", "origin", "main"]);
    assert!(push.status.success(), "{push:?}");
    assert!(push.stderr.is_empty(), "nothing printed: {push:?}");
    assert_eq!(env.git(&bare, &["rev-parse", "main"]).trim(), sha);
    let args = std::fs::read_to_string(clone.join("seen-args")).expect("args");
    assert_eq!(args.trim(), format!("origin {}", bare.display()));
    let input = std::fs::read_to_string(clone.join("seen-input")).expect("input");
    assert!(
        input.starts_with(&format!("refs/heads/main {sha} refs/heads/main ")),
        "{input}"
    );

    // A linked worktree uses the same hook.
    let linked = env.path("linked");
    env.git(
        &clone,
        &[
            "worktree",
            "add",
            "-q",
            linked.to_str().expect("utf8"),
            "-b",
            "side",
        ],
    );
    let out = env.git(&linked, &["rev-parse", "--git-path", "hooks"]);
    assert!(out.trim().ends_with("my-hooks"), "{out}");

    let (ok, text) = hooks(&env, &home, &root, &["uninstall", "--force"]);
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read_to_string(&user_hook).expect("restored"),
        USER_HOOK
    );
    let mode = std::fs::metadata(&user_hook)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);
    assert!(!custom.join("pre-push.gitsync-chained").exists());
    let (_, text) = hooks(&env, &home, &root, &["uninstall", "--force"]);
    assert!(text.contains("your own hook left alone"), "{text}");
}

#[test]
fn a_repository_with_a_git_file_and_no_hook_gets_one_and_loses_it_cleanly() {
    let env = Env::new();
    let (bare, _) = env.remote_and_clone("sep", "scratch-clone");
    let root = env.path("root");
    let worktree = root.join("sep");
    let git_dir = env.path("gitdirs/sep.git");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::create_dir_all(git_dir.parent().expect("parent")).expect("mkdir");
    env.git(
        &root,
        &[
            "clone",
            "-q",
            "--separate-git-dir",
            git_dir.to_str().expect("utf8"),
            bare.to_str().expect("utf8"),
            "sep",
        ],
    );
    let home = env.home("a");
    let (ok, text) = hooks(&env, &home, &root, &["install", "sep"]);
    assert!(ok, "{text}");
    let hook = git_dir.join("hooks/pre-push");
    let body = std::fs::read_to_string(&hook).expect("installed in the real git dir");
    assert!(body.contains("gitsync-managed-hook"));
    assert!(body.contains(common::BIN), "calls this binary: {body}");
    // The hook never fails a push, even with no daemon and gitsync gone from its path.
    std::fs::write(&hook, body.replace(common::BIN, "/nonexistent/gitsync")).expect("write");
    env.commit(&worktree, "y.txt", "y\n", "pushed without gitsync");
    let push = env.git_as(&home, &worktree, &["push", "-q", "origin", "main"]);
    assert!(push.status.success() && push.stderr.is_empty(), "{push:?}");
    let (ok, text) = hooks(&env, &home, &root, &["status", "sep"]);
    assert!(ok && text.contains("outdated"), "{text}");
    let (ok, text) = hooks(&env, &home, &root, &["uninstall", "sep"]);
    assert!(ok && text.contains("removed"), "{text}");
    assert!(!hook.exists());
    let (ok, text) = hooks(&env, &home, &root, &["install", "nope"]);
    assert!(!ok && text.contains("nope"), "{text}");
}

/// A listener at the daemon's socket that never accepts, with its backlog already full: a
/// blocking `connect` would wait forever.
fn wedged_listener(socket: &Path) -> (std::os::fd::OwnedFd, std::os::unix::net::UnixStream) {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(socket.parent().expect("parent")).expect("mkdir");
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    bind(fd.as_raw_fd(), &UnixAddr::new(socket).expect("addr")).expect("bind");
    listen(&fd, Backlog::new(0).expect("backlog")).expect("listen");
    // One connection that is never accepted fills the backlog.
    let first = std::os::unix::net::UnixStream::connect(socket).expect("first connect");
    (fd, first)
}

#[test]
fn a_wedged_listener_never_holds_a_push_and_another_home_still_reaches_the_installer() {
    let env = Env::new();
    let (_bare, clone) = env.remote_and_clone("w", "root/w");
    let home = env.home("a");
    let root = env.path("root");
    let (ok, text) = hooks(&env, &home, &root, &["install"]);
    assert!(ok, "{text}");
    let socket = home.join(".gitsync/gitsync.sock");
    let (_listener, _first) = wedged_listener(&socket);

    // The push runs with another HOME (sudo, a container): the hook still hands over to
    // the daemon that installed it, here its spool, since the socket is wedged.
    let other = env.home("other");
    let mut times = Vec::new();
    for i in 0..3 {
        env.commit(&clone, "a.txt", &format!("wedged {i}\n"), "wedged");
        let start = std::time::Instant::now();
        let out = env.git_as(&other, &clone, &["push", "-q", "origin", "main"]);
        times.push(start.elapsed());
        assert!(
            out.status.success(),
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let slowest = times.iter().max().expect("times");
    assert!(
        *slowest < std::time::Duration::from_secs(1),
        "a push waited {slowest:?} for a wedged gitsync"
    );
    let spooled = std::fs::read_dir(home.join(".gitsync/spool"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        spooled, 3,
        "pushes not handed to the installing user's gitsync"
    );
    assert!(
        !other.join(".gitsync").exists(),
        "the hook used the pushing HOME instead of the installer's"
    );
}
