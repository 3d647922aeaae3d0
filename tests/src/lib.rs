//! Helpers for mecfed's end-to-end tests: the `mecfed` binary, processes that die with the
//! test, free loopback ports and bounded waits on HTTP endpoints.
//!
//! Waits are bounded so a broken build fails instead of hanging; they are never assertions
//! about speed.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Builds the workspace's binaries with cargo and returns the path of `bin`.
///
/// It builds exactly what `scripts/test` builds (`--workspace --bins`), so under the test
/// script it is a no-op. Building one package alone would unify dependency features
/// differently and compile a second copy of much of the dependency tree, which costs
/// minutes and gigabytes of disk.
fn workspace_bin(bin: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--locked", "--workspace", "--bins"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of {bin} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join(bin);
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// The `mecfed` binary of this workspace, built (once per test process) so it is never stale.
pub fn mecfed_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("mecfed"))
}

/// The `arena` game server binary of this workspace.
pub fn arena_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("arena"))
}

/// A free TCP port on 127.0.0.1 (released before return; fine for tests). Never the same
/// port twice in one test process: the kernel may hand a just-released port out again.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A child process that is SIGKILLed when dropped.
///
/// The test process is made a child subreaper (`PR_SET_CHILD_SUBREAPER`) when it spawns its
/// first one, so that what a killed process started (an agent's instances, which are meant to
/// outlive their agent, each in its own process group) is adopted by the test rather than by
/// init. Dropping any `Proc` kills the adopted ones: children of the test in another process
/// group than the test's own (what the test spawns itself, etcd included, stays in its
/// group). A test leaves nothing running behind it.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    name: String,
}

fn adopt_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            panic!("cannot become a child subreaper: {e}");
        }
    });
}

/// The adopted children of this process: its children in another process group, from
/// `/proc`.
fn adopted() -> Vec<i32> {
    let me = std::process::id();
    let group = nix::unistd::getpgrp().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me)
                && f.get(2).and_then(|g| g.parse::<i32>().ok()) != Some(group)
        })
        .collect()
}

/// Kills (SIGKILL, with their process groups) and reaps every adopted child; bounded, as
/// killing one may hand us its own children.
fn reap_orphans() {
    use nix::{sys::signal, unistd::Pid};
    for _ in 0..50 {
        let orphans = adopted();
        if orphans.is_empty() {
            return;
        }
        for pid in orphans {
            let _ = signal::killpg(Pid::from_raw(pid), signal::Signal::SIGKILL);
            let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
    }
}

impl Proc {
    /// Spawns `cmd`, logging its stderr to the test's stderr.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        adopt_orphans();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().context("already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        reap_orphans();
    }
}

/// Operator credentials of the platforms a test started: server URL -> (secret file, token).
fn credentials() -> &'static std::sync::Mutex<Vec<(String, PathBuf, String)>> {
    static C: OnceLock<std::sync::Mutex<Vec<(String, PathBuf, String)>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Gets an operator access token from the platform at `server`, whose `mecfed up` keeps its
/// data in `data_dir` (where it wrote the operator's client secret). Afterwards [`get`] calls
/// to that server carry the token and [`ctl`] commands for it use the secret.
pub async fn authorize(server: &str, data_dir: &Path) -> Result<String> {
    let file = data_dir.join("operator.secret");
    let secret =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let resp = reqwest::Client::new()
        .post(format!("{server}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "operator"),
            ("client_secret", secret.trim()),
        ])
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    if !status.is_success() {
        bail!("token endpoint: {status}: {body}");
    }
    let token = body["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string();
    let mut c = credentials().lock().unwrap();
    c.retain(|(s, _, _)| s != server);
    c.push((server.to_string(), file, token.clone()));
    Ok(token)
}

/// `mecfed ctl --server <server>`, with the operator's secret of that server.
pub fn ctl(server: &str) -> Command {
    let mut cmd = Command::new(mecfed_bin());
    cmd.args(["ctl", "--server", server]);
    if let Some((_, file, _)) = credentials()
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _, _)| s == server)
    {
        cmd.env("MECFED_CLIENT_SECRET_FILE", file);
    }
    cmd
}

