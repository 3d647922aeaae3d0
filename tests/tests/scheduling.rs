//! The global scheduler across real processes: `mecfed up` (embedded store) and four agents
//! of two operators in Cork, Dublin and Melbourne. `arena` has a latency budget of 11 ms and
//! two demand areas (Cork: 100 sessions, Dublin: 50; 50 per instance), and a policy of own
//! operator first with the partner as overflow, failover after 3 s NotReady and failback
//! when recovered. The test checks the placement, kills the Cork site (agent and its
//! instances) and waits for failover to the partner's Cork site with the instance count
//! kept, then restarts the site and waits for failback. `mecfed ctl explain arena` is
//! printed at each step.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use mecfed_core::{App, DemandArea, GeoPoint, Instance, InstanceState, Placement};
use mecfed_e2e::{Proc, free_port, get, mecfed_bin, wait_for_status};

const START: Duration = Duration::from_secs(60);
const CORK: (f64, f64) = (51.8985, -8.4756);
const DUBLIN: (f64, f64) = (53.3498, -6.2603);

fn agent(api: u16, token: &str, site: &str, op: &str, at: (f64, f64), data: &Path) -> Proc {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("agent")
        .args(["--advertise", "127.0.0.1"])
        .args(["--site-id", site, "--operator", op, "--region", "ie"])
        .args(["--zone", &format!("{op}-{site}")])
        .args(["--lat", &at.0.to_string(), "--lon", &at.1.to_string()])
        .args(["--capacity", "cpu=2000m,memory=4Gi,sessions=200"])
        .args(["--access-kinds", "nr5g"])
        .args(["--controller", &format!("http://127.0.0.1:{api}")])
        .args(["--join-token", token])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.join(site));
    Proc::spawn(&format!("agent {site}"), &mut cmd).unwrap()
}

fn arena_app() -> App {
    let area = |name: &str, at: (f64, f64), sessions| {
        DemandArea::circle(name, GeoPoint::new(at.0, at.1).unwrap(), 2_000.0, sessions)
    };
    mecfed_e2e::arena_app(
        11,
        vec![area("cork", CORK, 100), area("dublin", DUBLIN, 50)],
    )
}

