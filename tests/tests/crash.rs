//! Crash consistency end to end: `mecfed up` on the embedded store is SIGKILLed 30 times at
//! random moments (a seeded schedule) while phones move between two zones' cells and a
//! developer's zone subscription (MEC 013) and cell-change subscription (MEC 012) report to a
//! callback in this test. Every move the platform acknowledged must be told to both
//! subscriptions, at least once and in order; the test counts what was lost and asserts 0.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use mecfed_e2e::{Proc, call, free_port, wait_for_status};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const START: Duration = Duration::from_secs(90);
const KILLS: usize = 30;
const PHONES: usize = 4;
/// How long one acknowledged move may take to be told, kills included.
const TOLD_WITHIN: Duration = Duration::from_secs(60);

fn up(api: u16, admin: u16, data: &std::path::Path) -> Proc {
    let mut cmd = mecfed_e2e::up_command(api, admin, data);
    cmd.env("MECFED_LOG", "warn");
    Proc::spawn("mecfed up", &mut cmd).unwrap()
}

fn agent(api: u16, token: &str, site: &str, zone: &str, cell: &str, dir: &std::path::Path) -> Proc {
    let mut cmd = mecfed_e2e::cell_agent_command(api, token, site, zone, cell, dir);
    cmd.env("MECFED_LOG", "warn");
    Proc::spawn(&format!("agent {site}"), &mut cmd).unwrap()
}

/// What the callback received, each distinct body once (a notification delivered again
/// after a crash is the same body), in arrival order.
#[derive(Clone, Default)]
struct Told(Arc<Mutex<Vec<Value>>>);

async fn receive(State(t): State<Told>, Json(body): Json<Value>) -> StatusCode {
    let mut got = t.0.lock().unwrap();
    if !got.contains(&body) {
        got.push(body);
    }
    StatusCode::NO_CONTENT
}

