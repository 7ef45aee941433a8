//! Logging set-up: `tracing` to standard error and, for the daemon, to a daily-rotated
//! `~/.gitsync/gitsync.log`.
//!
//! `GITSYNC_LOG` sets the filter (tracing-subscriber's `EnvFilter` syntax, such as
//! `debug` or `gitsync=debug,warn`). Under systemd (`JOURNAL_STREAM` is set) standard error
//! carries no timestamps: the journal adds its own. Colours only when standard error is a
//! terminal.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the log file writer alive; drop it last so buffered lines are flushed.
pub struct Guard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("GITSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// The target of log events that report an outcome a command also prints in words (a
/// mirror, deploy target or partition pair that failed). A command's own terminal shows
/// its line once; the daemon's log keeps every event.
pub const OUTCOME: &str = "gitsync::outcome";

/// Logs to standard error only, at `warn` unless `GITSYNC_LOG` says otherwise, without the
/// [`OUTCOME`] events the command prints itself: for short-lived commands.
pub fn init_cli() -> Guard {
    let _ = tracing_subscriber::fmt()
        // The SDK's provider chain warns at every link it tries (instance metadata, a
        // missing region); a command says what failed in its own words instead.
        .with_env_filter(filter(&format!(
            "warn,{OUTCOME}=off,aws_config=off,aws_smithy_runtime=off"
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    Guard(None)
}

/// How many daily log files are kept.
pub const LOG_DAYS: usize = 14;

/// Logs to standard error and to `dir/gitsync.log.YYYY-MM-DD` (the last [`LOG_DAYS`]
/// days), at `info` unless
/// `GITSYNC_LOG` says otherwise: for the daemon. With `json`, standard error carries one
/// JSON object per line (tracing-subscriber's format: `timestamp`, `level`, `fields`
/// with `message`). When `dir` cannot be created the file log is skipped with a warning.
pub fn init_daemon(dir: &Path, json: bool) -> Guard {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Daily files; those older than 14 days are removed as new ones are made.
    let appender = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            tracing_appender::rolling::RollingFileAppender::builder()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("gitsync.log")
                .max_log_files(LOG_DAYS)
                .build(dir)
                .map_err(|e| e.to_string())
        });
    let (file_layer, guard, file_error) = match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false);
            (Some(layer), Some(guard), None)
        }
        Err(err) => (None, None, Some(err)),
    };
    let registry = tracing_subscriber::registry()
        .with(filter("info"))
        .with(file_layer);
    let _ = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init()
    } else if journal {
        registry
            .with(stderr.without_time().with_ansi(false))
            .try_init()
    } else {
        registry.with(stderr).try_init()
    };
    if let Some(err) = file_error {
        tracing::warn!(dir = %dir.display(), %err, "cannot write the log file; logging to standard error only");
    }
    Guard(guard)
}
