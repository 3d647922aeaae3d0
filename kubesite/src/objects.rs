//! What the driver asks of Kubernetes and what it reads back, as pure functions: assignments
//! to Namespace, Deployment and Service objects; nodes to capacity; pods and EndpointSlices
//! to instance reports. No IO here; [`crate::driver`] is the shell.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, HTTPGetAction, Namespace, Node, Pod, PodSpec,
            PodTemplateSpec, Probe as KubeProbe, ResourceRequirements, Service, ServicePort,
            ServiceSpec, TCPSocketAction,
        },
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use mecfed_core::{App, AppId, Artefact, InstanceId, InstanceState, Probe, Protocol, Resources};
use mecfed_wire::site::{Assignment, InstanceReport};
use sha2::{Digest, Sha256};

/// Field manager of server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "mecfed";
/// Label on everything the driver creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the site (as a label value) that owns an object.
pub const LABEL_SITE: &str = "mecfed.io/site";
/// Label naming the app (as a label value); the Deployment's selector.
pub const LABEL_APP: &str = "mecfed.io/app";
/// Annotation carrying the exact app id (label values cannot hold every id).
pub const ANNOTATION_APP_ID: &str = "mecfed.io/app-id";
/// Annotation carrying the hash of the spec an object was built from.
pub const ANNOTATION_SPEC_HASH: &str = "mecfed.io/spec-hash";
/// Resource name of GPUs in node allocatable and container limits.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Why an assignment cannot be expressed as Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The app ships a process, not a container image.
    #[error("app {0} ships a process artefact; a Kubernetes site runs container images")]
    NotAContainer(AppId),
    /// A port Kubernetes cannot express.
    #[error("app {app}: port {port:?} {reason}")]
    Port {
        /// App.
        app: AppId,
        /// Port name.
        port: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A DNS-1123 label (lowercase letters, digits, `-`; starts with a letter, ends with a letter
/// or digit) of at most `max` characters standing for `id`. An id that already is one stays
/// as it is; any other gets a readable prefix and 8 hex digits of its SHA-256, so that two
/// ids never share a label.
pub fn dns_label(id: &str, max: usize) -> String {
    let valid = id.len() <= max
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        return id.to_string();
    }
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..4]);
    let mut readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !readable.starts_with(|c: char| c.is_ascii_lowercase()) {
        readable.insert(0, 'x');
    }
    readable.truncate(max.saturating_sub(hash.len() + 1));
    let readable = readable.trim_end_matches('-');
    format!("{readable}-{hash}")
}

/// The Deployment and Service name of `app`.
pub fn name_of(app: &AppId) -> String {
    dns_label(app.as_str(), 40)
}

/// The namespace of `app` (one per app, shared by every site of this driver in the cluster).
pub fn namespace_of(app: &AppId) -> String {
    format!("mecfed-{}", name_of(app))
}

/// The label value naming `site`.
pub fn site_label(site: &str) -> String {
    dns_label(site, 63)
}

/// The label selector of everything one site's driver owns.
pub fn site_selector(site: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{LABEL_SITE}={}",
        site_label(site)
    )
}

/// One app the site must run, with the instance ids assigned to it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredApp {
    /// The app.
    pub app: App,
    /// Instance ids, sorted; as many as the Deployment's replicas.
    pub instances: Vec<InstanceId>,
}

impl DesiredApp {
    /// Hash of everything the objects are built from (a changed hash means re-apply).
    pub fn spec_hash(&self) -> String {
        let json = serde_json::to_vec(&(&self.app, self.instances.len())).expect("apps serialize");
        hex::encode(&Sha256::digest(&json)[..8])
    }
}

