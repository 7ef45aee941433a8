//! The system `ssh` and `rsync`, the way users run them: their keys, config and
//! known_hosts; `BatchMode=yes` (never a prompt), a connection timeout, host keys checked
//! (`StrictHostKeyChecking=yes` unless the config says `accept-new`), one multiplexed
//! connection per user, host and port (`ControlMaster=auto`), kept for 60 seconds after its
//! last session (`ControlPersist=60`, as Ansible does) so that the next ship does not wait
//! for a new handshake, and every remote argument quoted for the remote shell (`shlex`).

use super::DeployError;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{DeploySsh, DeployTarget};
use crate::util::child::{Child, ChildError};

/// How to reach one target.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// `user@host` or an alias.
    pub host: String,
    port: Option<u16>,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    strict: String,
    connect_timeout: u64,
    control: PathBuf,
    /// Whether `control` is the shared folder ([`control_dir`]), whose connections stay.
    shared: bool,
}

/// The folder of the multiplexing sockets ([`Ssh::new`]): `$XDG_RUNTIME_DIR/gitsync-ssh`,
/// else `<temp>/gitsync-ssh-<uid>`, made private (0700). One that is not this user's own
/// private folder (made by someone else first, or a symlink) is not used: then each call
/// gets a folder of its own in this process's, and its connection is closed after use
/// ([`Ssh::close`]). Short, because a socket's path is limited to 108 bytes and ssh adds
/// `%C` (40 characters) and a temporary suffix to it. Returns the folder and whether it is
/// the shared one.
fn control_dir() -> (PathBuf, bool) {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid().as_raw();
    let shared = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("gitsync-ssh"),
        None => std::env::temp_dir().join(format!("gitsync-ssh-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&shared);
    let private = std::fs::symlink_metadata(&shared)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    if private && shared.as_os_str().len() <= 48 {
        return (shared, true);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own = std::env::temp_dir()
        .join(format!("gitsync-ssh-{}", std::process::id()))
        .join(n.to_string());
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&own);
    (own, false)
}

/// Quotes `text` for a POSIX shell.
///
/// Errors: text that cannot be quoted (a NUL byte).
pub fn quote(text: &str) -> Result<String, DeployError> {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|_| DeployError::Unquotable(text.to_string()))
}

impl Ssh {
    /// The connection to `target` with `settings`, its multiplexing socket in
    /// [`control_dir`].
    pub fn new(target: &DeployTarget, settings: Option<&DeploySsh>) -> Ssh {
        let settings = settings.cloned().unwrap_or_default();
        let (control, shared) = control_dir();
        Ssh {
            host: target.host.clone(),
            port: target.port,
            identity: settings
                .identity
                .as_deref()
                .map(crate::config::expand_tilde),
            known_hosts: settings
                .known_hosts
                .as_deref()
                .map(crate::config::expand_tilde),
            strict: settings
                .strict_host_key_checking
                .unwrap_or_else(|| "yes".to_string()),
            connect_timeout: settings.connect_timeout.unwrap_or(10),
            control,
            shared,
        }
    }

    /// The `ssh` options, without the destination.
    pub fn options(&self) -> Vec<String> {
        let mut args = vec![
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            format!("ConnectTimeout={}", self.connect_timeout),
            "-o".to_string(),
            format!("StrictHostKeyChecking={}", self.strict),
            "-o".to_string(),
            "ServerAliveInterval=15".to_string(),
            "-o".to_string(),
            "ControlMaster=auto".to_string(),
            "-o".to_string(),
            format!("ControlPath={}/%C", self.control.display()),
            "-o".to_string(),
            "ControlPersist=60".to_string(),
        ];
        if let Some(file) = &self.known_hosts {
            args.push("-o".to_string());
            args.push(format!("UserKnownHostsFile={}", file.display()));
        }
        if let Some(key) = &self.identity {
            args.extend([
                "-i".to_string(),
                key.display().to_string(),
                "-o".to_string(),
                "IdentitiesOnly=yes".to_string(),
            ]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        args
    }

    /// The `ssh ...` command line rsync runs (`-e`), every part quoted.
    ///
    /// Errors: an option that cannot be quoted.
    pub fn rsync_shell(&self) -> Result<String, DeployError> {
        let mut parts = vec!["ssh".to_string()];
        for o in self.options() {
            parts.push(quote(&o)?);
        }
        Ok(parts.join(" "))
    }

    /// Runs `script` (POSIX sh, its values already quoted) on the target, with `input` on
    /// its standard input. Returns standard output.
    ///
    /// Errors: the exit code and the last line of standard error.
    pub async fn run(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, (Option<i32>, String)> {
        self.run_bytes(script, input, timeout)
            .await
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// [`Ssh::run`], returning standard output as the bytes it was (file names that are
    /// not UTF-8 stay as they are).
    ///
    /// Errors: the exit code and the last line of standard error.
    pub async fn run_bytes(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Vec<u8>, (Option<i32>, String)> {
        let mut command = Child::new("ssh", timeout);
        command
            .args(self.options())
            .arg("--")
            .arg(&self.host)
            .arg(script);
        if let Some(input) = input {
            command.input(input.to_vec());
        }
        answer(&self.host, timeout, command.output().await)
    }

    /// Closes the multiplexed connection (`ssh -O exit`), if one is open, and removes its
    /// socket folder when that is empty; a connection in the shared folder
    /// ([`control_dir`]) is left for other ships, and ends 60 seconds after its last
    /// session.
    pub async fn close(&self) {
        if self.shared {
            return;
        }
        let mut command = Child::new("ssh", Duration::from_secs(10));
        command
            .args(self.options())
            .args(["-O", "exit", "--"])
            .arg(&self.host);
        let _ = command.output().await;
        let _ = std::fs::remove_dir(&self.control);
    }
}

/// The last line of `stderr` that says something, for a one-line error.
pub(super) fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// What a finished ssh `output` of a session to `host` stopped after `timeout` says:
/// standard output, or the exit code and the last line of standard error.
fn answer(
    host: &str,
    timeout: Duration,
    output: Result<std::process::Output, ChildError>,
) -> Result<Vec<u8>, (Option<i32>, String)> {
    match output {
        Ok(output) if output.status.success() => Ok(output.stdout),
        Ok(output) => Err((output.status.code(), last_line(&output.stderr))),
        Err(ChildError::Timeout { .. }) => Err((
            None,
            format!(
                "ssh to {host} took longer than {} and was stopped",
                humantime::format_duration(timeout)
            ),
        )),
        Err(e) => Err((None, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_values_are_quoted() {
        assert_eq!(quote("a b").expect("quote"), "'a b'");
        assert_eq!(quote("$HOME").expect("quote"), "'$HOME'");
        assert_eq!(quote("plain").expect("quote"), "plain");
        let t = DeployTarget {
            name: "vm".into(),
            host: "deploy@vm".into(),
            port: Some(2222),
            path: "/srv/site".into(),
        };
        let ssh = Ssh::new(&t, None);
        let shell = ssh.rsync_shell().expect("shell");
        assert!(
            shell.contains("StrictHostKeyChecking=yes") && shell.contains("-p 2222"),
            "{shell}"
        );
        assert!(shell.contains("BatchMode=yes"));
    }
}
