//! CAMARA Edge Application Management and Simple Edge Discovery through the router: the
//! operations, their CAMARA errors, and tenant isolation.

mod support;

use mecfed_core::{
    AccessKind, App, Attachment, GeoPoint, Instance, InstanceId, InstanceState, OperatorId,
    Resources, Site, SiteId, Ue, UeId, UeIdentity, ZoneId,
};
use mecfed_store::typed::Typed;
use serde_json::{Value, json};
use support::api;

const EAM: &str = "/edge-application-management/v0.1alpha1";
const SED: &str = "/simple-edge-discovery/v2/retrieve-closest-edge-cloud-zone";

fn manifest(name: &str, provider: &str) -> Value {
    json!({
        "name": name,
        "appProvider": provider,
        "version": "1.0.0",
        "packageType": "CONTAINER",
        "appRepo": {"type": "PUBLICREPO", "imagePath": "file:///opt/arena/bin/arena"},
        "requiredResources": {"infraKind": "container", "numCPU": "500m", "memory": 256},
        "componentSpec": [{
            "componentName": "server",
            "networkInterfaces": [
                {"interfaceId": "game", "protocol": "UDP", "port": 7777,
                 "visibilityType": "VISIBILITY_EXTERNAL"},
                {"interfaceId": "control", "protocol": "TCP", "port": 8080,
                 "visibilityType": "VISIBILITY_INTERNAL"}
            ]
        }]
    })
}

async fn developer(api: &support::Api, id: &str, provider: &str) -> String {
    let (s, v) = api
        .request(
            "POST",
            "/mecfed/v1/developers",
            Some(json!({"id": id, "appProvider": provider})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    api.developer_token(id)
}

#[tokio::test]
async fn apps_are_submitted_listed_read_and_deleted_per_tenant() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let beta = developer(&api, "beta", "BetaStudios").await;
    let (s, v) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(&alpha),
            Some(manifest("arena", "AlphaGames")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let app_id = v["appId"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&app_id).unwrap().get_version_num(), 4);

    // The mecfed app behind it: a process with agent-allocated ports, not deployed anywhere.
    let stored: App = serde_json::from_value(
        api.call(
            "GET",
            &format!("/mecfed/v1/apps/{app_id}"),
            Some(&alpha),
            None,
        )
        .await
        .1,
    )
    .unwrap();
    assert!(matches!(
        stored.artefact,
        mecfed_core::Artefact::Process { ref command, .. } if command == "/opt/arena/bin/arena"
    ));
    assert!(stored.ports.iter().all(|p| p.port == 0));
    assert_eq!(stored.zones, Some(vec![]));
    assert_eq!(stored.resources.cpu_millicores, 500);
    assert_eq!(stored.resources.memory_bytes, 256 << 20);

    let (s, list) = api
        .call("GET", &format!("{EAM}/apps"), Some(&alpha), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["appId"], app_id.as_str());
    let (s, one) = api
        .call("GET", &format!("{EAM}/apps/{app_id}"), Some(&alpha), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["appManifest"]["name"], "arena");

    // Beta: nothing to see, nothing to delete, existence not revealed.
    let (_, list) = api
        .call("GET", &format!("{EAM}/apps"), Some(&beta), None)
        .await;
    assert_eq!(list, json!([]));
    for method in ["GET", "DELETE"] {
        let (s, e) = api
            .call(method, &format!("{EAM}/apps/{app_id}"), Some(&beta), None)
            .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{method}"
        );
    }
    // Beta may not submit in alpha's name.
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(&beta),
            Some(manifest("copy", "AlphaGames")),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("INVALID_TOKEN_CONTEXT"))
    );
    // The same name and version twice is a conflict.
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(&alpha),
            Some(manifest("arena", "AlphaGames")),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("ALREADY_EXISTS")));

    // Deleted by its owner, then gone.
    let (s, _) = api
        .call(
            "DELETE",
            &format!("{EAM}/apps/{app_id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call("GET", &format!("{EAM}/apps/{app_id}"), Some(&alpha), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "GET",
            &format!("/mecfed/v1/apps/{app_id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_manifests_are_refused_naming_the_field_and_store_nothing() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "x"}), 400, "missing field"),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["name"] = json!("9lives");
                m
            },
            400,
            "name",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["requiredResources"]["numCPU"] = json!("half");
                m
            },
            400,
            "requiredResources.numCPU",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["componentSpec"][0]["networkInterfaces"][0]["port"] = json!(0);
                m
            },
            400,
            "componentSpec.networkInterfaces.port",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["appId"] = json!(uuid::Uuid::new_v4().to_string());
                m
            },
            400,
            "appId",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["colour"] = json!("red");
                m
            },
            400,
            "colour",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["packageType"] = json!("HELM");
                m
            },
            501,
            "HELM",
        ),
        (
            {
                let mut m = manifest("arena", "AlphaGames");
                m["componentSpec"][0]["networkInterfaces"][0]["protocol"] = json!("ANY");
                m
            },
            501,
            "ANY",
        ),
    ];
    for (body, status, needle) in cases {
        let (s, e) = api
            .call("POST", &format!("{EAM}/apps"), Some(&alpha), Some(body))
            .await;
        assert_eq!(s, status, "{e}");
        assert_eq!(e["status"], status);
        let code = if status == 400 {
            "INVALID_ARGUMENT"
        } else {
            "NOT_IMPLEMENTED"
        };
        assert_eq!(e["code"], code);
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let (_, list) = api
        .call("GET", &format!("{EAM}/apps"), Some(&alpha), None)
        .await;
    assert_eq!(list, json!([]));
    let (_, apps) = api.request("GET", "/mecfed/v1/apps", None).await;
    assert_eq!(apps, json!([]));
    // Malformed ids are 400, not 404.
    let (s, e) = api
        .call("GET", &format!("{EAM}/apps/not-a-uuid"), Some(&alpha), None)
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
}

