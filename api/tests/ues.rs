//! The UE table and the UE-event engine: identities stay unique under racing writers, every
//! change is turned into notifications once, in one write with the engine's view, across a
//! reopening of the store, for changes that touch more subscriptions than one transaction
//! holds, and by the running engine as it follows the store.

mod support;

use std::time::Duration;

use mecfed_api::{engine::ue::UeEvents, notify::Subscription};
use mecfed_core::{AccessKind, GeoPoint, OperatorId, Resources, Site, SiteId, Ue, ZoneId};
use mecfed_store::{EmbeddedStore, typed::Typed};
use serde_json::{Value, json};
use support::{Api, api, outbox};

async fn put_site(api: &Api, id: &str, zone: &str, aps: &[&str]) {
    let mut s = Site::new(
        SiteId::new(id).unwrap(),
        OperatorId::new("op-a").unwrap(),
        "cork",
        ZoneId::new(zone).unwrap(),
        GeoPoint::new(51.9, -8.47).unwrap(),
        Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
    )
    .unwrap();
    s.access_points = aps.iter().map(|a| a.to_string()).collect();
    s.access_kinds = vec![AccessKind::Nr5g];
    Typed::new(api.store.clone()).put(&s).await.unwrap();
}

fn ue(id: &str, phone: &str, ap: &str) -> Value {
    json!({"id": id, "identity": {"phoneNumber": phone}, "sharedWith": ["alpha"],
        "attachment": {"access": "nr5g", "accessPoint": ap, "operator": "op-a",
            "location": {"latitude": 0.0, "longitude": 0.0}}})
}

async fn put_ue(api: &Api, body: Value) -> u16 {
    let id = body["id"].as_str().unwrap().to_string();
    api.request("PUT", &format!("/mecfed/v1/ues/{id}"), Some(body))
        .await
        .0
}

