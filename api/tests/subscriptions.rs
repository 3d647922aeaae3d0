//! Subscriptions: MEC 011 subscription resources through the router (with their errors and
//! other tenants' attempts), the events that queue notifications, and the subscription
//! engine delivering them to real callback servers on loopback: in order, retried with
//! back-off, across a restart of the store, expired at their deadline.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use mecfed_api::notify::{
    self, Enqueued, Notifier, NotifierConfig, NotifyMetrics, Subscription, queue::Backoff,
};
use mecfed_store::{EmbeddedStore, typed::Typed};
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::{INST, instance_token, outbox, world};

const APP: &str = "/mec_app_support/v1";
const SVC: &str = "/mec_service_mgmt/v1";

// === a callback server ===

#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Requests still to refuse with 500.
    refuse: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

async fn callback(State(r): State<Received>, Json(body): Json<Value>) -> StatusCode {
    r.attempts.fetch_add(1, Ordering::SeqCst);
    if r.refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.bodies.lock().push(body);
    StatusCode::NO_CONTENT
}

async fn callback_server(refuse: usize) -> (String, Received) {
    let r = Received::default();
    r.refuse.store(refuse, Ordering::SeqCst);
    let app = Router::new()
        .route("/cb", post(callback))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/cb"), r)
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..1500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn fast() -> NotifierConfig {
    NotifierConfig {
        backoff: Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        timeout: Duration::from_secs(2),
        give_up_after: Duration::from_secs(3600),
        max_in_flight: 8,
        leader_ttl: Duration::from_secs(3),
        roots: Vec::new(),
    }
}

/// Runs a notifier over `store` until the returned sender is dropped or fired.
fn start_notifier(
    store: EmbeddedStore,
    registry: &prometheus::Registry,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let n = Notifier::new(Typed::new(store), fast())
        .unwrap()
        .with_metrics(NotifyMetrics::register(registry).unwrap());
    let task = tokio::spawn(n.run(async {
        let _ = rx.await;
    }));
    (tx, task)
}

fn subscription(id: &str, callback: &str) -> Subscription {
    Subscription {
        id: id.into(),
        family: "test".into(),
        subscription_type: "TestSubscription".into(),
        developer: None,
        instance: None,
        callback: callback.into(),
        href: format!("/test/subscriptions/{id}"),
        body: json!({}),
        expiry_deadline: None,
        expiry_notification: None,
        next_seq: 0,
        created_at: 0,
        delivery: Default::default(),
    }
}

fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            if m.get_counter().is_some() {
                m.get_counter().value()
            } else {
                m.get_gauge().value()
            }
        })
        .sum()
}

// === the engine ===

