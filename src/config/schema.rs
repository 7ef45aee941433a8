//! The configuration file's schema as serde structs, exactly as written in the file.
//!
//! Every struct denies unknown keys. Defaults are applied by `config::load`, not here, so
//! that "not set" stays distinguishable from "set to the default".

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole file, as written. All keys are optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This machine's name in the shared store.
    pub hostname: Option<String>,
    /// Folder the repositories live under; `~` is expanded.
    pub root: Option<String>,
    /// Paths relative to `root`; glob patterns (`work/*`) allowed.
    pub repositories: Option<Vec<String>>,
    /// IANA time zone for showing times.
    pub timezone: Option<String>,
    /// `local` or `aws`.
    pub backend: Option<BackendKind>,
    /// The `local` backend.
    pub local: Option<LocalConfig>,
    /// The `aws` backend (GitArgus's keys).
    pub aws: Option<AwsConfig>,
    /// Automatic pulls.
    pub pull: Option<RawPull>,
    /// The pre-push hook.
    pub hooks: Option<HooksConfig>,
    /// GitArgus's `python.bin`: accepted and ignored, with a warning.
    pub python: Option<PythonConfig>,
    /// Partition sync (producer or consumer).
    pub partition: Option<PartitionConfig>,
    /// S3 or folder mirrors that plain `git clone` reads over dumb HTTP.
    pub mirrors: Option<Vec<MirrorConfig>>,
    /// Webhook-triggered one-way mirrors from one git remote to another.
    pub webhooks: Option<WebhooksConfig>,
    /// Trees shipped to servers over rsync+ssh as atomic releases.
    pub deploy: Option<Vec<DeployConfig>>,
    /// Metrics and health endpoints for monitoring.
    pub observe: Option<ObserveConfig>,
    /// Where to send a message when something starts or stops failing.
    pub notify: Option<Vec<NotifyTarget>>,
}

/// One `notify` target: exactly one key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// An HTTP(S) URL that gets each message as a POST body (an ntfy topic, a webhook).
    pub webhook: Option<String>,
    /// Freedesktop notifications over D-Bus (the Desktop Notifications Specification's
    /// `org.freedesktop.Notifications.Notify`, on the session bus).
    pub desktop: Option<bool>,
}

/// The `observe` section: where `/metrics`, `/healthz` and `/readyz` are served.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// `host:port` to listen on, such as `127.0.0.1:9187`; nothing is served without it.
    pub listen: Option<String>,
}

/// One entry of `deploy`: a branch of a repository shipped to servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Unique name, used in commands.
    pub name: String,
    /// A configured repository (relative to `root`) or a path.
    pub repo: String,
    /// The branch shipped (default: the repository's current branch).
    pub branch: Option<String>,
    /// Ship when the branch moves (the daemon fast-forwarded it, or it moved otherwise).
    #[serde(default)]
    pub on_update: bool,
    /// Ship the repository's `.git` too (default false).
    #[serde(default)]
    pub include_git: bool,
    /// rsync exclude patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Releases kept on each target (default 5; the current and the previous are always
    /// kept).
    pub keep: Option<usize>,
    /// The servers.
    pub targets: Vec<DeployTarget>,
    /// ssh settings for every target.
    pub ssh: Option<DeploySsh>,
    /// The secret scan before shipping.
    pub scan: Option<DeployScan>,
}

/// One server of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployTarget {
    /// Its name in commands and `status`.
    pub name: String,
    /// `user@host` (or a host alias of the user's ssh config).
    pub host: String,
    /// ssh port (default: the ssh config's).
    pub port: Option<u16>,
    /// The deploy folder: `releases/` and `current` live in it.
    pub path: String,
}

/// `deploy[].ssh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySsh {
    /// Private key file (`-i`, with `IdentitiesOnly=yes`).
    pub identity: Option<String>,
    /// known_hosts file (`UserKnownHostsFile`).
    pub known_hosts: Option<String>,
    /// `yes` (default) or `accept-new`.
    pub strict_host_key_checking: Option<String>,
    /// Seconds to wait for a connection (default 10).
    pub connect_timeout: Option<u64>,
}

/// `deploy[].scan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployScan {
    /// `gitleaks`, `kingfisher`, `detect-secrets`, `auto` (default), `off`, or a scanner's
    /// path.
    pub tool: Option<ScanTool>,
    /// The scanner's rules file (gitleaks / kingfisher TOML); gitsync's default otherwise.
    pub config: Option<String>,
}

