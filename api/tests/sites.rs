//! The site registry through the router, as a client sees it.

mod support;

use mecfed_api::sites::SiteLease;
use mecfed_core::{GeoPoint, OperatorId, Resources, Site, SiteId, ZoneId};
use mecfed_store::{Store, typed::Typed};
use serde_json::{Value, json};
use support::api;

fn site(id: &str) -> Value {
    serde_json::to_value(
        Site::new(
            SiteId::new(id).unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new("cork-z1").unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
}

const JOIN: &str = "/mecfed/v1/sites/s1/join";
const HEARTBEAT: &str = "/mecfed/v1/sites/s1/heartbeat";

#[tokio::test]
async fn join_heartbeat_and_readiness() {
    let api = api();
    let token = api.token().await;
    let (s, join) = api.call("POST", JOIN, Some(&token), Some(site("s1"))).await;
    assert_eq!(s, 200, "{join}");
    assert_eq!(join["ttlSeconds"], 10);
    assert_eq!(join["heartbeatSeconds"], 3);
    let lease = join["leaseId"].as_i64().unwrap();
    let cred = join["siteCredential"].as_str().unwrap().to_string();

    let (s, list) = api
        .call("GET", "/mecfed/v1/sites", Some(&api.admin), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "Ready");
    assert_eq!(list[0]["capacity"]["sessionSlots"], 500);

    // A heartbeat with usage updates the site.
    let hb = json!({"leaseId": lease, "usage": {"cpuMillicores": 1500, "sessionSlots": 20}});
    let (s, v) = api
        .call("PUT", HEARTBEAT, Some(&cred), Some(hb.clone()))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ttlSeconds"], 10);
    let (_, one) = api
        .call("GET", "/mecfed/v1/sites/s1", Some(&api.admin), None)
        .await;
    assert_eq!(one["usage"]["cpuMillicores"], 1500);
    assert_eq!(one["status"], "Ready");

    // Wrong credential, wrong lease.
    let (s, _) = api.call("PUT", HEARTBEAT, Some("nope"), Some(hb)).await;
    assert_eq!(s, 401);
    let other = json!({"leaseId": lease + 1});
    let (s, _) = api.call("PUT", HEARTBEAT, Some(&cred), Some(other)).await;
    assert_eq!(s, 409);

    // The lease ending (as on expiry) makes the site NotReady; heartbeats say "join again".
    api.store.lease_revoke(lease).await.unwrap();
    let (_, one) = api
        .call("GET", "/mecfed/v1/sites/s1", Some(&api.admin), None)
        .await;
    assert_eq!(one["status"], "NotReady");
    let (s, v) = api
        .call(
            "PUT",
            HEARTBEAT,
            Some(&cred),
            Some(json!({"leaseId": lease})),
        )
        .await;
    assert_eq!(s, 404);
    assert!(v["detail"].as_str().unwrap().contains("join again"));

    // Rejoining brings it back.
    let (s, _) = api.call("POST", JOIN, Some(&token), Some(site("s1"))).await;
    assert_eq!(s, 200);
    let (_, one) = api
        .call("GET", "/mecfed/v1/sites/s1", Some(&api.admin), None)
        .await;
    assert_eq!(one["status"], "Ready");
}

#[tokio::test]
async fn join_refuses_bad_tokens_and_bad_sites_and_stores_nothing() {
    let api = api();
    let token = api.token().await;
    let (s, _) = api.call("POST", JOIN, None, Some(site("s1"))).await;
    assert_eq!(s, 401);
    let (s, _) = api
        .call("POST", JOIN, Some("abc.def"), Some(site("s1")))
        .await;
    assert_eq!(s, 401);
    let forged = format!("{}.{}", token.split_once('.').unwrap().0, "0".repeat(32));
    let (s, _) = api
        .call("POST", JOIN, Some(&forged), Some(site("s1")))
        .await;
    assert_eq!(s, 401);
    let (s, v) = api
        .call(
            "POST",
            "/mecfed/v1/sites/s2/join",
            Some(&token),
            Some(site("s1")),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["detail"].as_str().unwrap().contains("id"), "{v}");
    let mut bad = site("s1");
    bad["location"]["latitude"] = json!(123);
    let (s, v) = api.call("POST", JOIN, Some(&token), Some(bad)).await;
    assert_eq!(s, 400);
    assert!(v["detail"].as_str().unwrap().contains("latitude"), "{v}");
    let mut bad = site("s1");
    bad["region"] = json!("");
    let (s, v) = api.call("POST", JOIN, Some(&token), Some(bad)).await;
    assert_eq!(s, 400);
    assert!(v["detail"].as_str().unwrap().contains("region"), "{v}");
    let (s, _) = api
        .call(
            "POST",
            "/mecfed/v1/sites/bad%20id/join",
            Some(&token),
            Some(site("s1")),
        )
        .await;
    assert_eq!(s, 400);
    let (s, list) = api
        .call("GET", "/mecfed/v1/sites", Some(&api.admin), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list, json!([]), "no refused join stored anything");
    let typed = Typed::new(api.store.clone());
    assert!(typed.list::<SiteLease>().await.unwrap().0.is_empty());
}

#[tokio::test]
async fn join_tokens_and_lookups_validate() {
    let api = api();
    let (s, v) = api
        .call(
            "POST",
            "/mecfed/v1/join-tokens",
            Some(&api.admin),
            Some(json!({"ttlSeconds": 0})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["detail"].as_str().unwrap().contains("ttlSeconds"));
    let (s, _) = api
        .call(
            "POST",
            "/mecfed/v1/join-tokens",
            Some(&api.admin),
            Some(json!({"colour": "red"})),
        )
        .await;
    assert_eq!(s, 400);
    let body = json!({"ttlSeconds": 60, "description": "cork edge"});
    let (s, v) = api
        .call(
            "POST",
            "/mecfed/v1/join-tokens",
            Some(&api.admin),
            Some(body),
        )
        .await;
    assert_eq!(s, 201);
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with(v["id"].as_str().unwrap()));
    let (s, _) = api
        .call("GET", "/mecfed/v1/sites/nowhere", Some(&api.admin), None)
        .await;
    assert_eq!(s, 404);
    let hb = json!({"leaseId": 1});
    let (s, _) = api
        .call(
            "PUT",
            "/mecfed/v1/sites/nowhere/heartbeat",
            Some("x"),
            Some(hb),
        )
        .await;
    assert_eq!(s, 404);
    let bad = json!({"lease": 1});
    let (s, _) = api
        .call(
            "PUT",
            "/mecfed/v1/sites/nowhere/heartbeat",
            Some("x"),
            Some(bad),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn assignments_follow_placements_and_agents_report_instances() {
    use mecfed_core::{App, AppId, AppQos, Artefact, Placement, Port, Protocol};
    let api = api();
    let token = api.token().await;
    let (_, join) = api.call("POST", JOIN, Some(&token), Some(site("s1"))).await;
    let cred = join["siteCredential"].as_str().unwrap().to_string();
    let typed = Typed::new(api.store.clone());
    let app = App {
        id: AppId::new("arena").unwrap(),
        developer: mecfed_core::DeveloperId::new("studio").unwrap(),
        name: "Arena".into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "arena".into(),
            args: vec![],
            env: Default::default(),
        },
        ports: vec![Port {
            name: "game".into(),
            port: 0,
            protocol: Protocol::Udp,
        }],
        resources: Resources::parse("cpu=500m").unwrap(),
        readiness: None,
        qos: AppQos {
            latency_budget_ms: 20,
            five_qi: None,
            max_sessions_per_instance: 50,
            demand_areas: vec![],
        },
        load: None,
        stateful: true,
        zones: None,
        pins: Default::default(),
    };
    typed.put(&app).await.unwrap();
    for (site, replicas) in [("s1", 2), ("s2", 1)] {
        typed
            .put(&Placement {
                app: app.id.clone(),
                site: SiteId::new(site).unwrap(),
                replicas,
                evicting_until: None,
            })
            .await
            .unwrap();
    }
    let url = "/mecfed/v1/sites/s1/assignments";
    let (s, _) = api.call("GET", url, Some("wrong"), None).await;
    assert_eq!(s, 401);
    let (s, v) = api.call("GET", url, Some(&cred), None).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["arena-s1-0", "arena-s1-1"]);
    assert_eq!(v["assignments"][0]["app"]["id"], "arena");

    let report = json!({"app": "arena", "state": "Ready", "endpoint": "127.0.0.1:7000"});
    let inst = "/mecfed/v1/sites/s1/instances/arena-s1-0";
    let (s, _) = api
        .call("PUT", inst, Some(&cred), Some(report.clone()))
        .await;
    assert_eq!(s, 204);
    let (s, _) = api.call("PUT", inst, Some("wrong"), Some(report)).await;
    assert_eq!(s, 401);
    let bad = json!({"app": "arena", "state": "Dancing"});
    let (s, _) = api.call("PUT", inst, Some(&cred), Some(bad)).await;
    assert_eq!(s, 400);
    let (_, list) = api
        .call("GET", "/mecfed/v1/instances", Some(&api.admin), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["site"], "s1");
    assert_eq!(list[0]["state"], "Ready");
    assert_eq!(list[0]["endpoint"], "127.0.0.1:7000");
    let (s, _) = api.call("DELETE", inst, Some(&cred), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("DELETE", inst, Some(&cred), None).await;
    assert_eq!(s, 204, "idempotent");
    let (_, list) = api
        .call("GET", "/mecfed/v1/instances", Some(&api.admin), None)
        .await;
    assert_eq!(list, json!([]));
}
