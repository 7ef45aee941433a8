//! The configuration file: its schema, defaults, loading and validation.
//!
//! The file is YAML at `~/.gitsync/config.yml` (override with `--config PATH` or the
//! `GITSYNC_CONFIG` environment variable). GitArgus's `config.yml` loads unchanged; its
//! `python.bin` key is accepted with a warning. Every other unknown key is an error.
//! Loading collects every problem it can find before failing, and each problem names the
//! file, the line and the key path. This module reads files; it never writes them (that is
//! `gitsync init`'s job).

pub mod deploy;
pub mod edit;
mod locate;
mod mirrors;
mod partition;
mod pull;
mod schema;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use schema::{
    AwsConfig, BackendKind, DeployConfig, DeployScan, DeploySsh, DeployTarget, GitlabConfig,
    HooksConfig, LocalConfig, MirrorConfig, PairEnd, PartitionConfig, PartitionRole, ProviderName,
    QueueKind, RawConfig, ScanTool, SyncPair, TlsConfig, WebhookMirrorConfig, WebhookSyncConfig,
    WebhooksConfig,
};

/// The example configuration written by `gitsync init`, also shipped in `packaging/`.
pub const EXAMPLE: &str = include_str!("example.yml");

/// One problem found in a configuration file.
///
/// `line` is 1-based; it is `None` only when the problem is not tied to a place in the file
/// (the file could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    /// Dotted key path such as `pull.interval` or `repositories[2]`; empty for the whole file.
    pub key: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A problem of the command line (`--root`) or of no file at all names no file.
        let mut sep = "";
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}", self.file.display())?;
            sep = ": ";
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, "{sep}{}", self.key)?;
            sep = ": ";
        }
        write!(f, "{sep}{}", self.message)
    }
}

/// Every problem found while loading a configuration file. The process exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

/// A loaded and validated configuration, with defaults applied and `~` expanded.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, or `None` when gitsync runs on defaults (`run --root DIR`).
    pub file: Option<PathBuf>,
    /// This machine's name in the shared store (default: the system hostname).
    pub hostname: String,
    /// The folder the repositories live under.
    pub root: PathBuf,
    /// Repository paths or glob patterns relative to `root`; `None` means discover every
    /// repository under `root`.
    pub repositories: Option<Vec<String>>,
    /// IANA time zone used to show times (stored times are always UTC).
    pub timezone: chrono_tz::Tz,
    /// Which backend stores state and carries events.
    pub backend: BackendKind,
    /// Settings of the `local` backend.
    pub local: LocalConfig,
    /// Settings of the `aws` backend, when the file has an `aws` section.
    pub aws: Option<AwsConfig>,
    /// Automatic pull settings.
    pub pull: PullSettings,
    /// Partition sync settings (`partition.*`), checked when used.
    pub partition: Option<PartitionConfig>,
    /// The S3 / folder mirrors (`mirrors`), validated.
    pub mirrors: Vec<MirrorConfig>,
    /// Webhook-triggered mirrors (`webhooks`), validated.
    pub webhooks: Option<WebhooksConfig>,
    /// Tree deploys (`deploy`), validated.
    pub deploy: Vec<DeployConfig>,
    /// Where the daemon serves `/metrics`, `/healthz` and `/readyz` (`observe.listen`);
    /// `None`: nowhere.
    pub observe_listen: Option<std::net::SocketAddr>,
    /// The URLs each notification is posted to (`notify[].webhook`).
    pub notify_webhooks: Vec<String>,
    /// Whether each notification is also shown on the desktop (`notify[].desktop`).
    pub notify_desktop: bool,
    /// Whether `gitsync run` installs the pre-push hook at start-up (`hooks.install`,
    /// default true).
    pub hooks_install: bool,
    /// The folder for gitsync's own files (`~/.gitsync`): logs, socket, pidfile.
    pub home: PathBuf,
}

/// `pull.*` after validation.
#[derive(Debug, Clone, Copy)]
pub struct PullSettings {
    /// Whether the daemon fast-forwards clean branches that are strictly behind.
    pub fast_forward: bool,
    /// Time between two full updates (fetch, fast-forward, state of every repository).
    pub interval: Duration,
    /// Longest time one `git fetch` may take before it is killed.
    pub fetch_timeout: Duration,
    /// Whether local branches that are not checked out are fast-forwarded too (by a
    /// compare-and-swap ref update; the worktree is never touched).
    pub other_branches: bool,
    /// Time between two rescans of the root for repositories cloned or removed.
    pub rescan: Duration,
    /// Time between two heartbeats of this host.
    pub heartbeat: Duration,
    /// Time between two cheap polls of the remotes (`None`: off).
    pub poll: Option<Duration>,
}

