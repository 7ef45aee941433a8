//! Small promises of the command line: a closed pipe ends a listing quietly, and usage
//! errors exit 2.

use crate::common;

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

/// An error is one line saying what went wrong, then `hint:` lines saying what to do.
#[test]
fn an_error_is_one_line_and_what_to_do_follows_as_hints() {
    let env = Env::new();
    let home = env.home("hints");
    let first = env.gitsync(&home, &["init"]);
    assert!(first.status.success(), "{first:?}");
    let again = env.gitsync(&home, &["init"]);
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("gitsync: ") && lines[0].ends_with("config.yml exists already"),
        "{stderr}"
    );
    assert_eq!(lines[1], "hint: pass --force to replace it", "{stderr}");
    // A config error: exit code 2, and the hint that writes an example.
    let config = home.join(".gitsync/config.yml");
    std::fs::write(&config, "root: [\n").expect("write");
    let broken = env.gitsync(&home, &["status"]);
    let stderr = String::from_utf8_lossy(&broken.stderr).to_string();
    assert_eq!(broken.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("hint: `gitsync init`")),
        "{stderr}"
    );
}

#[test]
fn sync_says_what_it_did_unless_quiet() {
    let env = Env::new();
    let home = env.home("says");
    let root = env.path("root");
    let (bare, _) = env.remote_and_clone("moving", "root/moving");
    env.remote_and_clone("still", "root/still");
    let root_arg = root.to_str().expect("utf8").to_string();
    let out = env.gitsync(&home, &["sync", "--root", &root_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "2 repositories: 2 up to date", "{stdout}");
    let pushed = env.push_new_commit(&bare, "n.txt", "new\n");
    let out = env.gitsync(&home, &["sync", "--root", &root_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("moving: fast-forwarded main ")
            && stdout.contains(&format!("..{} (1 commit)", &pushed[..7])),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 repositories: 1 up to date, 1 fast-forwarded"),
        "{stdout}"
    );
    env.push_new_commit(&bare, "m.txt", "more\n");
    let out = env.gitsync(&home, &["sync", "--quiet", "--root", &root_arg]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn completions_go_to_standard_output() {
    let env = Env::new();
    let home = env.home("comp");
    for shell in ["bash", "zsh", "fish"] {
        let out = env.gitsync(&home, &["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("gitsync") && text.contains("deploy"),
            "{shell}: {text}"
        );
        // Only what a user types: not the commands gitsync and its hooks call.
        for internal in ["fast-forward-helper", "hook pre-push", "generate"] {
            let word = internal.split(' ').next().unwrap_or(internal);
            let offered = match shell {
                "fish" => text.contains(&format!("-a \"{word}\"")),
                _ => text.contains(&format!("{word})")) || text.contains(&format!("'{word}:")),
            };
            assert!(!offered, "{shell} completes {word}: {text}");
        }
    }
    assert_eq!(
        env.gitsync(&home, &["completions", "nosuch"]).status.code(),
        Some(2)
    );
}

/// A host that keeps no repository (`repositories: []`: it only runs mirrors, webhooks,
/// deploys or partition sync) needs no `root`, and nothing warns it about an empty root.
#[test]
fn a_host_that_keeps_no_repository_needs_no_root() {
    let env = Env::new();
    let home = env.home("relay");
    env.config(
        &home,
        &format!(
            "hostname: relay\nrepositories: []\nlocal:\n  path: {}\npull:\n  interval: 1h\n",
            env.path("hub").display()
        ),
    );
    let doctor = env.gitsync(&home, &["doctor"]);
    let said = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(said.contains("none kept on purpose"), "{said}");
    assert!(
        !said.contains("root:") && !said.contains("`root`") && !said.contains("fail"),
        "{said}"
    );
    let sync = env.gitsync(&home, &["sync"]);
    let said = String::from_utf8_lossy(&sync.stderr).to_string();
    assert!(sync.status.success(), "{said}");
    assert!(!said.contains("warning"), "{said}");
    let mut daemon = env.spawn(&home, &[]);
    daemon.wait_log("ready", std::time::Duration::from_secs(30));
    assert!(
        !daemon.log_text().contains("no repositories under the root"),
        "{}",
        daemon.log_text()
    );
    let status = env.gitsync(&home, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let said = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(said.contains("daemon: running"), "{said}");
    assert!(!said.contains("is `gitsync run` running?"), "{said}");
    assert!(said.contains("this host keeps none"), "{said}");
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
}

/// Times are shown in the machine's time zone by default, as `git log` shows them (they
/// were UTC unless `timezone` was set); `timezone` still wins.
#[test]
fn status_shows_times_in_the_machines_time_zone() {
    let env = Env::new();
    let home = env.home("tz");
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    env.clone_of(&env.remote_and_clone("r", "seed").0, "root/r");
    common::host_config(&env, "tz", &root, &env.path("hub"));
    env.sync_root(&home);
    let status = |tz: &str| {
        let out = env
            .gitsync_command(&home, &["status"])
            .env("TZ", tz)
            .output()
            .expect("status");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let tokyo = status("Asia/Tokyo");
    assert!(tokyo.contains("JST"), "{tokyo}");
    assert!(!tokyo.contains("UTC"), "{tokyo}");
    let config = home.join(".gitsync/config.yml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}timezone: UTC\n")).expect("write");
    assert!(status("Asia/Tokyo").contains("UTC"));
}

/// Completion offers the names a command takes, asked of `gitsync names` when the shell
/// completes: repositories after `forget`, hosts after `--host`, deploys after `deploy`
/// (bash is run for real; zsh and fish are checked for the functions that ask).
#[test]
fn completion_offers_repository_host_deploy_and_mirror_names() {
    let env = Env::new();
    let home = env.home("names");
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    env.clone_of(&env.remote_and_clone("r", "seed").0, "root/api");
    env.config(
        &home,
        &format!(
            "hostname: host-names\nroot: {}\nlocal:\n  path: {}\npull:\n  interval: 1h\nmirrors:\n  - name: backup\n    source: {}\n    target: file://{}\ndeploy:\n  - name: site\n    repo: api\n    targets: [{{name: web, host: h, path: /srv/site}}]\n",
            root.display(),
            env.path("hub").display(),
            root.join("api").display(),
            env.path("mirror").display()
        ),
    );
    env.sync_root(&home);
    for (kind, want) in [
        ("repos", "api"),
        ("hosts", "host-names"),
        ("deploys", "site"),
        ("mirrors", "backup"),
    ] {
        let out = env.gitsync(&home, &["names", kind]);
        assert!(out.status.success(), "{kind}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{want}\n"),
            "{kind}"
        );
    }
    let bin_dir = std::path::Path::new(common::BIN)
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let complete = |words: &str| {
        let script = format!(
            "source <(gitsync completions bash)\nCOMP_WORDS=({words} \"\"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"{words} \"; COMP_POINT=${{#COMP_LINE}}\n_gitsync_with_names gitsync \"\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
        );
        let out = env
            .gitsync_command(&home, &[])
            .get_envs()
            .fold(std::process::Command::new("bash"), |mut c, (k, v)| {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
                c
            })
            .env("PATH", &path)
            .args(["-c", &script])
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let offered = complete("gitsync forget");
    assert!(offered.lines().any(|l| l == "api"), "forget: {offered}");
    let offered = complete("gitsync status --host");
    assert_eq!(offered.trim(), "host-names", "--host: {offered}");
    let offered = complete("gitsync deploy");
    assert!(offered.lines().any(|l| l == "site"), "deploy: {offered}");
    let offered = complete("gitsync mirror run");
    assert!(
        offered.lines().any(|l| l == "backup"),
        "mirror run: {offered}"
    );
    for shell in ["zsh", "fish"] {
        let out = env.gitsync(&home, &["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        for kind in ["repos", "hosts", "deploys", "mirrors"] {
            assert!(
                text.contains(&format!("gitsync names {kind}")),
                "{shell} does not ask for {kind}"
            );
        }
    }
}

/// Issue 25, item 4: `status --watch` shows the states again when they change, until it
/// is stopped; with `--json`, one JSON array a line.
#[test]
fn status_watch_shows_a_change_without_being_run_again() {
    let env = Env::new();
    let home = env.home("watch");
    let root = env.path("root");
    std::fs::create_dir_all(&root).expect("root");
    let repo = env.clone_of(&env.remote_and_clone("r", "seed").0, "root/r");
    common::host_config(&env, "watch", &root, &env.path("hub"));
    env.sync_root(&home);
    let watch = |json: bool, name: &str| {
        let file = env.path(name);
        let mut args = vec!["status", "--watch", "--interval", "100ms"];
        if json {
            args.push("--json");
        }
        let child = env
            .gitsync_command(&home, &args)
            .stdout(std::fs::File::create(&file).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("status --watch");
        (child, file)
    };
    let (mut table, table_out) = watch(false, "table.txt");
    let (mut json, json_out) = watch(true, "json.txt");
    let read = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
    common::wait_for("the first view", std::time::Duration::from_secs(30), || {
        (read(&table_out).contains(" r ") || read(&table_out).contains(" r\n"))
            .then_some(())
            .filter(|()| read(&json_out).contains("\"repo\""))
    });
    assert!(!read(&table_out).contains("ahead"), "{}", read(&table_out));
    // A commit of this machine's own; a sync records it. Nobody runs status again.
    env.commit(&repo, "a.txt", "edited\n", "local work");
    env.sync_root(&home);
    common::wait_for(
        "the change shown",
        std::time::Duration::from_secs(30),
        || {
            let lines: Vec<serde_json::Value> = read(&json_out)
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON array a line"))
                .collect();
            let ahead = lines
                .last()?
                .as_array()?
                .iter()
                .any(|s| s["state"] == "ahead");
            (ahead && read(&table_out).contains("ahead")).then_some(())
        },
    );
    for child in [&mut table, &mut json] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        child.wait().expect("stopped by its id");
    }
}

/// What a `gitsync sync` started from a terminal runs has no terminal to ask on, whether
/// gitsync was started by a shell there (it then lets go of the terminal) or leads the
/// terminal's session itself (its children then make sessions of their own): the ssh that
/// git starts for the remote can neither see nor open a controlling terminal, and is not
/// in the terminal's foreground process group. `script` (util-linux, in Debian's
/// essential `bsdutils`) gives each run a terminal of its own.
#[test]
fn what_sync_starts_from_a_terminal_has_no_terminal_to_ask_on() {
    let env = Env::new();
    let home = env.home("terminal");
    let (_bare, clone) = env.remote_and_clone("asks", "root/asks");
    let root = env.path("root");
    let fake_ssh = env.path("fake-ssh");
    let seen = env.path("ssh-saw");
    // proc(5): after the command's name, the fields are state, ppid, pgrp, session, tty_nr
    // and tpgid (the foreground process group of its terminal, -1 without one).
    std::fs::write(
        &fake_ssh,
        format!(
            "#!/bin/sh\n\
             fields=$(sed 's/.*) //' /proc/$$/stat | cut -d ' ' -f 3,5,6)\n\
             if (: </dev/tty) 2>/dev/null; then tty=opened; else tty=none; fi\n\
             echo \"$fields $tty\" >> {}\n\
             exit 1\n",
            seen.display()
        ),
    )
    .expect("write the fake ssh");
    std::fs::set_permissions(
        &fake_ssh,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    env.git(
        &clone,
        &[
            "remote",
            "set-url",
            "origin",
            "ssh://gitsync-test.invalid/asks.git",
        ],
    );
    env.git(
        &clone,
        &[
            "config",
            "core.sshCommand",
            fake_ssh.to_str().expect("utf8"),
        ],
    );
    let sync = format!("{} sync --root {}", common::BIN, root.display());
    // By a shell at the terminal (which must not exec it: a command after it), then as
    // the terminal session's leader (`exec`).
    let mut runs_seen = 0;
    for line in [format!("{sync}; exit $?"), format!("exec {sync}")] {
        let out = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GITSYNC_CONFIG")
            .env_remove("GITSYNC_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("script runs (apt-get install bsdutils)");
        assert!(
            !out.status.success(),
            "the fetch through the fake ssh must fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let seen_now = std::fs::read_to_string(&seen).map_or(0, |t| t.lines().count());
        assert!(seen_now > runs_seen, "ssh did not run for `{line}`");
        runs_seen = seen_now;
    }
    let text = std::fs::read_to_string(&seen).expect("the fake ssh ran");
    let lines: Vec<&str> = text.lines().collect();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[1], "0", "ssh had a controlling terminal: {line}");
        assert_eq!(
            fields[2], "-1",
            "ssh saw a terminal's process group: {line}"
        );
        assert_eq!(fields[3], "none", "ssh could open /dev/tty: {line}");
    }
}
