//! `gitsync hooks install|uninstall|status [REPO...]`: the pre-push hook in each
//! configured repository (or in the repositories named); with `--server DIR.git`, the
//! post-receive hook of a bare repository on a server instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Cli, CliError};
use crate::discover::{self, Repo};
use crate::git::hooks::{self, HookState};

/// Arguments of `gitsync hooks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
    /// Folder whose repositories to use (overrides `root` in the config file).
    #[arg(long, value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    /// A bare repository on this machine (a server that your machines push to over ssh):
    /// its `post-receive` hook publishes every push on the event bus, whoever pushed.
    /// Repeat for more; the repositories named after the action are then not used.
    #[arg(long, value_name = "DIR.git", global = true)]
    pub server: Vec<PathBuf>,
    /// With `--server`: the URL your machines fetch that repository by, as in their
    /// remotes (`ssh://nas/srv/git/site.git`); default `ssh://<hostname><DIR>`.
    #[arg(long, value_name = "URL", global = true, requires = "server")]
    pub url: Option<String>,
}

/// The hook actions; each takes repository names (relative to the root) or paths, and
/// defaults to every configured repository.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Install the hook; a pre-push hook already there is chained, never overwritten.
    /// A hooks folder shared by every repository (a global `core.hooksPath`) or inside the
    /// worktree is left alone unless `--force`: pushes there are seen by the watcher.
    Install {
        /// Repositories (names under the root, or paths); default: all.
        repos: Vec<String>,
        /// Write into a shared or in-worktree hooks folder all the same.
        #[arg(long)]
        force: bool,
    },
    /// Remove the hook and put a chained hook back exactly as it was (a shared hooks
    /// folder only with `--force`: other repositories use it too).
    Uninstall {
        /// Repositories (names under the root, or paths); default: all.
        repos: Vec<String>,
        /// Remove it from a shared or in-worktree hooks folder all the same.
        #[arg(long)]
        force: bool,
    },
    /// Show each repository's hook state.
    Status {
        /// Repositories (names under the root, or paths); default: all.
        repos: Vec<String>,
    },
}

/// The repositories `wanted` names among `all` (every one when `wanted` is empty); a path
/// outside the configuration is taken as it is.
///
/// Errors: a name that is neither a configured repository nor a repository path.
fn select(all: &[Repo], wanted: &[String]) -> Result<Vec<Repo>, CliError> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for name in wanted {
        if let Some(repo) = all.iter().find(|r| r.name == *name) {
            out.push(repo.clone());
            continue;
        }
        let path = std::fs::canonicalize(Path::new(name))
            .map_err(|e| CliError::usage(format!("{name}: not a configured repository ({e})")))?;
        let found = all
            .iter()
            .find(|r| std::fs::canonicalize(&r.path).is_ok_and(|p| p == path));
        match found {
            Some(repo) => out.push(repo.clone()),
            None if gix::open(&path).is_ok() => out.push(Repo {
                name: name.clone(),
                path,
            }),
            None => return Err(CliError::usage(format!("{name}: not a git repository"))),
        }
    }
    Ok(out)
}