#[tokio::test]
async fn camara_errors_echo_the_correlator_and_check_scopes() {
    let api = api();
    let (s, e) = api.call("GET", &format!("{EAM}/apps"), None, None).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    // A token without the scope.
    let narrow = api
        .auth
        .issue(&mecfed_api::Principal {
            scopes: vec!["simple-edge-discovery:read".into()],
            ..mecfed_api::Principal::developer(mecfed_core::DeveloperId::new("alpha").unwrap())
        })
        .0;
    let (s, e) = api
        .call("GET", &format!("{EAM}/apps"), Some(&narrow), None)
        .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("PERMISSION_DENIED")));

    use axum::{body::Body, http::Request};
    use tower::ServiceExt;
    let send = |corr: &'static str| {
        let app = api.app.clone();
        let token = narrow.clone();
        async move {
            app.oneshot(
                Request::builder()
                    .uri(format!("{EAM}/edge-cloud-zones"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-correlator", corr)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    let resp = send("b4333c46-49c0-4f62-80d7-f0ef930f1c46").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["x-correlator"],
        "b4333c46-49c0-4f62-80d7-f0ef930f1c46"
    );
    let resp = send("has spaces").await;
    assert_eq!(resp.status(), 400);
}

async fn add_site(api: &support::Api, id: &str, op: &str, zone: &str, at: (f64, f64)) {
    let typed = Typed::new(api.store.clone());
    let site = Site::new(
        SiteId::new(id).unwrap(),
        OperatorId::new(op).unwrap(),
        "ireland",
        ZoneId::new(zone).unwrap(),
        GeoPoint::new(at.0, at.1).unwrap(),
        Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
    )
    .unwrap();
    typed.put(&site).await.unwrap();
    // Ready: the liveness record a heart-beating agent keeps.
    typed
        .put(&mecfed_api::sites::SiteLease {
            site: site.id.clone(),
            lease: 1,
            credential_sha256: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn zones_list_the_federations_sites_by_status_and_region() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    add_site(&api, "cork-a", "op-a", "cork", (51.9, -8.47)).await;
    add_site(&api, "dub-a", "op-b", "dublin", (53.35, -6.26)).await;
    let (s, zones) = api
        .call(
            "GET",
            &format!("{EAM}/edge-cloud-zones"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200, "{zones}");
    let names: Vec<&str> = zones
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["edgeCloudZoneName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cork", "dublin"]);
    assert_eq!(zones[1]["edgeCloudProvider"], "op-b");
    assert_eq!(zones[0]["edgeCloudZoneStatus"], "active");
    let (_, none) = api
        .call(
            "GET",
            &format!("{EAM}/edge-cloud-zones?status=inactive"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(none, json!([]));
    let (s, e) = api
        .call(
            "GET",
            &format!("{EAM}/edge-cloud-zones?status=sleepy"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
    // Edge nodes are not Kubernetes clusters.
    let (s, clusters) = api
        .call("GET", &format!("{EAM}/clusters"), Some(&alpha), None)
        .await;
    assert_eq!((s, clusters), (200, json!([])));
}

#[tokio::test]
async fn discovery_answers_the_zone_nearest_the_ues_cell_hosting_the_callers_app() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let beta = developer(&api, "beta", "BetaStudios").await;
    add_site(&api, "cork-a", "op-a", "cork", (51.9, -8.47)).await;
    add_site(&api, "dub-a", "op-a", "dublin", (53.35, -6.26)).await;
    let typed = Typed::new(api.store.clone());
    // Alpha's app runs in both cities.
    let (_, v) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(&alpha),
            Some(manifest("arena", "AlphaGames")),
        )
        .await;
    let app = mecfed_core::AppId::new(v["appId"].as_str().unwrap()).unwrap();
    for site in ["cork-a", "dub-a"] {
        typed
            .put(&Instance {
                id: InstanceId::new(format!("{app}-{site}-0")).unwrap(),
                app: app.clone(),
                site: SiteId::new(site).unwrap(),
                state: InstanceState::Ready,
                endpoint: Some("127.0.0.1:7777".into()),
                pid: None,
                sessions: None,
            })
            .await
            .unwrap();
    }
    // A phone on a Dublin cell (its GPS does not matter: the cell does).
    let mut ue = Ue::new(
        UeId::new("ue-1").unwrap(),
        UeIdentity {
            phone_number: Some("+353871234567".into()),
            ipv4_address: Some("10.1.2.3".parse().unwrap()),
            network_access_identifier: None,
        },
    )
    .unwrap();
    ue.attachment = Some(Attachment {
        access: AccessKind::Nr5g,
        access_point: "nr-cell-dub-17".into(),
        operator: OperatorId::new("op-a").unwrap(),
        location: GeoPoint::new(53.34, -6.25).unwrap(),
    });
    let (s, v) = api
        .request(
            "PUT",
            "/mecfed/v1/ues/ue-1",
            Some(serde_json::to_value(&ue).unwrap()),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    let body = json!({"device": {"phoneNumber": "+353871234567"}});
    let (s, v) = api.call("POST", SED, Some(&alpha), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["edgeCloudZoneName"], "dublin");
    assert_eq!(v["edgeCloudProvider"], "op-a");
    assert!(
        v.get("device").is_none(),
        "one identifier given: not echoed"
    );

    // Several identifiers: the one used comes back.
    let body = json!({"device": {
        "phoneNumber": "+353870000000",
        "ipv4Address": {"publicAddress": "84.125.93.10", "privateAddress": "10.1.2.3"}
    }});
    let (s, v) = api.call("POST", SED, Some(&alpha), Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["device"]["ipv4Address"]["privateAddress"], "10.1.2.3");

    // The UE moves to a Cork cell: the answer follows.
    ue.attachment.as_mut().unwrap().location = GeoPoint::new(51.89, -8.48).unwrap();
    api.request(
        "PUT",
        "/mecfed/v1/ues/ue-1",
        Some(serde_json::to_value(&ue).unwrap()),
    )
    .await;
    let body = json!({"device": {"phoneNumber": "+353871234567"}});
    let (_, v) = api
        .call("POST", SED, Some(&alpha), Some(body.clone()))
        .await;
    assert_eq!(v["edgeCloudZoneName"], "cork");

    // Beta hosts nothing: no zone for it.
    let (s, e) = api.call("POST", SED, Some(&beta), Some(body)).await;
    assert_eq!((s, e["code"].as_str()), (404, Some("NOT_FOUND")));

    // CAMARA's error codes.
    for (body, status, code) in [
        (json!({}), 422, "MISSING_IDENTIFIER"),
        (
            json!({"device": {"ipv6Address": "2001:db8::1"}}),
            422,
            "UNSUPPORTED_IDENTIFIER",
        ),
        (
            json!({"device": {"phoneNumber": "+353879999999"}}),
            404,
            "IDENTIFIER_NOT_FOUND",
        ),
        (
            json!({"device": {"phoneNumber": "0871234567"}}),
            400,
            "INVALID_ARGUMENT",
        ),
        (json!({"device": {}}), 400, "INVALID_ARGUMENT"),
        (
            json!({"device": {"ipv4Address": {"publicAddress": "84.125.93.10"}}}),
            400,
            "INVALID_ARGUMENT",
        ),
    ] {
        let (s, e) = api
            .call("POST", SED, Some(&alpha), Some(body.clone()))
            .await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    // A detached UE.
    ue.attachment = None;
    api.request(
        "PUT",
        "/mecfed/v1/ues/ue-1",
        Some(serde_json::to_value(&ue).unwrap()),
    )
    .await;
    let (s, e) = api
        .call(
            "POST",
            SED,
            Some(&alpha),
            Some(json!({"device": {"phoneNumber": "+353871234567"}})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (422, Some("SERVICE_NOT_APPLICABLE"))
    );
    // UE data is the operator's: developers cannot read the table.
    let (s, _) = api.call("GET", "/mecfed/v1/ues", Some(&alpha), None).await;
    assert_eq!(s, 403);
}

/// Alpha's `arena`, submitted; its CAMARA and mecfed ids.
async fn submitted(api: &support::Api, token: &str) -> (String, mecfed_core::AppId) {
    let (s, v) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(token),
            Some(manifest("arena", "AlphaGames")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["appId"].as_str().unwrap().to_string();
    let app = mecfed_core::AppId::new(id.clone()).unwrap();
    (id, app)
}

async fn zone_ids(api: &support::Api, token: &str) -> std::collections::BTreeMap<String, String> {
    let (_, zones) = api
        .call("GET", &format!("{EAM}/edge-cloud-zones"), Some(token), None)
        .await;
    zones
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["edgeCloudZoneName"].as_str().unwrap().to_string(),
                z["edgeCloudZoneId"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The app's zones, once the controllers followed the records.
async fn deployed_zones(api: &support::Api, app: &mecfed_core::AppId) -> Option<Vec<String>> {
    api.settle().await;
    let typed = Typed::new(api.store.clone());
    let app = typed.get::<App>(app.as_str()).await.unwrap().unwrap().value;
    app.zones
        .map(|z| z.into_iter().map(|z| z.to_string()).collect())
}

#[tokio::test]
async fn app_instances_deploy_the_app_to_their_zone_and_report_its_instances() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let beta = developer(&api, "beta", "BetaStudios").await;
    add_site(&api, "cork-a", "op-a", "cork", (51.9, -8.47)).await;
    add_site(&api, "dub-a", "op-a", "dublin", (53.35, -6.26)).await;
    let zones = zone_ids(&api, &alpha).await;
    let (app_id, app) = submitted(&api, &alpha).await;
    let body = json!({"name": "arena_cork", "appId": app_id, "edgeCloudZoneId": zones["cork"]});

    let (s, headers, info) = api
        .send(
            "POST",
            &format!("{EAM}/appinstances"),
            Some(&alpha),
            Some(("application/json", body.to_string())),
        )
        .await;
    assert_eq!(s, 202, "{info}");
    let instance_id = info["appInstanceId"].as_str().unwrap().to_string();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("{EAM}/appinstances/{instance_id}")
    );
    assert_eq!(info["status"], "instantiating");
    assert_eq!(info["appProvider"], "AlphaGames");
    assert_eq!(info["edgeCloudZoneId"], zones["cork"].as_str());
    // The scheduler is told: the app is deployed to Cork only.
    assert_eq!(deployed_zones(&api, &app).await, Some(vec!["cork".into()]));

    // One app instance per zone; the app cannot go while it has one.
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/appinstances"),
            Some(&alpha),
            Some(body.clone()),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("ALREADY_EXISTS")));
    let (s, e) = api
        .call(
            "DELETE",
            &format!("{EAM}/apps/{app_id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("ABORTED")));

    // Bad requests name the field and change nothing.
    for (patch, status, field) in [
        (json!({"name": "1bad"}), 400, "name"),
        (json!({"appId": "nope"}), 400, "appId"),
        (
            json!({"edgeCloudZoneId": uuid::Uuid::new_v4().to_string()}),
            404,
            "edge cloud zone",
        ),
        (
            json!({"appId": uuid::Uuid::new_v4().to_string()}),
            404,
            "app",
        ),
        (
            json!({"kubernetesClusterRef": uuid::Uuid::new_v4().to_string()}),
            404,
            "kubernetes cluster",
        ),
        (
            json!({"kubernetesClusterRef": "not-a-uuid"}),
            400,
            "kubernetesClusterRef",
        ),
        (
            json!({"subscriptionRequest": {"sink": "http://studio.example/events"}}),
            400,
            "subscriptionRequest.sink",
        ),
        (
            json!({"subscriptionRequest": {"sink": "https://studio.example/events",
                   "types": ["org.camaraproject.edge-application-management.v0.app-deployment-status-change"]}}),
            400,
            "subscriptionRequest.types[0]",
        ),
    ] {
        let mut b = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (s, e) = api
            .call(
                "POST",
                &format!("{EAM}/appinstances"),
                Some(&alpha),
                Some(b),
            )
            .await;
        assert_eq!(s, status, "{e}");
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    assert_eq!(deployed_zones(&api, &app).await, Some(vec!["cork".into()]));

    // Beta sees none of it and cannot instantiate alpha's app.
    let (_, list) = api
        .call("GET", &format!("{EAM}/appinstances"), Some(&beta), None)
        .await;
    assert_eq!(list, json!([]));
    let mut b = body.clone();
    b["edgeCloudZoneId"] = json!(zones["dublin"]);
    let (s, _) = api
        .call("POST", &format!("{EAM}/appinstances"), Some(&beta), Some(b))
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(
            "DELETE",
            &format!("{EAM}/appinstances/{instance_id}"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Once the scheduler's instance in Cork is Ready, the app instance is, at its endpoint.
    Typed::new(api.store.clone())
        .put(&Instance {
            id: InstanceId::new(format!("{app}-cork-a-0")).unwrap(),
            app: app.clone(),
            site: SiteId::new("cork-a").unwrap(),
            state: InstanceState::Ready,
            endpoint: Some("10.1.0.5:40001".into()),
            pid: None,
            sessions: None,
        })
        .await
        .unwrap();
    let (s, list) = api
        .call(
            "GET",
            &format!("{EAM}/appinstances?appId={app_id}&region=ireland"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["status"], "ready");
    assert_eq!(
        list[0]["componentEndpointInfo"],
        json!([{"interfaceId": "game",
                "accessPoints": {"port": 40001, "ipv4Addresses": ["10.1.0.5"]}}])
    );
    for q in [
        "region=elsewhere".to_string(),
        format!("appInstanceId={}", uuid::Uuid::new_v4()),
    ] {
        let (_, list) = api
            .call(
                "GET",
                &format!("{EAM}/appinstances?{q}"),
                Some(&alpha),
                None,
            )
            .await;
        assert_eq!(list, json!([]), "{q}");
    }
    let (s, _) = api
        .call(
            "GET",
            &format!("{EAM}/appinstances?appId=x"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);

    // Terminated: the app is deployed nowhere; a second delete finds nothing.
    let uri = format!("{EAM}/appinstances/{instance_id}");
    let (s, _) = api.call("DELETE", &uri, Some(&alpha), None).await;
    assert_eq!(s, 202);
    assert_eq!(deployed_zones(&api, &app).await, Some(vec![]));
    let (s, _) = api.call("DELETE", &uri, Some(&alpha), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn deployments_span_zones_and_merge_patches_replace_them() {
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let beta = developer(&api, "beta", "BetaStudios").await;
    add_site(&api, "cork-a", "op-a", "cork", (51.9, -8.47)).await;
    add_site(&api, "dub-a", "op-a", "dublin", (53.35, -6.26)).await;
    add_site(&api, "gal-a", "op-a", "galway", (53.27, -9.05)).await;
    let zones = zone_ids(&api, &alpha).await;
    let (app_id, app) = submitted(&api, &alpha).await;
    let body = json!({
        "appDeploymentName": "launch",
        "appId": app_id,
        "edgeCloudZones": [zones["cork"], zones["dublin"]],
    });
    let (s, v) = api
        .call(
            "POST",
            &format!("{EAM}/deployments"),
            Some(&alpha),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let dep = v["appDeploymentId"].as_str().unwrap().to_string();
    assert_eq!(
        deployed_zones(&api, &app).await,
        Some(vec!["cork".into(), "dublin".into()])
    );
    let (s, list) = api
        .call(
            "GET",
            &format!("{EAM}/deployments?appId={app_id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["appDeploymentName"], "launch");
    assert_eq!(list[0]["appInstances"].as_array().unwrap().len(), 2);
    let (_, instances) = api
        .call("GET", &format!("{EAM}/appinstances"), Some(&alpha), None)
        .await;
    let names: Vec<&str> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["launch_1", "launch_2"]);

    // Same name again, or a zone another app instance holds: conflicts.
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/deployments"),
            Some(&alpha),
            Some(body.clone()),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("ALREADY_EXISTS")));
    let (s, _) = api
        .call(
            "POST",
            &format!("{EAM}/appinstances"),
            Some(&alpha),
            Some(json!({"name": "solo", "appId": app_id, "edgeCloudZoneId": zones["dublin"]})),
        )
        .await;
    assert_eq!(s, 409);
    let mut dup = body.clone();
    dup["appDeploymentName"] = json!("other");
    dup["edgeCloudZones"] = json!([zones["galway"], zones["galway"]]);
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/deployments"),
            Some(&alpha),
            Some(dup),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["message"].as_str().unwrap().contains("edgeCloudZones[1]"),
        "{e}"
    );

    // A merge patch replaces the zone list: Cork goes, Galway comes, Dublin stays.
    let uri = format!("{EAM}/deployments/{dep}");
    let patch = json!({"edgeCloudZones": [zones["dublin"], zones["galway"]]}).to_string();
    let (s, _, e) = api
        .send(
            "PATCH",
            &uri,
            Some(&alpha),
            Some(("application/json", patch.clone())),
        )
        .await;
    assert_eq!(s, 415, "{e}");
    let (s, _, e) = api
        .send(
            "PATCH",
            &uri,
            Some(&alpha),
            Some((
                "application/merge-patch+json",
                r#"{"appDeploymentName": null}"#.into(),
            )),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, _, _) = api
        .send(
            "PATCH",
            &uri,
            Some(&beta),
            Some(("application/merge-patch+json", patch.clone())),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        deployed_zones(&api, &app).await,
        Some(vec!["cork".into(), "dublin".into()])
    );
    let (s, _, info) = api
        .send(
            "PATCH",
            &uri,
            Some(&alpha),
            Some(("application/merge-patch+json", patch)),
        )
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["appDeploymentName"], "launch");
    assert_eq!(
        info["edgeCloudZones"],
        json!([zones["dublin"], zones["galway"]])
    );
    assert_eq!(
        deployed_zones(&api, &app).await,
        Some(vec!["dublin".into(), "galway".into()])
    );
    let (s, _, info) = api
        .send(
            "PATCH",
            &uri,
            Some(&alpha),
            Some((
                "application/merge-patch+json",
                r#"{"appDeploymentName": "relaunch"}"#.into(),
            )),
        )
        .await;
    assert_eq!(
        (s, info["appDeploymentName"].as_str()),
        (200, Some("relaunch"))
    );

    // Beta sees no deployment; deleting it undeploys the app.
    let (_, list) = api
        .call("GET", &format!("{EAM}/deployments"), Some(&beta), None)
        .await;
    assert_eq!(list, json!([]));
    let (s, _) = api.call("DELETE", &uri, Some(&beta), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("DELETE", &uri, Some(&alpha), None).await;
    assert_eq!(s, 202);
    assert_eq!(deployed_zones(&api, &app).await, Some(vec![]));
    let (_, list) = api
        .call("GET", &format!("{EAM}/appinstances"), Some(&alpha), None)
        .await;
    assert_eq!(list, json!([]));
    let (s, _) = api
        .call(
            "DELETE",
            &format!("{EAM}/apps/{app_id}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 204);
}

async fn add_cluster(api: &support::Api, id: &str, zone: &str) {
    add_site(api, id, "op-a", zone, (51.9, -8.47)).await;
    let typed = Typed::new(api.store.clone());
    let mut site = typed.get::<Site>(id).await.unwrap().unwrap().value;
    site.kind = mecfed_core::SiteKind::Kubernetes;
    typed.put(&site).await.unwrap();
}

#[tokio::test]
async fn cluster_refs_pin_app_instances_and_status_callbacks_follow_them() {
    use mecfed_api::{
        camara::status::{self, StatusReporter},
        notify::{Notification, Subscription},
    };
    let api = api();
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    let beta = developer(&api, "beta", "BetaStudios").await;
    add_cluster(&api, "cork-k1", "cork").await;
    add_cluster(&api, "cork-k2", "cork").await;
    add_cluster(&api, "dub-k1", "dublin").await;
    let zones = zone_ids(&api, &alpha).await;
    let (_, clusters) = api
        .call("GET", &format!("{EAM}/clusters"), Some(&alpha), None)
        .await;
    let cluster = |name: &str| {
        clusters
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["clusterRef"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (app_id, app) = submitted(&api, &alpha).await;
    let typed = Typed::new(api.store.clone());

    // A cluster of another zone is refused, and nothing is stored.
    let (s, e) = api
        .call(
            "POST",
            &format!("{EAM}/appinstances"),
            Some(&alpha),
            Some(json!({"name": "arena_cork", "appId": app_id,
                        "edgeCloudZoneId": zones["cork"],
                        "kubernetesClusterRef": cluster("dub-k1")})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("kubernetesClusterRef"),
        "{e}"
    );
    assert_eq!(deployed_zones(&api, &app).await, Some(vec![]));

    // Pinned to cork-k2, with status callbacks from the start.
    let (s, info) = api
        .call(
            "POST",
            &format!("{EAM}/appinstances"),
            Some(&alpha),
            Some(json!({
                "name": "arena_cork", "appId": app_id, "edgeCloudZoneId": zones["cork"],
                "kubernetesClusterRef": cluster("cork-k2"),
                "subscriptionRequest": {
                    "sink": "https://studio.example/events",
                    "sinkCredential": {"credentialType": "ACCESSTOKEN", "accessToken": "t0k",
                        "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"},
                    "types": [status::INSTANCE_STATUS_CHANGE],
                    "config": {"subscriptionDetail": {}, "initialEvent": true}
                }
            })),
        )
        .await;
    assert_eq!(s, 202, "{info}");
    let instance_id = info["appInstanceId"].as_str().unwrap().to_string();
    api.settle().await;
    let pinned = typed.get::<App>(app.as_str()).await.unwrap().unwrap().value;
    assert_eq!(
        pinned.pins,
        [(
            ZoneId::new("cork").unwrap(),
            vec![SiteId::new("cork-k2").unwrap()]
        )]
        .into()
    );
    let outbox = async || -> Vec<Notification> {
        typed
            .list::<Notification>()
            .await
            .unwrap()
            .0
            .into_iter()
            .map(|n| n.value)
            .collect()
    };
    let (subs, _) = typed.list::<Subscription>().await.unwrap();
    assert_eq!(subs.len(), 1);
    let sub = subs[0].value.clone();
    assert_eq!(sub.callback, "https://studio.example/events");
    assert_eq!(sub.delivery.bearer.as_deref(), Some("t0k"));
    assert!(
        !sub.body.to_string().contains("t0k"),
        "the token is not shown"
    );
    // The initial event, a CloudEvent with the current status.
    let queued = outbox().await;
    assert_eq!(queued.len(), 1);
    let ev = &queued[0].body;
    assert_eq!(ev["type"], status::INSTANCE_STATUS_CHANGE);
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["data"]["appInstanceId"], instance_id.as_str());
    assert_eq!(ev["data"]["status"], "instantiating");

    // An instance on the other cork cluster does not count; one on cork-k2 does.
    let reporter = StatusReporter::new(typed.clone());
    for (site, n) in [("cork-k1", 0), ("cork-k2", 0)] {
        typed
            .put(&Instance {
                id: InstanceId::new(format!("{app}-{site}-{n}")).unwrap(),
                app: app.clone(),
                site: SiteId::new(site).unwrap(),
                state: InstanceState::Ready,
                endpoint: Some("10.0.0.9:7777".into()),
                pid: None,
                sessions: None,
            })
            .await
            .unwrap();
        reporter.report().await.unwrap();
        let want = if site == "cork-k1" { 1 } else { 2 };
        assert_eq!(outbox().await.len(), want, "after an instance on {site}");
    }
    let queued = outbox().await;
    assert_eq!(queued[1].body["data"]["status"], "ready");
    // Nothing changed: nothing more.
    reporter.report().await.unwrap();
    assert_eq!(outbox().await.len(), 2);
    let (_, got) = api
        .call(
            "GET",
            &format!("{EAM}/appinstances?appInstanceId={instance_id}"),
            Some(&alpha),
            None,
        )
        .await;
    let got = got[0].clone();
    assert_eq!(
        got["kubernetesClusterRef"],
        cluster("cork-k2").as_str(),
        "{got}"
    );

    // Beta cannot delete it; alpha's delete ends the subscription with its last event.
    let path = format!("{EAM}/appinstances/{instance_id}");
    let (s, _) = api.call("DELETE", &path, Some(&beta), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("DELETE", &path, Some(&alpha), None).await;
    assert_eq!(s, 202);
    assert!(typed.list::<Subscription>().await.unwrap().0.is_empty());
    let queued = outbox().await;
    assert_eq!(queued.len(), 3);
    assert_eq!(queued[2].body["type"], status::SUBSCRIPTION_ENDED);
    assert_eq!(
        queued[2].body["data"]["terminationReason"],
        "SUBSCRIPTION_DELETED"
    );
    api.settle().await;
    assert!(
        typed
            .get::<App>(app.as_str())
            .await
            .unwrap()
            .unwrap()
            .value
            .pins
            .is_empty()
    );

    // A deployment pinned in one of its zones, reporting its members as one array.
    let (s, v) = api
        .call(
            "POST",
            &format!("{EAM}/deployments"),
            Some(&alpha),
            Some(json!({
                "appDeploymentName": "launch", "appId": app_id,
                "edgeCloudZones": [zones["cork"], zones["dublin"]],
                "kubernetesClusterRefs": [cluster("cork-k1")],
                "subscriptionRequest": {"sink": "https://studio.example/deployments",
                    "config": {"subscriptionDetail": {}, "subscriptionMaxEvents": 1}}
            })),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    api.settle().await;
    let pinned = typed.get::<App>(app.as_str()).await.unwrap().unwrap().value;
    assert_eq!(
        pinned.pins,
        [(
            ZoneId::new("cork").unwrap(),
            vec![SiteId::new("cork-k1").unwrap()]
        )]
        .into()
    );
    let before = outbox().await.len();
    // The instance on cork-k1 fails: the cork member changes to failed, and the budget of
    // one event ends the subscription.
    let failing = InstanceId::new(format!("{app}-cork-k1-0")).unwrap();
    let mut i = typed
        .get::<Instance>(failing.as_str())
        .await
        .unwrap()
        .unwrap()
        .value;
    i.state = InstanceState::Failed;
    typed.put(&i).await.unwrap();
    reporter.report().await.unwrap();
    let queued = outbox().await;
    let fresh: Vec<&Notification> = queued
        .iter()
        .filter(|n| n.callback.ends_with("/deployments"))
        .collect();
    assert_eq!(queued.len() - before, 2, "{fresh:?}");
    let events = fresh[0].body.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], status::DEPLOYMENT_STATUS_CHANGE);
    assert_eq!(events[0]["data"]["status"], "failed");
    assert_eq!(
        fresh[1].body[0]["data"]["terminationReason"],
        "MAX_EVENTS_REACHED"
    );
    assert!(typed.list::<Subscription>().await.unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_submits_of_one_name_and_version_leave_one_app_and_no_ghost() {
    let api = std::sync::Arc::new(api());
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    for round in 0..25 {
        let name = format!("arena_{round}");
        let racers: Vec<_> = (0..3)
            .map(|_| {
                let (api, alpha, name) = (api.clone(), alpha.clone(), name.clone());
                tokio::spawn(async move {
                    api.call(
                        "POST",
                        &format!("{EAM}/apps"),
                        Some(&alpha),
                        Some(manifest(&name, "AlphaGames")),
                    )
                    .await
                })
            })
            .collect();
        let mut won = Vec::new();
        for r in racers {
            let (s, v) = r.await.unwrap();
            match s {
                201 => won.push(v["appId"].as_str().unwrap().to_string()),
                409 => assert_eq!(v["code"], "ALREADY_EXISTS", "{v}"),
                _ => panic!("round {round}: {s} {v}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}");
    }
    let store = Typed::new(api.store.clone());
    let (apps, _) = store.list::<App>().await.unwrap();
    let (_, listed) = api
        .call("GET", &format!("{EAM}/apps"), Some(&alpha), None)
        .await;
    // Every stored app is visible and deletable: no ghost holds a name.
    assert_eq!(apps.len(), 25);
    assert_eq!(listed.as_array().unwrap().len(), 25);
    for a in listed.as_array().unwrap() {
        let id = a["appId"].as_str().unwrap();
        let (s, v) = api
            .call("DELETE", &format!("{EAM}/apps/{id}"), Some(&alpha), None)
            .await;
        assert_eq!(s, 204, "{v}");
    }
    assert!(store.list::<App>().await.unwrap().0.is_empty());
    // A deleted app's name and version are free again.
    let (s, v) = api
        .call(
            "POST",
            &format!("{EAM}/apps"),
            Some(&alpha),
            Some(manifest("arena_0", "AlphaGames")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_app_instances_and_deployments_take_a_zone_once() {
    let api = std::sync::Arc::new(api());
    let alpha = developer(&api, "alpha", "AlphaGames").await;
    add_site(&api, "cork-a", "op-a", "cork", (51.9, -8.47)).await;
    add_site(&api, "dub-a", "op-a", "dublin", (53.35, -6.26)).await;
    let zones = zone_ids(&api, &alpha).await;
    let (app_id, app) = submitted(&api, &alpha).await;
    for round in 0..15 {
        // Two app instances and a deployment race for Cork.
        let bodies = [
            (
                "appinstances",
                json!({"name": format!("a_{round}"), "appId": app_id, "edgeCloudZoneId": zones["cork"]}),
            ),
            (
                "appinstances",
                json!({"name": format!("b_{round}"), "appId": app_id, "edgeCloudZoneId": zones["cork"]}),
            ),
            (
                "deployments",
                json!({"appDeploymentName": format!("d_{round}"), "appId": app_id,
                "edgeCloudZones": [zones["cork"], zones["dublin"]]}),
            ),
        ];
        let racers: Vec<_> = bodies
            .into_iter()
            .map(|(what, body)| {
                let (api, alpha) = (api.clone(), alpha.clone());
                tokio::spawn(async move {
                    api.call("POST", &format!("{EAM}/{what}"), Some(&alpha), Some(body))
                        .await
                })
            })
            .collect();
        let mut won = Vec::new();
        for r in racers {
            let (s, v) = r.await.unwrap();
            match s {
                202 => won.push(v),
                409 => assert_eq!(v["code"], "ALREADY_EXISTS", "{v}"),
                _ => panic!("round {round}: {s} {v}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        // Whoever won holds Cork (and the deployment Dublin too); the app is deployed there.
        let (_, list) = api
            .call(
                "GET",
                &format!("{EAM}/appinstances?appId={app_id}"),
                Some(&alpha),
                None,
            )
            .await;
        let in_cork = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["edgeCloudZoneId"] == zones["cork"].as_str())
            .count();
        assert_eq!(in_cork, 1, "round {round}: {list}");
        assert!(
            deployed_zones(&api, &app)
                .await
                .unwrap()
                .contains(&"cork".to_string())
        );
        // Undo the winner, so that the next round races for a free zone again.
        let w = &won[0];
        let uri = match w["appDeploymentId"].as_str() {
            Some(d) => format!("{EAM}/deployments/{d}"),
            None => format!(
                "{EAM}/appinstances/{}",
                w["appInstanceId"].as_str().unwrap()
            ),
        };
        let (s, v) = api.call("DELETE", &uri, Some(&alpha), None).await;
        assert_eq!(s, 202, "{v}");
        assert_eq!(deployed_zones(&api, &app).await, Some(vec![]));
    }
}