/// Opens developer account `id` (app provider `provider`) with `mecfed ctl developers
/// create` (after [`authorize`]) and returns an access token of the developer's own, from
/// the token endpoint with the client id and secret `ctl` printed.
pub async fn developer(server: &str, id: &str, provider: &str) -> Result<String> {
    let out = ctl(server)
        .args(["-o", "json", "developers", "create", id])
        .args(["--app-provider", provider])
        .output()?;
    if !out.status.success() {
        bail!(
            "ctl developers create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let account: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let resp = reqwest::Client::new()
        .post(format!("{server}/oauth2/token"))
        .basic_auth(
            account["clientId"].as_str().context("no clientId")?,
            account["clientSecret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("token endpoint: {}", resp.status());
    }
    let body: serde_json::Value = resp.json().await?;
    Ok(body["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string())
}

/// `mecfed up` on the embedded store in `data`, serving on loopback ports `api` and
/// `admin`; not spawned yet, so that a caller may add to it.
pub fn up_command(api: u16, admin: u16, data: &Path) -> Command {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("up")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
    cmd
}

/// `mecfed agent` for site `site` of zone `zone` with one NR cell `cell` (PLMN 272-01),
/// joining the platform on loopback port `api` with `token`, its data in `dir/<site>`; not
/// spawned yet.
pub fn cell_agent_command(
    api: u16,
    token: &str,
    site: &str,
    zone: &str,
    cell: &str,
    dir: &Path,
) -> Command {
    let mut cmd = Command::new(mecfed_bin());
    cmd.arg("agent")
        .args([
            "--site-id",
            site,
            "--operator",
            "op-a",
            "--region",
            "ireland",
        ])
        .args(["--zone", zone, "--lat", "52.0", "--lon", "-8.0"])
        .args(["--capacity", "cpu=1000m,memory=1Gi,sessions=10"])
        .args([
            "--access-kinds",
            "nr5g",
            "--access-points",
            cell,
            "--plmn",
            "272-01",
        ])
        .args(["--controller", &format!("http://127.0.0.1:{api}")])
        .args(["--join-token", token])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join(site));
    cmd
}

/// A join token from `mecfed ctl join-token create` (after [`authorize`]).
pub fn join_token(server: &str) -> Result<String> {
    let out = ctl(server).args(["join-token", "create"]).output()?;
    if !out.status.success() {
        bail!(
            "ctl join-token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// GET `url` (with the operator's token where [`authorize`] got one for its server);
/// returns status and body.
pub async fn get(url: &str) -> Result<(u16, String)> {
    let token = credentials()
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _, _)| url.starts_with(s.as_str()))
        .map(|(_, _, t)| t.clone());
    let mut req = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// A JSON request with a bearer token: status and body (`Null` when not JSON). Panics when
/// the server cannot be reached within 5 s.
pub async fn call(
    method: &str,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("an HTTP method"), url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(5));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `url` until it answers `status`, for at most `limit`.
pub async fn wait_for_status(url: &str, status: u16, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match get(url).await {
            Ok((s, body)) if s == status => return Ok(body),
            Ok((s, body)) => format!("{s}: {body}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{url} did not answer {status} within {limit:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A network namespace for one site, built by `deploy/netns-site.sh` and removed on drop.
#[derive(Debug)]
pub struct NetnsSite {
    name: String,
    index: u8,
}

impl NetnsSite {
    /// Creates namespace `name` with subnet `10.203.<index>.0/24` (host `.1`, site `.2`).
    pub fn up(name: &str, index: u8) -> Result<Self> {
        let status = Command::new(Self::script())
            .args(["up", name, &index.to_string()])
            .status()
            .context("running deploy/netns-site.sh (needs root and iproute2)")?;
        if !status.success() {
            bail!("deploy/netns-site.sh up {name} {index} failed: {status}");
        }
        Ok(Self {
            name: name.to_string(),
            index,
        })
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("deploy/netns-site.sh")
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the link.
    pub fn host_addr(&self) -> String {
        format!("10.203.{}.1", self.index)
    }

    /// The site's address inside the namespace.
    pub fn site_addr(&self) -> String {
        format!("10.203.{}.2", self.index)
    }
}

impl Drop for NetnsSite {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["down", &self.name, &self.index.to_string()])
            .status();
    }
}

/// The `arena` game server as an app: a UDP game port and an HTTP control port (readiness
/// on `/ready`), 500m of CPU, 128 MiB and 50 session slots per instance, 50 sessions each.
pub fn arena_app(
    latency_budget_ms: u32,
    demand_areas: Vec<mecfed_core::DemandArea>,
) -> mecfed_core::App {
    use mecfed_core::{
        App, AppId, AppQos, Artefact, DeveloperId, Port, Probe, Protocol, Resources,
    };
    App {
        id: AppId::new("arena").unwrap(),
        developer: DeveloperId::new("studio").unwrap(),
        name: "Arena".into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: arena_bin().to_str().unwrap().into(),
            args: [
                "--game-listen",
                "{host}:{port:game}",
                "--control-listen",
                "{host}:{port:control}",
            ]
            .map(String::from)
            .to_vec(),
            env: std::collections::BTreeMap::new(),
        },
        ports: vec![
            Port {
                name: "game".into(),
                port: 0,
                protocol: Protocol::Udp,
            },
            Port {
                name: "control".into(),
                port: 0,
                protocol: Protocol::Tcp,
            },
        ],
        resources: Resources::parse("cpu=500m,memory=128Mi,sessions=50").unwrap(),
        readiness: Some(Probe::Http {
            port: "control".into(),
            path: "/ready".into(),
        }),
        load: None,
        qos: AppQos {
            latency_budget_ms,
            five_qi: None,
            max_sessions_per_instance: 50,
            demand_areas,
        },
        stateful: true,
        zones: None,
        pins: Default::default(),
    }
}

/// One POST an [`HttpsSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its `Authorization`, if any.
    pub authorization: Option<String>,
    /// Its JSON body.
    pub body: serde_json::Value,
}

/// An `https` notification sink on 127.0.0.1 with a certificate from its own CA (whose PEM
/// file is [`HttpsSink::ca_file`]); it records every POST and answers 204.
pub struct HttpsSink {
    /// `https://127.0.0.1:<port>/events`.
    pub url: String,
    /// The CA's certificate, for `mecfed up --callback-ca`.
    pub ca_file: PathBuf,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl HttpsSink {
    /// Generates the CA and the server certificate, and starts serving.
    pub async fn start() -> Result<Self> {
        use hyper::{Request, Response, body::Incoming, service::service_fn};
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use tokio_rustls::rustls;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mecfed test sink CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?
            .signed_by(&key, &ca)?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("sink-ca.pem");
        std::fs::write(&ca_file, ca.pem())?;

        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}/events", listener.local_addr()?);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let content_type = header("content-type").unwrap_or_default();
                            let authorization = header("authorization");
                            let bytes = req.into_body().collect().await?.to_bytes();
                            let body =
                                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                            seen.lock().unwrap().push(Received {
                                content_type,
                                authorization,
                                body,
                            });
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(204)
                                    .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            ca_file,
            received,
            task,
            _dir: dir,
        })
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
