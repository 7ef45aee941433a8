//! `gitsync aws setup|teardown`: this host's AWS resources.

use std::process::ExitCode;

use super::{Cli, CliError};
use crate::backend::aws::{self, Names, setup};

/// Arguments of `gitsync aws`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The AWS actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create, idempotently, the table, the FIFO topic, this host's FIFO queue, its policy
    /// and its subscription; print what was done and the config lines to use.
    Setup,
    /// Remove this host's queue and subscription (the shared table and topic stay).
    Teardown,
}

fn describe(action: setup::Action) -> &'static str {
    match action {
        setup::Action::Created => "created",
        setup::Action::Updated => "updated",
        setup::Action::Unchanged => "exists, unchanged",
        setup::Action::Deleted => "deleted",
        setup::Action::Absent => "not there",
    }
}

/// Runs the action. Exit code 0 on success, 1 when an AWS call fails, 2 when the config
/// has no `aws` section.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let webhook_queue = config
        .webhooks
        .as_ref()
        .filter(|w| w.queue.as_deref() == Some("sqs"))
        .cloned();
    if let (None, Some(webhooks), Action::Setup) = (&config.aws, &webhook_queue, &args.action) {
        // A host that runs webhook mirrors on SQS only.
        let runtime = super::runtime()?;
        return runtime.block_on(async {
            let sdk = aws::sdk_config(&crate::config::AwsConfig {
                region: webhooks.region.clone(),
                endpoint_url: webhooks.endpoint_url.clone(),
                ..Default::default()
            })
            .await;
            let queue = webhooks.sqs_queue.clone().unwrap_or_default();
            let step = setup::ensure_webhook_queue(&sdk, &queue)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{}: {}", step.resource, describe(step.action));
            Ok(ExitCode::SUCCESS)
        });
    }
    let Some(aws_config) = config.aws.as_ref() else {
        return Err(CliError::Failed(format!(
            "{}: no `aws` section; add one (see the README's AWS set-up) first",
            config.file.as_ref().map_or_else(
                || "the configuration".to_string(),
                |f| f.display().to_string()
            )
        )));
    };
    let names = Names::of(aws_config, &config.hostname);
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let sdk = aws::sdk_config(aws_config).await;
        match args.action {
            Action::Setup => {
                let report = setup::setup(&sdk, &names)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                let mut steps = report.steps.clone();
                if let Some(webhooks) = &webhook_queue {
                    let queue = webhooks.sqs_queue.clone().unwrap_or_default();
                    steps.push(
                        setup::ensure_webhook_queue(&sdk, &queue)
                            .await
                            .map_err(|e| CliError::Failed(e.to_string()))?,
                    );
                }
                for step in &steps {
                    println!("{}: {}", step.resource, describe(step.action));
                }
                if steps.iter().all(|s| s.action == setup::Action::Unchanged) {
                    println!("nothing to do: everything already exists as needed");
                }
                println!("\nconfig lines for this host ({}):", config.hostname);
                println!("backend: aws");
                println!("aws:");
                if let Some(region) = sdk.region() {
                    println!("  region: {region}");
                }
                if let Some(url) = &aws_config.endpoint_url {
                    println!("  endpoint_url: {url}");
                }
                println!("  dynamodb: {{table: {}}}", report.names.table);
                println!("  sqs: {{queue: {}}}", report.names.queue);
                if let Some(arn) = &report.names.topic_arn {
                    println!("  sns: {{topic: {{arn: \"{arn}\"}}}}");
                }
            }
            Action::Teardown => {
                let steps = setup::teardown(&sdk, &names)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                for step in &steps {
                    println!("{}: {}", step.resource, describe(step.action));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
