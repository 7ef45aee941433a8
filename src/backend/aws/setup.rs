//! `gitsync aws setup` and `gitsync aws teardown`: the AWS resources of one host, created
//! idempotently.
//!
//! Setup makes sure that the DynamoDB table exists (keys `hostname` S and `repo` S,
//! on-demand billing), the SNS FIFO topic exists, this host's SQS FIFO queue exists (long
//! polling 20 s, visibility 60 s, retention 14 days, no delivery delay; an existing queue
//! whose attributes differ is updated), the queue's policy lets the topic
//! deliver (`sqs:SendMessage` for `sns.amazonaws.com` when `aws:SourceArn` is the topic),
//! and the queue is subscribed to the topic with raw message delivery. Each step reports
//! whether it created, changed or found the resource. Teardown removes this host's
//! subscription and queue only: the table and topic are shared.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::{DEFAULT_TOPIC, Names, aws_error};
use crate::backend::BackendError;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The resource did not exist and was created.
    Created,
    /// The resource existed and was changed to what gitsync needs.
    Updated,
    /// The resource existed as needed; nothing was done.
    Unchanged,
    /// The resource was deleted (teardown).
    Deleted,
    /// The resource was not there (teardown).
    Absent,
}

/// One resource and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The kind and name, such as `DynamoDB table git`.
    pub resource: String,
    /// What was done.
    pub action: Action,
}

/// The result of `setup`: the steps, and the names to put in the config file.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The names used, with the topic's ARN filled in.
    pub names: Names,
}

fn step(resource: String, action: Action) -> Step {
    Step { resource, action }
}

fn build_err(err: impl std::error::Error) -> BackendError {
    BackendError::Config(err.to_string())
}

/// Why gitsync cannot use a table with this key schema, with the fix; `None` when the keys
/// are gitsync's: partition key `hostname`, sort key `repo` (DynamoDB `DescribeTable`'s
/// `KeySchema`). A GitArgus table (partition key `hostname` alone) holds one record per
/// host, so each repository's write would overwrite the previous one.
pub fn key_schema_problem(
    table: &str,
    description: Option<&aws_sdk_dynamodb::types::TableDescription>,
) -> Option<String> {
    let keys: Vec<(String, KeyType)> = description
        .map(|d| d.key_schema())
        .unwrap_or_default()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    let wanted = [
        ("hostname".to_string(), KeyType::Hash),
        ("repo".to_string(), KeyType::Range),
    ];
    if keys.len() == 2 && wanted.iter().all(|w| keys.contains(w)) {
        return None;
    }
    let shown: Vec<String> = keys
        .iter()
        .map(|(name, kind)| format!("{name} ({})", kind.as_str()))
        .collect();
    Some(format!(
        "DynamoDB table {table} has the key schema {}; gitsync needs partition key hostname and sort key repo (each repository a record of its own): set aws.dynamodb.table to another name and run `gitsync aws setup` to create it",
        if shown.is_empty() {
            "(none)".to_string()
        } else {
            shown.join(" + ")
        }
    ))
}

async fn ensure_table(sdk: &aws_config::SdkConfig, table: &str) -> Result<Step, BackendError> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let resource = format!("DynamoDB table {table}");
    match client.describe_table().table_name(table).send().await {
        Ok(out) => {
            return match key_schema_problem(table, out.table()) {
                Some(problem) => Err(BackendError::Config(problem)),
                None => Ok(step(resource, Action::Unchanged)),
            };
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(err) => return Err(aws_error("DescribeTable", err)),
    }
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(build_err)
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_err)
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("hostname", KeyType::Hash)?)
        .key_schema(key("repo", KeyType::Range)?)
        .attribute_definitions(attribute("hostname")?)
        .attribute_definitions(attribute("repo")?)
        .send()
        .await
        .map_err(|e| aws_error("CreateTable", e))?;
    // Wait (up to a minute) until the table can take writes.
    for _ in 0..60 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(step(resource, Action::Created))
}

