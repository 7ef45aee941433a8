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
//! - [`util`] (files, redaction, the AWS SDK, words), [`logging`], [`flock`].

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
pub mod partition;
pub mod store;
pub mod util;
pub mod webhook;

#[cfg(test)]
mod layers;
