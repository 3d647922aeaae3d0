//! Keeps the site's instances in line with the platform's assignments.
//!
//! Each round: fetch the assignments (when the agent holds a credential and the platform
//! answers), keep them durably as the desired state, apply [`plan`] through the process
//! shell, and report every instance whose status changed. When the platform cannot be
//! reached, the last desired state (also loaded from disk when the agent starts) stays in
//! force: running instances keep running, crashed ones are restarted, nothing is torn down.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use mecfed_core::{AppId, Artefact, InstanceId, InstanceState, LoadProbe};
use mecfed_wire::site::InstanceReport;
use tokio::sync::watch;

use crate::{
    platform::{PlatformClient, read_json, write_durably},
    process::{InstanceHandle, InstanceStatus, ProcessConfig, start},
    supervise::{Change, InstanceSpec, plan},
};

/// Time between reconcile rounds.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

struct Running {
    hash: String,
    app: AppId,
    handle: InstanceHandle,
}

/// The reconcile loop of one agent.
pub struct Reconciler {
    platform: PlatformClient,
    credential: watch::Receiver<Option<String>>,
    process: ProcessConfig,
    state_path: PathBuf,
    desired: BTreeMap<InstanceId, InstanceSpec>,
    running: BTreeMap<InstanceId, Running>,
    reported: BTreeMap<InstanceId, (InstanceStatus, Option<u32>)>,
    /// Client for load probes.
    http: reqwest::Client,
    /// The credential `reported` was sent with.
    reported_with: Option<String>,
}

/// The spec to run for an assignment; `None` for artefacts an edge node cannot run.
///
/// Besides the app's own environment, an instance gets what it needs to call the platform's
/// ETSI MEC APIs as itself: `MEC_PLATFORM_URL` (the platform base URL), `MEC_TOKEN_URL`,
/// `MEC_CLIENT_ID` (`inst.<instanceId>`) and `MEC_CLIENT_SECRET`.
fn spec_of(a: &mecfed_wire::site::Assignment, platform: &str) -> Option<InstanceSpec> {
    let Artefact::Process { command, args, env } = &a.app.artefact else {
        tracing::warn!(instance = %a.instance_id, "container artefacts need a Kubernetes site");
        return None;
    };
    let mut env = env.clone();
    if !a.mec_client_secret.is_empty() {
        env.insert("MEC_PLATFORM_URL".into(), platform.to_string());
        env.insert("MEC_TOKEN_URL".into(), format!("{platform}/oauth2/token"));
        env.insert("MEC_CLIENT_ID".into(), format!("inst.{}", a.instance_id));
        env.insert("MEC_CLIENT_SECRET".into(), a.mec_client_secret.clone());
    }
    Some(InstanceSpec {
        id: a.instance_id.clone(),
        app: a.app.id.clone(),
        command: command.clone(),
        args: args.clone(),
        env,
        ports: a.app.ports.clone(),
        probe: a.app.readiness.clone(),
        resources: a.app.resources,
        load: a.app.load.clone(),
    })
}

impl Reconciler {
    /// A reconciler for `site`, with its desired state kept in `data_dir/desired.json`.
    pub fn new(
        platform: PlatformClient,
        credential: watch::Receiver<Option<String>>,
        process: ProcessConfig,
        data_dir: &Path,
    ) -> std::io::Result<Self> {
        let state_path = data_dir.join("desired.json");
        let desired = read_json(&state_path)?;
        Ok(Self {
            platform,
            credential,
            process,
            state_path,
            desired,
            running: BTreeMap::new(),
            reported: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(LOAD_TIMEOUT)
                .build()
                .map_err(std::io::Error::other)?,
            reported_with: None,
        })
    }

