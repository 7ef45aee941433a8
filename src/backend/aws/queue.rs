//! [`EventBus`] over SNS FIFO -> SQS FIFO.
//!
//! Publishing (SNS `Publish`): the body is the [`PushEvent`] as JSON, `MessageGroupId` the
//! repository (so one repository's events stay in order), `MessageDeduplicationId` the
//! event id (so the same push announced twice within SQS's 5-minute window is delivered
//! once). Receiving (SQS `ReceiveMessage`): long polling up to 20 s, at most 10 messages;
//! a message is deleted only after it was handled (`ack`), and its visibility is extended
//! while a long fetch runs (`extend`). Raw message delivery is expected; an SNS envelope
//! (`{"Type": "Notification", "Message": ...}`) is also understood. Messages from this
//! host and malformed messages are deleted at once, the latter logged.

use std::time::Duration;

use async_trait::async_trait;
use sha2::Digest;

use super::aws_error;
use crate::backend::{BackendError, Delivery, EventBus};
use crate::model::PushEvent;

/// The SNS/SQS event bus of one host.
pub struct SnsSqsBus {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    topic_arn: String,
    queue: String,
    host: String,
    queue_url: tokio::sync::Mutex<Option<String>>,
}

/// A `MessageGroupId` for `repo`: the repository path itself when SQS allows it (at most
/// 128 characters, letters, digits and ASCII punctuation), otherwise `repo-` and a hash.
pub fn message_group(repo: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c.is_ascii_punctuation();
    if !repo.is_empty() && repo.len() <= 128 && repo.chars().all(allowed) {
        repo.to_string()
    } else {
        let digest = sha2::Sha256::digest(repo.as_bytes());
        format!("repo-{}", &hex::encode(digest)[..32])
    }
}

/// Reads a message body: the event itself (raw delivery) or inside an SNS envelope.
///
/// Errors: serde's error for the body read as an event (or for the envelope's `Message`).
fn parse_body(body: &str) -> Result<PushEvent, serde_json::Error> {
    match serde_json::from_str::<PushEvent>(body) {
        Ok(event) => Ok(event),
        Err(raw_err) => {
            let Ok(envelope) = serde_json::from_str::<serde_json::Value>(body) else {
                return Err(raw_err);
            };
            let Some(inner) = envelope.get("Message").and_then(|m| m.as_str()) else {
                return Err(raw_err);
            };
            serde_json::from_str::<PushEvent>(inner)
        }
    }
}

impl SnsSqsBus {
    /// A bus publishing to `topic_arn` and receiving from the queue named `queue`, as
    /// `host`. No network call.
    pub fn new(sdk: &aws_config::SdkConfig, topic_arn: &str, queue: &str, host: &str) -> Self {
        SnsSqsBus {
            sns: aws_sdk_sns::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            topic_arn: topic_arn.to_string(),
            queue: queue.to_string(),
            host: host.to_string(),
            queue_url: tokio::sync::Mutex::new(None),
        }
    }

    /// The queue's URL, looked up once (`GetQueueUrl`).
    async fn queue_url(&self) -> Result<String, BackendError> {
        let mut slot = self.queue_url.lock().await;
        if let Some(url) = slot.as_ref() {
            return Ok(url.clone());
        }
        let out = self
            .sqs
            .get_queue_url()
            .queue_name(&self.queue)
            .send()
            .await
            .map_err(|e| aws_error("GetQueueUrl", e))?;
        let url = out.queue_url().unwrap_or_default().to_string();
        *slot = Some(url.clone());
        Ok(url)
    }

    async fn delete(&self, url: &str, receipt: &str) -> Result<(), BackendError> {
        self.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("DeleteMessage", e))
    }
}

#[async_trait]
impl EventBus for SnsSqsBus {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn publish(&self, event: &PushEvent) -> Result<(), BackendError> {
        let body = serde_json::to_string(event).map_err(|e| BackendError::Malformed {
            path: event.id.clone(),
            message: e.to_string(),
        })?;
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body)
            .message_group_id(message_group(&event.repo))
            .message_deduplication_id(&event.id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("Publish", e))
    }

    async fn receive(&self, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        let url = self.queue_url().await?;
        let out = self
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .send()
            .await
            .map_err(|e| aws_error("ReceiveMessage", e))?;
        let mut deliveries = Vec::new();
        for message in out.messages() {
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            match parse_body(message.body().unwrap_or_default()) {
                Ok(event) if event.host == self.host => {
                    self.delete(&url, receipt).await?;
                }
                Ok(event) => deliveries.push(Delivery {
                    event,
                    token: receipt.to_string(),
                }),
                Err(err) => {
                    let id = message.message_id().unwrap_or_default();
                    tracing::warn!(queue = %self.queue, message_id = id, %err, "malformed message deleted");
                    self.delete(&url, receipt).await?;
                }
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let url = self.queue_url().await?;
        self.delete(&url, &delivery.token).await
    }

    async fn extend(&self, delivery: &Delivery, by: Duration) -> Result<(), BackendError> {
        let url = self.queue_url().await?;
        self.sqs
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(&delivery.token)
            .visibility_timeout(by.as_secs().min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("ChangeMessageVisibility", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_bodies() {
        assert_eq!(message_group("work/api"), "work/api");
        let odd = message_group("dir with space/é");
        assert!(odd.starts_with("repo-") && odd.len() == 37, "{odd}");
        let event = PushEvent::new("a", "r", "/x", "refs/heads/main", "0", "1");
        let raw = serde_json::to_string(&event).expect("json");
        assert_eq!(parse_body(&raw).ok(), Some(event.clone()));
        let envelope = serde_json::json!({"Type": "Notification", "Message": raw}).to_string();
        assert_eq!(parse_body(&envelope).ok(), Some(event));
        assert!(parse_body("{\"Message\": 3}").is_err());
        assert!(parse_body("garbage").is_err());
    }
}
