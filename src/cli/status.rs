//! `gitsync status`: every host x repository, from the configured backend.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::{Cli, CliError};
use crate::model::{HostRecord, RepoState};

/// Arguments of `gitsync status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of state records instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show only this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Keep showing it: redrawn (on a terminal) or printed again whenever it changes,
    /// until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With `--watch`: how often to read the states again, as watch(1) (`2s`, `500ms`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        requires = "watch"
    )]
    pub interval: humantime::Duration,
}

/// What `status` shows, read from the store.
struct Seen {
    states: Vec<RepoState>,
    hosts: Vec<HostRecord>,
    /// Every host the store knows (for an unknown `--host`).
    known: Vec<String>,
}

/// Prints the states; with `--watch`, again whenever they change, until interrupted. Exit
/// code 1 when the backend cannot be read.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let runtime = super::runtime()?;
    let store = runtime
        .block_on(crate::backend::open_store(&config))
        .map_err(unreadable)?;
    if !args.watch {
        let seen = read(&runtime, &store)?;
        print!("{}", render(&config, args, seen, Utc::now())?);
        return Ok(ExitCode::SUCCESS);
    }
    watch(&runtime, &store, &config, args)
}

/// The error of a store that cannot be opened or read.
fn unreadable(err: crate::backend::BackendError) -> CliError {
    CliError::failed(format!("cannot read states: {err}"))
        .hinted("`gitsync doctor` checks the backend and says what to do")
}

/// `status --watch`: the view read every `--interval`; on a terminal redrawn over the last
/// one when it changed, as watch(1) does; otherwise printed after the last one when the
/// store's records changed, the JSON one on one line. `store` is opened once; a read that
/// fails is said in the view and tried again. Ends on Ctrl-C or when its output is closed.
///
/// Errors: an unknown `--host`, or output that cannot be written for another reason.
fn watch(
    runtime: &tokio::runtime::Runtime,
    store: &std::sync::Arc<dyn crate::backend::StateStore>,
    config: &crate::config::Config,
    args: &Args,
) -> Result<ExitCode, CliError> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let now = Utc::now();
        // Off a terminal a view is printed when the store's records change, not when only
        // the ages it shows ("5s ago") move on.
        let mut key = String::new();
        let view = match read(runtime, store) {
            Ok(seen) => {
                key = serde_json::to_string(&(&seen.states, &seen.hosts)).unwrap_or_default();
                render(config, args, seen, now)?
            }
            Err(err) if args.json => {
                format!("{{\"error\": {}}}\n", serde_json::json!(err.to_string()))
            }
            Err(err) => format!("{err}\n"),
        };
        let view = match (args.json, terminal) {
            (true, false) => view.split_whitespace().collect::<Vec<_>>().join(" ") + "\n",
            _ => view,
        };
        let compared = match terminal {
            true => view.clone(),
            false if key.is_empty() => view.clone(),
            false => key,
        };
        if compared != last {
            let frame = match terminal {
                // Home, clear the screen, then a header as watch(1) prints one.
                true => format!(
                    "\x1b[H\x1b[2J{}\n\n{view}",
                    words::header(args.interval, now.with_timezone(&config.timezone))
                ),
                false => view.clone(),
            };
            let mut out = std::io::stdout().lock();
            if out
                .write_all(frame.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(ExitCode::SUCCESS);
            }
            last = compared;
        }
        std::thread::sleep(args.interval.into());
    }
}

mod words {
    /// The first line of a `status --watch` frame: how often, and when it was read.
    pub fn header(every: humantime::Duration, at: chrono::DateTime<chrono_tz::Tz>) -> String {
        format!(
            "Every {every}: gitsync status    {}",
            at.format("%Y-%m-%d %H:%M:%S")
        )
    }
}

/// Reads what `status` shows from `store`.
///
/// Errors: the store cannot be read.
fn read(
    runtime: &tokio::runtime::Runtime,
    store: &std::sync::Arc<dyn crate::backend::StateStore>,
) -> Result<Seen, CliError> {
    runtime
        .block_on(async {
            let all = store.list(None).await?;
            let hosts = match store.hosts(None).await {
                Ok(hosts) => hosts,
                Err(err) => {
                    tracing::debug!(%err, "cannot read host records");
                    Vec::new()
                }
            };
            let mut known: Vec<String> = all
                .iter()
                .map(|s| s.host.clone())
                .chain(hosts.iter().map(|h| h.host.clone()))
                .collect();
            known.sort();
            known.dedup();
            Ok::<_, crate::backend::BackendError>(Seen {
                states: all,
                hosts,
                known,
            })
        })
        .map_err(unreadable)
}