    /// Runs rounds until `shutdown` resolves, then stops every instance gracefully.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.round().await;
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        for (id, r) in std::mem::take(&mut self.running) {
            tracing::info!(instance = %id, "stopping");
            self.report_terminating(&id, &r).await;
            r.handle.stop().await;
        }
    }

    /// Tells the platform that instance `id` is about to be stopped (best effort: an
    /// unreachable platform learns it from the next report or the instance's absence).
    async fn report_terminating(&mut self, id: &InstanceId, r: &Running) {
        let Some(cred) = self.credential.borrow().clone() else {
            return;
        };
        let status = r.handle.status.borrow().clone();
        let body = InstanceReport {
            app: r.app.clone(),
            state: InstanceState::Terminating,
            endpoint: status.endpoint.clone(),
            pid: status.pid,
            sessions: None,
        };
        if !self.platform.report(&cred, id, &body).await {
            tracing::warn!(instance = %id, "could not tell the platform the instance terminates");
        }
    }

    async fn round(&mut self) {
        let credential = self.credential.borrow().clone();
        if credential != self.reported_with {
            // A new join: the platform may have lost what we told it, so tell it again.
            self.reported.clear();
            self.reported_with.clone_from(&credential);
        }
        if let Some(cred) = &credential {
            match self.fetch(cred).await {
                Ok(desired) if desired != self.desired => {
                    if let Err(e) = write_durably(
                        &self.state_path,
                        &serde_json::to_vec(&desired).expect("specs serialize"),
                    ) {
                        tracing::error!(error = %e, "cannot keep the desired state on disk");
                    }
                    self.desired = desired;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "assignments unavailable; keeping the last ones")
                }
            }
        }
        self.apply().await;
        if let Some(cred) = &credential {
            self.report(cred).await;
        }
    }

    async fn fetch(
        &self,
        cred: &str,
    ) -> Result<BTreeMap<InstanceId, InstanceSpec>, reqwest::Error> {
        let a = self.platform.assignments(cred).await?;
        Ok(a.assignments
            .iter()
            .filter_map(|a| spec_of(a, self.platform.controller()))
            .map(|s| (s.id.clone(), s))
            .collect())
    }

    async fn apply(&mut self) {
        let hashes: BTreeMap<InstanceId, String> = self
            .running
            .iter()
            .map(|(id, r)| (id.clone(), r.hash.clone()))
            .collect();
        for change in plan(&self.desired, &hashes) {
            match change {
                Change::Stop(id) => {
                    if let Some(r) = self.running.remove(&id) {
                        tracing::info!(instance = %id, "no longer assigned; stopping");
                        // Terminating is said before the signal, so that the app hears of its
                        // termination (MEC 011) while it still runs, and may confirm it.
                        self.report_terminating(&id, &r).await;
                        r.handle.stop().await;
                        self.forget(&id).await;
                    }
                }
                Change::Replace(id) => {
                    if let Some(r) = self.running.remove(&id) {
                        tracing::info!(instance = %id, "spec changed; replacing");
                        r.handle.stop().await;
                    }
                    self.start(&id);
                }
                Change::Start(id) => self.start(&id),
            }
        }
    }

    fn start(&mut self, id: &InstanceId) {
        let Some(spec) = self.desired.get(id).cloned() else {
            return;
        };
        let hash = spec.hash();
        let app = spec.app.clone();
        match start(spec, self.process.clone()) {
            Ok(handle) => {
                self.running
                    .insert(id.clone(), Running { hash, app, handle });
            }
            Err(e) => tracing::error!(instance = %id, error = %e, "cannot start"),
        }
    }

    async fn report(&mut self, cred: &str) {
        let mut sent = Vec::new();
        for (id, r) in &self.running {
            let status = r.handle.status.borrow().clone();
            let load = self.desired.get(id).and_then(|s| s.load.as_ref());
            let sessions = match load {
                Some(l) if status.state == InstanceState::Ready => {
                    read_load(&self.http, l, &status.ports, self.process.advertise).await
                }
                _ => None,
            };
            if self.reported.get(id) == Some(&(status.clone(), sessions)) {
                continue;
            }
            let body = InstanceReport {
                app: r.app.clone(),
                state: status.state,
                endpoint: status.endpoint.clone(),
                pid: status.pid,
                sessions,
            };
            if self.platform.report(cred, id, &body).await {
                sent.push((id.clone(), (status, sessions)));
            }
        }
        self.reported.extend(sent);
    }

    async fn forget(&mut self, id: &InstanceId) {
        self.reported.remove(id);
        let Some(cred) = self.credential.borrow().clone() else {
            return;
        };
        self.platform.forget(&cred, id).await;
    }
}

/// How long a load probe may take.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The sessions an instance reports through its load probe; `None` when it does not answer.
async fn read_load(
    http: &reqwest::Client,
    probe: &LoadProbe,
    ports: &BTreeMap<String, u16>,
    host: std::net::Ipv4Addr,
) -> Option<u32> {
    let port = ports.get(&probe.port)?;
    let resp = http
        .get(format!("http://{host}:{port}{}", probe.path))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    LoadProbe::sessions_in(&resp.bytes().await.ok()?)
}
