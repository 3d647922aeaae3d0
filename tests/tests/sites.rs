//! Sites across real processes: `mecfed up`, `mecfed ctl` and `mecfed agent`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use mecfed_e2e::{Proc, free_port, get, mecfed_bin, wait_for_status};
use serde_json::Value;

const START: Duration = Duration::from_secs(30);
/// The lease TTL is 10 s; allow generous slack on a loaded machine.
const LEASE_WAIT: Duration = Duration::from_secs(30);

fn start_up(data: &std::path::Path, api: u16, admin: u16) -> Proc {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("up")
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    Proc::spawn("mecfed up", &mut cmd).unwrap()
}

fn ctl(server: &str, args: &[&str]) -> Result<String> {
    let out = mecfed_e2e::ctl(server).args(args).output()?;
    if !out.status.success() {
        bail!(
            "mecfed ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn agent(server: &str, token: &str, site: &str, lat: &str, admin: u16) -> Command {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("agent")
        .args(["--site-id", site, "--operator", "op-a", "--region", "cork"])
        .args(["--zone", "cork-z1", "--lat", lat, "--lon", "-8.47"])
        .args(["--capacity", "cpu=4000m,memory=8Gi,sessions=200"])
        .args([
            "--access-kinds",
            "nr5g,wifi",
            "--access-points",
            "cell-1,ap-7",
        ])
        .args(["--controller", server, "--join-token", token])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    cmd
}

async fn wait_site_status(
    server: &str,
    site: &str,
    status: &str,
    limit: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let sites: Value = serde_json::from_str(&ctl(server, &["-o", "json", "sites"])?)?;
        if let Some(s) = sites.as_array().unwrap().iter().find(|s| s["id"] == site)
            && s["status"] == status
        {
            return Ok(s.clone());
        }
        if Instant::now() > deadline {
            bail!("site {site} not {status} within {limit:?}: {sites}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn agents_join_heartbeat_and_lose_readiness_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let mut up = start_up(&dir.path().join("data"), api, admin);
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    mecfed_e2e::authorize(&server, &dir.path().join("data"))
        .await
        .unwrap();

    let token = ctl(&server, &["join-token", "create", "--description", "e2e"])
        .unwrap()
        .trim()
        .to_string();
    assert!(token.contains('.'), "{token}");

    let (a1, a2) = (free_port(), free_port());
    let agent1 = Proc::spawn("agent s1", &mut agent(&server, &token, "s1", "51.90", a1)).unwrap();
    let _agent2 = Proc::spawn("agent s2", &mut agent(&server, &token, "s2", "51.89", a2)).unwrap();
    let s1 = wait_site_status(&server, "s1", "Ready", START)
        .await
        .unwrap();
    assert_eq!(s1["accessPoints"], serde_json::json!(["cell-1", "ap-7"]));
    assert_eq!(s1["capacity"]["sessionSlots"], 200);
    // This machine kind has usable cgroups (v1 cpu and memory): limits are enforced.
    assert_ne!(s1["limitEnforcement"], "unenforced", "{s1}");
    wait_site_status(&server, "s2", "Ready", START)
        .await
        .unwrap();
    let table = ctl(&server, &["sites"]).unwrap();
    assert!(table.starts_with("SITE"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("Ready")).count(),
        2,
        "{table}"
    );

    // The agent serves its own admin endpoints.
    wait_for_status(&format!("http://127.0.0.1:{a1}/ready"), 200, START)
        .await
        .unwrap();
    let (_, metrics) = get(&format!("http://127.0.0.1:{a1}/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"mecfed_agent_joins_total{outcome="ok"} 1"#),
        "{metrics}"
    );

    // A SIGKILLed agent's site goes NotReady when its lease runs out; the other stays Ready.
    let killed_at = Instant::now();
    drop(agent1);
    wait_site_status(&server, "s1", "NotReady", LEASE_WAIT)
        .await
        .unwrap();
    eprintln!(
        "s1 NotReady {:?} after its agent stopped",
        killed_at.elapsed()
    );
    wait_site_status(&server, "s2", "Ready", START)
        .await
        .unwrap();

    // The platform restarts on the same data; the surviving agent carries on.
    up.terminate().unwrap();
    assert!(up.wait_exit(Duration::from_secs(20)).unwrap().success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _up = start_up(&dir.path().join("data"), api, admin);
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    wait_site_status(&server, "s2", "Ready", START)
        .await
        .unwrap();
    wait_site_status(&server, "s1", "NotReady", START)
        .await
        .unwrap();
}

#[tokio::test]
async fn agent_with_a_bad_token_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let _up = start_up(&dir.path().join("data"), api, admin);
    wait_for_status(&format!("http://127.0.0.1:{admin}/ready"), 200, START)
        .await
        .unwrap();
    let out = agent(&server, "dead.beef", "s9", "51.9", free_port())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("join token"),
        "{err}"
    );

    let out = agent(&server, "x.y", "s9", "123", free_port())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("latitude"));
}

#[test]
fn kubernetes_agent_without_a_reachable_cluster_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = agent("http://127.0.0.1:9", "x.y", "k9", "51.9", free_port());
    let out = cmd
        .args(["--kind", "kubernetes", "--kubeconfig"])
        .arg(dir.path().join("missing-kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read kubeconfig"), "{err}");

    // A readable kubeconfig whose API server does not answer: capacity cannot be read.
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:9\"}\n\
         contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let mut cmd = agent("http://127.0.0.1:9", "x.y", "k9", "51.9", free_port());
    let out = cmd
        .args(["--kind", "kubernetes", "--kubeconfig"])
        .arg(&kc)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading node capacity from the Kubernetes API"),
        "{err}"
    );
}
