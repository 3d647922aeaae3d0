//! The Kubernetes site driver end to end, except for Kubernetes: a real platform (REST API
//! over TCP on an embedded store) and the driver's reconciler, against the fake API server
//! in `fake/` (see there for what it models). Nothing here has run against a live cluster.

mod fake;

use std::time::Duration;

use fake::{FakeCluster, Kind};
use mecfed_agent::platform::PlatformClient;
use mecfed_api::{ApiState, HttpMetrics, router, serve};
use mecfed_core::{
    App, AppId, GeoPoint, Instance, InstanceState, OperatorId, Placement, Resources, Site, SiteId,
    SiteKind, ZoneId,
};
use mecfed_kube::{KubeSite, Reconciler};
use mecfed_store::{EmbeddedStore, typed::Typed};
use serde_json::{Value, json};

struct Platform {
    url: String,
    typed: Typed<EmbeddedStore>,
    /// An operator access token.
    admin: String,
    _dir: tempfile::TempDir,
}

async fn platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let metrics = HttpMetrics::register(&prometheus::Registry::new(), "api").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(store.clone(), metrics);
    let (admin, _) = state.auth.issue(&mecfed_api::Principal::operator());
    tokio::spawn(serve(listener, router(state), std::future::pending()));
    Platform {
        url,
        typed: Typed::new(store),
        admin,
        _dir: dir,
    }
}

impl Platform {
    /// Joins site `id` (kind kubernetes) and returns its credential.
    async fn join(&self, id: &str, capacity: Resources) -> String {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{}/mecfed/v1/join-tokens", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut site = Site::new(
            SiteId::new(id).unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new("cork-z1").unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            capacity,
        )
        .unwrap();
        site.kind = SiteKind::Kubernetes;
        let resp = http
            .post(format!("{}/mecfed/v1/sites/{id}/join", self.url))
            .bearer_auth(token["token"].as_str().unwrap())
            .json(&site)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["siteCredential"].as_str().unwrap().to_string()
    }

    async fn instances(&self) -> Vec<Instance> {
        let (all, _) = self.typed.list::<Instance>().await.unwrap();
        all.into_iter().map(|v| v.value).collect()
    }

    async fn place(&self, app: &str, site: &str, replicas: u32) {
        self.typed
            .put(&Placement {
                app: AppId::new(app).unwrap(),
                site: SiteId::new(site).unwrap(),
                replicas,
                evicting_until: None,
            })
            .await
            .unwrap();
    }
}

fn arena(image: &str) -> App {
    serde_json::from_value(json!({
        "id": "arena",
        "developer": "studio",
        "name": "Arena",
        "version": "1",
        "artefact": {"kind": "container", "image": image},
        "ports": [
            {"name": "game", "port": 7777, "protocol": "UDP"},
            {"name": "control", "port": 8080, "protocol": "TCP"}
        ],
        "resources": {"cpuMillicores": 500, "memoryBytes": 268435456},
        "readiness": {"kind": "http", "port": "control", "path": "/ready"},
        "qos": {"latencyBudgetMs": 20, "maxSessionsPerInstance": 100}
    }))
    .unwrap()
}

struct Site1 {
    platform: Platform,
    cluster: FakeCluster,
    reconciler: Reconciler,
    data: tempfile::TempDir,
    /// Keeps the credential channel open for the test's life.
    _credential: tokio::sync::watch::Sender<Option<String>>,
}

async fn site() -> Site1 {
    let platform = platform().await;
    let cred = platform.join("k1", Resources::ZERO).await;
    let (client, cluster) = fake::client();
    let kube = KubeSite::start(client, "k1");
    kube.synced().await;
    let data = tempfile::tempdir().unwrap();
    let (credential, rx) = tokio::sync::watch::channel(Some(cred));
    let reconciler = Reconciler::new(
        PlatformClient::new(&platform.url, SiteId::new("k1").unwrap()).unwrap(),
        rx,
        kube,
        data.path(),
    )
    .unwrap();
    Site1 {
        platform,
        cluster,
        reconciler,
        data,
        _credential: credential,
    }
}

