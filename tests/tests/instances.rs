//! Instances on edge sites across real processes: `mecfed up` on a real etcd, three agents
//! (two of them in their own network namespaces, so sites have distinct addresses),
//! `arena` placed on every site by the scheduler (a duplicated policy), a 30 s platform
//! outage that no instance notices, and a killed agent.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use arena_proto::{ClientMsg, ServerMsg, decode_server};
use mecfed_core::{App, AppId, Instance, InstanceState, PlacementPolicy, ReplicaScheduling};
use mecfed_e2e::{NetnsSite, Proc, free_port, get, mecfed_bin, wait_for_status};
use mecfed_scheduler::AppPolicy;
use mecfed_store::{EtcdStore, testing::EtcdProcess, typed::Typed};

const START: Duration = Duration::from_secs(60);

fn up(etcd: &str, data: &std::path::Path, api: u16, admin: u16) -> Proc {
    let mut cmd = Command::new(mecfed_bin());
    // All interfaces: the sites in namespaces reach the platform over their veth links.
    cmd.arg("up")
        .args(["--store", etcd])
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("0.0.0.0:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    Proc::spawn("mecfed up", &mut cmd).unwrap()
}

/// An agent, on the host or inside `netns` (then it reaches the platform at the host's
/// address on the link and advertises its own).
fn agent(
    api: u16,
    token: &str,
    site: &str,
    data: &std::path::Path,
    netns: Option<&NetnsSite>,
) -> Proc {
    let (mut cmd, server, advertise) = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name()]).arg(mecfed_bin());
            (
                c,
                format!("http://{}:{api}", ns.host_addr()),
                ns.site_addr(),
            )
        }
        None => (
            Command::new(mecfed_bin()),
            format!("http://127.0.0.1:{api}"),
            "127.0.0.1".to_string(),
        ),
    };
    cmd.arg("agent")
        .args(["--advertise", &advertise])
        .args(["--site-id", site, "--operator", "op-a", "--region", "cork"])
        .args(["--zone", "cork-z1", "--lat", "51.9", "--lon", "-8.47"])
        .args(["--capacity", "cpu=4000m,memory=8Gi,sessions=200"])
        .args(["--controller", &server, "--join-token", token])
        // On the advertised address, where the platform fetches instance logs from.
        .args(["--admin-listen", &format!("{advertise}:{}", free_port())])
        .arg("--data-dir")
        .arg(data.join(site));
    Proc::spawn(&format!("agent {site}"), &mut cmd).unwrap()
}

fn arena() -> App {
    mecfed_e2e::arena_app(30, vec![])
}

