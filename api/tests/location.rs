//! ETSI MEC 013 location through the router: queries answer only the UEs that consented to
//! the caller's tenant, subscriptions are their tenant's, and UE moves written to the UE
//! table queue the notifications the subscriptions ask for.

mod support;

use mecfed_api::{
    mec::location::Reporter,
    notify::{Notification, Subscription},
};
use mecfed_core::{AccessKind, GeoPoint, OperatorId, Resources, Site, SiteId, ZoneId};
use mecfed_store::typed::Typed;
use serde_json::{Value, json};
use support::{Api, api};

const LOC: &str = "/location/v2";

async fn put_site(api: &Api, id: &str, zone: &str, lat: f64, aps: &[&str]) {
    let mut s = Site::new(
        SiteId::new(id).unwrap(),
        OperatorId::new("op-a").unwrap(),
        "cork",
        ZoneId::new(zone).unwrap(),
        GeoPoint::new(lat, -8.47).unwrap(),
        Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
    )
    .unwrap();
    s.access_points = aps.iter().map(|a| a.to_string()).collect();
    s.access_kinds = vec![AccessKind::Nr5g];
    Typed::new(api.store.clone()).put(&s).await.unwrap();
}

/// Moves UE `id` (IPv4 `ip`, sharing with `shared`) to access point `ap`.
async fn put_ue(api: &Api, id: &str, ip: &str, ap: Option<&str>, shared: &[&str]) {
    let mut ue = json!({"id": id, "identity": {"ipv4Address": ip}, "sharedWith": shared});
    if let Some(ap) = ap {
        ue["attachment"] = json!({"access": "nr5g", "accessPoint": ap, "operator": "op-a",
            "location": {"latitude": 0.0, "longitude": 0.0}});
    }
    let (s, v) = api
        .request("PUT", &format!("/mecfed/v1/ues/{id}"), Some(ue))
        .await;
    assert!(s == 200 || s == 201, "{v}");
    api.settle().await;
}

/// Two zones (north with cell-n, south with cell-s); u1 shares with alpha, u2 with nobody.
async fn world() -> (Api, String, String) {
    let api = api();
    put_site(&api, "north-1", "north", 52.0, &["cell-n"]).await;
    put_site(&api, "south-1", "south", 51.9, &["cell-s"]).await;
    put_ue(&api, "u1", "10.0.0.1", Some("cell-n"), &["alpha"]).await;
    put_ue(&api, "u2", "10.0.0.2", Some("cell-n"), &[]).await;
    let alpha = api.developer_token("alpha");
    let beta = api.developer_token("beta");
    (api, alpha, beta)
}

async fn outbox(api: &Api) -> Vec<Value> {
    Typed::new(api.store.clone())
        .list::<Notification>()
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|v| v.value.body)
        .collect()
}

