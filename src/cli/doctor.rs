//! `gitsync doctor`: checks the set-up and says what is wrong, each line `ok`, `warn` or
//! `fail`, with a hint for every problem.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use super::{Cli, CliError};
use crate::config::{BackendKind, Config};
use crate::discover::Repo;
use crate::git::hooks::{self, HookState};

/// Arguments of `gitsync doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder whose repositories to check (overrides `root` in the config file).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The printed report; remembers the worst level.
#[derive(Default)]
struct Report {
    worst: Option<Level>,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, detail: &str, hint: Option<&str>) {
        let word = match level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        println!("{word} {what}: {detail}");
        if let Some(hint) = hint {
            println!("     hint: {hint}");
        }
        self.worst = self.worst.max(Some(level));
    }
}

/// git's version as (major, minor), from `git --version`.
fn git_version() -> Option<(u32, u32)> {
    let out = Command::new("git").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_git(report: &mut Report) {
    match git_version() {
        Some(v) if v >= (2, 41) => report.line(Level::Ok, "git", &format!("{}.{}", v.0, v.1), None),
        Some(v) if v >= (2, 20) => report.line(
            Level::Warn,
            "git",
            &format!(
                "{}.{}: works, but every periodic fetch re-reads each repository",
                v.0, v.1
            ),
            Some("git 2.41 or newer reports what a fetch changed (`git fetch --porcelain`)"),
        ),
        Some(v) => report.line(
            Level::Fail,
            "git",
            &format!("{}.{} is too old", v.0, v.1),
            Some("install git 2.20 or newer"),
        ),
        None => report.line(
            Level::Fail,
            "git",
            "not found on PATH",
            Some("apt-get install git"),
        ),
    }
}

fn check_repos(report: &mut Report, repos: &[Repo], hooks_install: bool) {
    let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gitsync"));
    for repo in repos {
        let what = format!("repository {}", repo.name);
        if !repo.path.exists() {
            report.line(
                Level::Fail,
                &what,
                &format!("{} does not exist", repo.path.display()),
                Some("clone it there, or remove it from `repositories` in the config"),
            );
            continue;
        }
        let snapshot = crate::git::state::read("doctor", &repo.name, &repo.path);
        if let Some(err) = snapshot.state.error {
            report.line(
                Level::Fail,
                &what,
                &err,
                Some("check it with `git status` there"),
            );
            continue;
        }
        let hook = hooks::hooks_dir(&repo.path).map(|dir| hooks::state_in(&dir, &binary));
        match hook {
            Ok(HookState::Installed { .. }) => report.line(
                Level::Ok,
                &what,
                &format!("{}, pre-push hook installed", snapshot.state.state.as_str()),
                None,
            ),
            Ok(state) if hooks_install => report.line(
                Level::Warn,
                &what,
                &format!("pre-push hook {}", state.describe()),
                Some("`gitsync hooks install` (the daemon also does it when it starts)"),
            ),
            Ok(state) => report.line(
                Level::Ok,
                &what,
                &format!(
                    "pre-push hook {} (hooks.install is false)",
                    state.describe()
                ),
                None,
            ),
            Err(err) => report.line(Level::Fail, &what, &err.to_string(), None),
        }
    }
}

async fn check_backend(report: &mut Report, config: &Config) {
    let what = format!("backend {}", config.backend.as_str());
    let backend = match crate::backend::open(config).await {
        Ok(backend) => backend,
        Err(err) => {
            report.line(
                Level::Fail,
                &what,
                &err.to_string(),
                Some("fix the `aws` section"),
            );
            return;
        }
    };
    match backend.store.health().await {
        Ok(()) => report.line(Level::Ok, &what, "reachable", None),
        Err(err) => {
            let hint = match config.backend {
                BackendKind::Local => "check that the hub folder (local.path) is writable",
                BackendKind::Aws => {
                    "check the network, aws.endpoint_url, the region and the credentials; `gitsync aws setup` creates what is missing"
                }
            };
            report.line(
                Level::Fail,
                &what,
                &format!("unreachable: {err}"),
                Some(hint),
            );
            return;
        }
    }
    check_hostname(report, config, backend.store.as_ref()).await;
    if let (BackendKind::Aws, Some(aws)) = (config.backend, config.aws.as_ref()) {
        let names = crate::backend::aws::Names::of(aws, &config.hostname);
        let sdk = crate::backend::aws::sdk_config(aws).await;
        for (resource, problem) in crate::backend::aws::setup::check(&sdk, &names).await {
            match problem {
                None => report.line(Level::Ok, &resource, "exists", None),
                Some(problem) => report.line(
                    Level::Fail,
                    &resource,
                    &problem,
                    Some("`gitsync aws setup` creates it"),
                ),
            }
        }
    }
}

/// Whether another live machine publishes under this hostname.
async fn check_hostname(
    report: &mut Report,
    config: &Config,
    store: &dyn crate::backend::StateStore,
) {
    let what = format!("hostname {}", config.hostname);
    let me = crate::daemon::identity::me(&config.home);
    match store.hosts(Some(&config.hostname)).await {
        Err(err) => report.line(
            Level::Warn,
            &what,
            &format!("cannot read the host record: {err}"),
            None,
        ),
        Ok(records) => match records
            .iter()
            .find_map(|r| crate::daemon::identity::conflict(&me, r, chrono::Utc::now()))
        {
            Some(taken) => report.line(
                Level::Fail,
                &what,
                &taken,
                Some("set `hostname:` in this machine's config to a name no other machine uses"),
            ),
            None => report.line(
                Level::Ok,
                &what,
                &format!("used by this machine only ({}, id {})", me.machine, me.id),
                None,
            ),
        },
    }
}

fn check_inotify(report: &mut Report, repos: &[Repo]) {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok());
    let needed: usize = repos
        .iter()
        .filter(|r| r.path.exists())
        .map(|r| crate::daemon::watcher::worktree_dirs(&r.path).len() + 2)
        .sum();
    let hint =
        "sudo sysctl fs.inotify.max_user_watches=524288 (and a file in /etc/sysctl.d/ to keep it)";
    match limit {
        None => report.line(Level::Warn, "inotify", "cannot read the watch limit", None),
        Some(limit) if needed > limit => report.line(
            Level::Fail,
            "inotify",
            &format!("{needed} watches needed, the limit is {limit}"),
            Some(hint),
        ),
        Some(limit) if needed * 10 > limit * 8 => report.line(
            Level::Warn,
            "inotify",
            &format!("{needed} watches needed of a limit of {limit} (shared with other programs)"),
            Some(hint),
        ),
        Some(limit) => report.line(
            Level::Ok,
            "inotify",
            &format!("{needed} watches needed, the limit is {limit}"),
            None,
        ),
    }
}