/// Makes sure the FIFO topic exists; returns its ARN.
async fn ensure_topic(
    sdk: &aws_config::SdkConfig,
    arn: Option<&str>,
) -> Result<(Step, String), BackendError> {
    let client = aws_sdk_sns::Client::new(sdk);
    if let Some(arn) = arn
        && client
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .await
            .is_ok()
    {
        return Ok((
            step(format!("SNS FIFO topic {arn}"), Action::Unchanged),
            arn.to_string(),
        ));
    }
    let name = arn
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or(DEFAULT_TOPIC)
        .to_string();
    // No ARN in the config yet (a second run before the printed lines were added): find
    // the topic rather than claim to create it again (CreateTopic would return it).
    if arn.is_none() {
        let mut topics = client.list_topics().into_paginator().send();
        while let Some(page) = topics.next().await {
            let page = page.map_err(|e| aws_error("ListTopics", e))?;
            if let Some(found) = page
                .topics()
                .iter()
                .filter_map(|t| t.topic_arn())
                .find(|a| a.rsplit(':').next() == Some(name.as_str()))
            {
                return Ok((
                    step(format!("SNS FIFO topic {found} (found)"), Action::Unchanged),
                    found.to_string(),
                ));
            }
        }
    }
    let created = client
        .create_topic()
        .name(&name)
        .attributes("FifoTopic", "true")
        .attributes("ContentBasedDeduplication", "false")
        .send()
        .await
        .map_err(|e| aws_error("CreateTopic", e))?;
    let new_arn = created.topic_arn().unwrap_or_default().to_string();
    if let Some(wanted) = arn
        && wanted != new_arn
    {
        return Err(BackendError::Config(format!(
            "aws.sns.topic.arn is {wanted} but these credentials and region create {new_arn}; fix the ARN or the region"
        )));
    }
    Ok((
        step(format!("SNS FIFO topic {new_arn}"), Action::Created),
        new_arn,
    ))
}

/// The ARN of the queue at `url` (`GetQueueAttributes`).
async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, BackendError> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes", e))?;
    Ok(attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default())
}

/// The queue attributes gitsync needs (SQS `SetQueueAttributes` names): no delivery
/// delay, long polling 20 s, visibility 60 s, retention 14 days.
const QUEUE_ATTRIBUTES: &[(QueueAttributeName, &str)] = &[
    (QueueAttributeName::DelaySeconds, "0"),
    (QueueAttributeName::ReceiveMessageWaitTimeSeconds, "20"),
    (QueueAttributeName::VisibilityTimeout, "60"),
    (QueueAttributeName::MessageRetentionPeriod, "1209600"),
];

/// Sets the attributes of the existing queue at `url` that differ from
/// [`QUEUE_ATTRIBUTES`]; returns what changed, as `Name old -> new`.
async fn reconcile_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Vec<String>, BackendError> {
    let mut get = sqs.get_queue_attributes().queue_url(url);
    for (name, _) in QUEUE_ATTRIBUTES {
        get = get.attribute_names(name.clone());
    }
    let got = get
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes", e))?;
    let now = got.attributes().cloned().unwrap_or_default();
    let mut set = sqs.set_queue_attributes().queue_url(url);
    let mut changed = Vec::new();
    for (name, wanted) in QUEUE_ATTRIBUTES {
        let current = now.get(name).map(String::as_str).unwrap_or("unset");
        if current != *wanted {
            changed.push(format!("{} {current} -> {wanted}", name.as_str()));
            set = set.attributes(name.clone(), *wanted);
        }
    }
    if !changed.is_empty() {
        set.send()
            .await
            .map_err(|e| aws_error("SetQueueAttributes", e))?;
    }
    Ok(changed)
}

/// Makes sure this host's queue exists; returns its URL and ARN.
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
) -> Result<(Step, String, String), BackendError> {
    let mut resource = format!("SQS FIFO queue {queue}");
    let (url, action) = match sqs.get_queue_url().queue_name(queue).send().await {
        Ok(out) => {
            let url = out.queue_url().unwrap_or_default().to_string();
            let changed = reconcile_queue(sqs, &url).await?;
            if changed.is_empty() {
                (url, Action::Unchanged)
            } else {
                resource = format!("{resource} ({})", changed.join(", "));
                (url, Action::Updated)
            }
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) =>
        {
            let mut create = sqs
                .create_queue()
                .queue_name(queue)
                .attributes(QueueAttributeName::FifoQueue, "true");
            for (name, value) in QUEUE_ATTRIBUTES {
                create = create.attributes(name.clone(), *value);
            }
            let out = create
                .send()
                .await
                .map_err(|e| aws_error("CreateQueue", e))?;
            (
                out.queue_url().unwrap_or_default().to_string(),
                Action::Created,
            )
        }
        Err(err) => return Err(aws_error("GetQueueUrl", err)),
    };
    let arn = queue_arn(sqs, &url).await?;
    Ok((step(resource, action), url, arn))
}

