//! ETSI MEC 011 application support through the router: registrations, readiness, traffic
//! and DNS rules with entity tags, timing, and who may reach which instance.

mod support;

use mecfed_core::{Instance, InstanceState};
use mecfed_store::typed::Typed;
use serde_json::{Value, json};
use support::{INST, instance_token, world};

const MEC: &str = "/mec_app_support/v1";
async fn state_of(api: &support::Api, id: &str) -> InstanceState {
    Typed::new(api.store.clone())
        .get::<Instance>(id)
        .await
        .unwrap()
        .unwrap()
        .value
        .state
}

#[tokio::test]
async fn confirm_ready_marks_the_instance_ready_for_its_own_caller_only() {
    let (api, _alpha, beta, me) = world().await;
    let uri = format!("{MEC}/applications/{INST}/confirm_ready");
    let ready = json!({"AppReadyConfirmation": {"indication": "READY"}});
    // Another tenant, and the app's other instance, do not see it.
    let other = instance_token(&api, "arena-cork-a-1");
    for token in [&beta, &other] {
        let (s, _) = api
            .call("POST", &uri, Some(token), Some(ready.clone()))
            .await;
        assert_eq!(s, 404);
    }
    let (s, e) = api
        .call(
            "POST",
            &uri,
            Some(&me),
            Some(json!({"indication": "MAYBE"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["detail"].as_str().unwrap().contains("indication"), "{e}");
    let (s, e) = api
        .call("POST", &uri, Some(&me), Some(json!({"indication": 7})))
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(state_of(&api, INST).await, InstanceState::Starting);

    // The unwrapped form is taken as well as the wrapped one.
    let (s, v) = api.call("POST", &uri, Some(&me), Some(ready)).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(state_of(&api, INST).await, InstanceState::Ready);
    assert_eq!(
        state_of(&api, "arena-cork-a-1").await,
        InstanceState::Starting
    );
    let (s, _) = api
        .call(
            "POST",
            &format!("{MEC}/applications/nobody-0/confirm_ready"),
            Some(&me),
            Some(json!({"indication": "READY"})),
        )
        .await;
    assert_eq!(s, 404);
    // Termination is confirmed only while terminating.
    let (s, _) = api
        .call(
            "POST",
            &format!("{MEC}/applications/{INST}/confirm_termination"),
            Some(&me),
            Some(json!({"operationAction": "TERMINATING"})),
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn registrations_are_created_read_updated_and_deleted() {
    let (api, alpha, beta, me) = world().await;
    let (s, headers, v) = api
        .send(
            "POST",
            &format!("{MEC}/registrations"),
            Some(&me),
            Some((
                "application/json",
                json!({"AppInfo": {"appName": "arena", "appProvider": "AlphaGames"}}).to_string(),
            )),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("{MEC}/registrations/{INST}")
    );
    assert_eq!(v["AppInfo"]["appInstanceId"], INST);
    assert_eq!(v["AppInfo"]["isInsByMec"], true);
    let uri = format!("{MEC}/registrations/{INST}");
    // Its developer reads it; another tenant does not find it.
    let (s, v) = api.call("GET", &uri, Some(&alpha), None).await;
    assert_eq!((s, v["AppInfo"]["appName"].as_str()), (200, Some("arena")));
    let (s, _) = api.call("GET", &uri, Some(&beta), None).await;
    assert_eq!(s, 404);
    // An instance registers only itself; a developer must name the instance.
    let (s, _) = api
        .call(
            "POST",
            &format!("{MEC}/registrations"),
            Some(&me),
            Some(json!({"appName": "arena", "appInstanceId": "arena-cork-a-1"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .call(
            "POST",
            &format!("{MEC}/registrations"),
            Some(&alpha),
            Some(json!({"appName": "arena"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, e) = api
        .call(
            "PUT",
            &uri,
            Some(&me),
            Some(json!({"appName": "arena", "bogus": 1})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["detail"].as_str().unwrap().contains("bogus"), "{e}");
    let (s, _) = api
        .call(
            "PUT",
            &uri,
            Some(&me),
            Some(json!({"AppInfo": {"appName": "arena2"}})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, v) = api.call("GET", &uri, Some(&me), None).await;
    assert_eq!(v["AppInfo"]["appName"], "arena2");
    let (s, _) = api.call("DELETE", &uri, Some(&me), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("GET", &uri, Some(&me), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("DELETE", &uri, Some(&me), None).await;
    assert_eq!(s, 404);
}

fn rules() -> Value {
    json!({
        "trafficRules": [{
            "trafficRuleId": "game", "filterType": "FLOW", "priority": 5,
            "trafficFilter": [{"dstPort": ["7777"], "protocol": ["UDP"]}],
            "action": "FORWARD_DECAPSULATED",
            "dstInterface": {"interfaceType": "IP", "dstIpAddress": "10.0.0.1"},
            "state": "ACTIVE"
        }],
        "dnsRules": [{
            "dnsRuleId": "arena", "domainName": "arena.edge.example",
            "ipAddressType": "IP_V4", "ipAddress": "10.0.0.1", "ttl": 30, "state": "ACTIVE"
        }]
    })
}

#[tokio::test]
async fn rules_come_from_the_app_and_instances_switch_their_own_under_if_match() {
    let (api, alpha, beta, me) = world().await;
    let mut bad = rules();
    bad["trafficRules"][0]["action"] = json!("SEE_DESCRIPTION");
    let (s, e) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena/mec-rules",
            Some(&alpha),
            Some(bad),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("trafficRules[0].action"),
        "{e}"
    );
    let (s, _) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena/mec-rules",
            Some(&beta),
            Some(rules()),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .call(
            "PUT",
            "/mecfed/v1/apps/arena/mec-rules",
            Some(&alpha),
            Some(rules()),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let list = format!("{MEC}/applications/{INST}/traffic_rules");
    let (s, v) = api.call("GET", &list, Some(&me), None).await;
    assert_eq!((s, v[0]["trafficRuleId"].as_str()), (200, Some("game")));
    let one = format!("{list}/game");
    let (s, headers, v) = api.send("GET", &one, Some(&me), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["TrafficRule"]["state"], "ACTIVE");
    let tag = headers["etag"].to_str().unwrap().to_string();

    let mut off = v["TrafficRule"].clone();
    off["state"] = json!("INACTIVE");
    let put = |if_match: &str| {
        let body = json!({"TrafficRule": off.clone()}).to_string();
        let if_match = if_match.to_string();
        let api = &api;
        let me = me.clone();
        let one = one.clone();
        async move {
            let req = axum::http::Request::builder()
                .method("PUT")
                .uri(&one)
                .header("authorization", format!("Bearer {me}"))
                .header("content-type", "application/json")
                .header("if-match", if_match)
                .body(axum::body::Body::from(body))
                .unwrap();
            use tower::ServiceExt;
            api.app.clone().oneshot(req).await.unwrap()
        }
    };
    let resp = put("\"stale\"").await;
    assert_eq!(resp.status(), 412);
    let (_, v) = api.call("GET", &list, Some(&me), None).await;
    assert_eq!(v[0]["state"], "ACTIVE", "a refused PUT changes nothing");
    let resp = put(&tag).await;
    assert_eq!(resp.status(), 200);
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), tag);
    let (_, v) = api.call("GET", &list, Some(&me), None).await;
    assert_eq!(v[0]["state"], "INACTIVE");
    // The tag is stale now; the app's other instance keeps the app's rule.
    assert_eq!(put(&tag).await.status(), 412);
    let other = instance_token(&api, "arena-cork-a-1");
    let (_, v) = api
        .call(
            "GET",
            &format!("{MEC}/applications/arena-cork-a-1/traffic_rules"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(v[0]["state"], "ACTIVE");
    // Unknown rules and mismatched ids.
    let (s, _) = api
        .call("GET", &format!("{list}/nope"), Some(&me), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "PUT",
            &format!("{list}/other"),
            Some(&me),
            Some(json!({"TrafficRule": off})),
        )
        .await;
    assert_eq!(s, 400);

    let dns = format!("{MEC}/applications/{INST}/dns_rules");
    let (s, v) = api.call("GET", &dns, Some(&me), None).await;
    assert_eq!(
        (s, v[0]["domainName"].as_str()),
        (200, Some("arena.edge.example"))
    );
    let mut rule = v[0].clone();
    rule["ipAddress"] = json!("not-an-ip");
    let (s, e) = api
        .call(
            "PUT",
            &format!("{dns}/arena"),
            Some(&me),
            Some(rule.clone()),
        )
        .await;
    assert_eq!(s, 400);
    assert!(e["detail"].as_str().unwrap().contains("ipAddress"), "{e}");
    rule["ipAddress"] = json!("10.0.0.9");
    let (s, v) = api
        .call("PUT", &format!("{dns}/arena"), Some(&me), Some(rule))
        .await;
    assert_eq!(
        (s, v["DnsRule"]["ipAddress"].as_str()),
        (200, Some("10.0.0.9"))
    );
    let (s, _) = api.call("GET", &dns, Some(&beta), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn timing_answers_the_platform_clock() {
    let (api, _, _, me) = world().await;
    let (s, v) = api
        .call(
            "GET",
            &format!("{MEC}/timing/current_time"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secs = v["CurrentTime"]["seconds"].as_u64().unwrap();
    assert!(secs.abs_diff(now) < 60, "{v}");
    assert!(v["CurrentTime"]["nanoSeconds"].as_u64().unwrap() < 1_000_000_000);
    let (s, v) = api
        .call("GET", &format!("{MEC}/timing/timing_caps"), Some(&me), None)
        .await;
    assert_eq!(s, 200);
    assert!(v["TimingCaps"]["ntpServers"].is_array(), "{v}");
    let (s, _) = api
        .call("GET", &format!("{MEC}/timing/current_time"), None, None)
        .await;
    assert_eq!(s, 401);
}

const SVC: &str = "/mec_service_mgmt/v1";

fn service(name: &str) -> Value {
    json!({"ServiceInfo": {
        "serName": name, "version": "1.0", "state": "ACTIVE", "serializer": "JSON",
        "transportId": "rest-http", "scopeOfLocality": "MEC_HOST", "livenessInterval": 5,
        "serCategory": {"href": "https://catalogue.example/game", "id": "game",
                        "name": "Game", "version": "1"}
    }})
}

#[tokio::test]
async fn services_register_are_discovered_per_tenant_and_replaced_under_if_match() {
    let (api, alpha, beta, me) = world().await;
    let mine = format!("{SVC}/applications/{INST}/services");
    let (s, headers, v) = api
        .send(
            "POST",
            &mine,
            Some(&me),
            Some(("application/json", service("lobby").to_string())),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["ServiceInfo"]["serInstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("{mine}/{id}")
    );
    assert_eq!(
        v["ServiceInfo"]["_links"]["liveness"]["href"],
        format!("{SVC}/liveness/{id}")
    );
    let (s, _) = api
        .call("POST", &mine, Some(&me), Some(service("matchmaker")))
        .await;
    assert_eq!(s, 201);

    // Bad registrations name the field.
    for (field, value) in [
        ("transportId", json!("carrier-pigeon")),
        ("state", json!("SEE_DESCRIPTION")),
        ("serInstanceId", json!("mine")),
    ] {
        let mut b = service("x");
        b["ServiceInfo"][field] = value;
        let (s, e) = api.call("POST", &mine, Some(&me), Some(b)).await;
        assert_eq!(s, 400, "{field}");
        assert!(e["detail"].as_str().unwrap().contains(field), "{e}");
    }

    // Discovery with filters; another tenant sees none of it.
    let (s, all) = api
        .call("GET", &format!("{SVC}/services"), Some(&alpha), None)
        .await;
    assert_eq!((s, all.as_array().unwrap().len()), (200, 2));
    let (_, one) = api
        .call(
            "GET",
            &format!("{SVC}/services?ser_name=lobby"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["isLocal"], true);
    let (_, cat) = api
        .call(
            "GET",
            &format!("{SVC}/services?ser_category_id=game&is_local=true"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(cat.as_array().unwrap().len(), 2);
    let (s, _) = api
        .call(
            "GET",
            &format!("{SVC}/services?ser_name=a&ser_category_id=b"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (_, none) = api
        .call("GET", &format!("{SVC}/services"), Some(&beta), None)
        .await;
    assert_eq!(none, json!([]));
    let (s, _) = api
        .call("GET", &format!("{SVC}/services/{id}"), Some(&beta), None)
        .await;
    assert_eq!(s, 404);

    // Replace under If-Match.
    let one_uri = format!("{mine}/{id}");
    let (s, headers, v) = api.send("GET", &one_uri, Some(&me), None).await;
    assert_eq!(s, 200);
    let tag = headers["etag"].to_str().unwrap().to_string();
    let mut next = v["ServiceInfo"].clone();
    next["state"] = json!("INACTIVE");
    let put = |tag: String, body: Value| {
        let req = axum::http::Request::builder()
            .method("PUT")
            .uri(one_uri.clone())
            .header("authorization", format!("Bearer {me}"))
            .header("content-type", "application/json")
            .header("if-match", tag)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        use tower::ServiceExt;
        api.app.clone().oneshot(req)
    };
    assert_eq!(
        put("\"old\"".into(), next.clone()).await.unwrap().status(),
        412
    );
    assert_eq!(put(tag.clone(), next.clone()).await.unwrap().status(), 200);
    assert_eq!(put(tag, next).await.unwrap().status(), 412);
    let (_, v) = api.call("GET", &one_uri, Some(&alpha), None).await;
    assert_eq!(v["ServiceInfo"]["state"], "INACTIVE");

    // Liveness: the provider's heartbeat; others do not find it.
    let live = format!("{SVC}/liveness/{id}");
    let (s, v) = api.call("GET", &live, Some(&me), None).await;
    assert_eq!(
        (s, v["ServiceLivenessInfo"]["interval"].as_u64()),
        (200, Some(5))
    );
    let (s, _) = api
        .call("PATCH", &live, Some(&me), Some(json!({"state": "ACTIVE"})))
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call(
            "PATCH",
            &live,
            Some(&me),
            Some(json!({"state": "SUSPENDED"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .call(
            "PATCH",
            &live,
            Some(&beta),
            Some(json!({"state": "ACTIVE"})),
        )
        .await;
    assert_eq!(s, 404);

    let (s, v) = api
        .call("GET", &format!("{SVC}/transports"), Some(&me), None)
        .await;
    assert_eq!((s, v[0]["type"].as_str()), (200, Some("REST_HTTP")));

    // Deregistered; then gone.
    let (s, _) = api.call("DELETE", &one_uri, Some(&me), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("DELETE", &one_uri, Some(&me), None).await;
    assert_eq!(s, 404);
    let (_, left) = api.call("GET", &mine, Some(&me), None).await;
    assert_eq!(left.as_array().unwrap().len(), 1);
}