#[tokio::test]
async fn notifications_arrive_once_each_in_order_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    // The callback refuses the first three attempts: the head is retried, nothing overtakes.
    let (cb, got) = callback_server(3).await;
    notify::create(&typed, subscription("s1", &cb), Some(json!({"n": "test"})))
        .await
        .unwrap();
    for i in 0..5 {
        assert_eq!(
            notify::enqueue(&typed, "s1", json!({ "n": i }))
                .await
                .unwrap(),
            Enqueued::Queued(i + 1)
        );
    }
    assert_eq!(
        notify::enqueue(&typed, "nobody", json!({})).await.unwrap(),
        Enqueued::Gone
    );
    let registry = prometheus::Registry::new();
    let (stop, task) = start_notifier(store.clone(), &registry);
    eventually("six deliveries", async || got.bodies.lock().len() == 6).await;
    let bodies = got.bodies.lock().clone();
    assert_eq!(
        bodies,
        [
            json!({"n": "test"}),
            json!({"n": 0}),
            json!({"n": 1}),
            json!({"n": 2}),
            json!({"n": 3}),
            json!({"n": 4})
        ]
    );
    assert_eq!(got.attempts.load(Ordering::SeqCst), 9);
    eventually("an empty outbox", async || outbox(&store).await.is_empty()).await;
    // A notification leaves the outbox before the worker counts its outcome.
    eventually("six counted deliveries", async || {
        metric(&registry, "mecfed_notifications_delivered_total") == 6.0
    })
    .await;
    assert_eq!(
        metric(&registry, "mecfed_notification_attempts_failed_total"),
        3.0
    );
    assert_eq!(metric(&registry, "mecfed_notifier_leader"), 1.0);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn credentials_and_media_type_are_sent_and_a_410_ends_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    type Seen = Arc<Mutex<Vec<(String, String)>>>;
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/gone",
            post(
                async |State(seen): State<Seen>, headers: axum::http::HeaderMap| {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    seen.lock().push((h("content-type"), h("authorization")));
                    StatusCode::GONE
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb = format!("http://{}/gone", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut sub = subscription("s410", &cb);
    sub.delivery = notify::Delivery {
        content_type: Some("application/cloudevents+json".into()),
        bearer: Some("sink-token".into()),
    };
    notify::create(&typed, sub, None).await.unwrap();
    for i in 0..3 {
        notify::enqueue(&typed, "s410", json!({ "n": i }))
            .await
            .unwrap();
    }
    let registry = prometheus::Registry::new();
    let (stop, task) = start_notifier(store.clone(), &registry);
    eventually("the subscription ended by its callback", async || {
        typed.get::<Subscription>("s410").await.unwrap().is_none()
            && outbox(&store).await.is_empty()
    })
    .await;
    // One attempt: the 410 ends it, the two queued behind it are never sent.
    let seen = seen.lock().clone();
    assert_eq!(
        seen,
        [(
            "application/cloudevents+json".to_string(),
            "Bearer sink-token".to_string()
        )]
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn emit_queues_and_ends_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    notify::create(&typed, subscription("e1", "http://127.0.0.1:1/"), None)
        .await
        .unwrap();
    let nothing = notify::emit(&typed, "e1", |_| notify::Emit::default())
        .await
        .unwrap();
    assert_eq!(nothing, Enqueued::Nothing);
    let ended = notify::emit(&typed, "e1", |s| {
        s.body = json!({"seen": true});
        notify::Emit {
            bodies: vec![json!({"n": 0}), json!({"n": "last"})],
            end: true,
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, Enqueued::Queued(0));
    assert!(typed.get::<Subscription>("e1").await.unwrap().is_none());
    let bodies: Vec<Value> = outbox(&store).await.into_iter().map(|n| n.body).collect();
    assert_eq!(bodies, [json!({"n": 0}), json!({"n": "last"})]);
    assert_eq!(
        notify::emit(&typed, "e1", |_| notify::Emit::default())
            .await
            .unwrap(),
        Enqueued::Gone
    );
}

#[tokio::test]
async fn queued_notifications_survive_a_restart_and_deleted_subscriptions_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (cb, got) = callback_server(0).await;
    {
        let store = EmbeddedStore::open_path(&path).unwrap();
        let typed = Typed::new(store.clone());
        notify::create(&typed, subscription("kept", &cb), None)
            .await
            .unwrap();
        notify::create(&typed, subscription("gone", &cb), None)
            .await
            .unwrap();
        for i in 0..3 {
            notify::enqueue(&typed, "kept", json!({ "kept": i }))
                .await
                .unwrap();
            notify::enqueue(&typed, "gone", json!({ "gone": i }))
                .await
                .unwrap();
        }
        assert_eq!(outbox(&store).await.len(), 6);
        assert!(notify::remove(&typed, "gone").await.unwrap());
        assert!(!notify::remove(&typed, "gone").await.unwrap());
        assert_eq!(outbox(&store).await.len(), 3);
        // The platform stops before anything was delivered.
    }
    let store = EmbeddedStore::open_path(&path).unwrap();
    let registry = prometheus::Registry::new();
    let (stop, task) = start_notifier(store.clone(), &registry);
    eventually("three deliveries", async || got.bodies.lock().len() == 3).await;
    eventually("an empty outbox", async || outbox(&store).await.is_empty()).await;
    assert_eq!(
        got.bodies.lock().clone(),
        [json!({"kept": 0}), json!({"kept": 1}), json!({"kept": 2})]
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_subscription_ends_at_its_deadline_after_its_expiry_notification() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    let (cb, got) = callback_server(0).await;
    let registry = prometheus::Registry::new();
    let (stop, task) = start_notifier(store.clone(), &registry);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut sub = subscription("short", &cb);
    sub.expiry_deadline = Some(now + 1);
    sub.expiry_notification = Some(json!({"notificationType": "ExpiryNotification"}));
    notify::create(&typed, sub, None).await.unwrap();
    notify::enqueue(&typed, "short", json!({"before": "expiry"}))
        .await
        .unwrap();
    eventually("the expiry notification", async || {
        got.bodies.lock().len() == 2
    })
    .await;
    assert_eq!(
        got.bodies.lock().clone(),
        [
            json!({"before": "expiry"}),
            json!({"notificationType": "ExpiryNotification"})
        ]
    );
    assert!(typed.get::<Subscription>("short").await.unwrap().is_none());
    assert_eq!(
        notify::enqueue(&typed, "short", json!({})).await.unwrap(),
        Enqueued::Gone
    );
    assert_eq!(metric(&registry, "mecfed_subscriptions_expired_total"), 1.0);
    stop.send(()).unwrap();
    task.await.unwrap();
}

// === MEC 011 resources ===

fn termination_sub(callback: &str, instance: &str) -> Value {
    json!({"AppTerminationNotificationSubscription": {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": callback,
        "appInstanceId": instance,
    }})
}

#[tokio::test]
async fn app_termination_subscriptions_crud_with_errors_and_tenants() {
    let (api, alpha, beta, me) = world().await;
    let uri = format!("{APP}/applications/{INST}/subscriptions");
    let cb = "http://127.0.0.1:9/cb";
    // Refusals store nothing.
    let bad = [
        (
            json!({"subscriptionType": "Other", "callbackReference": cb, "appInstanceId": INST}),
            "subscriptionType",
        ),
        (
            json!({"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": "ftp://x/y", "appInstanceId": INST}),
            "callbackReference",
        ),
        (
            json!({"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": cb, "appInstanceId": "arena-cork-a-1"}),
            "appInstanceId",
        ),
        (
            json!({"subscriptionType": "AppTerminationNotificationSubscription", "appInstanceId": INST}),
            "callbackReference",
        ),
        (
            json!({"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": cb, "appInstanceId": INST, "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in bad {
        let (s, e) = api.call("POST", &uri, Some(&me), Some(body)).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["detail"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    // Another tenant and the app's other instance see no such instance.
    let other = instance_token(&api, "arena-cork-a-1");
    for t in [&beta, &other] {
        let (s, _) = api
            .call("POST", &uri, Some(t), Some(termination_sub(cb, INST)))
            .await;
        assert_eq!(s, 404);
    }
    let (s, list) = api.call("GET", &uri, Some(&me), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscriptions"],
        json!([])
    );

    let (s, headers, created) = api
        .send(
            "POST",
            &uri,
            Some(&me),
            Some(("application/json", termination_sub(cb, INST).to_string())),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let sub = &created["AppTerminationNotificationSubscription"];
    let href = sub["_links"]["self"]["href"].as_str().unwrap().to_string();
    assert!(href.starts_with(&format!("{uri}/")), "{href}");
    assert_eq!(headers["location"], href.as_str());
    assert_eq!(sub["callbackReference"], cb);
    let (s, list) = api.call("GET", &uri, Some(&alpha), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscriptions"],
        json!([{"href": href, "subscriptionType": "AppTerminationNotificationSubscription"}])
    );
    let (s, got) = api.call("GET", &href, Some(&me), None).await;
    assert_eq!(s, 200);
    assert_eq!(got, created);
    for t in [&beta, &other] {
        let (s, _) = api.call("GET", &href, Some(t), None).await;
        assert_eq!(s, 404);
        let (s, _) = api.call("DELETE", &href, Some(t), None).await;
        assert_eq!(s, 404);
    }
    // The same id under another instance's path is not found either.
    let id = href.rsplit('/').next().unwrap();
    let (s, _) = api
        .call(
            "GET",
            &format!("{APP}/applications/arena-cork-a-1/subscriptions/{id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // Nor under the other family's resource.
    let (s, _) = api
        .call(
            "GET",
            &format!("{SVC}/applications/{INST}/subscriptions/{id}"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = api.call("DELETE", &href, Some(&me), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("DELETE", &href, Some(&me), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("GET", &href, Some(&me), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn an_instance_reported_terminating_notifies_its_subscribers_once() {
    let (api, _alpha, _beta, me) = world().await;
    let uri = format!("{APP}/applications/{INST}/subscriptions");
    let (s, v) = api
        .call(
            "POST",
            &uri,
            Some(&me),
            Some(termination_sub("http://127.0.0.1:9/cb", INST)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The site's agent joins and reports the instance stopping, twice.
    let token = api.token().await;
    let site = mecfed_core::Site::new(
        mecfed_core::SiteId::new("cork-a").unwrap(),
        mecfed_core::OperatorId::new("op-a").unwrap(),
        "cork",
        mecfed_core::ZoneId::new("cork-z1").unwrap(),
        mecfed_core::GeoPoint::new(51.9, -8.47).unwrap(),
        mecfed_core::Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
    )
    .unwrap();
    let (s, join) = api
        .call(
            "POST",
            "/mecfed/v1/sites/cork-a/join",
            Some(&token),
            Some(serde_json::to_value(site).unwrap()),
        )
        .await;
    assert_eq!(s, 200, "{join}");
    let cred = join["siteCredential"].as_str().unwrap().to_string();
    let report = json!({"app": "arena", "state": "Terminating", "pid": 42});
    for _ in 0..2 {
        let (s, v) = api
            .call(
                "PUT",
                &format!("/mecfed/v1/sites/cork-a/instances/{INST}"),
                Some(&cred),
                Some(report.clone()),
            )
            .await;
        assert_eq!(s, 204, "{v}");
        // Told once, however often the report repeats.
        api.settle().await;
    }
    let queued = outbox(&api.store).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let n = &queued[0].body["subscriptionNotification"];
    assert_eq!(n["notificationType"], "AppTerminationNotification");
    assert_eq!(n["operationAction"], "TERMINATING");
    assert_eq!(n["maxGracefulTimeout"], 10);
    assert_eq!(
        n["_links"]["confirmTermination"]["href"],
        format!("{APP}/applications/{INST}/confirm_termination")
    );
    assert_eq!(
        n["_links"]["subscription"]["href"],
        v["AppTerminationNotificationSubscription"]["_links"]["self"]["href"]
    );
}

fn service(name: &str) -> Value {
    json!({"ServiceInfo": {
        "serName": name, "version": "1", "state": "ACTIVE",
        "transportId": "rest-http", "serializer": "JSON",
    }})
}

#[tokio::test]
async fn service_availability_follows_the_filter_and_the_tenant() {
    let (api, _alpha, beta, me) = world().await;
    let subs = format!("{SVC}/applications/{INST}/subscriptions");
    let body = |filter: Value| {
        json!({"SerAvailabilityNotificationSubscription": {
            "subscriptionType": "SerAvailabilityNotificationSubscription",
            "callbackReference": "http://127.0.0.1:9/cb",
            "filteringCriteria": filter,
        }})
    };
    let (s, e) = api
        .call(
            "POST",
            &subs,
            Some(&me),
            Some(body(json!({"serNames": ["a"], "serInstanceIds": ["b"]}))),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["detail"].as_str().unwrap().contains("filteringCriteria"),
        "{e}"
    );
    let (s, e) = api
        .call(
            "POST",
            &subs,
            Some(&me),
            Some(body(json!({"states": ["GONE"]}))),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["detail"].as_str().unwrap().contains("states[0]"), "{e}");
    let (s, _) = api
        .call(
            "POST",
            &subs,
            Some(&beta),
            Some(body(json!({"serNames": ["game-state"]}))),
        )
        .await;
    assert_eq!(s, 404, "beta does not see alpha's instance");
    let (s, v) = api
        .call(
            "POST",
            &subs,
            Some(&me),
            Some(body(json!({"serNames": ["game-state"]}))),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(outbox(&api.store).await.is_empty());

    let services = format!("{SVC}/applications/{INST}/services");
    let (s, _) = api
        .call("POST", &services, Some(&me), Some(service("metrics")))
        .await;
    assert_eq!(s, 201);
    assert!(outbox(&api.store).await.is_empty(), "filtered out by name");
    let (s, headers, created) = api
        .send(
            "POST",
            &services,
            Some(&me),
            Some(("application/json", service("game-state").to_string())),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["ServiceInfo"]["serInstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let etag = headers["etag"].to_str().unwrap().to_string();
    let mut inactive = service("game-state");
    inactive["ServiceInfo"]["state"] = json!("INACTIVE");
    let (s, _, v) = api
        .call_with(
            "PUT",
            &format!("{services}/{id}"),
            Some(&me),
            &[("if-match", &etag)],
            Some(inactive),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = api
        .call("DELETE", &format!("{services}/{id}"), Some(&me), None)
        .await;
    assert_eq!(s, 204);
    let changes: Vec<(String, String, bool)> = outbox(&api.store)
        .await
        .iter()
        .map(|n| {
            let r = &n.body["subscriptionNotification"]["serviceReferences"][0];
            (
                r["changeType"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
                r.get("link").is_some(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("ADDED".into(), "ACTIVE".into(), true),
            ("STATE_CHANGED".into(), "INACTIVE".into(), true),
            ("REMOVED".into(), "INACTIVE".into(), false),
        ]
    );
}

#[tokio::test]
async fn every_familys_subscriptions_are_listed_for_their_tenant_and_deleted() {
    let (api, alpha, beta, me) = world().await;
    let uri = format!("{APP}/applications/{INST}/subscriptions");
    let (s, v) = api
        .call(
            "POST",
            &uri,
            Some(&me),
            Some(termination_sub("http://127.0.0.1:9/cb", INST)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, list) = api
        .call("GET", "/mecfed/v1/subscriptions", Some(&alpha), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let sub = &list[0];
    assert_eq!(
        sub["subscriptionType"],
        "AppTerminationNotificationSubscription"
    );
    assert_eq!(sub["developer"], "alpha");
    assert_eq!(
        (sub["queued"].as_u64(), sub["pending"].as_u64()),
        (Some(0), Some(0))
    );
    let (_, none) = api
        .call("GET", "/mecfed/v1/subscriptions", Some(&beta), None)
        .await;
    assert_eq!(none, json!([]));
    let (_, all) = api.request("GET", "/mecfed/v1/subscriptions", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let id = sub["id"].as_str().unwrap();
    let one = format!("/mecfed/v1/subscriptions/{id}");
    let (s, _) = api.call("DELETE", &one, Some(&beta), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("DELETE", &one, Some(&alpha), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("DELETE", &one, Some(&alpha), None).await;
    assert_eq!(s, 404);
    let (_, all) = api.request("GET", "/mecfed/v1/subscriptions", None).await;
    assert_eq!(all, json!([]));
}

#[tokio::test]
async fn a_poisoned_subscription_leaves_other_tenants_notifications_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    // A subscription stored before deadlines were range-checked, whose callbacks fail in
    // every way: refused connections, a hanging server, a 500, a host that does not resolve.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_cb = format!("http://{}/cb", hang.local_addr().unwrap());
    let (refusing, _) = callback_server(usize::MAX).await;
    for (i, cb) in [
        "http://127.0.0.1:9/cb".to_string(),
        hang_cb,
        refusing,
        "http://no-such-host.invalid/cb".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bad = subscription(&format!("poison-{i}"), &cb);
        bad.developer = Some(mecfed_core::DeveloperId::new("mallory").unwrap());
        bad.expiry_deadline = Some(u64::MAX);
        notify::create(&typed, bad, Some(json!({"n": "poison"})))
            .await
            .unwrap();
    }
    let (cb, got) = callback_server(0).await;
    let mut good = subscription("good", &cb);
    good.developer = Some(mecfed_core::DeveloperId::new("alice").unwrap());
    notify::create(&typed, good, None).await.unwrap();
    let registry = prometheus::Registry::new();
    let (stop, task) = start_notifier(store.clone(), &registry);
    for i in 0..20 {
        notify::enqueue(&typed, "good", json!({ "n": i }))
            .await
            .unwrap();
    }
    eventually("twenty deliveries to the healthy callback", async || {
        got.bodies.lock().len() == 20
    })
    .await;
    let bodies = got.bodies.lock().clone();
    assert_eq!(
        bodies,
        (0..20).map(|i| json!({ "n": i })).collect::<Vec<_>>()
    );
    assert!(!task.is_finished(), "the notifier died");
    // The poisoned ones are still queued, retried, and counted as failing.
    assert!(metric(&registry, "mecfed_notification_attempts_failed_total") >= 3.0);
    assert_eq!(outbox(&store).await.len(), 4);
    stop.send(()).unwrap();
    task.await.unwrap();
    drop(hang);
}