fn check_daemon(report: &mut Report, home: &Path) {
    match crate::daemon::pidfile::running(home) {
        Some(info) => report.line(
            Level::Ok,
            "daemon",
            &format!("running (pid {}, version {})", info.pid, info.version),
            None,
        ),
        None => report.line(
            Level::Warn,
            "daemon",
            "not running",
            Some("`gitsync run`, `gitsync run --daemon`, or the systemd unit"),
        ),
    }
}

fn is_enabled(args: &[&str]) -> bool {
    Command::new("systemctl")
        .args(args)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "enabled")
}

fn check_unit(report: &mut Report) {
    let user = crate::daemon::identity::user_name();
    let system_unit = format!("gitsync@{}.service", user.as_deref().unwrap_or("USER"));
    if Command::new("systemctl").arg("--version").output().is_err() {
        report.line(Level::Warn, "systemd unit", "systemctl not found", None);
    } else if !std::path::Path::new("/run/systemd/system").exists() {
        // systemd's own test (sd_booted(3)): installed, but not the init system here.
        report.line(
            Level::Warn,
            "systemd unit",
            "systemd is not running on this machine (a container?)",
            Some("start the daemon with `gitsync run --daemon`, or from your init system"),
        );
    } else if is_enabled(&["is-enabled", &system_unit]) {
        report.line(
            Level::Ok,
            "systemd unit",
            &format!("{system_unit} enabled"),
            None,
        );
    } else if is_enabled(&["--user", "is-enabled", "gitsync.service"]) {
        report.line(
            Level::Ok,
            "systemd unit",
            "gitsync.service (user) enabled",
            None,
        );
    } else {
        report.line(
            Level::Warn,
            "systemd unit",
            "not enabled",
            Some(&match user {
                Some(_) => format!(
                    "sudo systemctl enable --now {system_unit}, or systemctl --user enable --now gitsync"
                ),
                None => "systemctl --user enable --now gitsync".to_string(),
            }),
        );
    }
}

