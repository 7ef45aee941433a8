//! Named long-running tasks, in watchexec's shape (`tasks.spawn(worker.map_ok(|()| "fs"))`):
//! every task the daemon runs for its whole life (the webhook intake and workers, the
//! bucket mirrors, the deploys, partition sync, the event receiver, the hook hand-off)
//! carries a name, so one that ends, returns or panics is named in the log instead of
//! vanishing from an anonymous set.

use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// A set of named tasks; dropping it aborts them all.
#[derive(Default)]
pub struct Workers {
    set: JoinSet<&'static str>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("running", &self.set.len())
            .finish()
    }
}

/// How a worker ended.
#[derive(Debug)]
pub enum Ended {
    /// Its task returned.
    Returned(&'static str),
    /// Its task panicked or was aborted (tokio's [`JoinError`]; the name is lost with it).
    Failed(JoinError),
}

impl Workers {
    /// An empty set.
    pub fn new() -> Workers {
        Workers::default()
    }

    /// Runs `task` as the worker `name` (a short lowercase word for the log, such as
    /// `"webhook intake"`).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.set.spawn(async move {
            task.await;
            name
        });
    }

    /// Waits for the next worker to end; `None` when none runs.
    pub async fn ended(&mut self) -> Option<Ended> {
        Some(match self.set.join_next().await? {
            Ok(name) => Ended::Returned(name),
            Err(err) => Ended::Failed(err),
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Stops every worker at its next await point.
    pub fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_ends_is_named_and_a_panic_is_reported() {
        let mut workers = Workers::new();
        workers.spawn("short", async {});
        assert!(matches!(
            workers.ended().await,
            Some(Ended::Returned("short"))
        ));
        workers.spawn("broken", async { panic!("a bug") });
        assert!(matches!(workers.ended().await, Some(Ended::Failed(e)) if e.is_panic()));
        assert!(workers.ended().await.is_none());
        workers.spawn("forever", std::future::pending());
        assert_eq!(workers.len(), 1);
        workers.abort_all();
        assert!(matches!(workers.ended().await, Some(Ended::Failed(e)) if e.is_cancelled()));
    }
}
