//! One way to move refs at another repository, and one way to give git a remote's
//! credentials: used by the webhook mirror and by partition sync.
//!
//! A push is a compare-and-swap per ref (`--force-with-lease=<ref>:<expected>`, with no `+`
//! refspec: the lease is the only permission to rewrite), or git's own fast-forward rule
//! where no lease is given. What landed is read from `git push --porcelain` (git-push(1),
//! "OUTPUT"), ref by ref, so one rejected ref does not hide the others and no second
//! listing of the remote is needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::ops::{self, GitError};

/// What the remote's ref must be for an update to go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// It must not exist (a lease on nothing).
    Absent,
    /// It must be at this object id (a lease on it).
    At(String),
    /// No lease: git's own rule (a fast-forward, or a tag that does not exist yet).
    FastForward,
}

/// One ref to move at the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The remote's ref, fully qualified (`refs/heads/main`).
    pub name: String,
    /// What to put there: an object id or a local ref name; `None` deletes it.
    pub new: Option<String>,
    /// What it must be now.
    pub expect: Expect,
}

/// How one update ended: `Ok` when the remote's ref is now what was asked (moved, created,
/// deleted or already so), else why the remote refused it.
pub type RefResult = Result<(), Rejected>;

/// A ref update the remote refused: git's reason as `git push --porcelain` prints it
/// (`[rejected] (stale info)`, `[remote rejected] (pre-receive hook declined)`, ...), or
/// `not reported` when git said nothing of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Pushes `updates` from the repository `dir` to `remote` (a URL or a remote's name) in
/// one `git push --porcelain --no-verify`, with `env` (see [`credential_env`]) and
/// `timeout`. Returns each update's result, in the order of `updates`; an update git did
/// not report is refused ("not reported").
///
/// Errors: [`GitError`] when git cannot start, times out, or fails without reporting any
/// ref (the remote cannot be reached, credentials are refused).
pub async fn push(
    dir: &Path,
    remote: &str,
    updates: &[RefUpdate],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<RefResult>, GitError> {
    // Many lease-free updates go out through one wildcard refspec: git matches each
    // explicit refspec against every local and remote ref (2,501 of them cost 5 s of CPU
    // where `refs/heads/*:refs/heads/*` costs nothing).
    let staged = Staged::of(dir, updates, timeout).await;
    if let Some(staged) = &staged {
        staged.write(dir, timeout).await?;
    }
    let result = push_with(dir, remote, updates, staged.as_ref(), env, timeout).await;
    if let Some(staged) = &staged {
        staged.remove(dir, timeout).await;
    }
    result
}

/// At least this many lease-free updates go out through [`Staged`] refs.
const STAGE_FROM: usize = 64;

/// The heads and tags of the repository at `dir` and the ids they hold (a tag's own object
/// id, not peeled): name -> id, as `git for-each-ref refs/heads refs/tags` lists them. Read
/// in this process (gix) where it can, by git otherwise.
///
/// Errors: [`GitError`] from git when gix cannot read them.
pub async fn heads_and_tags(
    dir: &Path,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, GitError> {
    let path = dir.to_path_buf();
    if let Ok(Some(refs)) = tokio::task::spawn_blocking(move || refs_read_in_process(&path)).await {
        return Ok(refs);
    }
    let out = ops::run(
        dir,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        ],
        timeout,
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect())
}

/// The heads and tags of the repository at `dir` and the ids they hold (a tag's own
/// object id, not peeled), as `git for-each-ref` lists them; `None` when gix cannot read
/// them or a ref there is symbolic.
fn refs_read_in_process(dir: &Path) -> Option<BTreeMap<String, String>> {
    let repo = gix::open(dir).ok()?;
    let platform = repo.references().ok()?;
    let mut refs = BTreeMap::new();
    for r in platform.local_branches().ok()?.chain(platform.tags().ok()?) {
        let r = r.ok()?;
        let id = r.inner.target.try_id()?.to_string();
        refs.insert(r.inner.name.as_bstr().to_string(), id);
    }
    Some(refs)
}

/// How many lease-free updates go out: when they are exactly the pushing repository's own
/// heads (or tags), at the same ids, as on a mirror's first fill, through
/// `refs/heads/*:refs/heads/*` (`refs/tags/*:refs/tags/*`); the rest as refs written under
/// a namespace of their own in the pushing repository
/// (`refs/gitsync-push/<pid>-<random>/<name without refs/>`), pushed with one refspec
/// `refs/gitsync-push/<...>/*:refs/*`, and removed afterwards.
struct Staged {
    prefix: String,
    wildcards: Vec<String>,
    refs: Vec<(String, String)>,
}

impl Staged {
    /// The plan for `updates`' lease-free creations and moves to an object id, when there
    /// are at least [`STAGE_FROM`] of them; `None` when they go out as explicit refspecs.
    async fn of(dir: &Path, updates: &[RefUpdate], timeout: Duration) -> Option<Staged> {
        let stageable: Vec<&RefUpdate> = updates.iter().filter(|u| Self::stageable(u)).collect();
        if stageable.len() < STAGE_FROM {
            return None;
        }
        let prefix = format!(
            "refs/gitsync-push/{}-{:08x}/",
            std::process::id(),
            fastrand::u32(..)
        );
        let own = heads_and_tags(dir, timeout).await.unwrap_or_default();
        let mut wildcards = Vec::new();
        let mut covered = std::collections::BTreeSet::new();
        for space in ["refs/heads/", "refs/tags/"] {
            let local: BTreeMap<&str, &str> = own
                .iter()
                .filter(|(name, _)| name.starts_with(space))
                .map(|(name, id)| (name.as_str(), id.as_str()))
                .collect();
            let wanted: BTreeMap<&str, &str> = stageable
                .iter()
                .filter(|u| u.name.starts_with(space))
                .filter_map(|u| Some((u.name.as_str(), u.new.as_deref()?)))
                .collect();
            if !local.is_empty() && local == wanted {
                wildcards.push(format!("{space}*:{space}*"));
                covered.extend(wanted.keys().map(|k| k.to_string()));
            }
        }
        let refs: Vec<(String, String)> = stageable
            .iter()
            .filter(|u| !covered.contains(&u.name))
            .filter_map(|u| {
                let rest = u.name.strip_prefix("refs/")?;
                Some((format!("{prefix}{rest}"), u.new.clone()?))
            })
            .collect();
        Some(Staged {
            prefix,
            wildcards,
            refs,
        })
    }

    fn stageable(u: &RefUpdate) -> bool {
        u.expect == Expect::FastForward
            && u.name.starts_with("refs/")
            && u.new
                .as_deref()
                .is_some_and(|n| n.len() >= 40 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Creates the refs (`git update-ref --stdin`, one transaction).
    async fn write(&self, dir: &Path, timeout: Duration) -> Result<(), GitError> {
        self.update(dir, |name, id| format!("create {name} {id}\n"), timeout)
            .await
    }

    /// Deletes the refs; a failure leaves refs that only keep objects alive in `dir`.
    async fn remove(&self, dir: &Path, timeout: Duration) {
        if let Err(err) = self
            .update(dir, |name, _| format!("delete {name}\n"), timeout)
            .await
        {
            tracing::warn!(%err, prefix = %self.prefix, "cannot remove the refs staged for a push");
        }
    }

    /// One `git update-ref --stdin` transaction of a `line` (name, id) per staged ref.
    async fn update(
        &self,
        dir: &Path,
        line: impl Fn(&str, &str) -> String,
        timeout: Duration,
    ) -> Result<(), GitError> {
        if self.refs.is_empty() {
            return Ok(());
        }
        let input: String = self.refs.iter().map(|(name, id)| line(name, id)).collect();
        ops::run_input(
            dir,
            &["update-ref", "--stdin"],
            input.as_bytes(),
            timeout,
            &[],
        )
        .await
        .map(|_| ())
    }
}

async fn push_with(
    dir: &Path,
    remote: &str,
    updates: &[RefUpdate],
    staged: Option<&Staged>,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<RefResult>, GitError> {
    let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--no-verify".into()];
    for u in updates {
        match &u.expect {
            Expect::Absent => args.push(format!("--force-with-lease={}:", u.name)),
            Expect::At(id) => args.push(format!("--force-with-lease={}:{id}", u.name)),
            Expect::FastForward => {}
        }
    }
    args.push("--".into());
    args.push(remote.to_string());
    if let Some(staged) = staged {
        args.extend(staged.wildcards.iter().cloned());
        if !staged.refs.is_empty() {
            args.push(format!("{}*:refs/*", staged.prefix));
        }
    }
    for u in updates {
        if staged.is_some() && Staged::stageable(u) {
            continue;
        }
        args.push(match &u.new {
            Some(new) => format!("{new}:{}", u.name),
            None => format!(":{}", u.name),
        });
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = ops::output_with(dir, &argv, timeout, env).await?;
    let reported = porcelain(&String::from_utf8_lossy(&output.stdout));
    if !output.status.success() && reported.is_empty() {
        let stderr =
            crate::util::redact::redact_text(String::from_utf8_lossy(&output.stderr).trim());
        return Err(ops::failed(dir, &argv, stderr));
    }
    Ok(updates
        .iter()
        .map(|u| {
            reported
                .get(&u.name)
                .cloned()
                .unwrap_or_else(|| Err(Rejected("not reported".to_string())))
        })
        .collect())
}

/// The per-ref lines of `git push --porcelain`: `<flag>\t<from>:<to>\t<summary>`, where
/// the flag `!` is a rejection (its summary, such as `[rejected] (stale info)`, is the
/// reason) and ` `, `+`, `-`, `*`, `=` are updates that landed or were already so.
fn porcelain(stdout: &str) -> BTreeMap<String, RefResult> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let flag = fields.next()?;
            let (_, to) = fields.next()?.rsplit_once(':')?;
            let summary = fields.next().unwrap_or("").trim();
            let result = match flag {
                "!" => Err(Rejected(summary.to_string())),
                " " | "+" | "-" | "*" | "=" => Ok(()),
                _ => return None,
            };
            Some((to.to_string(), result))
        })
        .collect()
}

/// The files ssh is given for one remote.
#[derive(Debug, Clone, Copy, Default)]
pub struct SshFiles<'a> {
    /// A private key (`-i`, with `IdentitiesOnly=yes`).
    pub key: Option<&'a Path>,
    /// A known_hosts file (`UserKnownHostsFile`, with `StrictHostKeyChecking=yes`).
    pub known_hosts: Option<&'a Path>,
}

/// The git environment that sends `token` as an HTTP header on every request
/// (`http.extraHeader` through `GIT_CONFIG_COUNT`, git-config(1), so it is in no URL,
/// argument or log): `user:password` becomes Basic auth, anything else a Bearer token. `ssh`:
/// the private key file and the known_hosts file ssh uses, through `GIT_SSH_COMMAND`
/// (either may be absent; with neither, git's own ssh settings apply).
pub fn credential_env(token: Option<&str>, ssh: SshFiles<'_>) -> Vec<(String, String)> {
    use base64::Engine;
    let mut env = Vec::new();
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let value = if token.contains(':') {
            format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(token)
            )
        } else {
            format!("Authorization: Bearer {token}")
        };
        env.push(("GIT_CONFIG_COUNT".to_string(), "1".to_string()));
        env.push((
            "GIT_CONFIG_KEY_0".to_string(),
            "http.extraHeader".to_string(),
        ));
        env.push(("GIT_CONFIG_VALUE_0".to_string(), value));
    }
    if ssh.key.is_some() || ssh.known_hosts.is_some() {
        // GIT_SSH_COMMAND goes through the shell: paths are quoted for it (a path cannot
        // hold the NUL byte that alone would make quoting fail).
        let quoted = |p: &Path| {
            let path = p.display().to_string();
            shlex::try_quote(&path).map_or(path.clone(), |q| q.into_owned())
        };
        let mut command = "ssh -o BatchMode=yes".to_string();
        if let Some(key) = ssh.key {
            command.push_str(&format!(" -i {} -o IdentitiesOnly=yes", quoted(key)));
        }
        if let Some(file) = ssh.known_hosts {
            // ssh reads this option as a list of files split at blanks, unless the path
            // is in double quotes (ssh_config(5)).
            let option = format!("UserKnownHostsFile=\"{}\"", file.display());
            command.push_str(&format!(
                " -o {} -o StrictHostKeyChecking=yes",
                quoted(Path::new(&option))
            ));
        }
        env.push(("GIT_SSH_COMMAND".to_string(), command));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_in_a_header_not_a_url() {
        let none = SshFiles::default();
        let env = credential_env(Some("user:pw"), none);
        assert_eq!(env[2].1, "Authorization: Basic dXNlcjpwdw==");
        let env = credential_env(Some("tok"), none);
        assert_eq!(env[2].1, "Authorization: Bearer tok");
        assert!(credential_env(None, none).is_empty());
        let files = SshFiles {
            key: Some(Path::new("/keys/it's mine")),
            known_hosts: Some(Path::new("/keys/known hosts")),
        };
        let env = credential_env(None, files);
        assert_eq!(env[0].0, "GIT_SSH_COMMAND");
        let words = shlex::split(&env[0].1).expect("a shell command");
        assert_eq!(
            words[..9],
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-i",
                "/keys/it's mine",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=\"/keys/known hosts\""
            ],
            "{}",
            env[0].1
        );
    }

    #[test]
    fn porcelain_lines_say_ref_by_ref_what_landed() {
        let out = "To /tmp/t.git\n\
                   \x20\tabc:refs/heads/main\t1111111..2222222\n\
                   *\tdef:refs/heads/new\t[new branch]\n\
                   -\t:refs/heads/gone\t[deleted]\n\
                   =\trefs/tags/v1:refs/tags/v1\t[up to date]\n\
                   !\t123:refs/heads/taken\t[rejected] (stale info)\n\
                   +\t456:refs/heads/forced\t3333333...4444444 (forced update)\n\
                   Done\n";
        let got = porcelain(out);
        assert_eq!(got.len(), 6, "{got:?}");
        for name in [
            "refs/heads/main",
            "refs/heads/new",
            "refs/heads/gone",
            "refs/tags/v1",
            "refs/heads/forced",
        ] {
            assert_eq!(got.get(name), Some(&Ok(())), "{name}");
        }
        assert_eq!(
            got.get("refs/heads/taken"),
            Some(&Err(Rejected("[rejected] (stale info)".to_string())))
        );
    }
}
