//! The process shell around [`Supervised`]: one task per instance that spawns the process,
//! pumps its output into a size-capped log, probes readiness, sends signals and publishes the
//! instance's status.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use mecfed_core::{InstanceState, Protocol};
use nix::{sys::signal, unistd::Pid};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
    sync::{mpsc, watch},
};

use crate::supervise::{Effect, InstanceSpec, Probe, Signal, SuperviseConfig, Supervised};

/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Timeout of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// Where an instance's files go and how large its log may grow.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Directory of log files (`<instance>.log`, rotated once to `<instance>.log.1`).
    pub log_dir: PathBuf,
    /// Size at which the log rotates.
    pub log_cap: u64,
    /// Address UEs and probes reach instances on.
    pub advertise: Ipv4Addr,
    /// Restart and stop timing.
    pub supervise: SuperviseConfig,
    /// How CPU and memory limits are applied.
    pub limits: std::sync::Arc<crate::limits::Limits>,
}

/// What an instance looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Lifecycle state.
    pub state: InstanceState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// `host:port` of the first port.
    pub endpoint: Option<String>,
    /// Allocated ports by name.
    pub ports: BTreeMap<String, u16>,
    /// Consecutive failed runs.
    pub restarts: u32,
}

/// Handle to a running instance task.
#[derive(Debug)]
pub struct InstanceHandle {
    stop: mpsc::Sender<()>,
    /// Status updates.
    pub status: watch::Receiver<InstanceStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl InstanceHandle {
    /// Asks the instance to stop (SIGTERM, then SIGKILL after the grace period) and waits
    /// until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(()).await;
        let _ = self.task.await;
    }
}

/// Allocates one free port per declared port (bind to 0, read, release).
fn allocate_ports(spec: &InstanceSpec, host: Ipv4Addr) -> std::io::Result<BTreeMap<String, u16>> {
    let mut ports = BTreeMap::new();
    for p in &spec.ports {
        let port = if p.port != 0 {
            p.port
        } else {
            match p.protocol {
                Protocol::Tcp => TcpListener::bind((host, 0))?.local_addr()?.port(),
                Protocol::Udp => UdpSocket::bind((host, 0))?.local_addr()?.port(),
            }
        };
        ports.insert(p.name.clone(), port);
    }
    Ok(ports)
}

fn expand(arg: &str, ports: &BTreeMap<String, u16>, host: Ipv4Addr) -> String {
    let mut out = arg.replace("{host}", &host.to_string());
    for (name, port) in ports {
        out = out.replace(&format!("{{port:{name}}}"), &port.to_string());
    }
    out
}

/// Starts supervising `spec`.
pub fn start(spec: InstanceSpec, config: ProcessConfig) -> std::io::Result<InstanceHandle> {
    std::fs::create_dir_all(&config.log_dir)?;
    let ports = allocate_ports(&spec, config.advertise)?;
    let endpoint = spec
        .ports
        .first()
        .and_then(|p| ports.get(&p.name))
        .map(|port| format!("{}:{port}", config.advertise));
    let (stop_tx, stop_rx) = mpsc::channel(1);
    let (status_tx, status_rx) = watch::channel(InstanceStatus {
        state: InstanceState::Pending,
        pid: None,
        endpoint: endpoint.clone(),
        ports: ports.clone(),
        restarts: 0,
    });
    let task = tokio::spawn(run(spec, config, ports, endpoint, stop_rx, status_tx));
    Ok(InstanceHandle {
        stop: stop_tx,
        status: status_rx,
        task,
    })
}