/// The queue policy that lets `topic_arn` send to `queue_arn`.
pub fn queue_policy(queue_arn: &str, topic_arn: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "gitsync-topic-delivers",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
        }]
    })
}

async fn ensure_policy(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    queue_arn: &str,
    topic_arn: &str,
) -> Result<Step, BackendError> {
    let wanted = queue_policy(queue_arn, topic_arn);
    let current = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::Policy)
        .send()
        .await
        .map_err(|e| aws_error("GetQueueAttributes", e))?;
    let existing = current
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::Policy))
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
    let resource = "queue policy allowing the topic to deliver".to_string();
    if existing.as_ref() == Some(&wanted) {
        return Ok(step(resource, Action::Unchanged));
    }
    sqs.set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::Policy, wanted.to_string())
        .send()
        .await
        .map_err(|e| aws_error("SetQueueAttributes", e))?;
    let action = if existing.is_some() {
        Action::Updated
    } else {
        Action::Created
    };
    Ok(step(resource, action))
}

/// This queue's subscription ARN on the topic, if any (`ListSubscriptionsByTopic`, all
/// pages).
async fn find_subscription(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
) -> Result<Option<String>, BackendError> {
    let mut token: Option<String> = None;
    loop {
        let page = sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| aws_error("ListSubscriptionsByTopic", e))?;
        let found = page
            .subscriptions()
            .iter()
            .find(|s| s.protocol() == Some("sqs") && s.endpoint() == Some(queue_arn));
        if let Some(found) = found {
            return Ok(found.subscription_arn().map(str::to_string));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(None);
        }
    }
}

async fn ensure_subscription(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
) -> Result<Step, BackendError> {
    let resource = "subscription of the queue to the topic (raw message delivery)".to_string();
    if let Some(arn) = find_subscription(sns, topic_arn, queue_arn).await? {
        let attributes = sns
            .get_subscription_attributes()
            .subscription_arn(&arn)
            .send()
            .await
            .map_err(|e| aws_error("GetSubscriptionAttributes", e))?;
        let raw = attributes
            .attributes()
            .and_then(|a| a.get("RawMessageDelivery"))
            .is_some_and(|v| v == "true");
        if raw {
            return Ok(step(resource, Action::Unchanged));
        }
        sns.set_subscription_attributes()
            .subscription_arn(&arn)
            .attribute_name("RawMessageDelivery")
            .attribute_value("true")
            .send()
            .await
            .map_err(|e| aws_error("SetSubscriptionAttributes", e))?;
        return Ok(step(resource, Action::Updated));
    }
    sns.subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .return_subscription_arn(true)
        .send()
        .await
        .map_err(|e| aws_error("Subscribe", e))?;
    Ok(step(resource, Action::Created))
}

/// Creates what is missing for `names` (see the module documentation).
///
/// Errors: the first AWS call that fails, as [`BackendError::Aws`]; a configured topic
/// ARN that these credentials and region would not create, as [`BackendError::Config`].
pub async fn setup(sdk: &aws_config::SdkConfig, names: &Names) -> Result<Report, BackendError> {
    let mut steps = vec![ensure_table(sdk, &names.table).await?];
    let (topic_step, topic_arn) = ensure_topic(sdk, names.topic_arn.as_deref()).await?;
    steps.push(topic_step);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_step, url, queue_arn) = ensure_queue(&sqs, &names.queue).await?;
    steps.push(queue_step);
    steps.push(ensure_policy(&sqs, &url, &queue_arn, &topic_arn).await?);
    let sns = aws_sdk_sns::Client::new(sdk);
    steps.push(ensure_subscription(&sns, &topic_arn, &queue_arn).await?);
    Ok(Report {
        steps,
        names: Names {
            topic_arn: Some(topic_arn),
            ..names.clone()
        },
    })
}

