//! The IO shell over one Kubernetes cluster: server-side apply of the objects from
//! [`crate::objects`], deletion of what is no longer assigned, node capacity, and watches
//! (kube-runtime reflectors) of the site's pods and EndpointSlices.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use mecfed_core::{AppId, InstanceId, Resources};
use mecfed_wire::site::InstanceReport;
use tokio::task::JoinHandle;

use crate::objects::{
    DesiredApp, MANAGER, capacity, deployment, instance_reports, namespace, service, site_selector,
    stale_apps,
};

/// One site's view of its cluster.
pub struct KubeSite {
    client: Client,
    site: String,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    watches: Vec<JoinHandle<()>>,
}

impl Drop for KubeSite {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

fn reflect<K>(api: Api<K>, selector: &str) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(selector))
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "Kubernetes watch failed; retrying");
            }
        }
    });
    (reader, task)
}

impl KubeSite {
    /// Starts watching the pods and EndpointSlices of `site` (by label, in every namespace).
    pub fn start(client: Client, site: &str) -> Self {
        let selector = site_selector(site);
        let (pods, p) = reflect(Api::<Pod>::all(client.clone()), &selector);
        let (slices, s) = reflect(Api::<EndpointSlice>::all(client.clone()), &selector);
        Self {
            client,
            site: site.to_string(),
            pods,
            slices,
            watches: vec![p, s],
        }
    }

    /// Waits until both watches have listed once.
    pub async fn synced(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
    }

    /// The cluster's allocatable capacity over Ready, schedulable nodes.
    pub async fn capacity(&self) -> Result<Resources, kube::Error> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        let (total, unreadable) = capacity(&nodes.items);
        for u in unreadable {
            tracing::warn!(detail = %u, "node capacity not counted");
        }
        Ok(total)
    }

    /// Applies one app's Namespace, Deployment and Service (server-side apply: an unchanged
    /// spec changes nothing, so running pods are left alone).
    pub async fn apply(&self, d: &DesiredApp) -> Result<(), kube::Error> {
        let params = PatchParams::apply(MANAGER).force();
        let ns = namespace(&self.site, d);
        let ns_name = ns.name_any();
        Api::<Namespace>::all(self.client.clone())
            .patch(&ns_name, &params, &Patch::Apply(&ns))
            .await?;
        let dep = deployment(&self.site, d);
        Api::<Deployment>::namespaced(self.client.clone(), &ns_name)
            .patch(&dep.name_any(), &params, &Patch::Apply(&dep))
            .await?;
        if let Some(svc) = service(&self.site, d) {
            Api::<Service>::namespaced(self.client.clone(), &ns_name)
                .patch(&svc.name_any(), &params, &Patch::Apply(&svc))
                .await?;
        }
        Ok(())
    }

    /// Deletes the Deployments and Services of this site whose app is not in `desired`;
    /// returns how many objects went.
    pub async fn prune(&self, desired: &BTreeMap<AppId, DesiredApp>) -> Result<usize, kube::Error> {
        let lp = ListParams::default().labels(&site_selector(&self.site));
        let deployments = Api::<Deployment>::all(self.client.clone())
            .list(&lp)
            .await?;
        let services = Api::<Service>::all(self.client.clone()).list(&lp).await?;
        let mut deleted = 0;
        for (ns, name) in stale_apps(desired, deployments.items.iter().map(|d| &d.metadata)) {
            tracing::info!(namespace = %ns, %name, "deleting a Deployment no longer assigned");
            Api::<Deployment>::namespaced(self.client.clone(), &ns)
                .delete(&name, &DeleteParams::background())
                .await?;
            deleted += 1;
        }
        for (ns, name) in stale_apps(desired, services.items.iter().map(|s| &s.metadata)) {
            Api::<Service>::namespaced(self.client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// What each assigned instance looks like now, from the watched pods and EndpointSlices.
    pub fn observe(
        &self,
        desired: &BTreeMap<AppId, DesiredApp>,
    ) -> BTreeMap<InstanceId, InstanceReport> {
        let pods: Vec<Pod> = self.pods.state().iter().map(|p| (**p).clone()).collect();
        let slices: Vec<EndpointSlice> =
            self.slices.state().iter().map(|s| (**s).clone()).collect();
        instance_reports(desired, &pods, &slices)
    }
}
