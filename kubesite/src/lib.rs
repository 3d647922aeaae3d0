//! The Kubernetes site driver: a site whose kind is `kubernetes` runs its instances as pods.
//!
//! Each app assigned to the site becomes a Deployment (one replica per assigned instance) and
//! a Service in the app's namespace (`mecfed-<app>`), applied with server-side apply under
//! the field manager `mecfed`. The site's capacity is the allocatable CPU, memory and GPUs of
//! the cluster's Ready, schedulable nodes. Watches of the site's pods and EndpointSlices
//! (kube-runtime reflectors) give each instance its state and its `podIP:port` endpoint.
//!
//! Edge autonomy comes from Kubernetes itself: the driver keeps its last assignments on disk
//! and never deletes anything because the platform is unreachable, and re-applying an
//! unchanged spec after a restart changes no pod. Stopping the driver leaves the workloads
//! running.
//!
//! Tested against an in-process fake API server (`tests/`), never against a live cluster.

pub mod driver;
pub mod objects;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use mecfed_agent::{
    Credential,
    platform::{PlatformClient, read_json, write_durably},
    reconcile::RECONCILE_EVERY,
};
use mecfed_core::{AppId, InstanceId};
use mecfed_wire::site::{Assignment, InstanceReport};

pub use crate::driver::KubeSite;
use crate::objects::{DesiredApp, desired_apps};
pub use kube::Client;

/// A client of the cluster: from `kubeconfig` when given, else the usual inference
/// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))
}

/// The reconcile loop of a Kubernetes site.
pub struct Reconciler {
    platform: PlatformClient,
    credential: Credential,
    kube: KubeSite,
    state_path: PathBuf,
    assignments: Vec<Assignment>,
    /// Spec hash last applied, per app.
    applied: BTreeMap<AppId, String>,
    /// The desired apps at the last successful prune.
    pruned_for: Option<BTreeSet<AppId>>,
    reported: BTreeMap<InstanceId, InstanceReport>,
    reported_with: Option<String>,
}

impl Reconciler {
    /// A reconciler keeping its assignments in `data_dir/assignments.json`.
    pub fn new(
        platform: PlatformClient,
        credential: Credential,
        kube: KubeSite,
        data_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        let state_path = data_dir.join("assignments.json");
        let assignments = read_json(&state_path)?;
        Ok(Self {
            platform,
            credential,
            kube,
            state_path,
            assignments,
            applied: BTreeMap::new(),
            pruned_for: None,
            reported: BTreeMap::new(),
            reported_with: None,
        })
    }

    /// Runs rounds until `shutdown` resolves. The workloads stay in the cluster.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.kube.synced().await;
        loop {
            self.round().await;
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
    }

    /// One round: fetch, apply, prune, report.
    pub async fn round(&mut self) {
        let credential = self.credential.borrow().clone();
        if credential != self.reported_with {
            self.reported.clear();
            self.reported_with.clone_from(&credential);
        }
        if let Some(cred) = &credential {
            match self.platform.assignments(cred).await {
                Ok(a) => self.keep(a.assignments),
                Err(e) => {
                    tracing::debug!(error = %e, "assignments unavailable; keeping the last ones")
                }
            }
        }
        let (desired, refused) = desired_apps(&self.assignments);
        for e in refused {
            tracing::warn!(error = %e, "assignment not run on this Kubernetes site");
        }
        self.apply(&desired).await;
        if let Some(cred) = &credential {
            self.report(cred, &desired).await;
        }
    }

    fn keep(&mut self, assignments: Vec<Assignment>) {
        let json = |a: &Vec<Assignment>| serde_json::to_vec(a).expect("assignments serialize");
        let bytes = json(&assignments);
        if bytes == json(&self.assignments) {
            return;
        }
        if let Err(e) = write_durably(&self.state_path, &bytes) {
            tracing::error!(error = %e, "cannot keep the assignments on disk");
        }
        self.assignments = assignments;
    }

    async fn apply(&mut self, desired: &BTreeMap<AppId, DesiredApp>) {
        for (id, d) in desired {
            let hash = d.spec_hash();
            if self.applied.get(id) == Some(&hash) {
                continue;
            }
            match self.kube.apply(d).await {
                Ok(()) => {
                    tracing::info!(app = %id, replicas = d.instances.len(), "applied");
                    self.applied.insert(id.clone(), hash);
                }
                Err(e) => tracing::warn!(app = %id, error = %e, "cannot apply; retrying"),
            }
        }
        self.applied.retain(|id, _| desired.contains_key(id));
        let apps: BTreeSet<AppId> = desired.keys().cloned().collect();
        if self.pruned_for.as_ref() != Some(&apps) {
            match self.kube.prune(desired).await {
                Ok(_) => self.pruned_for = Some(apps),
                Err(e) => tracing::warn!(error = %e, "cannot delete unassigned apps; retrying"),
            }
        }
    }

    async fn report(&mut self, cred: &str, desired: &BTreeMap<AppId, DesiredApp>) {
        let now = self.kube.observe(desired);
        for (id, report) in &now {
            if self.reported.get(id) == Some(report) {
                continue;
            }
            if self.platform.report(cred, id, report).await {
                self.reported.insert(id.clone(), report.clone());
            }
        }
        let gone: Vec<InstanceId> = self
            .reported
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.platform.forget(cred, &id).await;
            self.reported.remove(&id);
        }
    }
}