/// `webhooks.queue`: where accepted jobs wait for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Files under `~/.gitsync/webhooks/queue` (the default).
    Local,
    /// An SQS FIFO queue (`webhooks.sqs_queue`), shared by the hosts that run workers.
    Sqs,
}

/// `webhooks.mirrors[].provider`: whose webhook format and signature the intake checks
/// (each forge's webhook documentation; `generic` is Standard Webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderName {
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// GitLab (`X-Gitlab-Token`, or signed with `gitlab_signing`).
    Gitlab,
    /// Gitea (`X-Gitea-Signature`).
    Gitea,
    /// Forgejo (`X-Forgejo-Signature`).
    Forgejo,
    /// Bitbucket Cloud (`X-Hub-Signature`).
    Bitbucket,
    /// Bitbucket Server / Data Center (`X-Hub-Signature`).
    BitbucketServer,
    /// Backlog (unsigned: needs a path token).
    Backlog,
    /// Standard Webhooks (`webhook-signature`), or a header named by `signature_header`.
    Generic,
}

impl ProviderName {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Github => "github",
            ProviderName::Gitlab => "gitlab",
            ProviderName::Gitea => "gitea",
            ProviderName::Forgejo => "forgejo",
            ProviderName::Bitbucket => "bitbucket",
            ProviderName::BitbucketServer => "bitbucket-server",
            ProviderName::Backlog => "backlog",
            ProviderName::Generic => "generic",
        }
    }
}

impl std::fmt::Display for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deploy[].scan.tool`: a scanner by name, `auto` (the first installed), `off`, or the
/// path of a scanner whose file name starts with its name (`~/.local/bin/gitleaks`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ScanTool(String);

impl ScanTool {
    /// As written in the config.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ScanTool {
    type Error = String;

    /// Errors: a word that is none of the scanners and a path that names none.
    fn try_from(tool: String) -> Result<ScanTool, String> {
        use super::deploy::{SCANNERS, kind_of_path};
        if SCANNERS.contains(&tool.as_str()) || kind_of_path(&tool).is_some() {
            Ok(ScanTool(tool))
        } else {
            Err(format!(
                "{tool:?}: use one of {}, or the path of a scanner whose file name starts with its name (~/.local/bin/gitleaks)",
                SCANNERS.join(", ")
            ))
        }
    }
}

/// `webhooks`: the intake (an HTTP server under `gitsync run`), its queue, and the mirrors
/// it triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// `host:port` to listen on (default `127.0.0.1:8787`).
    pub listen: Option<String>,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsConfig>,
    /// Proxies whose `X-Forwarded-For` is trusted (CIDR blocks such as `127.0.0.1/32`).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `local` (files under `~/.gitsync/webhooks`, default) or `sqs`.
    pub queue: Option<QueueKind>,
    /// The SQS FIFO queue for `queue: sqs`.
    pub sqs_queue: Option<String>,
    /// S3/SQS endpoint of an AWS-compatible server, for `queue: sqs`.
    pub endpoint_url: Option<String>,
    /// AWS region for `queue: sqs`.
    pub region: Option<String>,
    /// Whether this host listens for webhooks (default true).
    pub intake: Option<bool>,
    /// Whether this host runs the jobs (default true; with `queue: sqs`, any number of
    /// hosts may).
    pub worker: Option<bool>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub max_body: Option<usize>,
    /// The mirrors.
    #[serde(default)]
    pub mirrors: Vec<WebhookMirrorConfig>,
    /// Forge push webhooks for the repositories this host keeps, at
    /// `POST /hooks/sync/<provider>`: a verified push is announced on the event bus, and
    /// every host that has the repository pulls it.
    #[serde(default)]
    pub sync: Vec<WebhookSyncConfig>,
}

/// One entry of `webhooks.sync`: a forge whose push webhooks this host accepts for the
/// core.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSyncConfig {
    /// `github`, `gitlab`, `gitea`, `forgejo`, `bitbucket` or `generic`.
    pub provider: ProviderName,
    /// Environment variable holding the webhook secret.
    pub secret_env: Option<String>,
    /// File holding the webhook secret.
    pub secret_file: Option<String>,
    /// For `generic`: the header holding the hex HMAC-SHA256 (default `X-Signature-256`).
    pub signature_header: Option<String>,
    /// For `gitlab`: verify GitLab's signing token (`webhook-signature`) instead of
    /// `X-Gitlab-Token`.
    #[serde(default)]
    pub gitlab_signing: bool,
    /// Source addresses allowed (CIDR blocks; empty: any).
    #[serde(default)]
    pub allow_from: Vec<String>,
}

/// `webhooks.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