/// Groups assignments by app, keeping only what a Kubernetes site can run; the others come
/// back as errors.
pub fn desired_apps(assignments: &[Assignment]) -> (BTreeMap<AppId, DesiredApp>, Vec<ObjectError>) {
    let mut apps: BTreeMap<AppId, DesiredApp> = BTreeMap::new();
    let mut refused = BTreeMap::new();
    for a in assignments {
        if refused.contains_key(&a.app.id) {
            continue;
        }
        if let Err(e) = check(&a.app) {
            refused.insert(a.app.id.clone(), e);
            continue;
        }
        apps.entry(a.app.id.clone())
            .or_insert_with(|| DesiredApp {
                app: a.app.clone(),
                instances: Vec::new(),
            })
            .instances
            .push(a.instance_id.clone());
    }
    for d in apps.values_mut() {
        d.instances.sort();
    }
    (apps, refused.into_values().collect())
}

fn check(app: &App) -> Result<(), ObjectError> {
    if !matches!(app.artefact, Artefact::Container { .. }) {
        return Err(ObjectError::NotAContainer(app.id.clone()));
    }
    for p in &app.ports {
        let bad = |reason| ObjectError::Port {
            app: app.id.clone(),
            port: p.name.clone(),
            reason,
        };
        if p.port == 0 {
            return Err(bad("is 0; a container port must be fixed"));
        }
        if dns_label(&p.name, 15) != p.name {
            return Err(bad(
                "is not a Kubernetes port name (at most 15 lowercase letters, digits, '-')",
            ));
        }
    }
    Ok(())
}

fn labels(site: &str, app: &AppId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_SITE.to_string(), site_label(site)),
        (LABEL_APP.to_string(), name_of(app)),
    ])
}

