//! An in-process fake Kubernetes API server behind a `tower_test` mock service, the way
//! kube-rs tests itself, but stateful: it keeps objects, answers list and watch requests
//! shaped like the real API (lists with a resourceVersion, watch streams of newline-separated
//! `{"type","object"}` events, `Status` errors), takes server-side-apply PATCHes and DELETEs,
//! and plays the cluster's controllers: a Deployment gets as many Running, Ready pods as its
//! replicas (all replaced when its pod template changes), a Service gets an EndpointSlice of
//! its ready pods. It never ran against a live cluster; it encodes what the API documents.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::{StreamExt, channel::mpsc};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use kube::client::Body;
use serde_json::{Value, json};

type RespBody = BoxBody<Bytes, Infallible>;

/// Annotation on a fake pod naming its Deployment (the fake has no ReplicaSets).
const OWNER: &str = "fake.mecfed.io/deployment";

/// Kinds the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    Deployment,
    EndpointSlice,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment => "apps/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }
    fn plural(p: &str) -> Option<Self> {
        Some(match p {
            "namespaces" => Kind::Namespace,
            "nodes" => Kind::Node,
            "pods" => Kind::Pod,
            "services" => Kind::Service,
            "deployments" => Kind::Deployment,
            "endpointslices" => Kind::EndpointSlice,
            _ => return None,
        })
    }
}

type Key = (Kind, String, String); // kind, namespace ("" if cluster-scoped), name

struct Watch {
    kind: Kind,
    selector: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// An injected failure: requests whose `METHOD path` starts with `prefix` get `status`.
struct Failure {
    prefix: String,
    status: u16,
    times: usize,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    watches: Vec<Watch>,
    requests: Vec<String>,
    failures: VecDeque<Failure>,
    seq: u64,
}

/// The fake cluster; clone to share.
#[derive(Clone, Default)]
pub struct FakeCluster(Arc<Mutex<State>>);

/// A `kube::Client` talking to a fresh fake cluster, and the cluster.
pub fn client() -> (kube::Client, FakeCluster) {
    let cluster = FakeCluster::default();
    (client_for(&cluster), cluster)
}

/// Another `kube::Client` onto `cluster` (as a restarted process would have).
pub fn client_for(cluster: &FakeCluster) -> kube::Client {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<RespBody>>();
    let c = cluster.clone();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            send.send_response(c.serve(&parts.method, &parts.uri, &body));
        }
    });
    kube::Client::new(service, "default")
}

fn json_response(status: StatusCode, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<RespBody> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

fn parse_selector(q: &BTreeMap<String, String>) -> Vec<(String, String)> {
    q.get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn matches(obj: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v))
}

fn decode(s: &str) -> String {
    // Enough percent-decoding for label selectors.
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v as char);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { ' ' } else { b[i] as char });
        i += 1;
    }
    out
}

