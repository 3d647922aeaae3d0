//! Test support (feature `test-util`): a real etcd server process on free loopback ports, and
//! a cluster of them ([`EtcdCluster`]).
//!
//! Tests never skip when etcd is missing: [`EtcdProcess::start`] fails loudly, and the test
//! command (`scripts/test`) installs Debian's `etcd-server`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running etcd server with its own data directory.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Option<Child>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    client_port: u16,
    peer_port: u16,
    name: String,
    /// `--initial-cluster`; this member alone when empty.
    initial_cluster: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: `$MECFED_ETCD_BIN` or `etcd` on the PATH.
pub fn etcd_binary() -> String {
    std::env::var("MECFED_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

impl EtcdProcess {
    /// Starts etcd in a fresh temporary directory and waits until it answers.
    pub fn start() -> std::io::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut p = Self {
            child: None,
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            client_port: free_port()?,
            peer_port: free_port()?,
            name: "mecfed-test".into(),
            initial_cluster: String::new(),
        };
        p.spawn()?;
        Ok(p)
    }

    /// The client endpoint, `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        self.launch()?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// Starts the process without waiting for it to serve.
    fn launch(&mut self) -> std::io::Result<()> {
        let client = self.endpoint();
        let peer = self.peer_url();
        let cluster = if self.initial_cluster.is_empty() {
            format!("{}={peer}", self.name)
        } else {
            self.initial_cluster.clone()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let child = Command::new(etcd_binary())
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start etcd ({}): {e}; install Debian's etcd-server (scripts/test does)",
                        etcd_binary()
                    ),
                )
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, limit: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        let addr = format!("127.0.0.1:{}", self.client_port);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(std::io::Error::other(format!(
                    "etcd exited with {status}; log: {}",
                    self.dir.join("etcd.log").display()
                )));
            }
            // /health answers 200 once the member has a leader and serves requests.
            if let Ok(body) = http_get(&addr, "/health")
                && body.contains("\"health\":\"true\"")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("etcd did not become healthy in time"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs etcd (no clean shutdown).
    pub fn kill(&mut self) -> std::io::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts etcd again on the same data directory and ports.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill()?;
        self.spawn()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A cluster of etcd members on loopback, each with its own data directory.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
    _tmp: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one serves (the cluster has a leader).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let dir = tmp.path().join(format!("m{i}"));
            std::fs::create_dir_all(&dir)?;
            members.push(EtcdProcess {
                child: None,
                dir,
                _tmp: None,
                client_port: free_port()?,
                peer_port: free_port()?,
                name: format!("m{i}"),
                initial_cluster: String::new(),
            });
        }
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster.clone_from(&cluster);
            m.launch()?;
        }
        for m in &mut members {
            m.wait_ready(Duration::from_secs(60))?;
        }
        Ok(Self { members, _tmp: tmp })
    }

    /// Every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// Member `i`.
    pub fn member(&mut self, i: usize) -> &mut EtcdProcess {
        &mut self.members[i]
    }

    /// Starts member `i` again after a kill, on its data directory, and waits until it
    /// serves.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        let m = &mut self.members[i];
        m.kill()?;
        m.launch()?;
        m.wait_ready(Duration::from_secs(60))
    }
}

/// A minimal HTTP/1.0 GET for readiness checks, so the harness needs no HTTP client.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(std::io::Error::other)?,
        Duration::from_millis(200),
    )?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