async fn instances(server: &str) -> Result<Vec<Instance>> {
    let (status, body) = get(&format!("{server}/mecfed/v1/instances")).await?;
    if status != 200 {
        bail!("{status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

async fn wait_all_ready(server: &str, n: usize) -> Vec<Instance> {
    let deadline = Instant::now() + START;
    loop {
        if let Ok(list) = instances(server).await
            && list.len() == n
            && list
                .iter()
                .all(|i| i.state == InstanceState::Ready && i.endpoint.is_some() && i.pid.is_some())
        {
            return list;
        }
        assert!(Instant::now() < deadline, "instances not all Ready in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ping(endpoint: &str) -> bool {
    // Any local address: the site may sit behind a veth link, not on loopback.
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    for attempt in 0..10u64 {
        let msg = ClientMsg::Ping {
            client_time_us: attempt,
        };
        if sock.send_to(&msg.encode(), endpoint).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 1500];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
            && matches!(decode_server(&buf[..n]), Ok(ServerMsg::Pong { .. }))
        {
            return true;
        }
    }
    false
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_survive_a_platform_outage_and_sites_fail_visibly() {
    let etcd = EtcdProcess::start().expect("a real etcd must start");
    let store_url = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let server = format!("http://127.0.0.1:{api}");
    let ready = format!("http://127.0.0.1:{admin}/ready");
    let platform_data = dir.path().join("platform");
    let mut platform = up(&store_url, &platform_data, api, admin);
    wait_for_status(&ready, 200, START).await.unwrap();
    mecfed_e2e::authorize(&server, &platform_data)
        .await
        .unwrap();

    let out = mecfed_e2e::ctl(&server)
        .args(["join-token", "create"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Namespace indices from the process id, so concurrent runs do not collide.
    let base = (std::process::id() % 120) as u8 * 2 + 1;
    let ns1 = NetnsSite::up(&format!("mecfed-e2e-{base}"), base).expect("namespace s1");
    let ns2 = NetnsSite::up(&format!("mecfed-e2e-{}", base + 1), base + 1).expect("namespace s2");
    let _a1 = agent(api, &token, "s1", dir.path(), Some(&ns1));
    let _a2 = agent(api, &token, "s2", dir.path(), Some(&ns2));
    let a3 = agent(api, &token, "s3", dir.path(), None);

    // A policy that puts one instance on every site; the scheduler places them.
    let typed = Typed::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    typed
        .put(&AppPolicy {
            app: AppId::new("arena").unwrap(),
            policy: PlacementPolicy {
                replica_scheduling: ReplicaScheduling::Duplicated,
                ..PlacementPolicy::default()
            },
        })
        .await
        .unwrap();
    typed.put(&arena()).await.unwrap();
    let before = wait_all_ready(&server, 3).await;
    let endpoint_of = |site: &str| {
        before
            .iter()
            .find(|i| i.site.as_str() == site)
            .and_then(|i| i.endpoint.clone())
            .unwrap()
    };
    assert!(endpoint_of("s1").starts_with(&format!("{}:", ns1.site_addr())));
    assert!(endpoint_of("s2").starts_with(&format!("{}:", ns2.site_addr())));
    assert!(endpoint_of("s3").starts_with("127.0.0.1:"));
    for i in &before {
        assert!(
            ping(i.endpoint.as_deref().unwrap()).await,
            "{} answers on its endpoint",
            i.id
        );
    }
    // Operators see them, and their logs, through the platform.
    let ctl = |args: &[&str]| {
        let out = mecfed_e2e::ctl(&server).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = ctl(&["instances"]);
    assert_eq!(
        table.lines().filter(|l| l.contains("Ready")).count(),
        3,
        "{table}"
    );
    for id in ["arena-s1-0", "arena-s3-0"] {
        let log = ctl(&["logs", id]);
        assert!(log.contains("arena up"), "log of {id}: {log}");
    }
    let pids: BTreeMap<String, u32> = before
        .iter()
        .map(|i| (i.id.to_string(), i.pid.unwrap()))
        .collect();

    // The platform goes away for 30 s; instances keep serving, nobody restarts them.
    platform.terminate().unwrap();
    assert!(
        platform
            .wait_exit(Duration::from_secs(20))
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    for i in &before {
        assert!(
            alive(i.pid.unwrap()),
            "{} still runs during the outage",
            i.id
        );
        assert!(ping(i.endpoint.as_deref().unwrap()).await);
    }
    let _platform = up(&store_url, &platform_data, api, admin);
    wait_for_status(&ready, 200, START).await.unwrap();
    let after = wait_all_ready(&server, 3).await;
    let pids_after: BTreeMap<String, u32> = after
        .iter()
        .map(|i| (i.id.to_string(), i.pid.unwrap()))
        .collect();
    assert_eq!(pids_after, pids, "no instance was restarted");

    // A killed agent's site turns NotReady within the lease TTL (10 s); bounded wait.
    drop(a3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(&format!("{server}/mecfed/v1/sites/s3")).await.unwrap();
        let site: serde_json::Value = serde_json::from_str(&body).unwrap();
        if site["status"] == "NotReady" {
            break;
        }
        assert!(Instant::now() < deadline, "s3 still {}", site["status"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
