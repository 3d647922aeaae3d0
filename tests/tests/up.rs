//! `mecfed up` as a real process, on the embedded store and on a real etcd.

use std::{process::Command, time::Duration};

use mecfed_e2e::{Proc, free_port, get, mecfed_bin, wait_for_status};
use mecfed_store::testing::EtcdProcess;

const START: Duration = Duration::from_secs(30);

struct Up {
    proc: Proc,
    api: String,
    admin: String,
}

fn up(extra: &[&str]) -> Up {
    let (api, admin) = (free_port(), free_port());
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("up")
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(extra)
        .env("MECFED_LOG", "info");
    Up {
        proc: Proc::spawn("mecfed up", &mut cmd).unwrap(),
        api: format!("http://127.0.0.1:{api}"),
        admin: format!("http://127.0.0.1:{admin}"),
    }
}

#[tokio::test]
async fn embedded_up_is_ready_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = up(&["--data-dir", data.to_str().unwrap()]);
    wait_for_status(&format!("{}/ready", p.admin), 200, START)
        .await
        .unwrap();
    let (status, body) = get(&format!("{}/mecfed/v1/version", p.api)).await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    let (status, _) = get(&format!("{}/live", p.admin)).await.unwrap();
    assert_eq!(status, 200);
    let (status, metrics) = get(&format!("{}/metrics", p.admin)).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mecfed_store_operation_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"));
    assert!(metrics.contains(
        r#"mecfed_api_http_requests_total{method="GET",route="/mecfed/v1/version",status="200"} 1"#
    ));
    assert!(
        data.join("state.redb").exists(),
        "embedded store in --data-dir"
    );

    p.proc.terminate().unwrap();
    let status = p.proc.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "graceful exit on SIGTERM, got {status}");

    // The same data directory opens again.
    let p = up(&["--data-dir", data.to_str().unwrap()]);
    wait_for_status(&format!("{}/ready", p.admin), 200, START)
        .await
        .unwrap();
}

#[tokio::test]
async fn etcd_up_readiness_follows_the_store() {
    let mut etcd = EtcdProcess::start().expect("a real etcd must start");
    let url = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let p = up(&["--store", &url]);
    let ready = format!("{}/ready", p.admin);
    wait_for_status(&ready, 200, START).await.unwrap();
    etcd.kill().unwrap();
    let body = wait_for_status(&ready, 503, START).await.unwrap();
    assert!(body.contains("store"), "{body}");
    etcd.restart().unwrap();
    wait_for_status(&ready, 200, START).await.unwrap();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = Command::new(mecfed_bin())
        .args(["up", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mecfed.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nadmin-port = 3\n").unwrap();
    let out = Command::new(mecfed_bin())
        .args(["up", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin-port") && err.contains("mecfed.toml"),
        "{err}"
    );

    let out = Command::new(mecfed_bin())
        .args(["up", "--config", "/nonexistent/mecfed.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mecfed.toml"));
}
