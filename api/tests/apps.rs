//! Apps, policies, placements and explanations through the router, errors included.

mod support;

use mecfed_core::{GeoPoint, OperatorId, Resources, Site, SiteId, ZoneId};
use mecfed_scheduler::{Controller, ControllerConfig};
use mecfed_store::{Store, typed::Typed};
use serde_json::{Value, json};
use support::api;

fn arena() -> Value {
    json!({
        "id": "arena", "developer": "studio", "name": "Arena", "version": "1",
        "artefact": {"kind": "process", "command": "arena"},
        "ports": [{"name": "game", "port": 0, "protocol": "UDP"}],
        "resources": {"cpuMillicores": 500, "memoryBytes": 134217728, "sessionSlots": 50},
        "qos": {"latencyBudgetMs": 15, "maxSessionsPerInstance": 50, "demandAreas": [
            {"name": "cork", "center": {"latitude": 51.9, "longitude": -8.47},
             "radiusM": 2000.0, "expectedSessions": 100}
        ]}
    })
}

#[tokio::test]
async fn apps_are_created_replaced_listed_and_deleted() {
    let api = api();
    let (s, v) = api
        .request("PUT", "/mecfed/v1/apps/arena", Some(arena()))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = api
        .request("PUT", "/mecfed/v1/apps/arena", Some(arena()))
        .await;
    assert_eq!(s, 200, "a replacement");
    let (s, v) = api.request("GET", "/mecfed/v1/apps", None).await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    let (s, v) = api.request("GET", "/mecfed/v1/apps/arena", None).await;
    assert_eq!((s, v["qos"]["latencyBudgetMs"].as_u64()), (200, Some(15)));
    let (s, _) = api.request("DELETE", "/mecfed/v1/apps/arena", None).await;
    assert_eq!(s, 204);
    let (s, _) = api.request("DELETE", "/mecfed/v1/apps/arena", None).await;
    assert_eq!(s, 204, "idempotent");
    let (s, v) = api.request("GET", "/mecfed/v1/apps/arena", None).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn bad_apps_and_policies_name_the_field_and_change_nothing() {
    let api = api();
    let mut bad = arena();
    bad["qos"]["latencyBudgetMs"] = json!(0);
    let (s, v) = api.request("PUT", "/mecfed/v1/apps/arena", Some(bad)).await;
    assert_eq!(s, 400);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("qos.latencyBudgetMs"),
        "{v}"
    );
    let (s, v) = api
        .request("PUT", "/mecfed/v1/apps/other", Some(arena()))
        .await;
    assert_eq!(s, 400, "path and body disagree: {v}");
    let (s, _) = api
        .request("PUT", "/mecfed/v1/apps/bad%2Fid", Some(arena()))
        .await;
    assert_eq!(s, 400);
    let (s, _) = api.request("GET", "/mecfed/v1/apps", None).await;
    assert_eq!(s, 200);

    // A policy for an unknown app is 404; for a known one, validated.
    let (s, _) = api
        .request("PUT", "/mecfed/v1/apps/arena/policy", Some(json!({})))
        .await;
    assert_eq!(s, 404);
    api.request("PUT", "/mecfed/v1/apps/arena", Some(arena()))
        .await;
    let good = json!({"affinity": [{"name": "own", "operators": ["op-a"]}], "minReplicas": 2});
    let (s, v) = api
        .request("PUT", "/mecfed/v1/apps/arena/policy", Some(good.clone()))
        .await;
    assert_eq!(s, 200, "{v}");
    for (policy, field) in [
        (json!({"minReplicas": 3, "maxReplicas": 1}), "maxReplicas"),
        (
            json!({"autoscaling": {"targetUtilisationPercent": 0}}),
            "autoscaling.targetUtilisationPercent",
        ),
        (json!({"affinty": []}), "affinty"),
    ] {
        let (s, v) = api
            .request("PUT", "/mecfed/v1/apps/arena/policy", Some(policy))
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(field), "{v}");
    }
    let (s, v) = api
        .request("GET", "/mecfed/v1/apps/arena/policy", None)
        .await;
    assert_eq!(
        (s, &v["minReplicas"]),
        (200, &json!(2)),
        "the good one stays"
    );
    let (s, _) = api
        .request("GET", "/mecfed/v1/placements?app=not%2Fan-id", None)
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .request("GET", "/mecfed/v1/apps/nope/explain", None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .request("GET", "/mecfed/v1/apps/arena/schedule", None)
        .await;
    assert_eq!(s, 404, "not scheduled yet");
}

#[tokio::test]
async fn placements_and_explanations_follow_the_scheduler() {
    let api = api();
    let typed = Typed::new(api.store.clone());
    for (id, lat) in [("near", 51.9), ("far", 40.0)] {
        typed
            .put(
                &Site::new(
                    SiteId::new(id).unwrap(),
                    OperatorId::new("op-a").unwrap(),
                    "eu",
                    ZoneId::new(id).unwrap(),
                    GeoPoint::new(lat, -8.47).unwrap(),
                    Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        api.store
            .put(
                format!("/mecfed/v1/siteleases/{id}").as_bytes(),
                format!(r#"{{"site":"{id}"}}"#).as_bytes(),
                None,
            )
            .await
            .unwrap();
    }
    api.request("PUT", "/mecfed/v1/apps/arena", Some(arena()))
        .await;
    Controller::new(api.store.clone(), ControllerConfig::default())
        .pass(1_000)
        .await
        .unwrap();
    let (s, v) = api
        .request("GET", "/mecfed/v1/placements?app=arena", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([{"app": "arena", "site": "near", "replicas": 2}]));
    let (s, v) = api
        .request("GET", "/mecfed/v1/apps/arena/schedule", None)
        .await;
    assert_eq!((s, &v["wanted"]), (200, &json!(2)));
    let (s, v) = api
        .request("GET", "/mecfed/v1/apps/arena/explain", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["targets"][0]["site"], "near");
    assert_eq!(v["sites"][1]["site"], "far");
    assert_eq!(v["sites"][1]["reasons"], json!(["outOfLatencyBudget"]));
    assert!(
        v["sites"][1]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("nearest demand area \"cork\""),
        "{v}"
    );
}