/// The text `status` prints for what was `seen` at `now`: the table (or the JSON array)
/// and the sections under it.
///
/// Errors: an unknown `--host`.
fn render(
    config: &crate::config::Config,
    args: &Args,
    seen: Seen,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    let Seen {
        states,
        hosts,
        known,
    } = seen;
    if let Some(host) = &args.host
        && !known.contains(host)
    {
        return Err(CliError::usage(if known.is_empty() {
            format!("no host {host:?}: the store has no host yet (is `gitsync run` running?)")
        } else {
            format!("no host {host:?}; the store knows: {}", known.join(", "))
        }));
    }
    let missing = if config.keeps_no_repositories() {
        Vec::new()
    } else {
        missing_here(&states, &config.hostname, &config.root)
    };
    let shown = |host: &str| args.host.as_deref().is_none_or(|h| h == host);
    let states: Vec<RepoState> = states.into_iter().filter(|s| shown(&s.host)).collect();
    let hosts: Vec<HostRecord> = hosts.into_iter().filter(|h| shown(&h.host)).collect();
    let seen = crate::daemon::reach::read(&config.home);
    let reach = |s: &RepoState| {
        (s.host == config.hostname)
            .then(|| crate::daemon::reach::describe(config, seen.get(&s.repo), now))
    };
    let mut out = String::new();
    if args.json {
        let records: Vec<serde_json::Value> = states
            .iter()
            .map(|s| {
                let mut value = with_liveness(s, hosts.iter().find(|h| h.host == s.host), now);
                if let (Some(ways), serde_json::Value::Object(map)) = (reach(s), &mut value) {
                    map.insert("reach".to_string(), serde_json::json!(ways));
                }
                value
            })
            .collect();
        out = serde_json::to_string_pretty(&records).map_err(CliError::failed)?;
        out.push('\n');
    } else {
        out.push_str(&daemon_line(&config.home, now));
        out.push('\n');
        out.push_str(&hosts_lines(&hosts, config.timezone, now));
        let missing = if shown(&config.hostname) {
            missing
        } else {
            Vec::new()
        };
        out.push_str(&table(
            &states,
            &Liveness {
                hosts: &hosts,
                missing: &missing,
                here: &config.hostname,
                empty_because: empty_because(config),
            },
            config.timezone,
            now,
        ));
        let mine: Vec<(String, Vec<String>)> = states
            .iter()
            .filter_map(|s| reach(s).map(|ways| (s.repo.clone(), ways)))
            .collect();
        out.push_str(&reach_section(config, &mine));
        out.push_str(&super::webhooks::status_section(config));
    }
    Ok(out)
}

/// How pushes made elsewhere reach this host's repositories (`mine`: name and ways, from
/// [`crate::daemon::reach::describe`]); empty when it keeps none.
fn reach_section(config: &crate::config::Config, mine: &[(String, Vec<String>)]) -> String {
    if mine.is_empty() {
        return String::new();
    }
    let mut out = format!("\npushes made elsewhere reach {}:\n", config.hostname);
    if config.hooks_install {
        out.push_str("  from machines that run gitsync: at once (pre-push hook)\n");
    }
    let width = mine.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    for (repo, ways) in mine {
        out.push_str(&format!("  {repo:<width$}  {}\n", ways.join(", ")));
    }
    if mine.iter().all(|(_, ways)| ways.len() == 1) && config.pull.poll.is_none() {
        out.push_str("  a forge webhook (webhooks.sync) or pull.poll brings them sooner\n");
    }
    out
}

/// A repository another host reports and this one (`here`) neither reports nor has under
/// `root`: (repo, the hosts that have it).
fn missing_here(
    states: &[RepoState],
    here: &str,
    root: &std::path::Path,
) -> Vec<(String, Vec<String>)> {
    let mine: std::collections::HashSet<&str> = states
        .iter()
        .filter(|s| s.host == here)
        .map(|s| s.repo.as_str())
        .collect();
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in states.iter().filter(|s| s.host != here) {
        if mine.contains(s.repo.as_str()) || s.repo == "." || root.join(&s.repo).exists() {
            continue;
        }
        out.entry(s.repo.clone()).or_default().push(s.host.clone());
    }
    out.into_iter().collect()
}

/// A state record for `--json`, with its host's liveness beside its own keys:
/// `checked_at` (the later of the state's `updated_at` and the host's last full read) and
/// `host_state` (`online`, `offline` or `unknown`), and `host_offline_secs` when offline.
fn with_liveness(
    s: &RepoState,
    host: Option<&HostRecord>,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let mut value = serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(
            "checked_at".to_string(),
            serde_json::json!(
                checked(s, host).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        );
        let word = host.map_or("unknown", |h| h.liveness(now));
        let offline = host.and_then(|h| h.offline_for(now)).map(|d| d.as_secs());
        map.insert("host_state".to_string(), serde_json::json!(word));
        if let Some(problem) = host.and_then(|h| h.problem.as_deref()) {
            map.insert("host_problem".to_string(), serde_json::json!(problem));
        }
        if let Some(secs) = offline {
            map.insert("host_offline_secs".to_string(), serde_json::json!(secs));
        }
    }
    value
}

