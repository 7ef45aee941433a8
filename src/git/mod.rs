//! Everything gitsync does to or reads from a git repository.
//!
//! `state` reads in-process with gix and never writes (with `worktree`, the stat pass for
//! unstaged files, and `untracked`, the untracked count); `ops` changes repositories and talks
//! to remotes through the `git` binary, so the user's credential helpers, ssh config, hooks
//! and locks apply exactly as with their own git; `pull` decides whether a fast-forward is
//! safe (invariant 1 of the crate documentation); `remotes` reads remotes and refs; `hooks` installs the
//! pre-push hook; `refsync` moves refs at another repository (one compare-and-swap push,
//! one credential environment) for the webhook mirror and partition sync. Every `git`
//! child runs as [`crate::util::child`] starts it: asking nothing, in a session of its own.

pub mod bare_cache;
pub mod branches;
pub mod fastforward;
pub mod hooks;
pub mod ops;
pub mod procs;
pub mod pull;
pub mod refsync;
pub mod remotes;
pub mod state;
pub mod submodules;
mod untracked;
mod worktree;