async fn run(
    spec: InstanceSpec,
    config: ProcessConfig,
    ports: BTreeMap<String, u16>,
    endpoint: Option<String>,
    mut stop_rx: mpsc::Receiver<()>,
    status_tx: watch::Sender<InstanceStatus>,
) {
    let log = config.log_dir.join(format!("{}.log", spec.id));
    let mut sup = Supervised::new(config.supervise, Instant::now());
    let mut child: Option<Child> = None;
    let mut stopping = false;
    let mut probe_tick = tokio::time::interval(PROBE_EVERY);
    loop {
        while let Some(effect) = sup.poll_effect() {
            match effect {
                Effect::Spawn => match spawn(&spec, &ports, config.advertise, &log, config.log_cap)
                {
                    Ok(c) => {
                        let pid = c.id().unwrap_or(0);
                        tracing::info!(instance = %spec.id, pid, "started");
                        if let Err(e) = config.limits.apply(spec.id.as_str(), pid, &spec.resources)
                        {
                            tracing::warn!(instance = %spec.id, error = %e, "cannot apply limits");
                        }
                        sup.handle_spawned(Instant::now(), pid);
                        if spec.probe.is_none() {
                            sup.handle_probe(true);
                        }
                        child = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(instance = %spec.id, error = %e, "cannot start");
                        sup.handle_spawn_failed(Instant::now());
                    }
                },
                Effect::Signal(pid, sig) => {
                    let sig = match sig {
                        Signal::Term => signal::Signal::SIGTERM,
                        Signal::Kill => signal::Signal::SIGKILL,
                    };
                    if let Ok(pid) = i32::try_from(pid) {
                        // The whole group (negative pid): wrappers and their children alike.
                        let _ = signal::kill(Pid::from_raw(-pid), sig);
                    }
                }
            }
        }
        let status = InstanceStatus {
            state: sup.state(),
            pid: sup.pid(),
            endpoint: endpoint.clone(),
            ports: ports.clone(),
            restarts: sup.restarts(),
        };
        status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
        if sup.is_stopped() {
            config.limits.remove(spec.id.as_str());
            return;
        }
        let deadline = sup.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                sup.handle_timeout(Instant::now());
            }
            exit = async { child.as_mut().expect("guarded").wait().await }, if child.is_some() => {
                let pid = sup.pid().unwrap_or(0);
                tracing::info!(instance = %spec.id, pid, status = ?exit.ok(), "exited");
                child = None;
                sup.handle_exit(Instant::now(), pid);
                if stopping {
                    sup.stop(Instant::now());
                }
            }
            cmd = stop_rx.recv(), if !stopping => {
                // A dropped handle stops the instance too.
                let _ = cmd;
                stopping = true;
                sup.stop(Instant::now());
            }
            _ = probe_tick.tick(), if child.is_some() && spec.probe.is_some() => {
                let ok = probe(spec.probe.as_ref().expect("guarded"), &ports, config.advertise).await;
                sup.handle_probe(ok);
            }
        }
    }
}

fn spawn(
    spec: &InstanceSpec,
    ports: &BTreeMap<String, u16>,
    host: Ipv4Addr,
    log: &Path,
    cap: u64,
) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(spec.args.iter().map(|a| expand(a, ports, host)))
        .envs(&spec.env)
        .envs(
            ports
                .iter()
                .map(|(n, p)| (format!("PORT_{}", n.to_uppercase()), p.to_string())),
        )
        .env("MECFED_INSTANCE_ID", spec.id.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        // Its own process group, so that signals reach everything it started.
        .process_group(0);
    let mut child = cmd.spawn()?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, tx));
    }
    tokio::spawn(write_log(log.to_path_buf(), cap, rx));
    Ok(child)
}

async fn pump(mut r: impl AsyncRead + Unpin, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
            return;
        }
    }
}

/// Appends output to `path`, rotating to `path.1` when it passes `cap` bytes.
async fn write_log(path: PathBuf, cap: u64, mut rx: mpsc::Receiver<Vec<u8>>) {
    let open = |p: &Path| {
        let p = p.to_path_buf();
        async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .await
        }
    };
    let Ok(mut file) = open(&path).await else {
        return;
    };
    let mut size = file.metadata().await.map_or(0, |m| m.len());
    while let Some(chunk) = rx.recv().await {
        if size + chunk.len() as u64 > cap && size > 0 {
            let _ = file.flush().await;
            let _ = tokio::fs::rename(&path, path.with_extension("log.1")).await;
            match open(&path).await {
                Ok(f) => file = f,
                Err(_) => return,
            }
            size = 0;
        }
        if file.write_all(&chunk).await.is_err() {
            return;
        }
        size += chunk.len() as u64;
    }
}

async fn probe(p: &Probe, ports: &BTreeMap<String, u16>, host: Ipv4Addr) -> bool {
    let addr = |name: &str| ports.get(name).map(|port| SocketAddr::from((host, *port)));
    let attempt = async {
        match p {
            Probe::Tcp { port } => match addr(port) {
                Some(a) => tokio::net::TcpStream::connect(a).await.is_ok(),
                None => false,
            },
            Probe::Http { port, path } => match addr(port) {
                Some(a) => reqwest::Client::new()
                    .get(format!("http://{a}{path}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => false,
            },
            Probe::UdpEcho { port } => match addr(port) {
                Some(a) => udp_echo(a).await,
                None => false,
            },
            // The platform waits for the instance's own confirmation; running is all the
            // agent can tell.
            Probe::MecConfirmReady => true,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or(false)
}

async fn udp_echo(a: SocketAddr) -> bool {
    let Ok(sock) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
        return false;
    };
    if sock.send_to(b"mecfed-probe", a).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    sock.recv_from(&mut buf).await.is_ok()
}