/// When the repository was last read: its own `updated_at`, or its host's last full
/// update when that is later.
fn checked(s: &RepoState, host: Option<&HostRecord>) -> DateTime<Utc> {
    host.and_then(|h| h.checked_at)
        .map_or(s.updated_at, |c| c.max(s.updated_at))
}

/// One line per host: online (heartbeat age) or offline (for how long).
fn hosts_lines(hosts: &[HostRecord], tz: chrono_tz::Tz, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for h in hosts {
        let machine = h
            .machine
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default();
        match h.offline_for(now) {
            None if h.problem.is_some() => out.push_str(&format!(
                "host {}: online but not working: {}{machine}\n",
                h.host,
                h.problem.as_deref().unwrap_or_default()
            )),
            Some(_) if h.stopped_at.is_some() => out.push_str(&format!(
                "host {}: stopped {} ago (gitsync stop or a clean shutdown){machine}\n",
                h.host,
                age(h.stopped_at.unwrap_or(h.last_seen), now),
            )),
            None => out.push_str(&format!(
                "host {}: online, heartbeat {} ago, gitsync {}{machine}\n",
                h.host,
                age(h.last_seen, now),
                h.version
            )),
            Some(silent) => out.push_str(&format!(
                "host {}: offline for {} (last heartbeat {}){machine}\n",
                h.host,
                humantime::format_duration(std::time::Duration::from_secs(silent.as_secs())),
                h.last_seen.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
            )),
        }
    }
    out
}

/// Why an empty table is expected here: this host keeps no repository, or its daemon runs
/// (and has found none); `None` when the daemon may simply not be running.
fn empty_because(config: &crate::config::Config) -> Option<&'static str> {
    if config.keeps_no_repositories() {
        Some("this host keeps none (`repositories: []`)")
    } else if crate::daemon::pidfile::running(&config.home).is_some() {
        Some("the daemon runs and has found none under the root")
    } else {
        None
    }
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

fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// What the table adds to the states: the hosts' records, and the repositories missing
/// on this host (`here`).
pub struct Liveness<'a> {
    /// Every host's record.
    pub hosts: &'a [HostRecord],
    /// (repo, the hosts that have it), for repositories this host lacks.
    pub missing: &'a [(String, Vec<String>)],
    /// This host's name.
    pub here: &'a str,
    /// Why no repository may be reported, for the line under an empty table: `None` asks
    /// whether `gitsync run` runs; `Some` says this instead.
    pub empty_because: Option<&'a str>,
}

/// Renders the states as an aligned table, times in `tz`: UPDATED is when the state
/// changed, CHECKED when the repository was last read; a host that is offline is marked.
pub fn table(
    states: &[RepoState],
    live: &Liveness<'_>,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> String {
    let header = [
        "HOST",
        "REPO",
        "BRANCH",
        "STATE",
        "AHEAD/BEHIND",
        "DIRTY",
        "UPDATED",
        "CHECKED",
        "NOTE",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for s in states {
        let updated = s.updated_at.with_timezone(&tz);
        let host = live.hosts.iter().find(|h| h.host == s.host);
        let host_cell = match host.map(|h| (h.offline_for(now), h.stopped_at)) {
            Some((Some(_), Some(_))) => format!("{} (stopped)", s.host),
            Some((Some(_), None)) => format!("{} (offline)", s.host),
            _ => s.host.clone(),
        };
        rows.push(vec![
            host_cell,
            s.repo.clone(),
            s.branch.clone().unwrap_or_else(|| "(detached)".to_string()),
            s.state.as_str().to_string(),
            if s.upstream.is_some() {
                format!("+{} -{}", s.ahead, s.behind)
            } else {
                "-".to_string()
            },
            s.markers(),
            format!(
                "{} ({} ago)",
                updated.format("%Y-%m-%d %H:%M %Z"),
                age(s.updated_at, now)
            ),
            format!("{} ago", age(checked(s, host), now)),
            s.note(),
        ]);
    }
    for (repo, on) in live.missing {
        rows.push(vec![
            live.here.to_string(),
            repo.clone(),
            "-".to_string(),
            "missing here".to_string(),
            "-".to_string(),
            String::new(),
            "-".to_string(),
            "-".to_string(),
            format!("on {}; `gitsync bootstrap` clones it", on.join(", ")),
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
    if states.is_empty() && live.missing.is_empty() {
        match live.empty_because {
            Some(why) => out.push_str(&format!("(no repositories reported: {why})\n")),
            None => out.push_str("(no repositories reported yet: is `gitsync run` running?)\n"),
        }
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
        assert_eq!((s.markers(), s.note()), (String::new(), String::new()));
        s.submodules = vec![
            "lib: 1 modified".to_string(),
            "doc: 2 untracked".to_string(),
        ];
        s.stashes = 1;
        assert_eq!(s.markers(), "$S");
        assert_eq!(s.note(), "submodule lib: 1 modified (+1 more)");
        s.pull_blocked = Some("submodule lib: 1 modified".to_string());
        assert_eq!(s.note(), "submodule lib: 1 modified");
    }
}