impl FakeCluster {
    /// Adds a node with allocatable `cpu` and `memory` (Kubernetes quantities).
    pub fn add_node(&self, name: &str, cpu: &str, memory: &str, ready: bool, unschedulable: bool) {
        let node = json!({
            "metadata": {"name": name},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            },
        });
        let mut st = self.0.lock().unwrap();
        st.upsert(Kind::Node, "", name, node);
    }

    /// The next `times` requests whose `METHOD path` starts with `prefix` fail with `status`.
    pub fn fail(&self, prefix: &str, code: u16, times: usize) {
        self.0.lock().unwrap().failures.push_back(Failure {
            prefix: prefix.to_string(),
            status: code,
            times,
        });
    }

    /// Every request so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().requests.clone()
    }

    /// An object, if it exists.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let st = self.0.lock().unwrap();
        st.objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a kind.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        let st = self.0.lock().unwrap();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Marks a pod ready or not (as its readiness probe would), updating EndpointSlices.
    pub fn set_pod_ready(&self, ns: &str, name: &str, ready: bool) {
        let mut st = self.0.lock().unwrap();
        let key = (Kind::Pod, ns.to_string(), name.to_string());
        let Some(mut pod) = st.objects.get(&key).cloned() else {
            panic!("no pod {ns}/{name}");
        };
        pod["status"]["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": if ready {"True"} else {"False"}},
        ]);
        st.upsert(Kind::Pod, ns, name, pod);
        st.controllers();
    }

    fn serve(&self, method: &Method, uri: &http::Uri, body: &[u8]) -> Response<RespBody> {
        let path = uri.path().to_string();
        let query: BTreeMap<String, String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let mut st = self.0.lock().unwrap();
        let line = format!("{method} {path}");
        st.requests.push(line.clone());
        if let Some(f) = st.failures.iter_mut().find(|f| line.starts_with(&f.prefix)) {
            let code = f.status;
            f.times -= 1;
            st.failures.retain(|f| f.times > 0);
            return status(code, "InternalError", "injected failure");
        }
        // /api/v1/... or /apis/{group}/{version}/...
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let rest = match segs.first() {
            Some(&"api") => &segs[2..],
            Some(&"apis") => &segs[3..],
            _ => return status(404, "NotFound", "no such path"),
        };
        let (ns, kind, name) = match rest {
            [plural] => ("", Kind::plural(plural), None),
            ["namespaces", name] => ("", Some(Kind::Namespace), Some(*name)),
            ["namespaces", ns, plural] => (*ns, Kind::plural(plural), None),
            ["namespaces", ns, plural, name] => (*ns, Kind::plural(plural), Some(*name)),
            [plural, name] => ("", Kind::plural(plural), Some(*name)),
            _ => return status(404, "NotFound", "no such path"),
        };
        let Some(kind) = kind else {
            return status(404, "NotFound", "no such resource");
        };
        match (method.clone(), name) {
            (Method::GET, None) => {
                let selector = parse_selector(&query);
                if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    let since: u64 = query
                        .get("resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    return st.watch(kind, ns, selector, since);
                }
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.0 == kind && (ns.is_empty() || k.1 == ns) && matches(v, &selector)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": kind.api_version(),
                        "kind": format!("{}List", kind.name()),
                        "metadata": {"resourceVersion": st.rv.to_string()},
                        "items": items,
                    }),
                )
            }
            (Method::GET, Some(name)) => match st.objects.get(&(kind, ns.into(), name.into())) {
                Some(v) => json_response(StatusCode::OK, v),
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            (Method::PATCH, Some(name)) => {
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return status(400, "BadRequest", "patch is not JSON");
                };
                if query.get("fieldManager").map(String::as_str) != Some("mecfed") {
                    return status(422, "Invalid", "fieldManager is required for apply");
                }
                if patch["metadata"]["name"].as_str() != Some(name)
                    || patch["kind"].as_str() != Some(kind.name())
                {
                    return status(400, "BadRequest", "name or kind does not match the path");
                }
                let obj = st.apply(kind, ns, name, patch);
                st.controllers();
                json_response(StatusCode::OK, &obj)
            }
            (Method::DELETE, Some(name)) => match st.remove(kind, ns, name) {
                Some(v) => {
                    st.controllers();
                    json_response(StatusCode::OK, &v)
                }
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            _ => status(405, "MethodNotAllowed", "not served by the fake"),
        }
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, kind: Kind, event: &str, obj: &Value) {
        let line = Bytes::from(format!("{}\n", json!({"type": event, "object": obj})));
        self.watches.retain(|w| {
            if w.kind != kind || !matches(obj, &w.selector) {
                return !w.tx.is_closed();
            }
            w.tx.unbounded_send(line.clone()).is_ok()
        });
    }

    fn upsert(&mut self, kind: Kind, ns: &str, name: &str, mut obj: Value) -> Value {
        let key = (kind, ns.to_string(), name.to_string());
        let old = self.objects.get(&key).cloned();
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.name());
        obj["metadata"]["name"] = json!(name);
        if !ns.is_empty() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        if let Some(old) = &old {
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            let generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(if old["spec"] == obj["spec"] {
                generation
            } else {
                generation + 1
            });
            if obj == *old {
                return obj; // no change, no new resourceVersion, no event
            }
        } else {
            self.seq += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", self.seq));
            obj["metadata"]["creationTimestamp"] = json!(format!(
                "2026-01-01T00:{:02}:{:02}Z",
                self.seq / 60 % 60,
                self.seq % 60
            ));
            obj["metadata"]["generation"] = json!(1);
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
        self.objects.insert(key, obj.clone());
        self.emit(kind, if old.is_some() { "MODIFIED" } else { "ADDED" }, &obj);
        obj
    }

    fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))?;
        obj["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
        self.emit(kind, "DELETED", &obj);
        Some(obj)
    }

    /// Server-side apply, simplified: the applier owns spec, labels and annotations.
    fn apply(&mut self, kind: Kind, ns: &str, name: &str, patch: Value) -> Value {
        let mut obj = self
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_else(|| json!({"metadata": {}}));
        obj["metadata"]["labels"] = patch["metadata"]["labels"].clone();
        obj["metadata"]["annotations"] = patch["metadata"]["annotations"].clone();
        if !patch["spec"].is_null() {
            obj["spec"] = patch["spec"].clone();
        }
        self.upsert(kind, ns, name, obj)
    }

    fn watch(
        &mut self,
        kind: Kind,
        ns: &str,
        selector: Vec<(String, String)>,
        since: u64,
    ) -> Response<RespBody> {
        let (tx, rx) = mpsc::unbounded();
        // Events newer than `since`, replayed from the current objects (the fake keeps no
        // history of deletions; the watcher lists first, so `since` is recent).
        for ((k, n, _), v) in &self.objects {
            let rv: u64 = v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if *k == kind && (ns.is_empty() || n == ns) && rv > since && matches(v, &selector) {
                let _ = tx.unbounded_send(Bytes::from(format!(
                    "{}\n",
                    json!({"type": "ADDED", "object": v})
                )));
            }
        }
        self.watches.push(Watch { kind, selector, tx });
        let stream = rx.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    }

    /// The ReplicaSet and EndpointSlice controllers and the kubelet, in one step.
    fn controllers(&mut self) {
        let deployments: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == Kind::Deployment)
            .map(|(_, v)| v.clone())
            .collect();
        // Pods of deleted Deployments go.
        let orphans: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == Kind::Pod
                    && !deployments.iter().any(|d| {
                        d["metadata"]["name"] == v["metadata"]["annotations"][OWNER]
                            && d["metadata"]["namespace"] == v["metadata"]["namespace"]
                    })
            })
            .map(|(k, _)| (k.1.clone(), k.2.clone()))
            .collect();
        for (ns, name) in orphans {
            self.remove(Kind::Pod, &ns, &name);
        }
        for d in deployments {
            let ns = d["metadata"]["namespace"].as_str().unwrap().to_string();
            let dname = d["metadata"]["name"].as_str().unwrap().to_string();
            let template = &d["spec"]["template"];
            let hash = format!("{:08x}", crc(&template.to_string()));
            let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            let mut pods: Vec<(String, Value)> = self
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.0 == Kind::Pod
                        && k.1 == ns
                        && v["metadata"]["annotations"][OWNER] == json!(dname)
                })
                .map(|(k, v)| (k.2.clone(), v.clone()))
                .collect();
            // A changed template replaces every pod.
            for (name, p) in &pods {
                if p["metadata"]["labels"]["pod-template-hash"].as_str() != Some(&hash) {
                    self.remove(Kind::Pod, &ns, name);
                }
            }
            pods.retain(|(_, p)| {
                p["metadata"]["labels"]["pod-template-hash"].as_str() == Some(&hash)
            });
            pods.sort_by(|a, b| {
                a.1["metadata"]["creationTimestamp"]
                    .as_str()
                    .cmp(&b.1["metadata"]["creationTimestamp"].as_str())
                    .then(a.0.cmp(&b.0))
            });
            while pods.len() > want {
                let (name, _) = pods.pop().unwrap(); // newest first
                self.remove(Kind::Pod, &ns, &name);
            }
            while pods.len() < want {
                self.seq += 1;
                let name = format!("{dname}-{hash}-{:05}", self.seq);
                let mut meta = template["metadata"].clone();
                meta["labels"]["pod-template-hash"] = json!(hash);
                meta["annotations"][OWNER] = json!(dname);
                let ip = format!("10.244.{}.{}", self.seq / 250, self.seq % 250 + 2);
                let pod = json!({
                    "metadata": meta,
                    "spec": template["spec"],
                    "status": {
                        "phase": "Running",
                        "podIP": ip,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": "Ready", "status": "True"},
                        ],
                    },
                });
                let pod = self.upsert(Kind::Pod, &ns, &name, pod);
                pods.push((name, pod));
            }
        }
        // One EndpointSlice per Service, of its ready pods.
        let services: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == Kind::Service)
            .map(|(_, v)| v.clone())
            .collect();
        let stale: Vec<(String, String)> = self
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == Kind::EndpointSlice
                    && !services.iter().any(|s| {
                        s["metadata"]["name"]
                            == v["metadata"]["labels"]["kubernetes.io/service-name"]
                            && s["metadata"]["namespace"] == v["metadata"]["namespace"]
                    })
            })
            .map(|(k, _)| (k.1.clone(), k.2.clone()))
            .collect();
        for (ns, name) in stale {
            self.remove(Kind::EndpointSlice, &ns, &name);
        }
        for s in services {
            let ns = s["metadata"]["namespace"].as_str().unwrap().to_string();
            let sname = s["metadata"]["name"].as_str().unwrap().to_string();
            let selector: Vec<(String, String)> = s["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let endpoints: Vec<Value> = self
                .objects
                .iter()
                .filter(|(k, v)| k.0 == Kind::Pod && k.1 == ns && matches(v, &selector))
                .map(|(k, v)| {
                    let ready = v["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    json!({
                        "addresses": [v["status"]["podIP"]],
                        "conditions": {"ready": ready},
                        "targetRef": {"kind": "Pod", "namespace": ns, "name": k.2},
                    })
                })
                .collect();
            // Port numbers: the container port each named targetPort points at.
            let ports: Vec<Value> = s["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| json!({"name": p["name"], "port": p["port"], "protocol": p["protocol"]}))
                .collect();
            let mut labels = s["metadata"]["labels"].clone();
            labels["kubernetes.io/service-name"] = json!(sname);
            let slice = json!({
                "metadata": {"labels": labels},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            });
            self.upsert(Kind::EndpointSlice, &ns, &format!("{sname}-slice"), slice);
        }
    }
}

fn crc(s: &str) -> u32 {
    // FNV-1a: a stable template hash for pod names.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