fn ctl(server: &str, args: &[&str]) -> String {
    let out = mecfed_e2e::ctl(server).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T> {
    let (status, body) = get(url).await?;
    if status != 200 {
        bail!("{url}: {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Live (not evicting) placements, site -> replicas.
async fn live(server: &str) -> BTreeMap<String, u32> {
    let ps: Vec<Placement> = json(&format!("{server}/mecfed/v1/placements?app=arena"))
        .await
        .unwrap_or_default();
    ps.into_iter()
        .filter(|p| p.evicting_until.is_none())
        .map(|p| (p.site.to_string(), p.replicas))
        .collect()
}

/// Waits until the placements are exactly `want` (nothing evicting) and every one of their
/// instances is Ready.
async fn settle(server: &str, want: &[(&str, u32)], what: &str) {
    let want: BTreeMap<String, u32> = want.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let deadline = Instant::now() + START;
    loop {
        let all: Vec<Placement> = json(&format!("{server}/mecfed/v1/placements?app=arena"))
            .await
            .unwrap_or_default();
        let instances: Vec<Instance> = json(&format!("{server}/mecfed/v1/instances"))
            .await
            .unwrap_or_default();
        let placed: BTreeMap<String, u32> = all
            .iter()
            .map(|p| (p.site.to_string(), p.replicas))
            .collect();
        let ready = |site: &str| {
            instances
                .iter()
                .filter(|i| i.site.as_str() == site && i.state == InstanceState::Ready)
                .count() as u32
        };
        if placed == want
            && all.iter().all(|p| p.evicting_until.is_none())
            && want.iter().all(|(s, n)| ready(s) >= *n)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: placements {placed:?} (want {want:?}), instances {:?}",
            instances
                .iter()
                .map(|i| (i.id.to_string(), i.state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_aware_placement_fails_over_and_fails_back() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("platform"))
        .args(["--operator", "op-a"])
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    let _platform = Proc::spawn("mecfed up", &mut cmd).unwrap();
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    mecfed_e2e::authorize(&server, &dir.path().join("platform"))
        .await
        .unwrap();
    let token = ctl(&server, &["join-token", "create"]).trim().to_string();
    let data = dir.path();
    let cork_a = agent(api, &token, "cork-a", "op-a", CORK, data);
    // The partner's Cork site, 6 km out: within the budget, but a partner's.
    let _cork_b = agent(api, &token, "cork-b", "op-b", (51.93, -8.40), data);
    let _dub_a = agent(api, &token, "dub-a", "op-a", DUBLIN, data);
    let _mel_a = agent(api, &token, "mel-a", "op-a", (-37.8136, 144.9631), data);
    let deadline = Instant::now() + START;
    loop {
        let sites: Vec<serde_json::Value> = json(&format!("{server}/mecfed/v1/sites"))
            .await
            .unwrap_or_default();
        if sites.len() == 4 && sites.iter().all(|s| s["status"] == "Ready") {
            break;
        }
        assert!(Instant::now() < deadline, "sites not Ready: {sites:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Onboard with the CLI: the app with its policy.
    let app_file = data.join("arena.json");
    std::fs::write(&app_file, serde_json::to_vec(&arena_app()).unwrap()).unwrap();
    let policy_file = data.join("policy.json");
    std::fs::write(
        &policy_file,
        serde_json::json!({
            "affinity": [
                {"name": "own", "operators": ["op-a"]},
                {"name": "partner", "operators": ["op-b"]}
            ],
            "failover": {"when": "afterNotReady", "seconds": 3},
            "failback": "whenRecovered",
            "gracefulEvictionSeconds": 120
        })
        .to_string(),
    )
    .unwrap();
    // A bad policy is refused with the field named, and nothing is stored.
    let bad = mecfed_e2e::ctl(&server)
        .args(["policy", "arena"])
        .arg(&policy_file)
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "policy for an app that does not exist"
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Together: applied one after the other, the scheduler could place the app under the
    // default policy first, and placements are sticky.
    ctl(
        &server,
        &[
            "apps",
            "apply",
            app_file.to_str().unwrap(),
            "--policy",
            policy_file.to_str().unwrap(),
        ],
    );

    // Cork needs 2 instances, Dublin 1, each within 11 ms: the own operator's sites.
    settle(&server, &[("cork-a", 2), ("dub-a", 1)], "initial placement").await;
    let explain = ctl(&server, &["explain", "arena"]);
    eprintln!("== ctl explain arena (placed)\n{explain}");
    assert!(
        explain.contains("3 instance(s) wanted, 3 placed on 2 site(s)"),
        "{explain}"
    );
    let mel = explain.lines().find(|l| l.starts_with("mel-a")).unwrap();
    assert!(
        mel.contains("rejected") && mel.contains("nearest demand area"),
        "{mel}"
    );
    let cork_b = explain.lines().find(|l| l.starts_with("cork-b")).unwrap();
    assert!(cork_b.contains("not needed"), "{cork_b}");
    eprintln!("== ctl placements\n{}", ctl(&server, &["placements"]));

    // The Cork site dies: its agent and its instances (once its agent has reported both
    // started: placed is not yet running).
    let deadline = Instant::now() + Duration::from_secs(60);
    let victims: Vec<u32> = loop {
        let instances: Vec<Instance> = json(&format!("{server}/mecfed/v1/instances"))
            .await
            .unwrap_or_default();
        let pids: Vec<u32> = instances
            .iter()
            .filter(|i| i.site.as_str() == "cork-a")
            .filter_map(|i| i.pid)
            .collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "cork-a runs {pids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(cork_a);
    for pid in victims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Failover: the partner's Cork site takes Cork's two instances, Dublin keeps its one.
    settle(&server, &[("cork-b", 2), ("dub-a", 1)], "failover").await;
    assert_eq!(live(&server).await.values().sum::<u32>(), 3, "count kept");
    let explain = ctl(&server, &["explain", "arena"]);
    eprintln!("== ctl explain arena (after failover)\n{explain}");
    let cork_a_line = explain.lines().find(|l| l.starts_with("cork-a")).unwrap();
    assert!(cork_a_line.contains("NotReady for"), "{cork_a_line}");

    // The site comes back: failback to the own operator's Cork site.
    let _cork_a = agent(api, &token, "cork-a", "op-a", CORK, data);
    settle(&server, &[("cork-a", 2), ("dub-a", 1)], "failback").await;
    let explain = ctl(&server, &["explain", "arena"]);
    eprintln!("== ctl explain arena (after failback)\n{explain}");
    assert!(
        explain.contains("3 instance(s) wanted, 3 placed on 2 site(s)"),
        "{explain}"
    );
    // Autoscaling: arena reports its sessions (none: no player is connected); the agents
    // read them through the load probe, and the autoscaler shrinks Cork to the minimum of
    // one instance per area. Adding the probe restarts no instance.
    let pids_before: BTreeMap<String, u32> =
        json::<Vec<Instance>>(&format!("{server}/mecfed/v1/instances"))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|i| Some((i.id.to_string(), i.pid?)))
            .collect();
    let mut app = arena_app();
    app.load = Some(mecfed_core::LoadProbe {
        port: "control".into(),
        path: "/sessions".into(),
    });
    std::fs::write(&app_file, serde_json::to_vec(&app).unwrap()).unwrap();
    ctl(&server, &["apps", "apply", app_file.to_str().unwrap()]);
    let deadline = Instant::now() + START;
    loop {
        let list: Vec<Instance> = json(&format!("{server}/mecfed/v1/instances"))
            .await
            .unwrap_or_default();
        if list.iter().filter(|i| i.sessions == Some(0)).count() == 3 {
            for i in &list {
                assert_eq!(
                    pids_before.get(i.id.as_str()),
                    i.pid.as_ref(),
                    "{} restarted",
                    i.id
                );
            }
            break;
        }
        assert!(Instant::now() < deadline, "no load reports: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(
        &policy_file,
        serde_json::json!({
            "affinity": [
                {"name": "own", "operators": ["op-a"]},
                {"name": "partner", "operators": ["op-b"]}
            ],
            "autoscaling": {"targetUtilisationPercent": 80, "scaleDownStabilisationSeconds": 0},
            "gracefulEvictionSeconds": 120
        })
        .to_string(),
    )
    .unwrap();
    ctl(&server, &["policy", "arena", policy_file.to_str().unwrap()]);
    settle(&server, &[("cork-a", 1), ("dub-a", 1)], "autoscaled down").await;
    let explain = ctl(&server, &["explain", "arena"]);
    eprintln!("== ctl explain arena (autoscaled)\n{explain}");
    assert!(
        explain.contains("2 instance(s) wanted, 2 placed on 2 site(s)"),
        "{explain}"
    );
}