#[tokio::test]
async fn queries_answer_consented_users_and_aggregate_counts() {
    let (api, alpha, beta) = world().await;
    let addresses = |v: &Value| -> Vec<String> {
        v["userList"]["user"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["address"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = api
        .call("GET", &format!("{LOC}/queries/users"), Some(&alpha), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(addresses(&v), ["acr:10.0.0.1"]);
    let u = &v["userList"]["user"][0];
    assert_eq!(
        (u["zoneId"].as_str(), u["accessPointId"].as_str()),
        (Some("north"), Some("cell-n"))
    );
    assert_eq!(u["locationInfo"]["latitude"], json!([52.0]));
    let (_, v) = api
        .call("GET", &format!("{LOC}/queries/users"), Some(&beta), None)
        .await;
    assert_eq!(addresses(&v), Vec::<String>::new());
    let (_, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/users?zoneId=north"),
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(addresses(&v), ["acr:10.0.0.1", "acr:10.0.0.2"]);
    let (_, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/users?zoneId=south"),
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(addresses(&v), Vec::<String>::new());
    // A user another tenant's consent does not cover is as unknown as one that does not exist.
    for addr in ["acr:10.0.0.2", "acr:10.9.9.9"] {
        let (s, e) = api
            .call(
                "GET",
                &format!("{LOC}/queries/users?address={addr}"),
                Some(&alpha),
                None,
            )
            .await;
        assert_eq!(s, 404, "{e}");
    }
    let (s, e) = api
        .call(
            "GET",
            &format!("{LOC}/queries/users?address=10.0.0.1"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["detail"].as_str().unwrap().contains("address"), "{e}");
    let (s, _) = api
        .call(
            "GET",
            &format!("{LOC}/queries/users?colour=red"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);

    // Zones and access points count every user.
    let (s, v) = api
        .call("GET", &format!("{LOC}/queries/zones"), Some(&beta), None)
        .await;
    assert_eq!(s, 200);
    let zones = v["zoneList"]["zone"].as_array().unwrap();
    assert_eq!(zones.len(), 2);
    assert_eq!(zones[0]["zoneId"], "north");
    assert_eq!(zones[0]["numberOfUsers"], 2);
    assert_eq!(
        zones[0]["numberOfUnserviceableAccessPoints"], 1,
        "its site is not Ready"
    );
    let (s, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/zones/south"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["zoneInfo"]["numberOfUsers"], 0);
    let (s, _) = api
        .call(
            "GET",
            &format!("{LOC}/queries/zones/atlantis"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/zones/north/accessPoints"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["accessPointList"]["accessPoint"][0]["connectionType"],
        "5G NR"
    );
    assert_eq!(v["accessPointList"]["accessPoint"][0]["numberOfUsers"], 2);
    let (s, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/zones/north/accessPoints/cell-n"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["accessPointInfo"]["operationStatus"], "Unserviceable");
    let (s, _) = api
        .call(
            "GET",
            &format!("{LOC}/queries/zones/north/accessPoints/cell-s"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Distance: to a location, and between two users the caller may see.
    put_ue(&api, "u3", "10.0.0.3", Some("cell-s"), &["alpha"]).await;
    let (s, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/distance?address=acr:10.0.0.1&address=acr:10.0.0.3"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = v["terminalDistance"]["distance"].as_u64().unwrap();
    assert!((11_000..11_300).contains(&d), "{d}");
    let (s, v) = api
        .call(
            "GET",
            &format!("{LOC}/queries/distance?address=acr:10.0.0.1&latitude=52.0&longitude=-8.47"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["terminalDistance"]["distance"], 0);
    let (s, _) = api
        .call(
            "GET",
            &format!("{LOC}/queries/distance?address=acr:10.0.0.1&address=acr:10.0.0.2"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 404, "u2 did not consent to alpha");
    for bad in [
        "address=acr:10.0.0.1",
        "address=acr:10.0.0.1&latitude=52",
        "address=acr:10.0.0.1&latitude=200&longitude=0",
        "latitude=52&longitude=0",
    ] {
        let (s, e) = api
            .call(
                "GET",
                &format!("{LOC}/queries/distance?{bad}"),
                Some(&alpha),
                None,
            )
            .await;
        assert_eq!(s, 400, "{bad}: {e}");
    }
    // Without the scope, nothing.
    let mut narrow =
        mecfed_api::Principal::developer(mecfed_core::DeveloperId::new("alpha").unwrap());
    narrow.scopes = vec![mecfed_api::auth::scopes::APPS.into()];
    let narrow = api.auth.issue(&narrow).0;
    let (s, _) = api
        .call("GET", &format!("{LOC}/queries/zones"), Some(&narrow), None)
        .await;
    assert_eq!(s, 403);
}

fn zone_sub(cb: &str) -> Value {
    json!({"zoneLocationEventSubscription": {
        "subscriptionType": "ZoneLocationEventSubscription",
        "callbackReference": cb,
        "zoneId": "south",
        "requestTestNotification": true,
    }})
}

#[tokio::test]
async fn subscriptions_are_their_tenants_and_moves_notify_them() {
    let (api, alpha, beta) = world().await;
    let cb = "http://127.0.0.1:9/cb";
    let coll = format!("{LOC}/subscriptions/zones");
    // Refused requests store nothing.
    for (body, field) in [
        (
            json!({"zoneLocationEventSubscription": {"subscriptionType": "ZoneLocationEventSubscription", "callbackReference": cb}}),
            "zoneId",
        ),
        (
            json!({"zoneLocationEventSubscription": {"subscriptionType": "ZoneLocationEventSubscription", "callbackReference": cb, "zoneId": "south", "colour": 1}}),
            "colour",
        ),
        (
            json!({"userAreaSubscription": {"subscriptionType": "UserAreaSubscription", "callbackReference": cb}}),
            "subscriptionType",
        ),
    ] {
        let (s, e) = api.call("POST", &coll, Some(&alpha), Some(body)).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["detail"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    let (s, _) = api
        .call(
            "POST",
            &format!("{LOC}/subscriptions/elsewhere"),
            Some(&alpha),
            Some(zone_sub(cb)),
        )
        .await;
    assert_eq!(s, 404);
    assert!(
        Typed::new(api.store.clone())
            .list::<Subscription>()
            .await
            .unwrap()
            .0
            .is_empty()
    );

    let (s, headers, created) = api
        .send(
            "POST",
            &coll,
            Some(&alpha),
            Some(("application/json", zone_sub(cb).to_string())),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let href = created["zoneLocationEventSubscription"]["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(headers["location"], href.as_str());
    // The test notification is queued first.
    let queued = outbox(&api).await;
    assert_eq!(
        queued[0]["testNotification"]["notificationType"],
        "TestNotification"
    );

    // Beta neither lists, reads, replaces nor deletes it.
    let (_, list) = api.call("GET", &coll, Some(&beta), None).await;
    assert_eq!(
        list["notificationSubscriptionList"]["subscription"],
        json!([])
    );
    let (_, list) = api
        .call(
            "GET",
            &format!("{coll}?subscription_type=event"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(
        list["notificationSubscriptionList"]["subscription"],
        json!([{"href": href, "subscriptionType": "ZoneLocationEventSubscription"}])
    );
    let (_, list) = api
        .call(
            "GET",
            &format!("{coll}?subscription_type=status"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(
        list["notificationSubscriptionList"]["subscription"],
        json!([])
    );
    let (s, _) = api
        .call(
            "GET",
            &format!("{coll}?subscription_type=periodic"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    for m in ["GET", "DELETE"] {
        let (s, _) = api.call(m, &href, Some(&beta), None).await;
        assert_eq!(s, 404);
    }
    let (s, _) = api
        .call("PUT", &href, Some(&beta), Some(zone_sub(cb)))
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "GET",
            &href.replace("/zones/", "/users/"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 404, "not under another collection");

    // u1 (consented) and u2 (not) move into the south zone: alpha hears of u1 only.
    put_ue(&api, "u1", "10.0.0.1", Some("cell-s"), &["alpha"]).await;
    put_ue(&api, "u2", "10.0.0.2", Some("cell-s"), &[]).await;
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    let n = &queued[1]["zoneLocationEventNotification"];
    assert_eq!(n["address"], "acr:10.0.0.1");
    assert_eq!(n["userLocationEvent"], "ENTERING_AREA_EVENT");
    assert_eq!(n["_links"]["subscription"]["href"], href.as_str());
    assert!(n["timeStamp"]["seconds"].as_u64().unwrap() > 0);

    // Replaced to report leaving only; the UE leaving by being forgotten counts.
    let mut replaced = zone_sub(cb);
    replaced["zoneLocationEventSubscription"]["locationEventCriteria"] =
        json!(["LEAVING_AREA_EVENT"]);
    let (s, v) = api.call("PUT", &href, Some(&alpha), Some(replaced)).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = api.request("DELETE", "/mecfed/v1/ues/u1", None).await;
    assert_eq!(s, 204);
    api.settle().await;
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 3);
    assert_eq!(
        queued[2]["zoneLocationEventNotification"]["userLocationEvent"],
        "LEAVING_AREA_EVENT"
    );
    let (s, _) = api.call("DELETE", &href, Some(&alpha), None).await;
    assert_eq!(s, 204);
    assert!(
        outbox(&api).await.is_empty(),
        "a deleted subscription's queue goes with it"
    );
    let (s, _) = api.call("DELETE", &href, Some(&alpha), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn one_time_and_periodic_user_subscriptions_end_by_themselves() {
    let (api, alpha, _) = world().await;
    let cb = "http://127.0.0.1:9/cb";
    let users = format!("{LOC}/subscriptions/users");
    let (s, v) = api
        .call(
            "POST",
            &users,
            Some(&alpha),
            Some(json!({"userLocationEventSubscription": {
                "subscriptionType": "UserLocationEventSubscription",
                "callbackReference": cb, "address": "acr:10.0.0.1",
                "userEventPara": {"occurrenceInfo": "ONE_TIME_EVENT"}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let one_time = v["userLocationEventSubscription"]["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = api
        .call(
            "POST",
            &users,
            Some(&alpha),
            Some(json!({"userLocationPeriodicSubscription": {
                "subscriptionType": "UserLocationPeriodicSubscription",
                "callbackReference": cb, "address": "acr:10.0.0.1",
                "periodicEventInfo": {"reportingAmount": 2, "reportingInterval": 5}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let periodic = v["userLocationPeriodicSubscription"]["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, list) = api
        .call(
            "GET",
            &format!("{users}?address=acr:10.0.0.1&subscription_type=periodic"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(
        list["notificationSubscriptionList"]["subscription"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Moving north -> south: leaving and entering, then the one-time subscription is over.
    put_ue(&api, "u1", "10.0.0.1", Some("cell-s"), &["alpha"]).await;
    let (s, _) = api.call("GET", &one_time, Some(&alpha), None).await;
    assert_eq!(s, 404, "ended after its first notification");
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        queued[0]["userLocationEventNotification"]["userLocationEvent"],
        "LEAVING_AREA_EVENT"
    );

    // Periodic reports: due 5 s and 10 s after creation; the second is final.
    let reporter = Reporter::new(Typed::new(api.store.clone()));
    let created = Typed::new(api.store.clone())
        .get::<Subscription>(periodic.rsplit('/').next().unwrap())
        .await
        .unwrap()
        .unwrap()
        .value
        .created_at;
    assert_eq!(reporter.report(created + 4).await.unwrap(), 0);
    assert_eq!(reporter.report(created + 5).await.unwrap(), 1);
    assert_eq!(reporter.report(created + 6).await.unwrap(), 0);
    assert_eq!(reporter.report(created + 10).await.unwrap(), 1);
    let (s, _) = api.call("GET", &periodic, Some(&alpha), None).await;
    assert_eq!(s, 404, "ended with its final report");
    let all = outbox(&api).await;
    let reports: Vec<&Value> = all
        .iter()
        .filter_map(|n| n.get("userLocationPeriodicNotification"))
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["zoneId"], "south");
    assert_eq!(reports[0]["isFinalNotification"], false);
    assert_eq!(reports[1]["isFinalNotification"], true);
}

#[tokio::test]
async fn deadlines_beyond_the_clock_are_refused_and_store_nothing() {
    let (api, alpha, _) = world().await;
    let coll = format!("{LOC}/subscriptions/zones");
    for (deadline, field) in [
        (
            json!({"seconds": u64::MAX, "nanoSeconds": 0}),
            "expiryDeadline.seconds",
        ),
        (
            json!({"seconds": 253_402_300_800u64, "nanoSeconds": 0}),
            "expiryDeadline.seconds",
        ),
        (
            json!({"seconds": 4_000_000_000u64, "nanoSeconds": 1_000_000_000u32}),
            "expiryDeadline.nanoSeconds",
        ),
        (json!({"seconds": 1, "nanoSeconds": 0}), "expiryDeadline"),
    ] {
        let mut body = zone_sub("http://127.0.0.1:9/cb");
        body["zoneLocationEventSubscription"]["expiryDeadline"] = deadline;
        let (s, e) = api.call("POST", &coll, Some(&alpha), Some(body)).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["detail"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    let mut body = zone_sub("http://127.0.0.1:9/cb");
    body["zoneLocationEventSubscription"]["expiryDeadline"] =
        json!({"seconds": 253_402_300_799u64, "nanoSeconds": 999_999_999u32});
    let (s, e) = api.call("POST", &coll, Some(&alpha), Some(body)).await;
    assert_eq!(s, 201, "{e}");
    let subs = Typed::new(api.store.clone())
        .list::<Subscription>()
        .await
        .unwrap()
        .0;
    assert_eq!(subs.len(), 1);
}