/// Runs the action and prints one line per repository. Exit code 1 when any repository
/// failed (its line says why).
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    if !args.server.is_empty() {
        return run_server(cli, args);
    }
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    let all = discover::resolve(&config.root, config.repositories.as_deref())
        .map_err(CliError::failed)?;
    let (Action::Install { repos, .. }
    | Action::Uninstall { repos, .. }
    | Action::Status { repos }) = &args.action;
    let force = matches!(
        args.action,
        Action::Install { force: true, .. } | Action::Uninstall { force: true, .. }
    );
    let repos = select(&all, repos)?;
    let binary = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot tell where gitsync is: {e}")))?;
    let mut failed = false;
    for repo in &repos {
        let place = match hooks::placement(&repo.path) {
            Ok(place) => place,
            Err(err) => {
                println!("{}: {err}", repo.name);
                failed = true;
                continue;
            }
        };
        let dir = place.dir().to_path_buf();
        let left_alone = place.reason().filter(|_| !force);
        let line = match (&args.action, left_alone) {
            (Action::Status { .. }, Some(why)) => Ok(format!(
                "{}; {why}, so pushes reach the other machines through the watcher",
                hooks::state_in(&dir, &binary).describe()
            )),
            (Action::Status { .. }, None) => Ok(format!(
                "{}; pushes reach the other machines through the hook (and the watcher)",
                hooks::state_in(&dir, &binary).describe()
            )),
            (_, Some(why)) => Ok(format!(
                "left alone: {why} (pushes are seen by the watcher; --force to write there)"
            )),
            (Action::Install { .. }, None) => {
                hooks::install_in(&dir, &binary).map(|before| installed(&before, &hooks::PRE_PUSH))
            }
            (Action::Uninstall { .. }, None) => {
                hooks::uninstall_in(&dir, &binary).map(|before| removed(&before))
            }
        };
        match line {
            Ok(line) => println!("{}: {line} ({})", repo.name, dir.join("pre-push").display()),
            Err(err) => {
                println!("{}: {err}", repo.name);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `hooks install|uninstall|status --server DIR.git...`: the post-receive hook of each bare
/// repository named, one line each. Exit code 1 when any failed (its line says why).
///
/// Errors: gitsync's own path cannot be told.
fn run_server(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let binary = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot tell where gitsync is: {e}")))?;
    // Where the hook will publish: said once, so a missing config is seen now, not after
    // the first push.
    let file = crate::config::default_path(cli.config.as_deref());
    if matches!(args.action, Action::Install { .. }) {
        match crate::config::load(&file, true, None, false) {
            Ok(config) => println!(
                "pushes are announced as from `server hook via {}` on {}",
                config.hostname,
                match config.backend {
                    crate::config::BackendKind::Local =>
                        format!("the local hub at {}", config.hub_path().display()),
                    crate::config::BackendKind::Aws => "the AWS event bus (SNS)".to_string(),
                }
            ),
            Err(_) if !file.exists() => println!(
                "warning: no {}: until one names the event bus your machines use (`local.path` or `aws`), the hook keeps every push in ~/.gitsync/spool/post-receive",
                file.display()
            ),
            Err(err) => println!(
                "warning: {err}\nuntil that is fixed, the hook keeps every push in ~/.gitsync/spool/post-receive"
            ),
        }
    }
    let kind = &hooks::POST_RECEIVE;
    let url = args.url.as_deref().unwrap_or("");
    let mut failed = false;
    for repo in &args.server {
        let name = repo.display();
        let dir = match hooks::hooks_dir(repo) {
            Ok(dir) => dir,
            Err(err) => {
                println!("{name}: {err}");
                failed = true;
                continue;
            }
        };
        let line = match &args.action {
            Action::Status { .. } => Ok(format!(
                "{}; pushes to it reach your machines through the server hook",
                hooks::state_of(kind, &dir, &binary, url)
                    .describe()
                    .replace("pre-push", kind.name)
            )),
            Action::Install { .. } => {
                hooks::install_of(kind, &dir, &binary, url).map(|before| installed(&before, kind))
            }
            Action::Uninstall { .. } => {
                hooks::uninstall_of(kind, &dir, &binary, url).map(|before| removed(&before))
            }
        };
        match line {
            Ok(line) => println!("{name}: {line} ({})", dir.join(kind.name).display()),
            Err(err) => {
                println!("{name}: {err}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What an install did, from the state `before` it, for hook `kind`.
fn installed(before: &HookState, kind: &hooks::Kind) -> String {
    match before {
        HookState::Installed { .. } => "already installed".to_string(),
        HookState::Foreign => format!("installed; your hook is kept as {}", kind.chained),
        HookState::Outdated => "updated".to_string(),
        HookState::Missing => "installed".to_string(),
    }
}

/// What an uninstall did, from the state `before` it.
fn removed(before: &HookState) -> String {
    match before {
        HookState::Installed { chained: true } => "removed; your hook is back".to_string(),
        HookState::Installed { chained: false } | HookState::Outdated => "removed".to_string(),
        HookState::Missing => "not installed".to_string(),
        HookState::Foreign => "not installed (your own hook left alone)".to_string(),
    }
}
