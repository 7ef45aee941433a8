//! gitsync keeps one person's git workspaces in sync across all of their machines.
//!
//! The binary is a thin shell over this library: [`cli`] parses and dispatches, [`daemon`]
//! runs the long-lived components, [`git`] reads and changes repositories, [`backend`]
//! stores states and carries events, [`config`] loads the configuration file, [`partition`]
//! syncs repositories across a network partition.

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
pub mod webhook;
pub mod words;
