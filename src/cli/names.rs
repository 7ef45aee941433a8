//! `gitsync names KIND`: the names shell completion offers (hidden; the completion scripts
//! call it): repositories, hosts, mirrors or deploys, one per line. It never fails and
//! prints nothing it cannot read, and it gives up on the store after 2 s.

use std::collections::BTreeSet;
use std::process::ExitCode;

use super::Cli;

/// Arguments of `gitsync names`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to list.
    #[arg(value_enum)]
    pub kind: Kind,
}

/// The kinds of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Repositories under the root, and those the store knows of other hosts.
    Repos,
    /// Hosts the store knows (with a heartbeat or with rows).
    Hosts,
    /// Bucket and webhook mirrors of the configuration.
    Mirrors,
    /// Deploys of the configuration.
    Deploys,
}

/// Prints the names, sorted, one per line. Exit code 0 always.
pub fn run(cli: &Cli, args: &Args) -> ExitCode {
    let Ok(config) = super::load_config(cli, None, false) else {
        return ExitCode::SUCCESS;
    };
    let mut names = BTreeSet::new();
    match args.kind {
        Kind::Mirrors => {
            names.extend(config.mirrors.iter().map(|m| m.name.clone()));
            if let Some(w) = &config.webhooks {
                names.extend(w.mirrors.iter().map(|m| m.name.clone()));
            }
        }
        Kind::Deploys => names.extend(config.deploy.iter().map(|d| d.name.clone())),
        Kind::Repos | Kind::Hosts => {
            if args.kind == Kind::Repos && !config.root.as_os_str().is_empty() {
                let repos = crate::discover::resolve(&config.root, config.repositories.as_deref());
                names.extend(repos.unwrap_or_default().into_iter().map(|r| r.name));
            }
            names.extend(from_store(&config, args.kind));
        }
    }
    for name in names {
        println!("{name}");
    }
    ExitCode::SUCCESS
}

/// Repository or host names in the store, or none after 2 s.
fn from_store(config: &crate::config::Config, kind: Kind) -> Vec<String> {
    let Ok(runtime) = super::runtime() else {
        return Vec::new();
    };
    runtime.block_on(async {
        let read = async {
            let store = crate::backend::open_store(config).await.ok()?;
            let states = store.list(None).await.ok()?;
            Some(match kind {
                // Hosts with a heartbeat, and those with rows only (a one-off `sync`).
                Kind::Hosts => {
                    let mut hosts: Vec<String> = states.into_iter().map(|s| s.host).collect();
                    if let Ok(records) = store.hosts(None).await {
                        hosts.extend(records.into_iter().map(|h| h.host));
                    }
                    hosts
                }
                _ => states.into_iter().map(|s| s.repo).collect(),
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), read)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    })
}
