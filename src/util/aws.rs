//! The AWS SDK set up one way for every caller (DynamoDB, SNS, SQS, S3): region and
//! endpoint, a connect timeout of 3 s and an attempt timeout of 30 s, the SDK's standard
//! retries (3 attempts); and its errors in one line a person can act on.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The SDK configuration: `region` when given, else the standard chain (environment,
/// profile, instance metadata), else `us-east-1`; `endpoint_url` (an AWS-compatible server)
/// when given. Makes no network call.
pub async fn sdk_config(region: Option<String>, endpoint_url: Option<&str>) -> SdkConfig {
    let region = RegionProviderChain::first_try(region.map(Region::new))
        .or_default_provider()
        .or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An SDK error in one line a person reads: the service's error code and message
/// (`NoSuchBucket: The specified bucket does not exist`) when the service answered, else
/// the cause chain (`dispatch failure: ... Connection refused`), never the `Debug` dump of
/// a response.
pub fn one_line<E>(err: &E) -> String
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut parts: Vec<String> = vec![err.to_string()];
            let mut source = err.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                source = cause.source();
            }
            let text = parts.join(": ");
            said_plainly(&text).map_or(text, str::to_string)
        }
    }
}

/// What to do, for the SDK failures a newcomer meets first (no credentials anywhere in the
/// chain; no region), whose own text walks the whole provider chain down to the instance
/// metadata service.
fn said_plainly(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    if lower.contains("loading credentials")
        || lower.contains("no credentials")
        || lower.contains("credentialsnotloaded")
    {
        Some(
            "no AWS credentials found (environment, ~/.aws, SSO, web identity, instance role): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    } else if lower.contains("no region") || lower.contains("region was not set") {
        Some("no AWS region: set AWS_REGION (or `region:` in the config)")
    } else {
        None
    }
}
