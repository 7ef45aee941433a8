//! Which machine publishes under a hostname: two machines given one `hostname` (a config
//! file copied to a new machine) would overwrite each other's rows silently, so each host
//! record carries a machine id, and a second machine is refused while the first is alive.

use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::HostRecord;

/// This machine and user, as the host record names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// 16 hex digits: SHA-256 of `/etc/machine-id` (empty when missing) and an id that
    /// gitsync generates once in `<home>/machine-id`. Two users, or a copied `~/.gitsync`
    /// on another machine, get different ids.
    pub id: String,
    /// `user@nodename`, for people.
    pub machine: String,
}

/// This user's name: `$USER`, else the password database's entry for the real uid.
pub fn user_name() -> Option<String> {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
}

/// This machine's identity, with gitsync's own folder `home` (`~/.gitsync`): reads or
/// creates `<home>/machine-id` (32 hex digits). When that file cannot be written the id
/// rests on `/etc/machine-id` alone, and the cause is logged.
pub fn me(home: &Path) -> Me {
    let path = home.join("machine-id");
    let generated = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => {
            let fresh: String = (0..32)
                .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
                .collect();
            let written = std::fs::create_dir_all(home)
                .and_then(|()| std::fs::write(&path, format!("{fresh}\n")));
            if let Err(err) = written {
                tracing::warn!(path = %path.display(), %err, "cannot keep this machine's id; using /etc/machine-id alone");
            }
            fresh
        }
    };
    let system = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let digest = Sha256::digest(format!("{}:{generated}", system.trim()).as_bytes());
    let node = crate::config::system_hostname();
    Me {
        id: hex::encode(&digest[..8]),
        machine: format!("{}@{node}", user_name().unwrap_or_else(|| "?".to_string())),
    }
}

/// Why `me` must not publish as `record.host`: another machine's id is on the record and
/// that machine is alive (a heartbeat within 3 of its intervals) at `now`. `None` when the
/// record is this machine's, has no id (an older gitsync), or its machine is offline (this
/// one takes the name over).
pub fn conflict(me: &Me, record: &HostRecord, now: DateTime<Utc>) -> Option<String> {
    let other = record.machine_id.as_deref()?;
    if other == me.id || record.offline_for(now).is_some() {
        return None;
    }
    let ago = (now - record.last_seen).num_seconds().max(0);
    Some(format!(
        "the hostname {:?} is in use by another machine: {} (id {other}, last heartbeat {ago}s ago); this is {} (id {}). Give one of them a name of its own (`hostname:` in the config), or stop gitsync on the other",
        record.host,
        record.machine.as_deref().unwrap_or("unknown"),
        me.machine,
        me.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seen_secs_ago: i64) -> HostRecord {
        HostRecord {
            host: "laptop".to_string(),
            version: "0".to_string(),
            machine_id: Some(id.to_string()),
            machine: Some("alice@box1".to_string()),
            started_at: None,
            last_seen: Utc::now() - chrono::Duration::seconds(seen_secs_ago),
            heartbeat_secs: Some(10),
            checked_at: None,
            stopped_at: None,
            problem: None,
        }
    }

    #[test]
    fn an_id_is_kept_and_differs_per_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let first = me(&a);
        assert_eq!(first.id.len(), 16);
        assert_eq!(me(&a), first, "the id is kept");
        assert_ne!(me(&b).id, first.id, "another home is another machine");
    }

    #[test]
    fn only_a_live_other_machine_is_a_conflict() {
        let me = Me {
            id: "aaaa".to_string(),
            machine: "bob@box2".to_string(),
        };
        let now = Utc::now();
        assert_eq!(conflict(&me, &record("aaaa", 1), now), None);
        let message = conflict(&me, &record("bbbb", 5), now).expect("conflict");
        assert!(
            message.contains("alice@box1") && message.contains("bob@box2"),
            "{message}"
        );
        assert_eq!(
            conflict(&me, &record("bbbb", 31), now),
            None,
            "offline: taken over"
        );
        let mut old = record("bbbb", 1);
        old.machine_id = None;
        assert_eq!(conflict(&me, &old, now), None);
    }
}
