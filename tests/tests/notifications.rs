//! Subscriptions end to end across real processes: `mecfed up` (embedded store) with two
//! agents in two zones, a developer's MEC 013 user-location subscription whose callback is
//! a server in this test, UE moves written by the operator, and delivery that survives the
//! platform's restart while the callback was refusing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use mecfed_e2e::{Proc, call, free_port, wait_for_status};
use serde_json::{Value, json};

const START: Duration = Duration::from_secs(90);

#[derive(Clone, Default)]
struct Callback {
    got: Arc<Mutex<Vec<Value>>>,
    refusing: Arc<AtomicBool>,
}

async fn receive(State(c): State<Callback>, Json(body): Json<Value>) -> StatusCode {
    if c.refusing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    c.got.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

fn up(api: u16, admin: u16, data: &std::path::Path) -> Proc {
    let mut cmd = mecfed_e2e::up_command(api, admin, data);
    Proc::spawn("mecfed up", &mut cmd).unwrap()
}

fn agent(api: u16, token: &str, site: &str, zone: &str, cell: &str, dir: &std::path::Path) -> Proc {
    let mut cmd = mecfed_e2e::cell_agent_command(api, token, site, zone, cell, dir);
    Proc::spawn(&format!("agent {site}"), &mut cmd).unwrap()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + START;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn events(got: &[Value]) -> Vec<String> {
    got.iter()
        .map(|b| match b.get("userLocationEventNotification") {
            Some(n) => format!(
                "{} {}",
                n["userLocationEvent"].as_str().unwrap(),
                n["zoneId"].as_str().unwrap()
            ),
            None => b
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_notifications_reach_the_callback_in_order_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let data = dir.path().join("platform");
    let mut platform = up(api, admin, &data);
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    let operator = mecfed_e2e::authorize(&server, &data).await.unwrap();
    let dev = mecfed_e2e::developer(&server, "studio", "StudioGames")
        .await
        .unwrap();
    let join = mecfed_e2e::join_token(&server).unwrap();
    let _cork = agent(api, &join, "cork-1", "cork", "cell-c", dir.path());
    let _dub = agent(api, &join, "dub-1", "dublin", "cell-d", dir.path());

    // Both zones are known to the location service once the sites joined.
    let deadline = Instant::now() + START;
    loop {
        let (_, z) = call(
            "GET",
            &format!("{server}/location/v2/queries/zones"),
            &dev,
            None,
        )
        .await;
        if z["zoneList"]["zone"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "sites did not join: {z}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The developer's callback, and its subscription with a test notification.
    let cb = Callback::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb_url = format!("http://{}/location", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/location", post(receive))
        .with_state(cb.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (s, v) = call(
        "POST",
        &format!("{server}/location/v2/subscriptions/users"),
        &dev,
        Some(json!({"userLocationEventSubscription": {
            "subscriptionType": "UserLocationEventSubscription",
            "callbackReference": cb_url,
            "address": "acr:10.0.0.1",
            "requestTestNotification": true,
        }})),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    let ue = |cell: &str| {
        json!({"id": "phone-1", "identity": {"ipv4Address": "10.0.0.1"}, "sharedWith": ["studio"],
            "attachment": {"access": "nr5g", "accessPoint": cell, "operator": "op-a",
                "location": {"latitude": 52.0, "longitude": -8.0}}})
    };
    let (s, v) = call(
        "PUT",
        &format!("{server}/mecfed/v1/ues/phone-1"),
        &operator,
        Some(ue("cell-c")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    eventually("two notifications", || cb.got.lock().unwrap().len() == 2).await;
    assert_eq!(
        events(&cb.got.lock().unwrap()),
        ["testNotification", "ENTERING_AREA_EVENT cork"]
    );

    // The callback goes down; the phone moves to Dublin; the platform restarts meanwhile.
    cb.refusing.store(true, Ordering::SeqCst);
    let (s, _) = call(
        "PUT",
        &format!("{server}/mecfed/v1/ues/phone-1"),
        &operator,
        Some(ue("cell-d")),
    )
    .await;
    assert_eq!(s, 200);
    platform.terminate().unwrap();
    assert!(
        platform
            .wait_exit(Duration::from_secs(30))
            .unwrap()
            .success()
    );
    let _platform = up(api, admin, &data);
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    cb.refusing.store(false, Ordering::SeqCst);
    eventually("the move's notifications after the restart", || {
        cb.got.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(
        events(&cb.got.lock().unwrap()),
        [
            "testNotification",
            "ENTERING_AREA_EVENT cork",
            "LEAVING_AREA_EVENT cork",
            "ENTERING_AREA_EVENT dublin"
        ]
    );
    // The callback has the bodies before the notifier has its answers: the delivered count
    // (and the outbox deletes before it) follow shortly.
    let delivered = r#"mecfed_notifications_delivered_total{family="mec013.UserLocationEvent"} 2"#;
    let deadline = Instant::now() + START;
    loop {
        let (_, metrics) = mecfed_e2e::get(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .unwrap();
        if metrics.contains(delivered) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The operator sees the subscription with nothing pending, and removes it.
    let out = mecfed_e2e::ctl(&server)
        .args(["-o", "json", "subscriptions", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(subs[0]["developer"], "studio");
    assert_eq!(
        (subs[0]["queued"].as_u64(), subs[0]["pending"].as_u64()),
        (Some(4), Some(0))
    );
    let id = subs[0]["id"].as_str().unwrap();
    let out = mecfed_e2e::ctl(&server)
        .args(["subscriptions", "delete", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mecfed_e2e::ctl(&server)
        .args(["subscriptions", "delete", id])
        .output()
        .unwrap();
    assert!(!out.status.success(), "deleting it again is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let out = mecfed_e2e::ctl(&server)
        .args(["subscriptions", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 1, "only the header: {table}");
    let out = mecfed_e2e::ctl(&server)
        .args(["deployments"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