/// The webhook mirrors and deploys (issue 21: `doctor` checked none of the replication jobs,
/// and a webhook secret whose variable was unset passed as "all well"): each webhook
/// mirror's secrets, tokens and ssh files are read as the daemon reads them; each deploy's
/// repository, scanner and ssh key exist. Mirrors: [`check_mirrors`].
fn check_jobs(report: &mut Report, config: &Config) {
    if let Some(hooks) = &config.webhooks {
        for spec in &hooks.mirrors {
            match crate::webhook::PushMirror::resolve(spec) {
                Ok(_) => report.line(
                    Level::Ok,
                    &format!("webhook mirror {}", spec.name),
                    "secrets, tokens and ssh files readable",
                    None,
                ),
                Err(why) => report.line(
                    Level::Fail,
                    &format!("webhook mirror {}", spec.name),
                    &why.to_string(),
                    Some("set the variable or create the file the config names (for the unit: an EnvironmentFile= or a LoadCredential=)"),
                ),
            }
        }
    }
    for d in crate::deploy::Deploy::all(config) {
        let what = format!("deploy {}", d.spec.name);
        if !d.repo.exists() {
            report.line(
                Level::Fail,
                &what,
                &format!("repository {} does not exist", d.repo.display()),
                Some("fix `repo` (a name under root, or a path)"),
            );
            continue;
        }
        let tool = d.scan_tool();
        let scanner = if tool == "off" {
            Ok("secret scan off: ships unscanned".to_string())
        } else {
            crate::deploy::scan::pick(&tool)
                .map(|(name, path)| format!("scanner {name} at {}", path.display()))
        };
        let identity = d
            .spec
            .ssh
            .as_ref()
            .and_then(|s| s.identity.as_deref())
            .map(crate::config::expand_tilde)
            .filter(|key| !key.exists());
        match (scanner, identity) {
            (Err(why), _) => report.line(Level::Fail, &what, &why.to_string(), None),
            (Ok(_), Some(key)) => report.line(
                Level::Fail,
                &what,
                &format!("ssh identity {} does not exist", key.display()),
                Some("fix `ssh.identity`, or create the key with ssh-keygen"),
            ),
            (Ok(line), None) if tool == "off" => report.line(Level::Warn, &what, &line, None),
            (Ok(line), None) => report.line(Level::Ok, &what, &line, None),
        }
    }
}

/// Each mirror's target, read as a run reads it (with the same credentials: a missing
/// credential or a denied bucket is named), then, for a published S3 mirror, what an
/// anonymous `git clone` of its clone URL meets ([`crate::mirror::reach`]).
async fn check_mirrors(report: &mut Report, config: &Config) {
    for mirror in crate::mirror::BucketMirror::all(config) {
        let what = format!("mirror {}", mirror.spec.name);
        let store = match mirror.store().await {
            Ok(store) => store,
            Err(_) => {
                report.line(
                    Level::Fail,
                    &what,
                    &format!(
                        "target {:?} is not s3://bucket/prefix or file:///path",
                        mirror.spec.target
                    ),
                    None,
                );
                continue;
            }
        };
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            store.get_bytes(crate::mirror::layout::INFO_REFS),
        )
        .await;
        match read {
            Err(_) => report.line(
                Level::Fail,
                &what,
                &format!("{}: no answer within 20 s", store.describe()),
                None,
            ),
            Ok(Err(e)) => report.line(
                Level::Fail,
                &what,
                &format!("{}: {e}", store.describe()),
                Some("see the README's S3 mirror section for the credentials and permissions a mirror needs"),
            ),
            Ok(Ok(None)) => report.line(
                Level::Ok,
                &what,
                &format!("{} readable; nothing published yet", store.describe()),
                None,
            ),
            Ok(Ok(Some(_))) => {
                match crate::mirror::reach::anonymous_problem(&mirror.clone_url()).await {
                    Some(problem) => report.line(
                        Level::Warn,
                        &what,
                        &format!("published at {}, but {problem}", mirror.clone_url()),
                        None,
                    ),
                    None => report.line(
                        Level::Ok,
                        &what,
                        &format!("published; clone with git clone {}", mirror.clone_url()),
                        None,
                    ),
                }
            }
        }
    }
}

/// Runs every check and prints one line each. Exit code 0 when nothing failed (warnings
/// allowed), 1 otherwise.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let mut report = Report::default();
    let file = crate::config::default_path(cli.config.as_deref());
    let config = match super::load_config(cli, args.root.as_deref(), true) {
        Ok(config) => {
            let source = config.file.as_ref().map_or_else(
                || "defaults (no file)".to_string(),
                |f| f.display().to_string(),
            );
            report.line(Level::Ok, "config", &source, None);
            Some(config)
        }
        Err(err) => {
            report.line(
                Level::Fail,
                "config",
                &format!("{}: invalid\n{err}", file.display()),
                Some("fix the lines named above; `gitsync init` writes a commented example"),
            );
            None
        }
    };
    check_git(&mut report);
    if let Some(config) = &config {
        match crate::discover::resolve(&config.root, config.repositories.as_deref()) {
            Ok(repos) => {
                if config.keeps_no_repositories() {
                    report.line(
                        Level::Ok,
                        "repositories",
                        "none kept on purpose (`repositories: []`)",
                        None,
                    );
                } else if repos.is_empty() {
                    report.line(
                        Level::Warn,
                        "repositories",
                        &format!("none under {}", config.root.display()),
                        Some("set `root` and `repositories` in the config"),
                    );
                }
                check_repos(&mut report, &repos, config.hooks_install);
                check_inotify(&mut report, &repos);
            }
            Err(err) => report.line(Level::Fail, "repositories", &err.to_string(), None),
        }
        let runtime = super::runtime()?;
        runtime.block_on(check_backend(&mut report, config));
        check_jobs(&mut report, config);
        runtime.block_on(check_mirrors(&mut report, config));
    }
    check_daemon(&mut report, &crate::config::gitsync_home());
    check_unit(&mut report);
    Ok(if report.worst == Some(Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