/// Runs rounds until `done` holds for the platform's instances (the watches deliver
/// asynchronously, so a few rounds may pass); fails after 200 rounds.
async fn until(s: &mut Site1, what: &str, done: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
    for _ in 0..200 {
        s.reconciler.round().await;
        let now = s.platform.instances().await;
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: instances are {:?}", s.platform.instances().await);
}

fn ready_with_endpoints(n: usize) -> impl Fn(&[Instance]) -> bool {
    move |is| {
        is.len() == n
            && is
                .iter()
                .all(|i| i.state == InstanceState::Ready && i.endpoint.is_some())
    }
}

#[tokio::test]
async fn capacity_is_the_allocatable_of_ready_schedulable_nodes() {
    let (client, cluster) = fake::client();
    cluster.add_node("n1", "4", "8Gi", true, false);
    cluster.add_node("n2", "3500m", "16393152Ki", true, false);
    cluster.add_node("cordoned", "64", "256Gi", true, true);
    cluster.add_node("down", "64", "256Gi", false, false);
    let kube = KubeSite::start(client, "k1");
    let cap = kube.capacity().await.unwrap();
    assert_eq!(cap.cpu_millicores, 7_500);
    assert_eq!(cap.memory_bytes, (8 << 30) + 16_393_152 * 1024);
}

#[tokio::test]
async fn placements_become_deployments_whose_pods_report_as_instances() {
    let mut s = site().await;
    s.platform
        .typed
        .put(&arena("registry.example/arena:1"))
        .await
        .unwrap();
    s.platform.place("arena", "k1", 2).await;
    let instances = until(&mut s, "two ready instances", ready_with_endpoints(2)).await;

    // The objects, as the API server holds them.
    let dep = s
        .cluster
        .get(Kind::Deployment, "mecfed-arena", "arena")
        .expect("deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/arena:1");
    assert_eq!(
        c["ports"][0],
        json!({"name": "game", "containerPort": 7777, "protocol": "UDP"})
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "268435456"})
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "control");
    assert_eq!(dep["metadata"]["labels"]["mecfed.io/site"], "k1");
    assert_eq!(dep["metadata"]["annotations"]["mecfed.io/app-id"], "arena");
    let svc = s
        .cluster
        .get(Kind::Service, "mecfed-arena", "arena")
        .expect("service");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
    assert!(s.cluster.get(Kind::Namespace, "", "mecfed-arena").is_some());

    // Each instance's endpoint is its own pod's address on the game port.
    let pod_ips: Vec<String> = s
        .cluster
        .list(Kind::Pod)
        .iter()
        .map(|p| format!("{}:7777", p["status"]["podIP"].as_str().unwrap()))
        .collect();
    let mut endpoints: Vec<String> = instances
        .iter()
        .filter_map(|i| i.endpoint.clone())
        .collect();
    endpoints.sort();
    let mut expected = pod_ips.clone();
    expected.sort();
    assert_eq!(endpoints, expected);
    assert!(
        instances
            .iter()
            .all(|i| i.site.as_str() == "k1" && i.pid.is_none())
    );

    // A pod whose readiness probe fails reports Starting and loses its endpoint.
    let pods = s.cluster.list(Kind::Pod);
    let first = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    s.cluster.set_pod_ready("mecfed-arena", &first, false);
    until(&mut s, "one instance starting", |is| {
        is.iter()
            .filter(|i| i.state == InstanceState::Starting && i.endpoint.is_none())
            .count()
            == 1
    })
    .await;
    s.cluster.set_pod_ready("mecfed-arena", &first, true);
    until(&mut s, "ready again", ready_with_endpoints(2)).await;

    // Scale down: the Deployment follows, the surplus instance is forgotten, the other
    // keeps its pod.
    let keep = instances
        .iter()
        .find(|i| i.id.as_str() == "arena-k1-0")
        .unwrap()
        .endpoint
        .clone();
    s.platform.place("arena", "k1", 1).await;
    let after = until(&mut s, "one instance", ready_with_endpoints(1)).await;
    assert_eq!(after[0].id.as_str(), "arena-k1-0");
    assert_eq!(after[0].endpoint, keep);
    let dep = s
        .cluster
        .get(Kind::Deployment, "mecfed-arena", "arena")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 1);

    // Unassigned: Deployment, Service and pods go, and so does the instance.
    s.platform
        .typed
        .delete::<Placement>("arena/k1", None)
        .await
        .unwrap();
    until(&mut s, "no instances", |is| is.is_empty()).await;
    assert!(
        s.cluster
            .get(Kind::Deployment, "mecfed-arena", "arena")
            .is_none()
    );
    assert!(
        s.cluster
            .get(Kind::Service, "mecfed-arena", "arena")
            .is_none()
    );
    assert!(s.cluster.list(Kind::Pod).is_empty());
}