/// One entry of `webhooks.mirrors`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookMirrorConfig {
    /// Unique name: the webhook URL is `/hooks/<name>`.
    pub name: String,
    /// `github`, `gitlab`, `gitea`, `forgejo`, `bitbucket`, `bitbucket-server`, `backlog`
    /// or `generic`.
    pub provider: ProviderName,
    /// Environment variable holding the webhook secret.
    pub secret_env: Option<String>,
    /// File holding the webhook secret.
    pub secret_file: Option<String>,
    /// A secret path segment: the webhook URL is then `/hooks/<name>/<token>` (required for
    /// `backlog`, which signs nothing).
    pub path_token_env: Option<String>,
    /// File holding the path token (instead of `path_token_env`).
    pub path_token_file: Option<String>,
    /// Header carrying the HMAC-SHA256 for `generic` (default `X-Signature-256`).
    pub signature_header: Option<String>,
    /// GitLab: verify the `webhook-signature` scheme instead of `X-Gitlab-Token`.
    #[serde(default)]
    pub gitlab_signing: bool,
    /// Where to fetch from (any URL git fetches).
    pub source: String,
    /// Environment variable with a token for the source (sent as an HTTP header).
    pub source_token_env: Option<String>,
    /// File holding the source token (instead of `source_token_env`).
    pub source_token_file: Option<String>,
    /// File with an ssh private key for the source (used through `GIT_SSH_COMMAND`).
    pub source_ssh_key: Option<String>,
    /// Where to push to.
    pub target: String,
    /// Environment variable with a token (or `user:password`) for the target.
    pub target_token_env: Option<String>,
    /// File holding the target token (instead of `target_token_env`).
    pub target_token_file: Option<String>,
    /// File with an ssh private key for the target (used through `GIT_SSH_COMMAND`).
    pub target_ssh_key: Option<String>,
    /// known_hosts file for ssh sources and targets (`UserKnownHostsFile`, host keys then
    /// checked strictly: `StrictHostKeyChecking=yes`); default: the user's own.
    pub known_hosts: Option<String>,
    /// Branch patterns to mirror (default all: `["*"]`); `*` does not cross `/`, `**` does.
    pub branches: Option<Vec<String>>,
    /// Mirror tags too (default true).
    pub tags: Option<bool>,
    /// Overwrite refs that moved at the target on their own (through a lease).
    #[serde(default)]
    pub force: bool,
    /// Source addresses allowed to call (CIDR blocks); required for `backlog`.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// Reconciliation run interval (default 1h).
    pub interval: Option<HumanDuration>,
}

/// One entry of `mirrors`: a source git fetches from, and a target in S3 or a folder laid
/// out as git's dumb HTTP protocol reads it (see `gitsync::mirror`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Unique name (letters, digits, `.`, `_`, `-`), used in commands and messages.
    pub name: String,
    /// Any URL git fetches from (https with the user's credential helpers, ssh, `file://`).
    pub source: String,
    /// `s3://bucket/prefix` or `file:///path`.
    pub target: String,
    /// Also copy the Git LFS objects the mirrored commits point at (default false).
    #[serde(default)]
    pub lfs: bool,
    /// Time between two runs under `gitsync run` (default 10m).
    pub interval: Option<HumanDuration>,
    /// Also run right after this host's daemon confirms a push to the source.
    #[serde(default)]
    pub on_push: bool,
    /// S3 endpoint of an AWS-compatible server (path-style addressing).
    pub endpoint_url: Option<String>,
    /// S3 region; the SDK's chain when absent.
    pub region: Option<String>,
    /// Packs the target may hold before a run writes one full pack instead (default 16).
    pub max_packs: Option<usize>,
    /// How long packs left out by a consolidation stay, for clients mid-fetch (default 10m).
    pub grace: Option<HumanDuration>,
}

/// `partition.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionRole {
    /// Exports the sources into the store.
    Producer,
    /// Imports from the store into the destinations.
    Consumer,
}

