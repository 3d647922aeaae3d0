//! A developer's whole path across real processes: `mecfed up` (embedded store), two agents
//! in two zones, and `arena` onboarded through CAMARA Edge Application Management with a
//! placement policy and `mecConfirmReady` readiness. The scheduler places one instance per
//! deployed zone, the agents run them, each instance confirms readiness with MEC 011
//! `confirm_ready` using the credentials its agent handed it, and Simple Edge Discovery
//! answers each UE the zone whose instance it should reach. The deployment's status callbacks
//! (CAMARA `subscriptionRequest`) reach the studio's `https` sink as CloudEvents with its
//! access token, up to `subscription-ended` when the deployment is deleted.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use mecfed_e2e::{HttpsSink, Proc, arena_bin, call, free_port, mecfed_bin, wait_for_status};
use serde_json::{Value, json};

const START: Duration = Duration::from_secs(90);
const EAM: &str = "/edge-application-management/v0.1alpha1";

fn agent(
    api: u16,
    token: &str,
    site: &str,
    zone: &str,
    at: (f64, f64),
    data: &std::path::Path,
) -> Proc {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("agent")
        .args(["--advertise", "127.0.0.1"])
        .args([
            "--site-id",
            site,
            "--operator",
            "op-a",
            "--region",
            "ireland",
        ])
        .args(["--zone", zone])
        .args(["--lat", &at.0.to_string(), "--lon", &at.1.to_string()])
        .args(["--capacity", "cpu=4000m,memory=8Gi,sessions=200"])
        .args(["--controller", &format!("http://127.0.0.1:{api}")])
        .args(["--join-token", token])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.join(site));
    Proc::spawn(&format!("agent {site}"), &mut cmd).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_onboards_arena_and_ues_discover_the_zone_of_their_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let data = dir.path().join("platform");
    // The studio's event sink, on https with its own CA, which the platform is told to trust.
    let sink = HttpsSink::start().await.unwrap();
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("up")
        .arg("--data-dir")
        .arg(&data)
        .arg("--callback-ca")
        .arg(&sink.ca_file)
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    let _platform = Proc::spawn("mecfed up", &mut cmd).unwrap();
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    let operator = mecfed_e2e::authorize(&server, &data).await.unwrap();

    // The operator opens an account for the studio and two sites join.
    let dev = mecfed_e2e::developer(&server, "studio", "StudioGames")
        .await
        .unwrap();
    let join = mecfed_e2e::join_token(&server).unwrap();
    let _cork = agent(api, &join, "cork-1", "cork", (51.9, -8.47), dir.path());
    let _dub = agent(api, &join, "dub-1", "dublin", (53.35, -6.26), dir.path());

    // Both zones must be up before the deployment names them.
    let deadline = Instant::now() + START;
    let zones = loop {
        let (_, z) = call(
            "GET",
            &format!("{server}{EAM}/edge-cloud-zones?status=active"),
            &dev,
            None,
        )
        .await;
        if z.as_array().is_some_and(|a| a.len() == 2) {
            break z;
        }
        assert!(Instant::now() < deadline, "sites did not join: {z}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let zone_id = |name: &str| {
        zones
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["edgeCloudZoneName"] == name)
            .unwrap()["edgeCloudZoneId"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Onboarding: the manifest, arena's runtime (it confirms its own readiness), a policy.
    let manifest = json!({
        "name": "arena", "appProvider": "StudioGames", "version": "1.0.0",
        "packageType": "CONTAINER",
        "appRepo": {"type": "PUBLICREPO", "imagePath": format!("file://{}", arena_bin().display())},
        "requiredResources": {"infraKind": "container", "numCPU": "500m", "memory": 128},
        "componentSpec": [{"componentName": "server", "networkInterfaces": [
            {"interfaceId": "game", "protocol": "UDP", "port": 7777, "visibilityType": "VISIBILITY_EXTERNAL"},
            {"interfaceId": "control", "protocol": "TCP", "port": 7778, "visibilityType": "VISIBILITY_INTERNAL"}
        ]}]
    });
    let (s, v) = call("POST", &format!("{server}{EAM}/apps"), &dev, Some(manifest)).await;
    assert_eq!(s, 201, "{v}");
    let app_id = v["appId"].as_str().unwrap().to_string();
    let runtime = json!({
        "args": ["--game-listen", "{host}:{port:game}", "--control-listen", "{host}:{port:control}"],
        "readiness": {"kind": "mecConfirmReady"},
        "stateful": true
    });
    let ext = format!("{server}/mecfed/v1/apps/{app_id}");
    let (s, v) = call("PUT", &format!("{ext}/runtime"), &dev, Some(runtime)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        "PUT",
        &format!("{ext}/policy"),
        &dev,
        Some(json!({"maxReplicas": 4})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        "POST",
        &format!("{server}{EAM}/deployments"),
        &dev,
        Some(json!({"appDeploymentName": "launch", "appId": app_id,
                    "edgeCloudZones": [zone_id("cork"), zone_id("dublin")],
                    "subscriptionRequest": {
                        "sink": sink.url,
                        "sinkCredential": {"credentialType": "ACCESSTOKEN",
                            "accessToken": "studio-sink-token", "accessTokenType": "bearer",
                            "accessTokenExpiresUtc": "2099-01-01T00:00:00Z"},
                        "types": ["org.camaraproject.edge-application-management.v0.app-deployment-status-change"],
                        "config": {"subscriptionDetail": {}}
                    }})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let deployment = v["appDeploymentId"].as_str().unwrap().to_string();

    // Placed, run, and confirmed: both app instances report ready with an endpoint.
    let deadline = Instant::now() + START;
    let instances = loop {
        let (_, list) = call(
            "GET",
            &format!("{server}{EAM}/appinstances?appId={app_id}"),
            &dev,
            None,
        )
        .await;
        if list.as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter()
                    .all(|i| i["status"] == "ready" && i["componentEndpointInfo"].is_array())
        }) {
            break list;
        }
        assert!(Instant::now() < deadline, "app instances not ready: {list}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Ready because each instance confirmed it (MEC 011), as its log says.
    let (s, list) = call(
        "GET",
        &format!("{server}/mecfed/v1/instances"),
        &operator,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let placed: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["app"] == app_id.as_str())
        .collect();
    assert_eq!(placed.len(), 2, "{list}");
    for i in &placed {
        assert_eq!(i["state"], "Ready", "{i}");
        let id = i["id"].as_str().unwrap();
        let resp = reqwest::Client::new()
            .get(format!("{server}/mecfed/v1/instances/{id}/logs"))
            .bearer_auth(&dev)
            .send()
            .await
            .unwrap();
        let log = resp.text().await.unwrap();
        assert!(
            log.contains("confirmed ready to the MEC platform"),
            "{id}: {log}"
        );
    }

    // A phone on a Dublin cell and one on a Cork cell: each is sent to its city's zone.
    for (ue, phone, cell, at, zone) in [
        (
            "ue-dub",
            "+353871111111",
            "nr-dub-7",
            (53.34, -6.25),
            "dublin",
        ),
        (
            "ue-cork",
            "+353872222222",
            "nr-cork-3",
            (51.89, -8.48),
            "cork",
        ),
    ] {
        let body = json!({
            "id": ue,
            "identity": {"phoneNumber": phone},
            "attachment": {"access": "nr5g", "accessPoint": cell, "operator": "op-a",
                           "location": {"latitude": at.0, "longitude": at.1}}
        });
        let (s, v) = call(
            "PUT",
            &format!("{server}/mecfed/v1/ues/{ue}"),
            &operator,
            Some(body),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = call(
            "POST",
            &format!("{server}/simple-edge-discovery/v2/retrieve-closest-edge-cloud-zone"),
            &dev,
            Some(json!({"device": {"phoneNumber": phone}})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["edgeCloudZoneName"], zone, "{v}");
        assert_eq!(v["edgeCloudZoneId"], zone_id(zone).as_str());
        let hosting = instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["edgeCloudZoneId"] == zone_id(zone).as_str())
            .unwrap();
        assert!(
            hosting["componentEndpointInfo"][0]["accessPoints"]["port"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    // The sink heard both members become ready, each POST a CloudEvents array sent with the
    // studio's token.
    let deadline = Instant::now() + START;
    loop {
        let got = sink.received();
        let mut last = std::collections::BTreeMap::new();
        for r in &got {
            for ev in r.body.as_array().into_iter().flatten() {
                last.insert(
                    ev["data"]["appInstanceId"].to_string(),
                    ev["data"]["status"].clone(),
                );
            }
        }
        if last.len() == 2 && last.values().all(|s| s == "ready") {
            for r in &got {
                assert_eq!(r.content_type, "application/cloudevents+json");
                assert_eq!(r.authorization.as_deref(), Some("Bearer studio-sink-token"));
                let ev = &r.body[0];
                assert_eq!(
                    ev["type"],
                    "org.camaraproject.edge-application-management.v0.app-deployment-status-change"
                );
                assert_eq!(ev["specversion"], "1.0");
                assert_eq!(ev["data"]["appDeploymentId"], deployment.as_str());
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status events: {:?}",
            got.iter().map(|r| &r.body).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Each instance is told of its termination (MEC 011) before it is stopped.
    for i in &placed {
        let id = i["id"].as_str().unwrap();
        let (s, v) = call(
            "POST",
            &format!("{server}/mec_app_support/v1/applications/{id}/subscriptions"),
            &dev,
            Some(json!({"AppTerminationNotificationSubscription": {
                "subscriptionType": "AppTerminationNotificationSubscription",
                "callbackReference": sink.url,
                "appInstanceId": id,
            }})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = call(
        "DELETE",
        &format!("{server}{EAM}/deployments/{deployment}"),
        &dev,
        None,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let deadline = Instant::now() + START;
    loop {
        let told: std::collections::BTreeSet<String> = sink
            .received()
            .iter()
            .filter_map(|r| {
                let n = &r.body["subscriptionNotification"];
                (n["notificationType"] == "AppTerminationNotification"
                    && n["operationAction"] == "TERMINATING")
                    .then(|| n["_links"]["confirmTermination"]["href"].to_string())
            })
            .collect();
        if told.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "termination notifications: {told:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + START;
    loop {
        let ended = sink.received().iter().any(|r| {
            r.body[0]["type"]
                == "org.camaraproject.edge-application-management.v0.subscription-ended"
                && r.body[0]["data"]["terminationReason"] == "SUBSCRIPTION_DELETED"
        });
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "no subscription-ended event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
