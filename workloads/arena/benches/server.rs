//! Arena server under load: `cargo bench -p arena --bench server`.
//!
//! Starts the `arena` binary pinned to CPU 0 (`taskset -c 0`) and drives N sessions of 4
//! players from this process on the other CPU: every player sends one input per tick at
//! 60 Hz and receives its snapshots. Reports the server's CPU use (from `/proc/<pid>/stat`
//! over the measured window), snapshots delivered per second against the ideal
//! (N x 4 x 60), and the server's own tick-duration histogram.
//!
//! `ARENA_BENCH_SESSIONS` (default 1000) and `ARENA_BENCH_SECS` (default 10) change the
//! load and the window.
//!
//! `ARENA_BENCH_LINK` picks the path between players and server:
//! - `veth` (default; needs root and iproute2): the server runs in its own network namespace
//!   behind a veth pair (`deploy/netns-site.sh`), as a site does.
//! - `loopback`: both on 127.0.0.1.
//!
//! Either way the kernel delivers a datagram in the sender's context: the server's CPU pays
//! the players' kernel receive path for every snapshot, and the players' CPU pays the server's
//! receive path for every input. With one input per snapshot the two roughly cancel, so the
//! server's CPU figure stands for what it would pay on its own host. (Steering the receive
//! work to the receiver's CPU, with RPS or threaded NAPI, costs an inter-processor interrupt
//! per burst; in this VM that made it slower, not more faithful.)

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::{
    net::{SocketAddr, TcpListener, UdpSocket as StdUdp},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arena_proto::{ClientMsg, ServerMsg, decode_server};

/// Client sockets; players are spread over them.
const SOCKETS: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The network namespace the server runs in (veth mode); removed on drop.
struct Netns;

const NETNS: &str = "arena-bench";
/// Subnet index for `deploy/netns-site.sh` (10.203.250.0/24).
const NETNS_INDEX: &str = "250";

fn netns_script(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/netns-site.sh");
    let ok = Command::new("bash")
        .args([script, cmd, NETNS, NETNS_INDEX])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "netns-site.sh {cmd} failed (veth mode needs root; ARENA_BENCH_LINK=loopback does not)"
    );
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{args:?} failed");
}

impl Netns {
    fn up() -> Self {
        netns_script("up");
        Self
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        netns_script("down");
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sessions = if quick {
        10
    } else {
        env_or("ARENA_BENCH_SESSIONS", 1000)
    };
    let secs = if quick {
        1
    } else {
        env_or("ARENA_BENCH_SECS", 10)
    };
    let players_per = 4u32;
    let veth = match std::env::var("ARENA_BENCH_LINK").as_deref() {
        Ok("veth") | Err(_) => true,
        Ok("loopback") => false,
        Ok(other) => panic!("ARENA_BENCH_LINK={other}: expected veth or loopback"),
    };
    // The players run on CPU 1, the server on CPU 0.
    sh(&[
        "taskset",
        "-a",
        "-p",
        "-c",
        "1",
        &std::process::id().to_string(),
    ]);
    let netns = veth.then(Netns::up);
    let (server_ip, client_ip) = if veth {
        ("10.203.250.2", "10.203.250.1")
    } else {
        ("127.0.0.1", "127.0.0.1")
    };
    // Free ports on loopback are as good as any in a fresh namespace.
    let on_server = |port: u16| -> SocketAddr { format!("{server_ip}:{port}").parse().unwrap() };
    let game = on_server(
        StdUdp::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let control = on_server(
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let bin = env!("CARGO_BIN_EXE_arena");
    let mut command = if veth {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NETNS, "taskset"]);
        c
    } else {
        Command::new("taskset")
    };
    let server = Server(
        command
            .args(["-c", "0", bin])
            .args(["--game-listen", &game.to_string()])
            .args(["--control-listen", &control.to_string()])
            .env("ARENA_LOG", "warn")
            .spawn()
            .expect("start arena under taskset"),
    );
    let pid = server.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("http://{control}/ready")).send().await.is_err() {
            assert!(Instant::now() < deadline, "arena did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let received = Arc::new(AtomicU64::new(0));
        let mut socks = Vec::new();
        for _ in 0..SOCKETS {
            let s = Arc::new(
                tokio::net::UdpSocket::bind((client_ip, 0))
                    .await
                    .unwrap(),
            );
            let r = received.clone();
            let rs = s.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok(n) = rs.recv(&mut buf).await {
                    if let Ok(ServerMsg::Snapshot { .. }) = decode_server(&buf[..n]) {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            s.connect(game).await.unwrap();
            socks.push(s);
        }
        // Everyone joins.
        let players: Vec<(u64, u32)> = (0..sessions)
            .flat_map(|s| (0..players_per).map(move |p| (s, p)))
            .collect();
        for (i, &(session, player)) in players.iter().enumerate() {
            let sock = &socks[i % SOCKETS];
            let _ = sock.send(&ClientMsg::Join { session, player }.encode()).await;
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // One input per player per tick.
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(secs + 2);
        let mut senders = Vec::new();
        for (k, sock) in socks.iter().enumerate() {
            let sock = sock.clone();
            let mine: Vec<(u64, u32)> = players.iter().copied().skip(k).step_by(SOCKETS).collect();
            let sent = sent.clone();
            senders.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1) / 60);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut seq = 0u32;
                while Instant::now() < stop {
                    tick.tick().await;
                    seq += 1;
                    for &(session, player) in &mine {
                        let msg = ClientMsg::Input {
                            session,
                            player,
                            seq,
                            dx: (seq % 200) as i8,
                            dy: 3,
                            buttons: 0,
                            client_time_us: u64::from(seq),
                        };
                        if sock.try_send(&msg.encode()).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        // Warm up, then measure a window.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, rx0, tx0, t0) = (
            cpu_ticks(pid),
            received.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu1, rx1, tx1, dt) = (
            cpu_ticks(pid),
            received.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
        );
        for s in senders {
            let _ = s.await;
        }
        let metrics = http
            .get(format!("http://{control}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let clk = 100.0; // USER_HZ on Linux
        let cpu = (cpu1 - cpu0) as f64 / clk / dt;
        let ideal = (sessions * u64::from(players_per) * 60) as f64;
        let got = (rx1 - rx0) as f64 / dt;
        let inputs = (tx1 - tx0) as f64 / dt;
        let link = if veth { "veth pair" } else { "loopback" };
        println!("## Arena server: {sessions} sessions x {players_per} players at 60 Hz, server pinned to one CPU, {link}, {secs} s window");
        println!();
        println!("| server CPU (of one core) | CPU per session | snapshots delivered/s | of ideal | inputs sent/s |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| {:.1} % | {:.1} µs/s | {:.0} | {:.1} % | {:.0} |",
            cpu * 100.0,
            cpu * 1e6 / sessions as f64,
            got,
            got / ideal * 100.0,
            inputs
        );
        println!();
        println!("Server tick duration histogram (arena_tick_duration_seconds):");
        println!();
        println!("```");
        for line in metrics.lines().filter(|l| l.starts_with("arena_tick_duration_seconds")) {
            println!("{line}");
        }
        println!("```");
    });
    drop(server);
    drop(netns);
}
