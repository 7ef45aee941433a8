//! The repositories the daemon keeps in sync right now: replaced whole when the
//! configuration is reloaded (SIGHUP), read by every component.

use std::sync::{Arc, RwLock};

use crate::discover::Repo;

/// The current repository list, shared by the daemon's components.
#[derive(Debug, Default)]
pub struct Registry {
    repos: RwLock<Arc<Vec<Repo>>>,
}

impl Registry {
    /// A registry holding `repos`.
    pub fn new(repos: Vec<Repo>) -> Self {
        Registry {
            repos: RwLock::new(Arc::new(repos)),
        }
    }

    /// The list as it is now (a cheap, consistent snapshot).
    pub fn current(&self) -> Arc<Vec<Repo>> {
        self.repos.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the list; returns (added, removed) compared with the old one.
    pub fn replace(&self, repos: Vec<Repo>) -> (Vec<Repo>, Vec<Repo>) {
        let mut slot = self.repos.write().unwrap_or_else(|p| p.into_inner());
        let added = repos
            .iter()
            .filter(|r| !slot.contains(r))
            .cloned()
            .collect();
        let removed = slot
            .iter()
            .filter(|r| !repos.contains(r))
            .cloned()
            .collect();
        *slot = Arc::new(repos);
        (added, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> Repo {
        Repo {
            name: name.to_string(),
            path: format!("/r/{name}").into(),
        }
    }

    #[test]
    fn replace_reports_the_difference() {
        let registry = Registry::new(vec![repo("a"), repo("b")]);
        let before = registry.current();
        let (added, removed) = registry.replace(vec![repo("b"), repo("c")]);
        assert_eq!(added, [repo("c")]);
        assert_eq!(removed, [repo("a")]);
        assert_eq!(before.len(), 2, "a snapshot does not change");
        assert_eq!(*registry.current(), vec![repo("b"), repo("c")]);
    }
}
