//! gitsync keeps one person's git workspaces in sync across all of their machines.
//!
//! The binary is a thin shell over this library. By layer, each using only the ones below
//! it (checked by a test, see [`util`]):
//! - [`cli`] parses and dispatches the commands;
//! - [`daemon`] runs the long-lived components;
//! - the features: [`partition`] syncs repositories across a network partition, [`mirror`]
//!   publishes repositories to S3 or a folder for git's dumb HTTP, [`webhook`] mirrors a
//!   repository when its forge says it was pushed, [`deploy`] ships trees to servers;
//! - the services: [`git`] reads and changes repositories, [`backend`] stores states and
//!   carries events, [`store`] keeps objects in S3 or a folder, [`discover`] finds the
//!   repositories under the root;
//! - [`config`] loads the configuration file, [`model`] holds the shared data types;
//! - [`util`] (files, redaction, the AWS SDK, child processes, backoff, named workers,
//!   words), [`logging`], [`flock`].
//!
//! # Invariants
//! Every module keeps these; the code cites them by number.
//! 1. **Never lose work.** The daemon changes a worktree only by a fast-forward of the
//!    checked-out branch to a commit that contains HEAD, and only when nothing would be
//!    lost: no local changes to a path it rewrites (decided by content), no operation in
//!    progress, HEAD not detached, the branch strictly behind its upstream; untracked files
//!    stay untouched. Otherwise it records why it did not pull and `status` shows it.
//! 2. **Never block git.** Hooks return in well under 100 ms and exit 0 whatever happens;
//!    they hand off to the daemon and leave.
//! 3. **At-least-once, idempotent.** Every event may arrive twice, late, or never; handling
//!    one twice changes nothing, and a missed one is caught by the periodic fetch.
//! 4. **No secret in a log, a state record, an event or an object key** (see
//!    [`util::redact`]).
//! 5. **Bad input gets a clear error and loses nothing:** config errors name the file, line
//!    and key; a bad event, payload or object is rejected and logged, and the daemon goes on.
//!
//! # Data flow
//! A push (the `pre-push` hook, or a ref change the watcher sees) becomes a push event that
//! the [`backend`] carries to every machine; each machine's [`daemon`] fetches once and
//! fast-forwards its clean checkouts ([`git`]), and publishes each repository's state for
//! `gitsync status`. The features run beside that core: [`mirror`] and [`webhook`] copy
//! repositories elsewhere, [`deploy`] ships trees, [`partition`] carries bundles through a
//! bucket both sides of a partition can reach.

// What the code already keeps, kept by the compiler: every public item documented, and no
// unwrap or expect outside tests (a panic on input is a bug).
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod discover;
pub mod flock;
pub mod git;
pub mod logging;
pub mod mirror;
pub mod model;
pub mod observe;
pub mod partition;
pub mod store;
pub mod util;
pub mod webhook;

#[cfg(test)]
mod layers;
