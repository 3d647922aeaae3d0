//! The site protocol: what an edge agent and the platform say to each other over
//! `/mecfed/v1/join-tokens` and `/mecfed/v1/sites/{siteId}/...`.

use mecfed_core::{App, AppId, InstanceId, InstanceState, Resources};
use serde::{Deserialize, Serialize};

/// A store lease id, as the platform hands it out.
pub type LeaseId = i64;

/// `POST /mecfed/v1/join-tokens` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime in seconds (default one day, at most 30 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// What the token is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /mecfed/v1/join-tokens` answer. The token is shown once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenCreated {
    /// Public id.
    pub id: String,
    /// The whole token, `<id>.<secret>`, to give to `mecfed agent --join-token`.
    pub token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// `POST /mecfed/v1/sites/{siteId}/join` answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The lease to keep alive.
    pub lease_id: LeaseId,
    /// Its TTL.
    pub ttl_seconds: u64,
    /// How often to heartbeat.
    pub heartbeat_seconds: u64,
    /// Bearer credential for heartbeats of this site.
    pub site_credential: String,
}

/// `PUT /mecfed/v1/sites/{siteId}/heartbeat` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// The lease from the join.
    pub lease_id: LeaseId,
    /// Capacity in use now, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Resources>,
}

/// `PUT /mecfed/v1/sites/{siteId}/heartbeat` answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// Lease TTL.
    pub ttl_seconds: u64,
}

/// One instance a site must run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Instance id (`<app>-<site>-<index>`).
    pub instance_id: InstanceId,
    /// The app to run.
    pub app: App,
    /// The instance's client secret for the platform's token endpoint (client id
    /// `inst.<instanceId>`), handed to the instance at start for its ETSI MEC calls.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mec_client_secret: String,
}

/// `GET /mecfed/v1/sites/{siteId}/assignments` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignments {
    /// Store revision the assignments were read at.
    pub revision: u64,
    /// Instances to run, in id order.
    pub assignments: Vec<Assignment>,
}

/// `PUT /mecfed/v1/sites/{siteId}/instances/{instanceId}` body: what the agent observes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceReport {
    /// App of the instance.
    pub app: AppId,
    /// Lifecycle state.
    pub state: InstanceState,
    /// `host:port` UEs reach it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Process id on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Sessions it hosts (apps with a load probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
}
