//! Helpers every layer may use, depending on nothing else in the crate (the model is
//! atuin-common and jj's `*_util.rs`): files written atomically and JSON state files
//! ([`fs`]), credentials kept out of text ([`redact`]), the AWS SDK's set-up and errors in
//! one line ([`aws`]), one retry rhythm ([`backoff`]), one way to start a child process
//! ([`child`]), work shared between threads in parts ([`parts`]), named long-running tasks
//! ([`workers`]), and words for people ([`words`]).
//!
//! The layer rule, checked by a test in `src/lib.rs`: `cli` -> `daemon` -> features
//! (`partition`, `mirror`, `webhook`, `deploy`) -> services (`git`, `backend`, `store`,
//! `discover`) -> `config`, `model` -> `util`, `logging`, `flock`. A module uses only
//! modules of lower layers, never one of its own layer.

pub mod aws;
pub mod backoff;
pub mod child;
pub mod fs;
pub mod parts;
pub mod redact;
pub mod words;
pub mod workers;
