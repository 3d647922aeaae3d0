//! The edge-site agent: joins the operator platform with a join token, then keeps the site's
//! lease alive with heartbeats, and joins again whenever the platform says the lease is gone.
//!
//! Beside that loop, the [`reconcile`] loop runs the site's assigned instances as supervised
//! processes ([`process`], decisions in [`supervise`]). While the platform is unreachable
//! the agent keeps trying with back-off and never exits, and what runs on the site keeps
//! running from the desired state the agent keeps on disk (edge autonomy).
//!
//! Architecture Invariant: the agent talks to the platform only over its REST API, never to
//! the state store directly.

pub mod limits;
pub mod platform;
pub mod process;
pub mod reconcile;
pub mod supervise;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mecfed_core::Site;
use mecfed_wire::site::{Heartbeat, HeartbeatResponse, JoinResponse};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Longest wait between attempts to reach the platform.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Timeout of one request to the platform.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The site this agent runs, as it reports itself.
    pub site: Site,
    /// Base URL of the platform's REST API, e.g. `http://127.0.0.1:8080`.
    pub controller: String,
    /// Join token from `mecfed ctl join-token create`.
    pub join_token: String,
    /// Where the agent keeps its desired state.
    pub data_dir: PathBuf,
    /// How instances run.
    pub process: process::ProcessConfig,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The platform refused the join for good (bad token, invalid site).
    #[error("the platform refused to let site {site} join ({status}): {detail}")]
    JoinRefused {
        /// Site id.
        site: String,
        /// HTTP status.
        status: u16,
        /// The platform's explanation.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The local desired state could not be read.
    #[error("cannot load the agent's state from its data directory")]
    State(#[source] std::io::Error),
    /// The instance runtime could not start.
    #[error("cannot start the instance runtime: {0}")]
    Runtime(String),
}

/// Agent metrics.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    joins: IntCounterVec,
    heartbeats: IntCounterVec,
    joined: IntGauge,
}

impl AgentMetrics {
    /// Registers `mecfed_agent_joins_total{outcome}`, `mecfed_agent_heartbeats_total{outcome}`
    /// and `mecfed_agent_joined`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let joins = IntCounterVec::new(
            Opts::new("mecfed_agent_joins_total", "Join attempts"),
            &["outcome"],
        )?;
        let heartbeats = IntCounterVec::new(
            Opts::new("mecfed_agent_heartbeats_total", "Heartbeats sent"),
            &["outcome"],
        )?;
        let joined = IntGauge::new(
            "mecfed_agent_joined",
            "1 while the site holds a live lease on the platform",
        )?;
        registry.register(Box::new(joins.clone()))?;
        registry.register(Box::new(heartbeats.clone()))?;
        registry.register(Box::new(joined.clone()))?;
        Ok(Self {
            joins,
            heartbeats,
            joined,
        })
    }
}

/// Whether the agent currently holds a live lease; its admin `/ready` reads this.
#[derive(Clone, Debug, Default)]
pub struct Joined(Arc<AtomicBool>);

impl Joined {
    /// Whether the last join or heartbeat succeeded.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Release);
    }
}

enum Attempt<T> {
    Ok(T),
    /// The platform answered with a final refusal.
    Refused(u16, String),
    /// The lease is gone (heartbeat 404): join again.
    Gone,
    /// Network trouble or a 5xx: try again later.
    Retry(String),
}

/// The site's current platform credential (`None` while not joined), as the instance
/// runtime sees it.
pub type Credential = tokio::sync::watch::Receiver<Option<String>>;

/// Resolves when the agent stops; the instance runtime then winds down.
pub type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs the agent with supervised processes as the instance runtime, until `shutdown`
/// resolves or the platform refuses it for good.
pub async fn run(
    config: AgentConfig,
    metrics: AgentMetrics,
    joined: Joined,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let platform = platform::PlatformClient::new(&config.controller, config.site.id.clone())
        .map_err(AgentError::Client)?;
    let process = config.process.clone();
    let data_dir = config.data_dir.clone();
    run_with(
        config,
        metrics,
        joined,
        shutdown,
        move |credential, stop| {
            let reconciler = reconcile::Reconciler::new(platform, credential, process, &data_dir)
                .map_err(AgentError::State)?;
            Ok(tokio::spawn(reconciler.run(stop)))
        },
    )
    .await
}

