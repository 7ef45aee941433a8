//! The integration tests, one binary (as jj does): each module is one area,
//! run against the real `gitsync` binary, real `git`, and real servers on loopback (moto
//! for AWS, `git http-backend`, a loopback sshd; see `common`). One binary links the crate
//! and the AWS SDK once instead of once per file.
//!
//! Run one area with `cargo test --test it lost_work::`, one test by its full name.

mod common;

mod aws;
mod cli_output;
mod config_errors;
mod daemon;
mod deploy;
mod fast_forward;
mod ff_races;
mod ff_safety;
mod forge_sync;
mod forget;
mod hooks;
mod lost_work;
mod mirror;
mod observe;
mod partition;
mod push_pull;
mod server_hook;
mod service;
mod state_matches_git;
mod webhooks;
mod workspace;