fn meta(site: &str, d: &DesiredApp, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(if namespaced {
            name_of(&d.app.id)
        } else {
            namespace_of(&d.app.id)
        }),
        namespace: namespaced.then(|| namespace_of(&d.app.id)),
        labels: Some(labels(site, &d.app.id)),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_APP_ID.to_string(), d.app.id.to_string()),
            (ANNOTATION_SPEC_HASH.to_string(), d.spec_hash()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The app's namespace.
pub fn namespace(site: &str, d: &DesiredApp) -> Namespace {
    let mut m = meta(site, d, false);
    m.annotations = None; // shared by sites; nothing site-specific to say
    Namespace {
        metadata: m,
        ..Namespace::default()
    }
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
    .to_string()
}

fn quantities(r: &Resources) -> BTreeMap<String, Quantity> {
    let mut q = BTreeMap::new();
    if r.cpu_millicores > 0 {
        q.insert("cpu".into(), Quantity(format!("{}m", r.cpu_millicores)));
    }
    if r.memory_bytes > 0 {
        q.insert("memory".into(), Quantity(r.memory_bytes.to_string()));
    }
    if r.gpus > 0 {
        q.insert(GPU_RESOURCE.into(), Quantity(r.gpus.to_string()));
    }
    q
}

fn probe(p: &Probe) -> Option<KubeProbe> {
    let port = IntOrString::String(p.port()?.to_string());
    let mut k = KubeProbe {
        period_seconds: Some(2),
        failure_threshold: Some(3),
        ..KubeProbe::default()
    };
    match p {
        Probe::Tcp { .. } => k.tcp_socket = Some(TCPSocketAction { port, host: None }),
        Probe::Http { path, .. } => {
            k.http_get = Some(HTTPGetAction {
                port,
                path: Some(path.clone()),
                ..HTTPGetAction::default()
            });
        }
        // Kubernetes has no UDP probe: the pod counts as ready once it runs.
        Probe::UdpEcho { .. } => return None,
        // Confirmed through the platform, not probed by the kubelet.
        Probe::MecConfirmReady => return None,
    }
    Some(k)
}

/// The app's Deployment: one replica per assigned instance. Requests equal limits, so that a
/// placement's reservation is what the pod gets.
pub fn deployment(site: &str, d: &DesiredApp) -> Deployment {
    let Artefact::Container { image } = &d.app.artefact else {
        unreachable!("desired_apps keeps container apps only")
    };
    let labels = labels(site, &d.app.id);
    let selector = BTreeMap::from([
        (LABEL_SITE.to_string(), site_label(site)),
        (LABEL_APP.to_string(), name_of(&d.app.id)),
    ]);
    let resources = quantities(&d.app.resources);
    let container = Container {
        name: "app".into(),
        image: Some(image.clone()),
        ports: Some(
            d.app
                .ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: i32::from(p.port),
                    protocol: Some(protocol(p.protocol)),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        env: Some(
            d.app
                .ports
                .iter()
                .map(|p| EnvVar {
                    name: format!("PORT_{}", p.name.to_ascii_uppercase().replace('-', "_")),
                    value: Some(p.port.to_string()),
                    value_from: None,
                })
                .collect(),
        ),
        readiness_probe: d.app.readiness.as_ref().and_then(probe),
        resources: (!resources.is_empty()).then(|| ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    // The pod template carries no spec hash: that hash counts replicas, and a changed
    // template would roll every pod on a mere scale.
    let pod_meta = ObjectMeta {
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_APP_ID.to_string(),
            d.app.id.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    Deployment {
        metadata: meta(site, d, true),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(d.instances.len()).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The app's Service over its pods (its EndpointSlices carry each instance's address); `None`
/// for an app without ports.
pub fn service(site: &str, d: &DesiredApp) -> Option<Service> {
    if d.app.ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: meta(site, d, true),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                (LABEL_SITE.to_string(), site_label(site)),
                (LABEL_APP.to_string(), name_of(&d.app.id)),
            ])),
            ports: Some(
                d.app
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: i32::from(p.port),
                        target_port: Some(IntOrString::String(p.name.clone())),
                        protocol: Some(protocol(p.protocol)),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Capacity of the cluster: the allocatable CPU, memory and GPUs of its Ready, schedulable
/// nodes. Quantities the driver cannot read count as zero (and are logged by the caller).
pub fn capacity(nodes: &[Node]) -> (Resources, Vec<String>) {
    let mut total = Resources::ZERO;
    let mut unreadable = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let schedulable = !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !(schedulable && ready) {
            continue;
        }
        let Some(alloc) = node.status.as_ref().and_then(|s| s.allocatable.as_ref()) else {
            continue;
        };
        let mut spec = Vec::new();
        for (key, ours) in [("cpu", "cpu"), ("memory", "memory"), (GPU_RESOURCE, "gpus")] {
            if let Some(q) = alloc.get(key) {
                spec.push(format!("{ours}={}", q.0));
            }
        }
        match Resources::parse(&spec.join(",")) {
            Ok(r) => {
                total.cpu_millicores += r.cpu_millicores;
                total.memory_bytes += r.memory_bytes;
                total.gpus += r.gpus;
            }
            Err(e) => unreadable.push(format!("node {name}: {e}")),
        }
    }
    (total, unreadable)
}

fn pod_state(pod: &Pod) -> InstanceState {
    if pod.metadata.deletion_timestamp.is_some() {
        return InstanceState::Terminating;
    }
    let status = pod.status.as_ref();
    let condition = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map(|c| c.status == "True")
    };
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") if condition("Ready") == Some(true) => InstanceState::Ready,
        Some("Running") => InstanceState::Starting,
        Some("Pending") if condition("PodScheduled") == Some(true) => InstanceState::Starting,
        Some("Failed" | "Succeeded") => InstanceState::Failed,
        _ => InstanceState::Pending,
    }
}

/// `ip:port` of `pod` on the app's first port, from the EndpointSlices that list it.
fn endpoint(pod: &str, first_port: Option<&str>, slices: &[&EndpointSlice]) -> Option<String> {
    let port_name = first_port?;
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let mine = e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod);
            let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if let (true, true, Some(addr)) = (mine, ready, e.addresses.first()) {
                return Some(if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                });
            }
        }
    }
    None
}

