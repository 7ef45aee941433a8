//! The `aws` backend: states in DynamoDB, push events over an SNS FIFO topic to one SQS
//! FIFO queue per machine.
//!
//! Nothing is contacted when the backend is opened (credentials and the queue URL are
//! resolved on first use), so a daemon starts and syncs with git while AWS is unreachable.
//! Credentials come only from the SDK's standard chain (environment, profiles, SSO,
//! container and instance roles), never from the config file. Every call has a connect
//! timeout of 3 s and an attempt timeout of 30 s, with the SDK's standard retries
//! (3 attempts, exponential backoff with jitter) for throttling and transient errors.

pub mod dynamo;
pub mod queue;
pub mod setup;

use aws_config::SdkConfig;

use super::BackendError;
use crate::config::{AwsConfig, Config};
pub use crate::util::aws::one_line;

/// The table used when `aws.dynamodb.table` is not set.
pub const DEFAULT_TABLE: &str = "gitsync";
/// The topic created by `gitsync aws setup` when `aws.sns.topic.arn` is not set.
pub const DEFAULT_TOPIC: &str = "gitsync.fifo";

/// The AWS resources one host uses, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// DynamoDB table (`aws.dynamodb.table`, default `gitsync`).
    pub table: String,
    /// This host's SQS FIFO queue (`aws.sqs.queue`, default `<hostname>.fifo`).
    pub queue: String,
    /// The SNS FIFO topic's ARN (`aws.sns.topic.arn`), when configured.
    pub topic_arn: Option<String>,
}

impl Names {
    /// The names for `host` from `aws`.
    pub fn of(aws: &AwsConfig, host: &str) -> Self {
        let queue_base: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(75)
            .collect();
        Names {
            table: aws
                .dynamodb
                .as_ref()
                .map_or_else(|| DEFAULT_TABLE.to_string(), |d| d.table.clone()),
            queue: aws
                .sqs
                .as_ref()
                .map_or_else(|| format!("{queue_base}.fifo"), |q| q.queue.clone()),
            topic_arn: aws.sns.as_ref().map(|s| s.topic.arn.clone()),
        }
    }

    /// The topic ARN, or a configuration error saying how to get one.
    ///
    /// Errors: [`BackendError::Config`] when `aws.sns.topic.arn` is missing or not the
    /// ARN of a FIFO topic.
    pub fn topic(&self) -> Result<&str, BackendError> {
        let arn = self.topic_arn.as_deref().ok_or_else(|| {
            BackendError::Config(
                "aws.sns.topic.arn is not set: `gitsync aws setup` creates the topic and prints the line to add".to_string(),
            )
        })?;
        if !arn.starts_with("arn:") || arn.split(':').count() != 6 || !arn.ends_with(".fifo") {
            return Err(BackendError::Config(format!(
                "aws.sns.topic.arn {arn:?} is not the ARN of a FIFO topic (arn:aws:sns:REGION:ACCOUNT:NAME.fifo)"
            )));
        }
        Ok(arn)
    }
}

/// The region in a topic ARN (`arn:aws:sns:REGION:...`), if it has one.
fn region_of_arn(arn: &str) -> Option<String> {
    let region = arn.split(':').nth(3)?;
    (!region.is_empty() && !region.contains('{')).then(|| region.to_string())
}

/// The SDK configuration for `aws`: region from `aws.region`, else the topic ARN's, else
/// the standard chain (environment, profile, instance metadata), else `us-east-1`; `aws.endpoint_url` when set; timeouts and retries as described in
/// the module documentation. Makes no network call.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    // The topic ARN's region comes before the default chain, whose last resort (the
    // instance metadata service) only warns and waits off EC2.
    let from_arn = aws.sns.as_ref().and_then(|s| region_of_arn(&s.topic.arn));
    crate::util::aws::sdk_config(aws.region.clone().or(from_arn), aws.endpoint_url.as_deref()).await
}

/// Turns an SDK error into a [`BackendError::Aws`] naming the operation, with the error
/// in one line (see [`one_line`]).
pub fn aws_error<E>(operation: &'static str, err: E) -> BackendError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    BackendError::Aws {
        operation,
        message: one_line(&err),
    }
}

/// Opens the `aws` backend of `config`: the DynamoDB store and the SNS/SQS bus.
///
/// Errors: [`BackendError::Config`] when the `aws` section is missing or the topic ARN is
/// missing or malformed.
pub async fn open(config: &Config) -> Result<super::Backend, BackendError> {
    let aws = config
        .aws
        .as_ref()
        .ok_or_else(|| BackendError::Config("backend aws needs an `aws` section".to_string()))?;
    let names = Names::of(aws, &config.hostname);
    let topic = names.topic()?.to_string();
    let sdk = sdk_config(aws).await;
    let store = dynamo::DynamoStore::new(&sdk, &names.table);
    let bus = queue::SnsSqsBus::new(&sdk, &topic, &names.queue, &config.hostname);
    Ok(super::Backend {
        store: std::sync::Arc::new(store),
        bus: std::sync::Arc::new(bus),
    })
}

/// Opens only the DynamoDB state store of `config` (what `status`, `bootstrap` and
/// `forget` need): the SNS topic need not be configured yet. Contacts nothing.
///
/// Errors: [`BackendError::Config`] without an `aws` section.
pub async fn open_store(
    config: &Config,
) -> Result<std::sync::Arc<dyn crate::backend::StateStore>, BackendError> {
    let aws = config
        .aws
        .as_ref()
        .ok_or_else(|| BackendError::Config("backend aws needs an `aws` section".to_string()))?;
    let names = Names::of(aws, &config.hostname);
    let sdk = sdk_config(aws).await;
    Ok(std::sync::Arc::new(dynamo::DynamoStore::new(
        &sdk,
        &names.table,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        let aws = AwsConfig::default();
        let names = Names::of(&aws, "my laptop.local");
        assert_eq!(names.table, "gitsync");
        assert_eq!(names.queue, "my-laptop-local.fifo");
        assert!(matches!(names.topic(), Err(BackendError::Config(_))));
        let arn = "arn:aws:sns:eu-central-1:123456789012:git.fifo";
        assert_eq!(region_of_arn(arn).as_deref(), Some("eu-central-1"));
        assert_eq!(
            region_of_arn("arn:aws:sns:{region}:{userId}:{topicName}"),
            None
        );
        let named = Names {
            topic_arn: Some(arn.to_string()),
            ..names
        };
        assert_eq!(named.topic().ok(), Some(arn));
        let not_fifo = Names {
            topic_arn: Some("arn:aws:sns:eu-central-1:1:git".to_string()),
            ..named
        };
        assert!(not_fifo.topic().is_err());
    }
}