/// Where gitsync keeps its own files: `$HOME/.gitsync`.
///
/// Errors: none; falls back to `./.gitsync` when no home folder is known.
pub fn gitsync_home() -> PathBuf {
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".gitsync")
}

/// The configuration file to read: `explicit` (from `--config` or `GITSYNC_CONFIG`) or
/// `~/.gitsync/config.yml`.
pub fn default_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| gitsync_home().join("config.yml"))
}

/// Makes gitsync's own folder `home` (`~/.gitsync`) private: created `0700` when missing,
/// and narrowed to `0700` when others may read it, whatever the umask (the units use 0022
/// so that fast-forwarded files get the user's usual modes). Credentials end up under it
/// (the URLs of mirror sources in their bare caches), so no other user may look inside.
///
/// Errors: the folder cannot be created or its mode changed.
pub fn private_home(home: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)?;
    let mode = std::fs::metadata(home)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Expands a leading `~` or `~/` to the home folder; other paths are returned unchanged.
pub fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        return dirs::home_dir().unwrap_or_else(|| PathBuf::from("~"));
    }
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(path)
}

/// Loads the configuration.
///
/// * `file`: the YAML file to read; when it does not exist and `must_exist` is false, the
///   defaults are used (this is how `gitsync run --root DIR` works with no config file).
/// * `root_override`: `--root DIR`, which wins over the file's `root`.
/// * `need_root`: whether a missing `root` is an error (it is for `run` and `sync`, not for
///   `status`).
///
/// Errors: [`ConfigError`] listing every problem found (unreadable file, invalid YAML,
/// unknown key, wrong type, missing or non-existent root, unknown time zone, bad duration).
/// Warnings (such as GitArgus's unused `python.bin`) are logged through `tracing`.
pub fn load(
    file: &Path,
    must_exist: bool,
    root_override: Option<&Path>,
    need_root: bool,
) -> Result<Config, ConfigError> {
    let (raw, text, mut problems) = match std::fs::read_to_string(file) {
        Ok(text) => {
            let (raw, problems) = parse_collect(file, &text);
            match raw {
                Some(raw) => (raw, Some(text), problems),
                None => return Err(ConfigError { problems }),
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            (RawConfig::default(), None, Vec::new())
        }
        Err(err) => {
            return Err(ConfigError {
                problems: vec![Problem {
                    file: file.to_path_buf(),
                    line: None,
                    key: String::new(),
                    message: format!("cannot read the configuration file: {err}"),
                }],
            });
        }
    };
    match validate(file, text.as_deref(), raw, root_override, need_root) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { problems }),
        Err(more) => {
            problems.extend(more.problems);
            problems.sort_by_key(|p| p.line);
            Err(ConfigError { problems })
        }
    }
}

/// Parses YAML text into the raw schema, collecting every unknown key and wrong type.
///
/// Errors: [`ConfigError`] with one [`Problem`] per offending key (or one for a YAML syntax
/// error, which stops parsing).
pub fn parse(file: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    match parse_collect(file, text) {
        (Some(raw), problems) if problems.is_empty() => Ok(raw),
        (_, problems) => Err(ConfigError { problems }),
    }
}

/// Parses what it can: the config with every offending key removed (`None` after a YAML
/// syntax error), and the problems found.
fn parse_collect(file: &Path, text: &str) -> (Option<RawConfig>, Vec<Problem>) {
    let problem = |line, key: String, message: String| Problem {
        file: file.to_path_buf(),
        line,
        key,
        message,
    };
    let mut value: yaml_serde::Value = match yaml_serde::from_str(text) {
        Ok(yaml_serde::Value::Null) => return (Some(RawConfig::default()), Vec::new()),
        Ok(value) => value,
        Err(err) => {
            let line = err.location().map(|l| l.line());
            let message = strip_location(&err.to_string());
            let found = problem(line, String::new(), format!("invalid YAML: {message}"));
            return (None, vec![found]);
        }
    };
    let mut problems = Vec::new();
    // Each pass reports the first problem serde meets, then removes the offending key so
    // that the next pass can find the one after it.
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            Ok(raw) => return (Some(raw), problems),
            Err(err) => {
                let segments = locate::segments(err.path());
                let key = locate::dotted(&segments);
                let line = locate::key_line(text, &segments);
                problems.push(problem(line, key, strip_location(&err.inner().to_string())));
                if segments.is_empty() || !locate::remove(&mut value, &segments) {
                    break;
                }
            }
        }
    }
    problems.sort_by_key(|p| p.line);
    (None, problems)
}

/// serde_yaml-style messages end in " at line L column C"; the line is reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(pos) => message[..pos].to_string(),
        None => message.to_string(),
    }
}