#[tokio::test]
async fn a_restarted_driver_without_the_platform_leaves_running_pods_alone() {
    let mut s = site().await;
    s.platform
        .typed
        .put(&arena("registry.example/arena:1"))
        .await
        .unwrap();
    s.platform.place("arena", "k1", 2).await;
    until(&mut s, "two ready instances", ready_with_endpoints(2)).await;
    let uids = |c: &FakeCluster| {
        let mut u: Vec<String> = c
            .list(Kind::Pod)
            .iter()
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
            .collect();
        u.sort();
        u
    };
    let before = uids(&s.cluster);

    // A new driver process: same data directory, same cluster, no platform (no credential).
    let kube = KubeSite::start(fake::client_for(&s.cluster), "k1");
    kube.synced().await;
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let mut restarted = Reconciler::new(
        PlatformClient::new("http://127.0.0.1:9", SiteId::new("k1").unwrap()).unwrap(),
        rx,
        kube,
        s.data.path(),
    )
    .unwrap();
    for _ in 0..3 {
        restarted.round().await;
    }
    assert_eq!(uids(&s.cluster), before, "no pod was replaced");
    let dep = s
        .cluster
        .get(Kind::Deployment, "mecfed-arena", "arena")
        .unwrap();
    assert_eq!(
        dep["spec"]["replicas"], 2,
        "the kept assignments still hold"
    );
    assert_eq!(dep["metadata"]["generation"], 1, "the spec never changed");
}

#[tokio::test]
async fn api_server_errors_are_retried_and_bad_artefacts_refused() {
    let mut s = site().await;
    // A process artefact cannot run on a Kubernetes site: nothing is created for it.
    let mut native = arena("unused");
    native.id = AppId::new("native").unwrap();
    native.artefact = mecfed_core::Artefact::Process {
        command: "/bin/true".into(),
        args: vec![],
        env: Default::default(),
    };
    s.platform.typed.put(&native).await.unwrap();
    s.platform.place("native", "k1", 1).await;
    // The first two applies of the Deployment fail with 500.
    s.cluster.fail(
        "PATCH /apis/apps/v1/namespaces/mecfed-arena/deployments",
        500,
        2,
    );
    s.platform
        .typed
        .put(&arena("registry.example/arena:1"))
        .await
        .unwrap();
    s.platform.place("arena", "k1", 1).await;
    let is = until(&mut s, "arena ready", |is| {
        is.iter()
            .any(|i| i.app.as_str() == "arena" && i.state == InstanceState::Ready)
    })
    .await;
    assert!(is.iter().all(|i| i.app.as_str() == "arena"), "{is:?}");
    let patches = s
        .cluster
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/mecfed-arena/deployments"))
        .count();
    assert_eq!(patches, 3, "two failures, then success");
    assert!(
        s.cluster
            .get(Kind::Namespace, "", "mecfed-native")
            .is_none()
    );
}
