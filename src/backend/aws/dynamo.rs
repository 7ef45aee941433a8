//! [`StateStore`] on DynamoDB: one item per (host, repository), never one per host (the
//! 400 KB item limit).
//!
//! Item layout (DynamoDB API, `PutItem`): partition key `hostname` (S), sort key `repo`
//! (S), `seq` (N: the state's `updated_at` in microseconds since the Unix epoch), `state`
//! (S: the [`RepoState`] as JSON) and `updated_at` (S, RFC 3339). A write is conditional on
//! `attribute_not_exists(seq) OR seq < :seq`, so an older state never overwrites a newer
//! one. Each host also has an item with sort key `#host`: `version`, `started_at`,
//! `last_seen` and `record` (the [`HostRecord`] as JSON).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::aws_error;
use crate::backend::{BackendError, StateStore};
use crate::model::{HostRecord, RepoState};

/// The sort key of a host's own item.
pub const HOST_ITEM: &str = "#host";

/// The DynamoDB state store of one table.
pub struct DynamoStore {
    client: Client,
    table: String,
    started: DateTime<Utc>,
}

type Item = HashMap<String, AttributeValue>;

fn string(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

impl DynamoStore {
    /// A store writing to `table` with the SDK configuration `sdk`. No network call.
    pub fn new(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        DynamoStore {
            client: Client::new(sdk),
            table: table.to_string(),
            started: Utc::now(),
        }
    }

    /// Every item of `host` (one paginated `Query` on the partition key), or only their
    /// `repo` keys.
    ///
    /// Errors: the `Query` fails, as [`BackendError::Aws`].
    async fn query(&self, host: &str, keys_only: bool) -> Result<Vec<Item>, BackendError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#h = :h")
            .expression_attribute_names("#h", "hostname")
            .expression_attribute_values(":h", AttributeValue::S(host.to_string()));
        if keys_only {
            query = query
                .projection_expression("#r")
                .expression_attribute_names("#r", "repo");
        }
        query
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| aws_error("Query", e))
    }

    /// Every item of the table (one paginated `Scan`), or only the hosts' own items.
    ///
    /// Errors: the `Scan` fails, as [`BackendError::Aws`].
    async fn scan(&self, hosts_only: bool) -> Result<Vec<Item>, BackendError> {
        let mut scan = self.client.scan().table_name(&self.table);
        if hosts_only {
            scan = scan
                .filter_expression("#r = :r")
                .expression_attribute_names("#r", "repo")
                .expression_attribute_values(":r", AttributeValue::S(HOST_ITEM.to_string()));
        }
        scan.into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| aws_error("Scan", e))
    }

    /// Decodes a state item; `None` for host items and (logged) malformed ones.
    fn decode(&self, item: &Item) -> Option<RepoState> {
        let repo = string(item, "repo")?;
        if repo == HOST_ITEM {
            return None;
        }
        let parsed = string(item, "state")
            .ok_or_else(|| "no state attribute".to_string())
            .and_then(|json| serde_json::from_str::<RepoState>(&json).map_err(|e| e.to_string()));
        match parsed {
            Ok(state) => Some(state),
            Err(err) => {
                let host = string(item, "hostname").unwrap_or_default();
                tracing::warn!(table = %self.table, %host, %repo, %err, "malformed state item skipped");
                None
            }
        }
    }

    /// Writes `state` unless the stored one is as new or newer. Returns whether it was
    /// written (`false`: refused by the condition).
    ///
    /// Errors: any other failure of `PutItem`, as [`BackendError::Aws`].
    pub async fn put_if_newer(&self, state: &RepoState) -> Result<bool, BackendError> {
        let json = serde_json::to_string(state).map_err(|e| BackendError::Malformed {
            path: format!("{}/{}", state.host, state.repo),
            message: e.to_string(),
        })?;
        let seq = state.updated_at.timestamp_micros();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("hostname", AttributeValue::S(state.host.clone()))
            .item("repo", AttributeValue::S(state.repo.clone()))
            .item("seq", AttributeValue::N(seq.to_string()))
            .item("state", AttributeValue::S(json))
            .item(
                "updated_at",
                AttributeValue::S(state.updated_at.to_rfc3339()),
            )
            .condition_expression("attribute_not_exists(#seq) OR #seq < :seq")
            .expression_attribute_names("#seq", "seq")
            .expression_attribute_values(":seq", AttributeValue::N(seq.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                tracing::debug!(repo = %state.repo, seq, "a newer state is stored; this one is dropped");
                Ok(false)
            }
            Err(err) => Err(aws_error("PutItem", err)),
        }
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn health(&self) -> Result<(), BackendError> {
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| aws_error("DescribeTable", e))?;
        match super::setup::key_schema_problem(&self.table, described.table()) {
            Some(problem) => Err(BackendError::Config(problem)),
            None => Ok(()),
        }
    }

    async fn put(&self, state: &RepoState) -> Result<(), BackendError> {
        self.put_if_newer(state).await.map(|_| ())
    }

    async fn list(&self, host: Option<&str>) -> Result<Vec<RepoState>, BackendError> {
        let items: Vec<Item> = match host {
            Some(host) => self.query(host, false).await?,
            None => self.scan(false).await?,
        };
        let mut out: Vec<RepoState> = items.iter().filter_map(|i| self.decode(i)).collect();
        out.sort_by(|a, b| (&a.host, &a.repo).cmp(&(&b.host, &b.repo)));
        Ok(out)
    }

    async fn forget(&self, host: &str, repo: Option<&str>) -> Result<usize, BackendError> {
        let repos: Vec<String> = match repo {
            Some(repo) => vec![repo.to_string()],
            None => {
                let items = self.query(host, true).await?;
                items.iter().filter_map(|i| string(i, "repo")).collect()
            }
        };
        let mut count = 0;
        for repo in repos {
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("hostname", AttributeValue::S(host.to_string()))
                .key("repo", AttributeValue::S(repo.clone()))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| aws_error("DeleteItem", e))?;
            if deleted.attributes().is_some() && repo != HOST_ITEM {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn heartbeat(&self, record: &HostRecord) -> Result<(), BackendError> {
        let json = serde_json::to_string(record).map_err(|e| BackendError::Malformed {
            path: format!("{}/{HOST_ITEM}", record.host),
            message: e.to_string(),
        })?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("hostname", AttributeValue::S(record.host.clone()))
            .item("repo", AttributeValue::S(HOST_ITEM.to_string()))
            .item("version", AttributeValue::S(record.version.clone()))
            .item(
                "started_at",
                AttributeValue::S(record.started_at.unwrap_or(self.started).to_rfc3339()),
            )
            .item(
                "last_seen",
                AttributeValue::S(record.last_seen.to_rfc3339()),
            )
            .item("record", AttributeValue::S(json))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("PutItem", e))
    }

    async fn hosts(&self, host: Option<&str>) -> Result<Vec<HostRecord>, BackendError> {
        let items: Vec<Item> = match host {
            Some(host) => self
                .client
                .get_item()
                .table_name(&self.table)
                .key("hostname", AttributeValue::S(host.to_string()))
                .key("repo", AttributeValue::S(HOST_ITEM.to_string()))
                .send()
                .await
                .map_err(|e| aws_error("GetItem", e))?
                .item
                .into_iter()
                .collect(),
            None => self.scan(true).await?,
        };
        let mut out: Vec<HostRecord> = items.iter().filter_map(decode_host).collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }
}

/// A host item: its `record` (JSON) when there is one, else what an older gitsync wrote
/// (`version`, `last_seen`).
fn decode_host(item: &Item) -> Option<HostRecord> {
    let host = string(item, "hostname")?;
    if let Some(record) = string(item, "record") {
        match serde_json::from_str::<HostRecord>(&record) {
            Ok(record) => return Some(record),
            Err(err) => {
                tracing::warn!(%host, %err, "malformed host record; reading its other attributes")
            }
        }
    }
    let last_seen = string(item, "last_seen")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())?
        .with_timezone(&Utc);
    Some(HostRecord {
        host,
        version: string(item, "version").unwrap_or_default(),
        machine_id: None,
        machine: None,
        started_at: string(item, "started_at")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        last_seen,
        heartbeat_secs: None,
        checked_at: None,
        stopped_at: None,
        problem: None,
    })
}