fn validate(
    file: &Path,
    text: Option<&str>,
    raw: RawConfig,
    root_override: Option<&Path>,
    need_root: bool,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let line_of = |key: &str| {
        text.and_then(|t| {
            // `mirrors[1].name` is the key `mirrors`, item 1, key `name`.
            let segments: Vec<locate::Segment> = key
                .split('.')
                .flat_map(|part| match part.split_once('[') {
                    Some((name, index)) => vec![
                        locate::Segment::Key(name.to_string()),
                        locate::Segment::Index(
                            index.trim_end_matches(']').parse().unwrap_or_default(),
                        ),
                    ],
                    None => vec![locate::Segment::Key(part.to_string())],
                })
                .collect();
            locate::key_line(t, &segments)
        })
    };
    let mut push = |key: &str, message: String| {
        problems.push(Problem {
            file: file.to_path_buf(),
            line: line_of(key),
            key: key.to_string(),
            message,
        })
    };

    if raw.python.is_some() {
        tracing::warn!(file = %file.display(), "python.bin is a GitArgus setting that gitsync does not use; it is ignored");
    }

    let mut cli_problems = Vec::new();
    // `repositories: []`: a host that only runs mirrors, webhooks, deploys or partition
    // sync keeps no repository, so it needs no root.
    let keeps_none = raw.repositories.as_ref().is_some_and(|r| r.is_empty());
    let root = match (root_override, raw.root.as_deref()) {
        (Some(root), _) => Some(root.to_path_buf()),
        (None, Some(root)) => Some(expand_tilde(root)),
        (None, None) if !need_root || keeps_none => None,
        (None, None) if text.is_none() => {
            cli_problems.push(Problem {
                file: PathBuf::new(),
                line: None,
                key: String::new(),
                message: format!(
                    "no configuration ({} does not exist): run `gitsync init`, or pass --root DIR",
                    file.display()
                ),
            });
            None
        }
        (None, None) => {
            push(
                "root",
                "missing: set `root` in the file or pass --root DIR".to_string(),
            );
            None
        }
    };
    match (&root, root_override) {
        (Some(root), Some(_)) if !root.is_dir() => cli_problems.push(Problem {
            file: PathBuf::new(),
            line: None,
            key: "--root".to_string(),
            message: format!("{} is not an existing folder", root.display()),
        }),
        (Some(root), None) if !root.is_dir() => push(
            "root",
            format!("{} is not an existing folder", root.display()),
        ),
        _ => {}
    }

    let timezone = match raw.timezone.as_deref() {
        None => local_timezone(),
        Some(name) => match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                push(
                    "timezone",
                    format!(
                        "unknown time zone {name:?} (use an IANA name such as Europe/Budapest)"
                    ),
                );
                chrono_tz::Tz::UTC
            }
        },
    };

    let backend = match raw.backend {
        Some(kind) => kind,
        None if raw.aws.is_some() => BackendKind::Aws,
        None => BackendKind::Local,
    };
    if backend == BackendKind::Aws && raw.aws.is_none() {
        push(
            "backend",
            "`aws` needs an `aws` section (dynamodb.table, sqs.queue, sns.topic.arn)".to_string(),
        );
    }

    if let Some(queue) = raw
        .aws
        .as_ref()
        .and_then(|a| a.sqs.as_ref())
        .map(|q| q.queue.as_str())
        && !queue.ends_with(".fifo")
    {
        push(
            "aws.sqs.queue",
            format!("{queue:?} is not a FIFO queue name (it must end in .fifo)"),
        );
    }

    for entry in raw.repositories.iter().flatten() {
        let path = Path::new(entry);
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            push(
                "repositories",
                format!("{entry:?} is outside the root: entries are paths or globs under `root`"),
            );
        }
    }

    let pull = pull::settings(raw.pull.unwrap_or_default(), &mut push);
    let mirrors = raw.mirrors.clone().unwrap_or_default();
    mirrors::validate(&mirrors, &mut push);

    if let Some(webhooks) = &raw.webhooks {
        webhooks::validate(webhooks, &mut push);
    }
    if let Some(deploys) = &raw.deploy {
        deploy::validate(deploys, &mut push);
    }
    if let Some(section) = &raw.partition {
        partition::validate(section, &mut push);
    }
    let mut notify_webhooks = Vec::new();
    let mut notify_desktop = false;
    for (i, target) in raw.notify.iter().flatten().enumerate() {
        let key = format!("notify[{i}]");
        match (&target.webhook, target.desktop) {
            (Some(url), None) if url.starts_with("https://") || url.starts_with("http://") => {
                notify_webhooks.push(url.clone());
            }
            (Some(url), None) => push(
                &format!("{key}.webhook"),
                format!("{url:?} is not an http:// or https:// URL"),
            ),
            (None, Some(desktop)) => notify_desktop |= desktop,
            _ => push(
                &key,
                "a target is one of `webhook: URL` or `desktop: true`".to_string(),
            ),
        }
    }
    let observe_listen = raw
        .observe
        .as_ref()
        .and_then(|o| o.listen.as_deref())
        .and_then(|listen| match listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                push(
                    "observe.listen",
                    format!("{listen:?} is not an address and port such as 127.0.0.1:9187"),
                );
                None
            }
        });

    let home = gitsync_home();
    let local = raw.local.unwrap_or_default();

    if !problems.is_empty() || !cli_problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        cli_problems.extend(problems);
        return Err(ConfigError {
            problems: cli_problems,
        });
    }
    let hostname = raw.hostname.unwrap_or_else(system_hostname);
    Ok(Config {
        file: text.map(|_| file.to_path_buf()),
        hostname,
        root: root.unwrap_or_default(),
        repositories: raw.repositories,
        timezone,
        backend,
        local: LocalConfig {
            path: local
                .path
                .or_else(|| Some(home.join("hub").display().to_string())),
        },
        aws: raw.aws,
        pull,
        hooks_install: raw.hooks.and_then(|h| h.install).unwrap_or(true),
        partition: raw.partition,
        mirrors,
        webhooks: raw.webhooks,
        deploy: raw.deploy.unwrap_or_default(),
        observe_listen,
        notify_webhooks,
        notify_desktop,
        home,
    })
}

