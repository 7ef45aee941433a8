//! `gitsync hook post-receive`: what the `post-receive` hook of a bare repository on a
//! server (`gitsync hooks install --server`) runs, detached from the push.
//!
//! It reads git's ref lines (`<old> <new> <ref>`, githooks(5), "post-receive") from the
//! file the hook saved them to, and publishes one push event per ref update on the event
//! bus of this machine's config (the local hub, or SNS), as a host's daemon does after its
//! own push. Events it cannot publish (the hub's share is gone, AWS is unreachable) wait in
//! `~/.gitsync/spool/post-receive/` and go first at the next push; receivers collapse an
//! event delivered twice by its id. Every failure is logged, none reaches git.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::model::PushEvent;

/// How long one run may take to publish (the push does not wait for it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many bytes of ref lines are read (a push of 10,000 refs is ~1 MB).
const MAX_INPUT: u64 = 16 << 20;

/// Arguments of `gitsync hook post-receive`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The bare repository that received the push (the hook's `$GIT_DIR`).
    #[arg(long, value_name = "DIR")]
    pub git_dir: PathBuf,
    /// The URL your machines fetch this repository by (their remote's URL); empty for
    /// `ssh://<hostname><git-dir>`.
    #[arg(long, default_value = "")]
    pub url: String,
    /// The file holding git's ref lines; removed once read. Standard input when absent.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// The sender named in the events of a server hook on `hostname`, as `status` reads it
/// (see [`crate::daemon::reach`]).
pub fn sender(hostname: &str) -> String {
    format!("server hook via {hostname}")
}

/// The repository name the events carry: the bare folder's name without `.git` (or the
/// name of the folder holding a `.git`).
fn repo_name(git_dir: &Path) -> String {
    let dir = std::fs::canonicalize(git_dir).unwrap_or_else(|_| git_dir.to_path_buf());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match name.as_str() {
        ".git" => dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        other => other.strip_suffix(".git").unwrap_or(other).to_string(),
    };
    if name.is_empty() {
        "repository".to_string()
    } else {
        name
    }
}

/// The push events of git's post-receive `input` (`<old> <new> <ref>` lines; others are
/// skipped) for the repository at `git_dir`, sent by `host`, fetched by `url`.
pub fn events_of(input: &str, host: &str, git_dir: &Path, url: &str) -> Vec<PushEvent> {
    let repo = repo_name(git_dir);
    // Lines end with LF alone (githooks(5)); a CR is part of the ref name, which is then
    // not a valid one.
    input
        .split('\n')
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let event = PushEvent::new(
                host,
                &repo,
                url,
                name,
                &old.to_ascii_lowercase(),
                &new.to_ascii_lowercase(),
            );
            event.validate().ok().map(|()| event)
        })
        .collect()
}

fn spool_dir(home: &Path) -> PathBuf {
    home.join("spool").join("post-receive")
}

/// Keeps `event` in the spool under `home` for the next run.
///
/// Errors: the spool cannot be written.
fn spool(home: &Path, event: &PushEvent) -> Result<PathBuf, crate::util::fs::PathError> {
    let at = event.at.timestamp_nanos_opt().unwrap_or_default();
    let path = spool_dir(home).join(format!("{at:020}-{}.json", &event.id[..16]));
    crate::util::fs::write_json(&path, event)?;
    Ok(path)
}

/// The events waiting in the spool under `home`, oldest first, with their files.
fn spooled(home: &Path) -> Vec<(PathBuf, PushEvent)> {
    let Ok(entries) = std::fs::read_dir(spool_dir(home)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| match std::fs::read(&path).map(|b| serde_json::from_slice::<PushEvent>(&b)) {
            Ok(Ok(event)) if event.validate().is_ok() => Some((path, event)),
            _ => {
                tracing::warn!(file = %path.display(), "a spooled event cannot be read; it is left out");
                let _ = std::fs::rename(&path, path.with_extension("bad"));
                None
            }
        })
        .collect()
}

/// Publishes the events spooled under `home` (the gitsync folder the hook names), then
/// `fresh`, on the bus `config` names; what fails (and everything after it, to keep the
/// order) goes to the spool. Returns how many events were published and how many wait.
async fn publish(
    config: &crate::config::Config,
    home: &Path,
    fresh: Vec<PushEvent>,
) -> (usize, usize) {
    // One run at a time: two pushes landing together would both send what is spooled.
    let _lock = match crate::flock::exclusive(spool_dir(home).join(".lock")).await {
        Ok(lock) => Some(lock),
        Err(err) => {
            tracing::warn!(%err, "cannot lock the spool; publishing without it");
            None
        }
    };
    let mut queue: Vec<(Option<PathBuf>, PushEvent)> = spooled(home)
        .into_iter()
        .map(|(path, event)| (Some(path), event))
        .collect();
    queue.extend(fresh.into_iter().map(|e| (None, e)));
    let bus = match crate::backend::open(config).await {
        Ok(backend) => Some(backend.bus),
        Err(err) => {
            tracing::warn!(%err, "the event bus cannot be opened; the push is kept for later");
            None
        }
    };
    let (mut sent, mut waiting) = (0, 0);
    let mut down = bus.is_none();
    for (file, event) in queue {
        if !down && let Some(bus) = &bus {
            match tokio::time::timeout(PUBLISH_TIMEOUT, bus.publish(&event)).await {
                Ok(Ok(())) => {
                    sent += 1;
                    if let Some(file) = file {
                        let _ = std::fs::remove_file(file);
                    }
                    continue;
                }
                Ok(Err(err)) => tracing::warn!(%err, "cannot publish; kept for the next push"),
                Err(_) => tracing::warn!("publishing took too long; kept for the next push"),
            }
            down = true;
        }
        waiting += 1;
        if file.is_none()
            && let Err(err) = spool(home, &event)
        {
            tracing::error!(%err, "cannot keep the push for later: it is lost to the other machines until their next poll");
        }
    }
    (sent, waiting)
}