/// `partition.*`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// What `gitsync run` does with this section; the `partition` commands take either.
    pub role: Option<PartitionRole>,
    /// `s3://bucket/prefix` or `file:///path`.
    pub store: Option<String>,
    /// Producer: age x25519 recipients (`age1...`) who can read the objects.
    pub recipients: Option<Vec<String>>,
    /// Producer: the ed25519 signing key file.
    pub signing_key: Option<String>,
    /// Consumer: the age identity file.
    pub identity: Option<String>,
    /// Consumer: the producer's public key (`gitsync-ed25519:...`, the contents of
    /// `signing.pub`).
    pub producer_public_key: Option<String>,
    /// GitLab for pairs named by `project_name` and `group`; the token is read from
    /// `GITLAB_TOKEN`.
    pub gitlab: Option<GitlabConfig>,
    /// The sync pairs (git-partition-sync's list, or `url:` pairs).
    pub pairs: Option<Vec<SyncPair>>,
    /// A file holding git-partition-sync's YAML list of pairs, unchanged.
    pub pairs_file: Option<String>,
    /// Sleep between rounds under `gitsync run` (default 5m).
    pub interval: Option<HumanDuration>,
    /// S3 endpoint override (an AWS-compatible server).
    pub endpoint_url: Option<String>,
    /// S3 region.
    pub region: Option<String>,
}

/// `partition.gitlab`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// Such as `https://gitlab.example.com`.
    pub base_url: String,
}

/// One sync pair: a source branch to a destination branch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPair {
    /// Where the commits come from.
    pub source: PairEnd,
    /// Where they go.
    pub destination: PairEnd,
    /// Also carry the tags (default false).
    #[serde(default)]
    pub tags: bool,
    /// Let the consumer rewrite the destination branch (`--force-with-lease` against the
    /// last applied commit) instead of fast-forwarding only (default false).
    #[serde(default)]
    pub force: bool,
}

/// One end of a pair: a git URL (`file://` included), or a GitLab project and group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PairEnd {
    /// Any git remote URL.
    pub url: Option<String>,
    /// GitLab project (as git-partition-sync names it).
    pub project_name: Option<String>,
    /// GitLab group (as git-partition-sync names it).
    pub group: Option<String>,
    /// The branch.
    pub branch: String,
}

/// Which backend stores state and carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A folder on this machine or a shared filesystem; no account needed.
    Local,
    /// DynamoDB, SNS FIFO and SQS FIFO.
    Aws,
}

impl BackendKind {
    /// The name as written in the config file: `local` or `aws`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Aws => "aws",
        }
    }
}

/// `local.*`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The hub folder (default `~/.gitsync/hub`).
    pub path: Option<String>,
}

/// `aws.*`: GitArgus's keys plus `region` and `endpoint_url`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// AWS region such as `eu-central-1`.
    pub region: Option<String>,
    /// Endpoint override for AWS-compatible servers, such as `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
    /// `aws.dynamodb.table`.
    pub dynamodb: Option<DynamoDbConfig>,
    /// `aws.sqs.queue`.
    pub sqs: Option<SqsConfig>,
    /// `aws.sns.topic.arn`.
    pub sns: Option<SnsConfig>,
}

/// `aws.dynamodb.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// Table name.
    pub table: String,
}

/// `aws.sqs.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// This machine's FIFO queue name (ends in `.fifo`).
    pub queue: String,
}

/// `aws.sns.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    /// `aws.sns.topic`.
    pub topic: SnsTopicConfig,
}

/// `aws.sns.topic.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsTopicConfig {
    /// The FIFO topic's ARN.
    pub arn: String,
}

/// `pull.*` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    /// Fast-forward clean branches that are strictly behind (default true).
    pub fast_forward: Option<bool>,
    /// Time between full updates, a human duration such as `5m` (default 5m).
    pub interval: Option<HumanDuration>,
    /// Longest time one `git fetch` may take, such as `2m` (default 2m).
    pub fetch_timeout: Option<HumanDuration>,
    /// Fast-forward local branches that are not checked out (default true).
    pub other_branches: Option<bool>,
    /// Time between two rescans of the root for clones added or removed (default 1m;
    /// the root's folders are watched too, so this is the fallback).
    pub rescan: Option<HumanDuration>,
    /// Time between two heartbeats of this host in the store (default 1m); a host silent
    /// for more than 3 of its intervals is shown `offline`.
    pub heartbeat: Option<HumanDuration>,
    /// Time between two cheap polls of every repository's remote (`git ls-remote` of the
    /// refs its branches track; a fetch only when one moved), such as `30s` (default: off).
    pub poll: Option<HumanDuration>,
}

/// `hooks.*`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Install the pre-push hook at start-up (default true).
    pub install: Option<bool>,
}

/// GitArgus's `python.*` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonConfig {
    /// Unused by gitsync.
    pub bin: Option<String>,
}

/// A duration written the humantime way: `300ms`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|err| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: {err} (write it like 30s, 5m or 1h)"
                ))
            })
    }
}