/// `n` zone subscriptions of alpha's on zone `south`, each with its own callback path.
async fn subscribe(api: &Api, n: usize) {
    let alpha = api.developer_token("alpha");
    for i in 0..n {
        let (s, v) = api
            .call(
                "POST",
                "/location/v2/subscriptions/zones",
                Some(&alpha),
                Some(json!({"zoneLocationEventSubscription": {
                    "subscriptionType": "ZoneLocationEventSubscription",
                    "callbackReference": format!("http://127.0.0.1:9/cb/{i}"),
                    "zoneId": "south",
                }})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_never_share_an_identity() {
    let api = std::sync::Arc::new(api());
    put_site(&api, "north-1", "north", &["cell-n"]).await;
    for round in 0..40 {
        let phone = format!("+3538{round:07}");
        // Two new UEs and one existing UE changing its number race for one phone number.
        let (s0, _) = api
            .request(
                "PUT",
                &format!("/mecfed/v1/ues/c-{round}"),
                Some(ue(
                    &format!("c-{round}"),
                    &format!("+3539{round:07}"),
                    "cell-n",
                )),
            )
            .await;
        assert_eq!(s0, 201);
        let racers = ["a", "b", "c"].map(|who| {
            let api = api.clone();
            let body = ue(&format!("{who}-{round}"), &phone, "cell-n");
            tokio::spawn(async move { put_ue(&api, body).await })
        });
        let mut codes = Vec::new();
        for r in racers {
            codes.push(r.await.unwrap());
        }
        let won = codes.iter().filter(|c| **c == 200 || **c == 201).count();
        assert_eq!(won, 1, "round {round}: {codes:?}");
        assert_eq!(codes.iter().filter(|c| **c == 409).count(), 2, "{codes:?}");
        let (_, all) = api.request("GET", "/mecfed/v1/ues", None).await;
        let holders = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["identity"]["phoneNumber"] == phone.as_str())
            .count();
        assert_eq!(holders, 1, "round {round}");
    }
    // A freed identity can be taken: the winner of round 0 gives its number up.
    let (_, all) = api.request("GET", "/mecfed/v1/ues", None).await;
    let winner = all
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["identity"]["phoneNumber"] == "+35380000000")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        put_ue(&api, ue(&winner, "+35387777777", "cell-n")).await,
        200
    );
    assert_eq!(
        put_ue(&api, ue("late", "+35380000000", "cell-n")).await,
        201
    );
    let (s, _) = api.request("DELETE", "/mecfed/v1/ues/late", None).await;
    assert_eq!(s, 204);
    assert_eq!(
        put_ue(&api, ue("later", "+35380000000", "cell-n")).await,
        201
    );
}

#[tokio::test]
async fn each_change_is_told_once_even_across_a_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let api = support::api_on(EmbeddedStore::open_path(&path).unwrap());
        put_site(&api, "north-1", "north", &["cell-n"]).await;
        put_site(&api, "south-1", "south", &["cell-s"]).await;
        assert_eq!(put_ue(&api, ue("u1", "+353800001", "cell-n")).await, 201);
        subscribe(&api, 1).await;
        // Not yet processed: the handler queued nothing itself.
        assert!(outbox(&api.store).await.is_empty());
        assert_eq!(put_ue(&api, ue("u1", "+353800001", "cell-s")).await, 200);
        let engine = UeEvents::new(Typed::new(api.store.clone()));
        assert_eq!(engine.settle().await.unwrap(), 1);
        assert_eq!(engine.settle().await.unwrap(), 0);
        assert_eq!(outbox(&api.store).await.len(), 1);
    }
    // Reopened: the view is durable, so nothing is told again; a new move is.
    let store = EmbeddedStore::open_path(&path).unwrap();
    let api = support::api_on(store.clone());
    let engine = UeEvents::new(Typed::new(store.clone()));
    assert_eq!(engine.settle().await.unwrap(), 0);
    let view = engine.view("u1").await.unwrap().unwrap();
    assert_eq!(view.attachment.unwrap().access_point, "cell-s");
    assert_eq!(put_ue(&api, ue("u1", "+353800001", "cell-n")).await, 200);
    let (s, _) = api.request("DELETE", "/mecfed/v1/ues/u1", None).await;
    assert_eq!(s, 204);
    // The move out and the deletion collapse into one change: out of south once.
    assert_eq!(engine.settle().await.unwrap(), 1);
    let events: Vec<Value> = outbox(&store)
        .await
        .into_iter()
        .map(|n| n.body["zoneLocationEventNotification"]["userLocationEvent"].clone())
        .collect();
    assert_eq!(
        events,
        [json!("ENTERING_AREA_EVENT"), json!("LEAVING_AREA_EVENT")]
    );
    assert!(engine.view("u1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_change_touching_more_subscriptions_than_a_transaction_holds_reaches_all() {
    let api = api();
    put_site(&api, "north-1", "north", &["cell-n"]).await;
    put_site(&api, "south-1", "south", &["cell-s"]).await;
    assert_eq!(put_ue(&api, ue("u1", "+353800001", "cell-n")).await, 201);
    api.settle().await;
    subscribe(&api, 130).await;
    assert_eq!(put_ue(&api, ue("u1", "+353800001", "cell-s")).await, 200);
    api.settle().await;
    let queued = outbox(&api.store).await;
    assert_eq!(queued.len(), 130);
    let subs = Typed::new(api.store.clone())
        .list::<Subscription>()
        .await
        .unwrap()
        .0;
    assert!(subs.iter().all(|s| s.value.next_seq == 1));
}

#[tokio::test]
async fn the_running_engine_follows_the_store() {
    let api = api();
    put_site(&api, "north-1", "north", &["cell-n"]).await;
    put_site(&api, "south-1", "south", &["cell-s"]).await;
    subscribe(&api, 2).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = UeEvents::new(Typed::new(api.store.clone()));
    let task = tokio::spawn(engine.run(async {
        let _ = stop_rx.await;
    }));
    for i in 0..10 {
        let ap = if i % 2 == 0 { "cell-s" } else { "cell-n" };
        assert!(matches!(
            put_ue(&api, ue("u1", "+353800001", ap)).await,
            200 | 201
        ));
        // Each move is seen before the next, so none collapses into another.
        let want = i + 1;
        let mut n = 0;
        for _ in 0..500 {
            n = outbox(&api.store).await.len();
            if n == 2 * want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n, 2 * want, "move {i}");
    }
    let mut per_sub: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for n in outbox(&api.store).await {
        per_sub
            .entry(n.subscription.clone())
            .or_default()
            .push(n.body["zoneLocationEventNotification"]["userLocationEvent"].clone());
    }
    assert_eq!(per_sub.len(), 2);
    for events in per_sub.into_values() {
        let want: Vec<Value> = (0..10)
            .map(|i| {
                json!(if i % 2 == 0 {
                    "ENTERING_AREA_EVENT"
                } else {
                    "LEAVING_AREA_EVENT"
                })
            })
            .collect();
        assert_eq!(events, want, "in order, per subscription");
    }
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    let ue: Ue = serde_json::from_value(ue("u1", "+353800001", "cell-n")).unwrap();
    let view = UeEvents::new(Typed::new(api.store.clone()))
        .view("u1")
        .await
        .unwrap();
    assert_eq!(view, Some(ue));
}