/// Runs the agent's join and heartbeat loop beside an instance runtime: `instances` gets the
/// credential channel and a stop signal and returns the runtime's task, which the agent
/// awaits when it stops.
pub async fn run_with(
    config: AgentConfig,
    metrics: AgentMetrics,
    joined: Joined,
    shutdown: impl std::future::Future<Output = ()>,
    instances: impl FnOnce(Credential, Stop) -> Result<tokio::task::JoinHandle<()>, AgentError>,
) -> Result<(), AgentError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(AgentError::Client)?;
    let (credential_tx, credential_rx) = tokio::sync::watch::channel(None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let instances = instances(
        credential_rx,
        Box::pin(async {
            let _ = stop_rx.await;
        }),
    )?;
    let result = tokio::select! {
        r = run_loop(&client, &config, &metrics, &joined, &credential_tx) => r,
        () = shutdown => {
            tracing::info!("agent stopping");
            Ok(())
        }
    };
    let _ = stop_tx.send(());
    let _ = instances.await;
    result
}

async fn run_loop(
    client: &reqwest::Client,
    config: &AgentConfig,
    metrics: &AgentMetrics,
    joined: &Joined,
    credential: &tokio::sync::watch::Sender<Option<String>>,
) -> Result<(), AgentError> {
    let site_id = config.site.id.to_string();
    let mut backoff = Duration::from_millis(200);
    loop {
        let join = match join(client, config).await {
            Attempt::Ok(j) => j,
            Attempt::Refused(status, detail) => {
                metrics.joins.with_label_values(&["refused"]).inc();
                return Err(AgentError::JoinRefused {
                    site: site_id,
                    status,
                    detail,
                });
            }
            Attempt::Gone | Attempt::Retry(_) => {
                metrics.joins.with_label_values(&["error"]).inc();
                tracing::warn!(?backoff, "platform unreachable; retrying the join");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        metrics.joins.with_label_values(&["ok"]).inc();
        metrics.joined.set(1);
        joined.set(true);
        credential.send_replace(Some(join.site_credential.clone()));
        backoff = Duration::from_millis(200);
        tracing::info!(site = %site_id, lease = join.lease_id, "joined the platform");
        let every = Duration::from_secs(join.heartbeat_seconds.max(1));
        loop {
            tokio::time::sleep(every).await;
            match heartbeat(client, config, &join).await {
                Attempt::Ok(_) => metrics.heartbeats.with_label_values(&["ok"]).inc(),
                Attempt::Gone => {
                    metrics.heartbeats.with_label_values(&["lease_gone"]).inc();
                    tracing::warn!("the platform dropped our lease; joining again");
                    break;
                }
                Attempt::Refused(status, detail) => {
                    // The credential no longer matches (another agent joined as this site).
                    metrics.heartbeats.with_label_values(&["refused"]).inc();
                    tracing::warn!(status, %detail, "heartbeat refused; joining again");
                    break;
                }
                Attempt::Retry(e) => {
                    metrics.heartbeats.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "heartbeat failed; the site keeps running");
                }
            }
        }
        metrics.joined.set(0);
        joined.set(false);
        credential.send_replace(None);
    }
}

async fn problem_detail(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<serde_json::Value>().await {
        Ok(v) => v["detail"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_string),
        Err(_) => status.to_string(),
    }
}

/// Sends a request and classifies the answer: success, 404 (`Gone`, when `gone_on_404`),
/// another 4xx (`Refused`: final), anything else or no answer (`Retry`).
async fn exchange<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    gone_on_404: bool,
) -> Attempt<T> {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(e.to_string()),
    };
    let status = resp.status();
    if status.is_success() {
        match resp.json::<T>().await {
            Ok(v) => Attempt::Ok(v),
            Err(e) => Attempt::Retry(e.to_string()),
        }
    } else if gone_on_404 && status.as_u16() == 404 {
        Attempt::Gone
    } else if status.is_client_error() {
        Attempt::Refused(status.as_u16(), problem_detail(resp).await)
    } else {
        Attempt::Retry(problem_detail(resp).await)
    }
}

async fn join(client: &reqwest::Client, config: &AgentConfig) -> Attempt<JoinResponse> {
    let url = format!(
        "{}/mecfed/v1/sites/{}/join",
        config.controller.trim_end_matches('/'),
        config.site.id
    );
    let req = client
        .post(url)
        .bearer_auth(&config.join_token)
        .json(&config.site);
    exchange(req, false).await
}

async fn heartbeat(
    client: &reqwest::Client,
    config: &AgentConfig,
    join: &JoinResponse,
) -> Attempt<HeartbeatResponse> {
    let url = format!(
        "{}/mecfed/v1/sites/{}/heartbeat",
        config.controller.trim_end_matches('/'),
        config.site.id
    );
    let body = Heartbeat {
        lease_id: join.lease_id,
        usage: None,
    };
    let req = client
        .put(url)
        .bearer_auth(&join.site_credential)
        .json(&body);
    exchange(req, true).await
}
