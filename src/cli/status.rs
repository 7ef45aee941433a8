//! `gitsync status`: every host x repository, from the configured backend.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::{Cli, CliError};
use crate::model::RepoState;

/// Arguments of `gitsync status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of state records instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show only this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// Prints the states. Exit code 1 when the backend cannot be read.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let runtime = super::runtime()?;
    let (states, hosts) = runtime
        .block_on(async {
            let backend = crate::backend::open(&config).await?;
            let states = backend.store.list(args.host.as_deref()).await?;
            // An unknown --host is named with the hosts that are known.
            let hosts: Vec<String> = if args.host.is_some() && states.is_empty() {
                let mut all: Vec<String> = backend
                    .store
                    .list(None)
                    .await?
                    .into_iter()
                    .map(|s| s.host)
                    .collect();
                all.sort();
                all.dedup();
                all
            } else {
                Vec::new()
            };
            Ok::<_, crate::backend::BackendError>((states, hosts))
        })
        .map_err(|e| CliError::Failed(format!("cannot read states: {e}")))?;
    if let Some(host) = &args.host
        && states.is_empty()
    {
        return Err(CliError::Usage(if hosts.is_empty() {
            format!("no host {host:?}: the store has no host yet (is `gitsync run` running?)")
        } else {
            format!("no host {host:?}; the store knows: {}", hosts.join(", "))
        }));
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(&states).map_err(|e| CliError::Failed(e.to_string()))?;
        println!("{text}");
    } else {
        println!("{}", daemon_line(&config.home, Utc::now()));
        print!("{}", table(&states, config.timezone, Utc::now()));
        print!("{}", super::webhooks::status_section(&config));
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the daemon runs here: pid, version and uptime.
fn daemon_line(home: &std::path::Path, now: DateTime<Utc>) -> String {
    match crate::daemon::pidfile::running(home) {
        Some(info) => {
            let up = (now - info.started_at).to_std().unwrap_or_default();
            let up = humantime::format_duration(std::time::Duration::from_secs(up.as_secs()));
            format!(
                "daemon: running (pid {}, version {}, up {up})",
                info.pid, info.version
            )
        }
        None => "daemon: not running (start it with `gitsync run` or systemd)".to_string(),
    }
}

/// Dirty markers in gita's style: `+` staged, `*` unstaged, `?` untracked, `!` conflicted,
/// `$` stashed; and `S`, a submodule with work of its own.
fn markers(s: &RepoState) -> String {
    let mut out = String::new();
    for (n, mark) in [
        (s.staged, '+'),
        (s.unstaged, '*'),
        (s.untracked, '?'),
        (s.conflicted, '!'),
        (s.stashes, '$'),
    ] {
        if n > 0 {
            out.push(mark);
        }
    }
    if !s.submodules.is_empty() {
        out.push('S');
    }
    out
}

/// The NOTE column: the error, else why the pull was refused, else the submodules with
/// work of their own.
fn note(s: &RepoState) -> String {
    if let Some(text) = s.error.clone().or_else(|| s.pull_blocked.clone()) {
        return text;
    }
    match s.submodules.as_slice() {
        [] => String::new(),
        [one] => format!("submodule {one}"),
        [one, rest @ ..] => format!("submodule {one} (+{} more)", rest.len()),
    }
}

fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Renders the states as an aligned table, times in `tz`.
pub fn table(states: &[RepoState], tz: chrono_tz::Tz, now: DateTime<Utc>) -> String {
    let header = [
        "HOST",
        "REPO",
        "BRANCH",
        "STATE",
        "AHEAD/BEHIND",
        "DIRTY",
        "UPDATED",
        "NOTE",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for s in states {
        let updated = s.updated_at.with_timezone(&tz);
        rows.push(vec![
            s.host.clone(),
            s.repo.clone(),
            s.branch.clone().unwrap_or_else(|| "(detached)".to_string()),
            s.state.as_str().to_string(),
            if s.upstream.is_some() {
                format!("+{} -{}", s.ahead, s.behind)
            } else {
                "-".to_string()
            },
            markers(s),
            format!(
                "{} ({} ago)",
                updated.format("%Y-%m-%d %H:%M %Z"),
                age(s.updated_at, now)
            ),
            note(s),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if states.is_empty() {
        out.push_str("(no repositories reported yet: is `gitsync run` running?)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submodule_with_work_is_marked_and_named() {
        let mut s = RepoState::error("h", "r", String::new());
        s.error = None;
        assert_eq!((markers(&s), note(&s)), (String::new(), String::new()));
        s.submodules = vec![
            "lib: 1 modified".to_string(),
            "doc: 2 untracked".to_string(),
        ];
        s.stashes = 1;
        assert_eq!(markers(&s), "$S");
        assert_eq!(note(&s), "submodule lib: 1 modified (+1 more)");
        s.pull_blocked = Some("submodule lib: 1 modified".to_string());
        assert_eq!(note(&s), "submodule lib: 1 modified");
    }
}
