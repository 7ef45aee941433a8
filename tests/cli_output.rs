//! Small promises of the command line: a closed pipe ends a listing quietly, and usage
//! errors exit 2.

mod common;

use std::process::Stdio;

use common::Env;

#[test]
fn a_closed_pipe_ends_status_quietly() {
    let env = Env::new();
    let home = env.home("pipe");
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    env.clone_of(&env.remote_and_clone("r", "seed").0, "root/r");
    common::host_config(&env, "pipe", &root, &env.path("hub"));
    env.sync_root(&home);
    // `gitsync status | head -1` where the reader is already gone: the first write meets a
    // closed pipe.
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let out = env
        .gitsync_command(&home, &["status"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "ended by {:?}: {stderr}",
        out.status
    );
}

#[test]
fn hooks_status_of_an_unknown_repository_is_a_usage_error() {
    let env = Env::new();
    let home = env.home("usage");
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let out = env.gitsync(
        &home,
        &[
            "hooks",
            "status",
            "--root",
            root.to_str().expect("utf8"),
            "nosuch",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_configuration_and_a_bad_root_say_what_to_do() {
    let env = Env::new();
    let home = env.home("fresh");
    let out = env.gitsync(&home, &["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no configuration")
            && stderr.contains("gitsync init")
            && stderr.contains("--root"),
        "{stderr}"
    );
    let out = env.gitsync(&home, &["sync", "--root", "/nonexistent-gitsync-root"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--root: /nonexistent-gitsync-root is not an existing folder"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("config.yml"),
        "a command-line problem names no file: {stderr}"
    );
}
