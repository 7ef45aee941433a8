//! `gitsync bootstrap`: a new machine in one command. Every repository that another host
//! reports and this one lacks is cloned under this machine's root, at the same relative
//! path, on the same branch, with the hook installed.
//!
//! The URL comes from the other host's state record (credentials redacted there); the
//! clone runs the user's own git, so their credential helpers and ssh keys apply, and git
//! never prompts (a missing credential fails that repository alone, with what to do).

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cli, CliError};
use crate::discover::Repo;
use crate::model::RepoState;

/// Arguments of `gitsync bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Clone what this host reports (default: every other host).
    #[arg(long, value_name = "HOST")]
    pub from: Option<String>,
    /// Say what would be cloned, and clone nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folder to clone under (overrides `root` in the config file).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Clones run at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub jobs: usize,
}

/// One repository to clone: where, from what, on which branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Path relative to the root, as the other host names it.
    pub repo: String,
    /// The URL to clone, with the redacted credentials (`***`) removed so that the user's
    /// credential helper supplies them.
    pub url: String,
    /// The branch checked out there.
    pub branch: Option<String>,
    /// The branch on the remote that it tracks (`main` of `origin/main`).
    pub remote_branch: Option<String>,
    /// The host it was seen on.
    pub host: String,
}

/// What the plan says of each repository another host reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not here: clone it.
    Clone(Wanted),
    /// Already under the root (a folder by that name exists).
    Exists(String),
    /// Cannot be cloned: (repo, why).
    Unusable(String, String),
    /// Has no remote on any host (a local-only repository): nothing to clone it from.
    /// (repo, the host that has it.)
    LocalOnly(String, String),
}

/// `https://user:***@host/x` -> `https://user@host/x`, `https://***@host/x` ->
/// `https://host/x`: the redacted password or token is left to the user's credential
/// helper. Other URLs are returned as they are.
pub fn clone_url(redacted: &str) -> String {
    let Some(scheme_end) = redacted.find("://") else {
        return redacted.to_string();
    };
    let rest = &redacted[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return redacted.to_string();
    };
    let user = match authority[..at].split_once(':') {
        Some((user, _)) => Some(user),
        None if &authority[..at] == "***" => None,
        None => Some(&authority[..at]),
    };
    let host_and_path = &rest[at + 1..];
    match user {
        Some(user) if !user.is_empty() => {
            format!("{}{user}@{host_and_path}", &redacted[..scheme_end + 3])
        }
        _ => format!("{}{host_and_path}", &redacted[..scheme_end + 3]),
    }
}

