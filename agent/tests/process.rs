//! The process shell with real processes.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use mecfed_agent::{
    limits::Limits,
    process::{InstanceHandle, InstanceStatus, ProcessConfig, start},
    supervise::{InstanceSpec, Probe, SuperviseConfig},
};
use mecfed_core::{AppId, InstanceId, InstanceState, Port, Protocol, Resources};

/// Bounds every wait, so a broken shell fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

fn spec(id: &str, command: &str, args: &[&str]) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).unwrap(),
        app: AppId::new("test").unwrap(),
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        ports: vec![],
        probe: None,
        resources: Resources::ZERO,
        load: None,
    }
}

fn config(dir: &std::path::Path) -> ProcessConfig {
    ProcessConfig {
        log_dir: dir.to_path_buf(),
        log_cap: 1 << 20,
        advertise: Ipv4Addr::LOCALHOST,
        supervise: SuperviseConfig {
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            stable_after: Duration::from_secs(60),
            grace: Duration::from_millis(300),
        },
        limits: std::sync::Arc::new(Limits::None {
            reason: "not under test here".into(),
        }),
    }
}

async fn wait_for(
    h: &mut InstanceHandle,
    what: &str,
    f: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    tokio::time::timeout(WAIT, async {
        loop {
            let s = h.status.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
            h.status.changed().await.expect("instance task alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("instance never became {what}: {:?}", h.status.borrow()))
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

async fn wait_dead(pid: u32) {
    tokio::time::timeout(WAIT, async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("process gone");
}

#[tokio::test]
async fn runs_with_allocated_ports_logs_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        "i1",
        "sh",
        &["-c", "echo hello $PORT_GAME {port:game}; exec sleep 30"],
    );
    s.ports = vec![Port {
        name: "game".into(),
        port: 0,
        protocol: Protocol::Udp,
    }];
    let mut h = start(s, config(dir.path())).unwrap();
    let st = wait_for(&mut h, "ready", |s| s.state == InstanceState::Ready).await;
    let pid = st.pid.unwrap();
    let port = st.ports["game"];
    assert_eq!(st.endpoint, Some(format!("127.0.0.1:{port}")));
    let log = dir.path().join("i1.log");
    tokio::time::timeout(WAIT, async {
        loop {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("hello {port} {port}"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("output reaches the log");
    assert!(alive(pid));
    h.stop().await;
    wait_dead(pid).await;
}

#[tokio::test]
async fn crash_loops_back_off_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(spec("i2", "sh", &["-c", "exit 3"]), config(dir.path())).unwrap();
    let st = wait_for(&mut h, "restarted three times", |s| s.restarts >= 3).await;
    assert!(st.restarts >= 3);
    h.stop().await;
    let mut h = start(spec("i3", "/nonexistent/binary", &[]), config(dir.path())).unwrap();
    let st = wait_for(&mut h, "failed", |s| s.state == InstanceState::Failed).await;
    assert!(st.pid.is_none());
    h.stop().await;
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        "i4",
        "sh",
        // A wrapper that ignores SIGTERM and has a child of its own: both must go.
        &[
            "-c",
            "trap '' TERM; sleep 300 & while true; do sleep 0.05; done",
        ],
    );
    let mut h = start(s, config(dir.path())).unwrap();
    let pid = wait_for(&mut h, "ready", |s| s.state == InstanceState::Ready)
        .await
        .pid
        .unwrap();
    // Give the shell time to install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.stop().await;
    wait_dead(pid).await;
    // Nothing of the group survives (the background `sleep 300` included).
    tokio::time::timeout(WAIT, async {
        while nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), None).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no process of the instance's group survives");
}

#[tokio::test]
async fn readiness_follows_the_http_probe() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        "i5",
        "python3",
        &["-m", "http.server", "{port:http}", "--bind", "127.0.0.1"],
    );
    s.ports = vec![Port {
        name: "http".into(),
        port: 0,
        protocol: Protocol::Tcp,
    }];
    s.probe = Some(Probe::Http {
        port: "http".into(),
        path: "/".into(),
    });
    let mut h = start(s, config(dir.path())).unwrap();
    let st = wait_for(&mut h, "ready", |s| s.state == InstanceState::Ready).await;
    let port = st.ports["http"];
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    h.stop().await;
}

#[tokio::test]
async fn memory_and_cpu_limits_are_enforced_with_the_hosts_cgroups() {
    use mecfed_core::LimitEnforcement;
    let group = format!("test-{}", std::process::id());
    let limits = Limits::detect(&group);
    // This machine kind mounts cgroup v1 cpu and memory, writable as root (scripts/test
    // runs as root); a host without them must report Unenforced, which the unit tests cover.
    assert_ne!(
        limits.enforcement(),
        LimitEnforcement::Unenforced,
        "{limits:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits = std::sync::Arc::new(limits.clone());
    // Waits until it has been moved into its cgroup, then allocates four times its limit.
    let script = "import time\n\
                  while 'mecfed' not in open('/proc/self/cgroup').read(): time.sleep(0.01)\n\
                  b = bytearray(256 * 1024 * 1024)\n\
                  time.sleep(30)\n";
    let mut s = spec("hog", "python3", &["-c", script]);
    s.resources = Resources::parse("cpu=200m,memory=64Mi").unwrap();
    let mut h = start(s, cfg).unwrap();
    let pid = wait_for(&mut h, "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    let cgroup_dirs = limits.dirs("hog");
    let quota_file = cgroup_dirs
        .iter()
        .map(|d| d.join("cpu.cfs_quota_us"))
        .chain(cgroup_dirs.iter().map(|d| d.join("cpu.max")))
        .find(|p| p.exists())
        .expect("a CPU limit file");
    let quota = std::fs::read_to_string(&quota_file).unwrap();
    assert!(quota.trim().starts_with("20000"), "{quota}");
    // The kernel kills it for exceeding memory, and the supervisor restarts it.
    let st = wait_for(&mut h, "OOM-killed and restarted", |s| s.restarts >= 1).await;
    assert!(st.restarts >= 1);
    assert!(!alive(pid) || st.pid != Some(pid));
    h.stop().await;
    for d in &cgroup_dirs {
        assert!(!d.exists(), "{} removed after stop", d.display());
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
}