/// Makes sure the webhook mirrors' SQS FIFO queue (`webhooks.sqs_queue`) exists.
///
/// Errors: the AWS call that fails, as [`BackendError::Aws`].
pub async fn ensure_webhook_queue(
    sdk: &aws_config::SdkConfig,
    queue: &str,
) -> Result<Step, BackendError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (mut step, _, _) = ensure_queue(&sqs, queue).await?;
    step.resource = format!("SQS FIFO queue {queue} (webhook jobs)");
    Ok(step)
}

/// Removes this host's subscription and queue.
///
/// Errors: the first AWS call that fails, as [`BackendError::Aws`].
pub async fn teardown(
    sdk: &aws_config::SdkConfig,
    names: &Names,
) -> Result<Vec<Step>, BackendError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sns = aws_sdk_sns::Client::new(sdk);
    let mut steps = Vec::new();
    let url = match sqs.get_queue_url().queue_name(&names.queue).send().await {
        Ok(out) => Some(out.queue_url().unwrap_or_default().to_string()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) =>
        {
            None
        }
        Err(err) => return Err(aws_error("GetQueueUrl", err)),
    };
    let subscription = "subscription of the queue to the topic".to_string();
    match (&url, names.topic_arn.as_deref()) {
        (Some(url), Some(topic_arn)) => {
            let queue_arn = queue_arn(&sqs, url).await?;
            match find_subscription(&sns, topic_arn, &queue_arn).await? {
                Some(arn) => {
                    sns.unsubscribe()
                        .subscription_arn(arn)
                        .send()
                        .await
                        .map_err(|e| aws_error("Unsubscribe", e))?;
                    steps.push(step(subscription, Action::Deleted));
                }
                None => steps.push(step(subscription, Action::Absent)),
            }
        }
        _ => steps.push(step(subscription, Action::Absent)),
    }
    let resource = format!("SQS FIFO queue {}", names.queue);
    match url {
        Some(url) => {
            sqs.delete_queue()
                .queue_url(url)
                .send()
                .await
                .map_err(|e| aws_error("DeleteQueue", e))?;
            steps.push(step(resource, Action::Deleted));
        }
        None => steps.push(step(resource, Action::Absent)),
    }
    Ok(steps)
}

/// Checks, without changing anything, that each resource of `names` exists: the table,
/// the topic, this host's queue and its subscription. Returns (resource, problem) pairs;
/// `None` means it exists.
pub async fn check(sdk: &aws_config::SdkConfig, names: &Names) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let table = dynamo
        .describe_table()
        .table_name(&names.table)
        .send()
        .await;
    out.push((
        format!("DynamoDB table {}", names.table),
        match table {
            Ok(described) => key_schema_problem(&names.table, described.table()),
            Err(e) => Some(aws_error("DescribeTable", e).to_string()),
        },
    ));
    let sns = aws_sdk_sns::Client::new(sdk);
    let topic_arn = names.topic_arn.clone().unwrap_or_default();
    let topic = sns
        .get_topic_attributes()
        .topic_arn(&topic_arn)
        .send()
        .await;
    out.push((
        format!("SNS FIFO topic {topic_arn}"),
        topic
            .err()
            .map(|e| aws_error("GetTopicAttributes", e).to_string()),
    ));
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue = async {
        let url = sqs
            .get_queue_url()
            .queue_name(&names.queue)
            .send()
            .await
            .map_err(|e| aws_error("GetQueueUrl", e))?;
        queue_arn(&sqs, url.queue_url().unwrap_or_default()).await
    }
    .await;
    let subscription = "subscription of the queue to the topic".to_string();
    match queue {
        Ok(queue_arn) => {
            out.push((format!("SQS FIFO queue {}", names.queue), None));
            let found = find_subscription(&sns, &topic_arn, &queue_arn).await;
            out.push((
                subscription,
                match found {
                    Ok(Some(_)) => None,
                    Ok(None) => Some("missing".to_string()),
                    Err(err) => Some(err.to_string()),
                },
            ));
        }
        Err(err) => {
            out.push((
                format!("SQS FIFO queue {}", names.queue),
                Some(err.to_string()),
            ));
            out.push((subscription, Some("no queue".to_string())));
        }
    }
    out
}