/// Whether `repo` is a plain relative path below the root (no `..`, not absolute, not
/// the root itself): a record naming `../../etc` is refused.
fn safe_relative(repo: &str) -> bool {
    let path = Path::new(repo);
    !repo.is_empty() && repo != "." && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The plan: for each repository that a host in `from` (every host but `here` when
/// `None`) reports, in name order, what to do under `root`. A repository reported by
/// several hosts is taken from the first (by host name) that recorded a remote URL.
pub fn plan(states: &[RepoState], here: &str, from: Option<&str>, root: &Path) -> Vec<Step> {
    let mine: std::collections::HashSet<&str> = states
        .iter()
        .filter(|s| s.host == here)
        .map(|s| s.repo.as_str())
        .collect();
    let mut by_repo: std::collections::BTreeMap<&str, Vec<&RepoState>> = Default::default();
    for s in states {
        let wanted_host = match from {
            Some(from) => s.host == from,
            None => s.host != here,
        };
        if wanted_host {
            by_repo.entry(s.repo.as_str()).or_default().push(s);
        }
    }
    let mut steps = Vec::new();
    for (repo, mut seen) in by_repo {
        if !safe_relative(repo) {
            steps.push(Step::Unusable(
                repo.to_string(),
                "not a folder below the root".to_string(),
            ));
            continue;
        }
        if mine.contains(repo) || root.join(repo).exists() {
            steps.push(Step::Exists(repo.to_string()));
            continue;
        }
        seen.sort_by(|a, b| a.host.cmp(&b.host));
        let Some(s) = seen
            .iter()
            .find(|s| s.remote_url.as_deref().is_some_and(|u| !u.is_empty()))
        else {
            steps.push(Step::LocalOnly(repo.to_string(), seen[0].host.clone()));
            continue;
        };
        let url = clone_url(s.remote_url.as_deref().unwrap_or_default());
        if url.starts_with('-') {
            steps.push(Step::Unusable(
                repo.to_string(),
                "the recorded URL is not a URL".to_string(),
            ));
            continue;
        }
        let remote_branch = s
            .upstream
            .as_deref()
            .and_then(|u| u.split_once('/'))
            .map(|(_, b)| b.to_string());
        steps.push(Step::Clone(Wanted {
            repo: repo.to_string(),
            url,
            branch: s.branch.clone(),
            remote_branch,
            host: s.host.clone(),
        }));
    }
    steps
}

/// Clones `wanted` into `root`: `git clone` of the tracked branch, then the local branch
/// renamed when the other host names it differently. The clone is made beside its place
/// under a name discovery skips ([`crate::discover::STAGING_PREFIX`]) and renamed into
/// place once whole, so a running daemon never adopts a clone that is still being made
/// or that fails. Returns the time it took.
///
/// Errors: git's message in one line (a missing credential says what to set up); nothing
/// is left behind.
async fn clone_one(wanted: &Wanted, root: &Path) -> Result<Duration, CloneError> {
    let start = Instant::now();
    let target = root.join(&wanted.repo);
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(CloneError::Git(format!(
            "{} is not a folder below the root",
            wanted.repo
        )));
    };
    std::fs::create_dir_all(parent).map_err(|source| CloneError::Folder {
        path: parent.to_path_buf(),
        source,
    })?;
    let staging = parent.join(format!(
        "{}{}",
        crate::discover::STAGING_PREFIX,
        name.to_string_lossy()
    ));
    // Left by a bootstrap that was killed.
    let _ = std::fs::remove_dir_all(&staging);
    let made = clone_into(wanted, root, &staging).await.and_then(|()| {
        std::fs::rename(&staging, &target).map_err(|source| CloneError::Folder {
            path: target.clone(),
            source,
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    made.map(|()| start.elapsed())
}

/// `git clone` of `wanted` into `target` (run in `root`), its recorded URL kept as the
/// remote, its branch named as on the other host.
async fn clone_into(wanted: &Wanted, root: &Path, target: &Path) -> Result<(), CloneError> {
    let target_text = target.display().to_string();
    // A `file://` remote on this machine is cloned as git clones a path: objects are hard
    // links, not a pack made and indexed again. The remote stays the recorded URL.
    let local = wanted
        .url
        .strip_prefix("file://")
        .filter(|p| p.starts_with('/') && Path::new(p).is_dir());
    let mut args = vec!["clone", "--quiet"];
    if let Some(b) = &wanted.remote_branch {
        args.extend(["--branch", b.as_str()]);
    }
    args.extend(["--", local.unwrap_or(&wanted.url), target_text.as_str()]);
    let timeout = Duration::from_secs(3600);
    crate::git::ops::run(root, &args, timeout)
        .await
        .map_err(CloneError::git)?;
    if local.is_some() {
        crate::git::ops::run(
            target,
            &["remote", "set-url", "origin", &wanted.url],
            timeout,
        )
        .await
        .map_err(CloneError::git)?;
    }
    if let (Some(local), Some(remote)) = (&wanted.branch, &wanted.remote_branch)
        && local != remote
    {
        crate::git::ops::run(target, &["branch", "-m", remote, local], timeout)
            .await
            .map_err(CloneError::git)?;
    }
    Ok(())
}

/// Why one clone of a bootstrap failed (the others go on).
#[derive(Debug, thiserror::Error)]
enum CloneError {
    /// The folder the clone goes into cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    Folder {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// git failed: its message in one line.
    #[error("{0}")]
    Git(String),
}

impl CloneError {
    fn git(error: crate::git::ops::GitError) -> CloneError {
        CloneError::Git(one_line(&error.to_string()))
    }
}

/// `branch main`, or `the default branch` when the other host had none checked out.
fn branch_words(w: &Wanted) -> String {
    match &w.branch {
        Some(b) => format!("branch {b}"),
        None => "the default branch".to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Clones what other hosts have and this one lacks. Exit code 0 when nothing failed, 1
/// otherwise.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    let runtime = super::runtime()?;
    let states = runtime
        .block_on(async {
            let store = crate::backend::open_store(&config).await?;
            store.list(None).await
        })
        .map_err(|e| CliError::failed(format!("cannot read states: {e}")))?;
    if let Some(from) = &args.from
        && !states.iter().any(|s| &s.host == from)
    {
        let mut hosts: Vec<&str> = states.iter().map(|s| s.host.as_str()).collect();
        hosts.sort();
        hosts.dedup();
        return Err(CliError::usage(format!(
            "no host {from:?} in the store; it knows: {}",
            if hosts.is_empty() {
                "none yet".to_string()
            } else {
                hosts.join(", ")
            }
        )));
    }
    let steps = plan(
        &states,
        &config.hostname,
        args.from.as_deref(),
        &config.root,
    );
    let clones: Vec<Wanted> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Clone(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let (mut exist, mut unusable, mut local) = (0, 0, 0);
    for step in &steps {
        match step {
            Step::Exists(repo) => {
                exist += 1;
                println!("{repo}: skipped (already here)");
            }
            Step::LocalOnly(repo, host) => {
                local += 1;
                println!("{repo}: skipped (local to {host}: it has no remote to clone from)");
            }
            Step::Unusable(repo, why) => {
                unusable += 1;
                eprintln!("gitsync: {repo}: not cloned: {why}");
            }
            Step::Clone(w) if args.dry_run => println!(
                "{}: would clone {}, {} (as on {})",
                w.repo,
                crate::util::redact::redact_url(&w.url),
                branch_words(w),
                w.host
            ),
            Step::Clone(_) => {}
        }
    }
    if args.dry_run {
        println!(
            "dry run: {} to clone, {exist} already here, {unusable} not clonable; nothing was changed",
            clones.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let progress = super::progress::Progress::new(clones.len() as u64, "cloning");
    let root = config.root.clone();
    let failed = runtime.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(args.jobs.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let hooks = config.hooks_install;
        for wanted in clones.clone() {
            let (permits, root) = (permits.clone(), root.clone());
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = clone_one(&wanted, &root).await;
                // The hook goes in while the other clones run.
                if result.is_ok() && hooks {
                    let repo = Repo {
                        name: wanted.repo.clone(),
                        path: root.join(&wanted.repo),
                    };
                    let _ =
                        tokio::task::spawn_blocking(move || crate::daemon::install_hooks(&[repo]))
                            .await;
                }
                (wanted, result)
            });
        }
        let mut failed = 0;
        while let Some(joined) = set.join_next().await {
            let Ok((wanted, result)) = joined else {
                failed += 1;
                continue;
            };
            progress.step(&wanted.repo);
            match result {
                Ok(took) => {
                    progress.println(&format!(
                        "{}: cloned {}, {}, in {:.1} s",
                        wanted.repo,
                        crate::util::redact::redact_url(&wanted.url),
                        branch_words(&wanted),
                        took.as_secs_f64()
                    ));
                }
                Err(why) => {
                    failed += 1;
                    progress.eprintln(&format!("gitsync: {}: clone failed: {why}", wanted.repo));
                }
            }
        }
        progress.finish();
        failed
    });
    let local_words = if local > 0 {
        format!(", {local} local to another host")
    } else {
        String::new()
    };
    println!(
        "{} repositor{}: {} cloned, {exist} already here{local_words}, {} failed{}",
        steps.len(),
        if steps.len() == 1 { "y" } else { "ies" },
        clones.len() - failed,
        failed + unusable,
        if failed + unusable > 0 {
            " (see above)"
        } else {
            ""
        }
    );
    Ok(if failed + unusable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(host: &str, repo: &str, url: Option<&str>) -> RepoState {
        let mut s = RepoState::error(host, repo, String::new());
        s.error = None;
        s.remote_url = url.map(str::to_string);
        s.branch = Some("dev".to_string());
        s.upstream = Some("origin/develop".to_string());
        s
    }

    #[test]
    fn redacted_credentials_are_left_to_the_helper() {
        assert_eq!(
            clone_url("https://bob:***@example.com/a.git"),
            "https://bob@example.com/a.git"
        );
        assert_eq!(
            clone_url("https://***@example.com/a.git"),
            "https://example.com/a.git"
        );
        assert_eq!(clone_url("git@host:a.git"), "git@host:a.git");
        assert_eq!(clone_url("ssh://git@host/a"), "ssh://git@host/a");
    }

    #[test]
    fn the_plan_clones_what_is_missing_and_refuses_what_is_unsafe() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("there")).expect("mkdir");
        let states = vec![
            state("b", "new", Some("https://***@h/new.git")),
            state("b", "there", Some("/x")),
            state("b", "../escape", Some("/x")),
            state("b", "nourl", None),
            state("b", "opt", Some("--upload-pack=touch /tmp/x")),
            state("a", "mine", Some("/m")),
            state("b", "mine", Some("/m")),
            state("c", "other", Some("/o")),
        ];
        let steps = plan(&states, "a", Some("b"), dir.path());
        let clone = Wanted {
            repo: "new".to_string(),
            url: "https://h/new.git".to_string(),
            branch: Some("dev".to_string()),
            remote_branch: Some("develop".to_string()),
            host: "b".to_string(),
        };
        assert!(steps.contains(&Step::Clone(clone)), "{steps:?}");
        assert!(steps.contains(&Step::Exists("there".to_string())));
        assert!(steps.contains(&Step::Exists("mine".to_string())));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::LocalOnly(r, h) if r == "nourl" && h == "b")),
            "{steps:?}"
        );
        for bad in ["../escape", "opt"] {
            assert!(
                steps
                    .iter()
                    .any(|s| matches!(s, Step::Unusable(r, _) if r == bad)),
                "{bad}: {steps:?}"
            );
        }
        assert!(!steps.iter().any(|s| format!("{s:?}").contains("other")));
        assert!(
            plan(&states, "a", None, dir.path())
                .iter()
                .any(|s| matches!(s, Step::Clone(w) if w.repo == "other"))
        );
    }
}