impl Config {
    /// Whether the configuration keeps no repository on purpose (`repositories: []`): a
    /// host that only runs mirrors, webhooks, deploys or partition sync.
    pub fn keeps_no_repositories(&self) -> bool {
        self.repositories.as_ref().is_some_and(|r| r.is_empty())
    }

    /// The local backend's hub folder, `~` expanded (default `~/.gitsync/hub`).
    pub fn hub_path(&self) -> PathBuf {
        self.local
            .path
            .as_deref()
            .map(expand_tilde)
            .unwrap_or_else(|| self.home.join("hub"))
    }
}

/// The machine's time zone, as `git log` shows times: `TZ` when it names an IANA zone
/// (`Europe/Budapest`, `:Europe/Budapest`), else the system's (`/etc/localtime`, through
/// the `iana-time-zone` crate), else UTC.
pub fn local_timezone() -> chrono_tz::Tz {
    let from_env = std::env::var("TZ")
        .ok()
        .and_then(|tz| tz.trim_start_matches(':').parse::<chrono_tz::Tz>().ok());
    from_env
        .or_else(|| {
            iana_time_zone::get_timezone()
                .ok()
                .and_then(|tz| tz.parse::<chrono_tz::Tz>().ok())
        })
        .unwrap_or(chrono_tz::Tz::UTC)
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn system_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        parse(Path::new("c.yml"), text)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn example_config_parses() {
        parse(Path::new("example.yml"), EXAMPLE).expect("example parses");
    }

    #[test]
    fn gitargus_config_parses() {
        let text = "hostname: machine\nroot: /home/user/Workspace\nrepositories:\n    - repo1\n    - project1/repo1\naws:\n    dynamodb:\n        table: git\n    sqs:\n        queue: machine.fifo\n    sns:\n        topic:\n            arn: arn:aws:sns:{region}:{userId}:{topicName}\ntimezone: Europe/Budapest\npython: \n    bin: /usr/bin/python3.11\n";
        let raw = parse(Path::new("c.yml"), text).expect("gitargus config parses");
        let aws = raw.aws.expect("aws section");
        assert_eq!(aws.sqs.map(|s| s.queue), Some("machine.fifo".to_string()));
    }

    #[test]
    fn all_problems_reported_with_lines() {
        let text = "root: /tmp\nbogus: 1\npull:\n  interval: soon\n  fast_forward: maybe\n";
        let found = problems(text);
        let keys: Vec<_> = found.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("bogus", Some(2)),
                ("pull.interval", Some(4)),
                ("pull.fast_forward", Some(5))
            ]
        );
    }

    #[test]
    fn entries_outside_the_root_are_refused_with_file_line_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yml");
        let text = format!(
            "root: {}\nrepositories:\n  - ok\n  - ../../outside\n  - /etc\n",
            dir.path().display()
        );
        std::fs::write(&file, text).expect("write");
        let err = load(&file, true, None, true).expect_err("refused");
        let found: Vec<_> = err
            .problems
            .iter()
            .map(|p| {
                (
                    p.key.as_str(),
                    p.line,
                    p.message.contains("outside the root"),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("repositories", Some(2), true),
                ("repositories", Some(2), true)
            ]
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let found = problems("root: /tmp\npull: [\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].message.starts_with("invalid YAML"));
        assert!(found[0].line.is_some());
    }

    #[test]
    fn nested_unknown_key() {
        let found = problems("root: /tmp\naws:\n  dynamodb:\n    table: git\n    tabel: x\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "aws.dynamodb.tabel");
        assert_eq!(found[0].line, Some(5));
    }
}