impl Told {
    /// Zone events for `ip`, in order.
    fn zone(&self, ip: &str) -> Vec<String> {
        let addr = format!("acr:{ip}");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b.get("zoneLocationEventNotification"))
            .filter(|n| n["address"] == addr.as_str())
            .map(|n| {
                n["userLocationEvent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Target cells of the hand-overs of `ip`, in order.
    fn cells(&self, ip: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b.get("subscriptionNotification"))
            .filter(|n| n["notificationType"] == "CellChangeNotification")
            .filter(|n| n["associateId"][0]["value"] == ip)
            .map(|n| {
                n["trgEcgi"][0]["cellId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }
}

/// PUTs `body` until the platform acknowledges it (it may be down for a while).
async fn acknowledged(client: &reqwest::Client, url: &str, token: &str, body: &Value) {
    let deadline = Instant::now() + START;
    loop {
        let sent = client
            .put(url)
            .bearer_auth(token)
            .json(body)
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        if let Ok(r) = sent
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the platform never took {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_move_is_told_across_thirty_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let data = dir.path().join("platform");
    let platform = Arc::new(Mutex::new(Some(up(api, admin, &data))));
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    let operator = mecfed_e2e::authorize(&server, &data).await.unwrap();
    let dev = mecfed_e2e::developer(&server, "studio", "StudioGames")
        .await
        .unwrap();
    let join = mecfed_e2e::join_token(&server).unwrap();
    let _north = agent(api, &join, "north-1", "north", "cell-n", dir.path());
    let _south = agent(api, &join, "south-1", "south", "cell-s", dir.path());
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

    // The callback and the two subscriptions.
    let told = Told::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb = format!("http://{}/cb", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/cb", post(receive))
        .with_state(told.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (s, v) = call(
        "POST",
        &format!("{server}/location/v2/subscriptions/zones"),
        &dev,
        Some(json!({"zoneLocationEventSubscription": {
            "subscriptionType": "ZoneLocationEventSubscription",
            "callbackReference": cb, "zoneId": "south"}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "POST",
        &format!("{server}/rni/v2/subscriptions"),
        &dev,
        Some(json!({"CellChangeSubscription": {
            "subscriptionType": "CellChangeSubscription",
            "callbackReference": cb, "filterCriteriaAssocHo": {}}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // The phones, all in the north to begin with.
    let phone = |k: usize, cell: &str| {
        json!({"id": format!("phone-{k}"), "identity": {"ipv4Address": format!("10.1.0.{k}")},
            "sharedWith": ["studio"],
            "attachment": {"access": "nr5g", "accessPoint": cell, "operator": "op-a",
                "location": {"latitude": 52.0, "longitude": -8.0}}})
    };
    let client = reqwest::Client::new();
    for k in 0..PHONES {
        let url = format!("{server}/mecfed/v1/ues/phone-{k}");
        acknowledged(&client, &url, &operator, &phone(k, "cell-n")).await;
    }

    // The killer: SIGKILL and restart at random moments, on a seeded schedule.
    let killing = Arc::new(AtomicBool::new(true));
    let killer = {
        let (platform, killing, data) = (platform.clone(), killing.clone(), data.clone());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d65_6366);
            for _ in 0..KILLS {
                let wait = rng.random_range(300..1500);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let old = platform.lock().unwrap().take();
                drop(old); // SIGKILL
                *platform.lock().unwrap() = Some(up(api, admin, &data));
            }
            killing.store(false, Ordering::SeqCst);
        })
    };

    // Each phone moves back and forth; after each acknowledged move it waits (bounded) for
    // both notifications of that move before the next, so every move is one zone event and
    // one hand-over, nothing coalesces, and a lost one shows as a timeout.
    let lost = Arc::new(AtomicU32::new(0));
    let moves = Arc::new(Mutex::new(BTreeMap::new()));
    let mut phones = Vec::new();
    for k in 0..PHONES {
        let (server, operator, told, killing, lost, moves, client) = (
            server.clone(),
            operator.clone(),
            told.clone(),
            killing.clone(),
            lost.clone(),
            moves.clone(),
            client.clone(),
        );
        phones.push(tokio::spawn(async move {
            let ip = format!("10.1.0.{k}");
            let url = format!("{server}/mecfed/v1/ues/phone-{k}");
            let mut m = 0usize;
            while killing.load(Ordering::SeqCst) || m < 4 {
                m += 1;
                let cell = if m % 2 == 1 { "cell-s" } else { "cell-n" };
                acknowledged(&client, &url, &operator, &phone(k, cell)).await;
                moves.lock().unwrap().insert(k, m);
                let deadline = Instant::now() + TOLD_WITHIN;
                while told.zone(&ip).len() < m || told.cells(&ip).len() < m {
                    if Instant::now() > deadline {
                        lost.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    killer.await.unwrap();
    for p in phones {
        p.await.unwrap();
    }

    let moves = moves.lock().unwrap().clone();
    let total: usize = moves.values().sum();
    eprintln!(
        "crash test: {KILLS} kills, {total} acknowledged moves of {PHONES} phones, {} lost",
        lost.load(Ordering::SeqCst)
    );
    assert_eq!(lost.load(Ordering::SeqCst), 0, "moves not told");
    for (k, m) in moves {
        let ip = format!("10.1.0.{k}");
        let want_zone: Vec<&str> = (1..=m)
            .map(|i| {
                if i % 2 == 1 {
                    "ENTERING_AREA_EVENT"
                } else {
                    "LEAVING_AREA_EVENT"
                }
            })
            .collect();
        assert_eq!(
            told.zone(&ip),
            want_zone,
            "phone {k}: zone events in order, once each"
        );
        let cells = told.cells(&ip);
        assert_eq!(cells.len(), m, "phone {k}: one hand-over per move");
        assert!(
            cells.windows(2).all(|w| w[0] != w[1]),
            "phone {k}: hand-overs alternate: {cells:?}"
        );
    }
    drop(platform.lock().unwrap().take());
}
