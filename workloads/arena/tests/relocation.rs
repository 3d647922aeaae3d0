//! Moving a live session between two arena processes, as the mobility service will: bulk
//! export while the game runs, freeze at a tick boundary, final delta, thaw on the target,
//! client switches. The target continues exactly where the source stopped.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket as StdUdp},
    process::{Child, Command},
    time::{Duration, Instant},
};

use arena_proto::{ClientMsg, ServerMsg, decode_server};
use tokio::net::UdpSocket;

struct Server {
    child: Child,
    game: SocketAddr,
    control: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp() -> SocketAddr {
    StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start() -> Server {
    let (game, control) = (free_udp(), free_tcp());
    let child = Command::new(env!("CARGO_BIN_EXE_arena"))
        .args(["--game-listen", &game.to_string()])
        .args(["--control-listen", &control.to_string()])
        .spawn()
        .unwrap();
    let s = Server {
        child,
        game,
        control: format!("http://{control}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/ready", s.control)).await.is_err() {
        assert!(Instant::now() < deadline, "arena did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s
}

struct Client {
    sock: UdpSocket,
    seq: u32,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    tick: u64,
    ack: u32,
    score: u32,
}

impl Client {
    async fn send(&self, to: SocketAddr, msg: ClientMsg) {
        self.sock.send_to(&msg.encode(), to).await.unwrap();
    }

    /// Sends inputs to `server` until it has acknowledged `until`; returns the last snapshot.
    async fn play(&mut self, server: SocketAddr, until: u32) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 1500];
        let mut last: Option<Seen> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "server never acknowledged input {until}"
            );
            if self.seq < until {
                self.seq += 1;
                let msg = ClientMsg::Input {
                    session: 5,
                    player: 1,
                    seq: self.seq,
                    dx: 90,
                    dy: -60,
                    buttons: u8::from(self.seq.is_multiple_of(5)),
                    client_time_us: u64::from(self.seq),
                };
                self.send(server, msg).await;
            }
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(30), self.sock.recv_from(&mut buf)).await
            {
                assert_eq!(from, server, "snapshots come from the server we play on");
                if let Ok(ServerMsg::Snapshot {
                    tick,
                    ack_seq,
                    players,
                    ..
                }) = decode_server(&buf[..n])
                {
                    let me = players
                        .iter()
                        .find(|p| p.id == 1)
                        .expect("I am in the snapshot");
                    if let Some(prev) = last {
                        assert!(tick > prev.tick, "ticks only increase");
                        assert!(ack_seq >= prev.ack, "acks only increase");
                    }
                    last = Some(Seen {
                        tick,
                        ack: ack_seq,
                        score: me.score,
                    });
                    if ack_seq >= until {
                        return last.unwrap();
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn a_live_session_moves_between_servers_without_losing_state() {
    let (a, b) = (start().await, start().await);
    let http = reqwest::Client::new();
    let mut c = Client {
        sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        seq: 0,
    };
    c.send(
        a.game,
        ClientMsg::Join {
            session: 5,
            player: 1,
        },
    )
    .await;
    let at_a = c.play(a.game, 30).await;

    // Bulk copy while the game goes on.
    let resp = http
        .get(format!("{}/sessions/5/export", a.control))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let version: u64 = resp.headers()["x-arena-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bulk = resp.bytes().await.unwrap();
    let r = http
        .put(format!("{}/sessions/5/import", b.control))
        .body(bulk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A second import of the same session is refused; a corrupted one too.
    let r = http
        .put(format!("{}/sessions/5/import", b.control))
        .body(bulk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let mut bad = bulk.to_vec();
    bad[20] ^= 0xff;
    let r = http
        .put(format!("{}/sessions/6/import", a.control))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let more_at_a = c.play(a.game, 60).await;
    assert!(more_at_a.tick > at_a.tick);

    // Freeze at a tick boundary, final delta, thaw on the target.
    let frozen: serde_json::Value = http
        .post(format!("{}/sessions/5/freeze", a.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frozen_tick = frozen["tick"].as_u64().unwrap();
    let delta = http
        .get(format!("{}/sessions/5/export?since={version}", a.control))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        delta.len() < bulk.len(),
        "delta {} < bulk {}",
        delta.len(),
        bulk.len()
    );
    let r = http
        .post(format!("{}/sessions/5/delta", b.control))
        .body(delta.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // Applying the same delta twice is a base mismatch, refused without harm.
    let r = http
        .post(format!("{}/sessions/5/delta", b.control))
        .body(delta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let thawed: serde_json::Value = http
        .post(format!("{}/sessions/5/thaw", b.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        thawed["tick"].as_u64().unwrap(),
        frozen_tick,
        "the target starts where the source froze"
    );

    // The client switches; the game continues on B from A's state.
    let at_b = c.play(b.game, 90).await;
    assert!(at_b.tick > frozen_tick);
    assert!(at_b.ack >= 90);
    assert!(
        at_b.score >= more_at_a.score,
        "no score lost: {at_b:?} after {more_at_a:?}"
    );

    let sessions: serde_json::Value = http
        .get(format!("{}/sessions", b.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions[0]["id"], 5);
    assert_eq!(sessions[0]["players"], 1);
    assert_eq!(sessions[0]["frozen"], false);
    let metrics = http
        .get(format!("{}/metrics", b.control))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("arena_sessions 1"), "{metrics}");
    let r = http
        .delete(format!("{}/sessions/5", a.control))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}