/// Runs the hook's work. Always exit code 0: git has already updated the refs.
pub fn run(args: &Args) -> ExitCode {
    let input = match &args.input {
        Some(file) => {
            let text = std::fs::File::open(file).and_then(|f| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_INPUT), &mut text)
                    .map(|_| text)
            });
            let _ = std::fs::remove_file(file);
            text.unwrap_or_default()
        }
        None => {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(
                &mut std::io::Read::take(std::io::stdin(), MAX_INPUT),
                &mut text,
            );
            text
        }
    };
    let home = std::env::var_os("GITSYNC_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(crate::config::gitsync_home);
    // The config must exist: without one the events would go to a hub nobody reads.
    let config = crate::config::load(&home.join("config.yml"), true, None, false);
    let hostname = config
        .as_ref()
        .map_or_else(|_| crate::config::system_hostname(), |c| c.hostname.clone());
    let git_dir = std::fs::canonicalize(&args.git_dir).unwrap_or_else(|_| args.git_dir.clone());
    let url = match args.url.as_str() {
        "" => format!("ssh://{hostname}{}", git_dir.display()),
        url => url.to_string(),
    };
    let events = events_of(&input, &sender(&hostname), &git_dir, &url);
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            tracing::error!(%err, "post-receive: no usable config; the push is kept for later");
            for event in &events {
                if let Err(err) = spool(&home, event) {
                    tracing::error!(%err, "cannot keep the push for later");
                }
            }
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "post-receive: no runtime; the push is kept for later");
            for event in &events {
                let _ = spool(&home, event);
            }
            return ExitCode::SUCCESS;
        }
    };
    let (sent, waiting) = runtime.block_on(publish(&config, &home, events));
    tracing::info!(sent, waiting, repo = %repo_name(&git_dir), "post-receive: {sent} published, {waiting} kept for the next push");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_lines_become_events_named_after_the_bare_folder() {
        let a = "a".repeat(40);
        let z = crate::model::ZERO_OID;
        let input = format!(
            "{z} {a} refs/heads/main\n{a} {z} refs/tags/v1\nnonsense\n{a} {a} --upload-pack=x\n{a} {a} refs/heads/x extra\n"
        );
        let events = events_of(
            &input,
            "server hook via nas",
            Path::new("/srv/git/site.git"),
            "ssh://nas/srv/git/site.git",
        );
        let refs: Vec<&str> = events.iter().map(|e| e.ref_name.as_str()).collect();
        assert_eq!(refs, ["refs/heads/main", "refs/tags/v1"]);
        assert!(
            events
                .iter()
                .all(|e| e.repo == "site" && e.host == "server hook via nas")
        );
        assert_eq!(repo_name(Path::new("/home/me/proj/.git")), "proj");
    }

    /// Whoever may push decides the ref names: random lines, good ones among bad, never
    /// panic, and exactly the well-formed updates become events, with their values.
    #[test]
    fn random_ref_lines_give_exactly_the_valid_updates() {
        let seed = std::env::var("GITSYNC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        let mut rng = fastrand::Rng::with_seed(seed);
        let oid = |rng: &mut fastrand::Rng| -> String {
            (0..40)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let pieces = [
            "refs/heads/",
            "refs/tags/",
            "main",
            "-x",
            "..",
            "@{",
            " ",
            "\t",
            "/",
            "~",
            "^",
            ":",
            "?",
            "*",
            "[",
            "\\",
            ".lock",
            "é",
            "\u{0}",
            "\r",
            "feature",
        ];
        for case in 0..2_000 {
            let mut input = String::new();
            let mut want = Vec::new();
            for _ in 0..rng.usize(0..6) {
                let name: String = (0..rng.usize(1..5))
                    .map(|_| pieces[rng.usize(..pieces.len())])
                    .collect();
                let (old, new) = (oid(&mut rng), oid(&mut rng));
                let line = match rng.u8(0..4) {
                    0 => format!("{old} {new} {name}"),
                    1 => format!("{old} {new} refs/heads/{}", rng.u32(..)),
                    2 => format!("{} {new} {name}", &old[..rng.usize(0..40)]),
                    _ => format!("{old}{new}{name}"),
                };
                let parts: Vec<&str> = line.split(' ').collect();
                if let [o, n, r] = parts[..] {
                    let event = PushEvent::new("h", "site", "u", r, o, n);
                    if event.validate().is_ok() {
                        want.push((r.to_string(), o.to_string(), n.to_string()));
                    }
                }
                input.push_str(&line);
                input.push('\n');
            }
            let got: Vec<(String, String, String)> =
                events_of(&input, "h", Path::new("/srv/site.git"), "u")
                    .into_iter()
                    .map(|e| (e.ref_name, e.old, e.new))
                    .collect();
            assert_eq!(got, want, "seed {seed}, case {case}: {input:?}");
        }
    }
}