/// What to report for every assigned instance. Pods of an app are matched to its instance
/// ids in a stable order (creation time, then name; terminating pods last), so an instance
/// keeps its pod while that pod lives. An instance without a pod is `Pending`.
pub fn instance_reports(
    desired: &BTreeMap<AppId, DesiredApp>,
    pods: &[Pod],
    slices: &[EndpointSlice],
) -> BTreeMap<InstanceId, InstanceReport> {
    let mut out = BTreeMap::new();
    for (id, d) in desired {
        let label = name_of(id);
        let ns = namespace_of(id);
        let mut mine: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str())
                    && p.metadata.labels.as_ref().and_then(|l| l.get(LABEL_APP)) == Some(&label)
            })
            .collect();
        mine.sort_by_key(|p| {
            (
                p.metadata.deletion_timestamp.is_some(),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        let app_slices: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .collect();
        let first_port = d.app.ports.first().map(|p| p.name.as_str());
        for (i, instance) in d.instances.iter().enumerate() {
            let report = match mine.get(i) {
                Some(pod) => {
                    let state = pod_state(pod);
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    InstanceReport {
                        app: id.clone(),
                        state,
                        endpoint: endpoint(name, first_port, &app_slices),
                        pid: None,
                        // Load probes are read by edge-node agents only, for now.
                        sessions: None,
                    }
                }
                None => InstanceReport {
                    app: id.clone(),
                    state: InstanceState::Pending,
                    endpoint: None,
                    pid: None,
                    sessions: None,
                },
            };
            out.insert(instance.clone(), report);
        }
    }
    out
}

/// Apps whose objects exist in the cluster (by their app-id annotation) but are no longer
/// desired: the driver deletes their Deployments and Services.
pub fn stale_apps<'a>(
    desired: &BTreeMap<AppId, DesiredApp>,
    present: impl IntoIterator<Item = &'a ObjectMeta>,
) -> BTreeSet<(String, String)> {
    present
        .into_iter()
        .filter(|m| {
            let id = m
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_APP_ID));
            !id.is_some_and(|id| desired.keys().any(|k| k.as_str() == id))
        })
        .filter_map(|m| Some((m.namespace.clone()?, m.name.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns_labels_keep_valid_ids_and_hash_the_rest() {
        assert_eq!(dns_label("arena", 40), "arena");
        let a = dns_label("Arena_v2", 40);
        let b = dns_label("arena-v2", 40);
        assert!(
            a.starts_with("arena-v2-") && a.len() == "arena-v2-".len() + 8,
            "{a}"
        );
        assert_eq!(b, "arena-v2");
        assert_ne!(a, b, "distinct ids never share a label");
        let long = dns_label(&"x".repeat(100), 40);
        assert_eq!(long.len(), 40);
        assert!(dns_label("9lives", 63).starts_with("x9lives-"));
        assert!(dns_label("a:b", 63).starts_with("a-b-"));
    }

    fn app(id: &str, artefact: Value) -> App {
        serde_json::from_value(json!({
            "id": id, "developer": "d", "name": "n", "version": "1",
            "artefact": artefact,
            "ports": [{"name": "game", "port": 7777, "protocol": "UDP"}],
            "resources": {"cpuMillicores": 250},
            "readiness": {"kind": "udpEcho", "port": "game"},
            "qos": {"latencyBudgetMs": 20, "maxSessionsPerInstance": 10}
        }))
        .unwrap()
    }

    use serde_json::Value;

    fn assignment(instance: &str, app: &App) -> Assignment {
        Assignment {
            instance_id: InstanceId::new(instance).unwrap(),
            app: app.clone(),
            mec_client_secret: String::new(),
        }
    }

    #[test]
    fn assignments_group_by_app_and_process_artefacts_are_refused() {
        let c = app("c", json!({"kind": "container", "image": "img"}));
        let p = app("p", json!({"kind": "process", "command": "/bin/true"}));
        let (apps, refused) = desired_apps(&[
            assignment("c-s-1", &c),
            assignment("p-s-0", &p),
            assignment("c-s-0", &c),
        ]);
        assert_eq!(apps.len(), 1);
        let ids: Vec<&str> = apps[&c.id]
            .instances
            .iter()
            .map(InstanceId::as_str)
            .collect();
        assert_eq!(ids, ["c-s-0", "c-s-1"]);
        assert_eq!(refused, [ObjectError::NotAContainer(p.id.clone())]);

        let mut zero = c.clone();
        zero.ports[0].port = 0;
        let (apps, refused) = desired_apps(&[assignment("c-s-0", &zero)]);
        assert!(apps.is_empty());
        assert!(matches!(refused[0], ObjectError::Port { .. }));
    }

    #[test]
    fn udp_readiness_has_no_kubernetes_probe_and_requests_equal_limits() {
        let c = app("c", json!({"kind": "container", "image": "img"}));
        let (apps, _) = desired_apps(&[assignment("c-s-0", &c)]);
        let dep = deployment("s", &apps[&c.id]);
        let container = &dep.spec.unwrap().template.spec.unwrap().containers[0];
        assert!(container.readiness_probe.is_none());
        let r = container.resources.as_ref().unwrap();
        assert_eq!(r.limits, r.requests);
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "250m");
        assert_eq!(container.env.as_ref().unwrap()[0].name, "PORT_GAME");
    }

    fn pod(name: &str, created: &str, phase: &str, ready: bool, deleting: bool) -> Pod {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "mecfed-c", "creationTimestamp": created,
                "labels": {LABEL_APP: "c"},
            },
            "status": {"phase": phase, "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": if ready {"True"} else {"False"}},
            ]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn instances_take_pods_in_creation_order_with_their_slice_endpoints() {
        let c = app("c", json!({"kind": "container", "image": "img"}));
        let (apps, _) = desired_apps(&[
            assignment("c-s-0", &c),
            assignment("c-s-1", &c),
            assignment("c-s-2", &c),
        ]);
        let pods = [
            pod("new", "2026-01-01T00:02:00Z", "Pending", false, false),
            pod("old", "2026-01-01T00:01:00Z", "Running", true, false),
            pod("going", "2026-01-01T00:00:00Z", "Running", true, true),
        ];
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "c-x", "namespace": "mecfed-c"},
            "addressType": "IPv4",
            "ports": [{"name": "game", "port": 7777}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"name": "old"}, "conditions": {"ready": true}},
                {"addresses": ["10.0.0.9"], "targetRef": {"name": "going"}, "conditions": {"ready": false}},
            ],
        }))
        .unwrap();
        let r = instance_reports(&apps, &pods, &[slice]);
        let get = |i: &str| &r[&InstanceId::new(i).unwrap()];
        assert_eq!(get("c-s-0").state, InstanceState::Ready);
        assert_eq!(get("c-s-0").endpoint.as_deref(), Some("10.0.0.1:7777"));
        assert_eq!(get("c-s-1").state, InstanceState::Starting);
        assert_eq!(get("c-s-1").endpoint, None);
        assert_eq!(get("c-s-2").state, InstanceState::Terminating);
        assert_eq!(get("c-s-2").endpoint, None, "not ready in its slice");
    }

    #[test]
    fn stale_apps_are_those_without_a_desired_app_id() {
        let c = app("c", json!({"kind": "container", "image": "img"}));
        let (apps, _) = desired_apps(&[assignment("c-s-0", &c)]);
        let meta = |ns: &str, id: Option<&str>| ObjectMeta {
            name: Some("x".into()),
            namespace: Some(ns.into()),
            annotations: id.map(|i| BTreeMap::from([(ANNOTATION_APP_ID.into(), i.into())])),
            ..ObjectMeta::default()
        };
        let present = [
            meta("mecfed-c", Some("c")),
            meta("mecfed-d", Some("d")),
            meta("n", None),
        ];
        let stale = stale_apps(&apps, present.iter());
        assert_eq!(
            stale.into_iter().map(|(ns, _)| ns).collect::<Vec<_>>(),
            ["mecfed-d", "n"]
        );
    }
}
