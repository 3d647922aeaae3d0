//! The arena server: a UDP game loop at a fixed tick and an HTTP control interface.
//!
//! Game (UDP, [`arena_proto`]): a `Join` creates the session if needed and adds the player;
//! `Input`s queue in sequence order; every tick each session steps once and each player gets
//! a snapshot at the address it last sent from (so a client that switches server or network
//! is followed by its next datagram).
//!
//! Control (HTTP): `GET /ready`, `GET /sessions` (ids, ticks, versions, players: the load
//! signal for autoscaling), `GET /metrics`, and for relocation
//! `GET /sessions/{id}/export[?since=VERSION]`, `PUT /sessions/{id}/import`,
//! `POST /sessions/{id}/delta`, `POST /sessions/{id}/freeze`, `POST /sessions/{id}/thaw`,
//! `DELETE /sessions/{id}`. An imported session is a standby copy: it does not advance until
//! thawed, so the source's final delta still applies to it. Errors are RFC 7807 problem
//! details.

use std::{
    collections::{BTreeMap, HashMap},
    io::{IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use arena_proto::{ClientMsg, ErrorCode, PlayerView, ServerMsg, decode_client};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use nix::{
    errno::Errno,
    sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
        sockopt,
    },
};
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::{ImportError, Input, Session};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Ticks per second.
    pub tick_hz: u32,
    /// World bytes of sessions created by a join.
    pub world_bytes: usize,
    /// Most players per session.
    pub max_players: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tick_hz: 60,
            world_bytes: 16 * 1024,
            max_players: 16,
        }
    }
}

struct Room {
    session: Session,
    /// Where each player last sent from, and the newest client time it sent.
    peers: HashMap<u32, (SocketAddr, u64)>,
    /// An imported copy waiting for its final delta: not stepped until thawed, and left
    /// exactly at the source's version so that the delta applies.
    standby: bool,
}

/// Shared state of one server.
pub struct Arena {
    rooms: Mutex<BTreeMap<u64, Room>>,
    config: ServerConfig,
    metrics: Metrics,
}

#[derive(Clone)]
struct Metrics {
    sessions: IntGauge,
    players: IntGauge,
    datagrams: IntCounterVec,
    tick_seconds: Histogram,
}

impl Metrics {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        let sessions = IntGauge::new("arena_sessions", "Sessions hosted")?;
        let players = IntGauge::new("arena_players", "Players in hosted sessions")?;
        let datagrams = IntCounterVec::new(
            Opts::new("arena_datagrams_total", "Game datagrams"),
            &["direction"],
        )?;
        let tick_seconds = Histogram::with_opts(
            HistogramOpts::new("arena_tick_duration_seconds", "CPU time of one game tick").buckets(
                vec![
                    0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.016, 0.033, 0.1,
                ],
            ),
        )?;
        r.register(Box::new(sessions.clone()))?;
        r.register(Box::new(players.clone()))?;
        r.register(Box::new(datagrams.clone()))?;
        r.register(Box::new(tick_seconds.clone()))?;
        Ok(Self {
            sessions,
            players,
            datagrams,
            tick_seconds,
        })
    }
}

impl Arena {
    /// A server with metrics in `registry`.
    pub fn new(config: ServerConfig, registry: &Registry) -> prometheus::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            rooms: Mutex::new(BTreeMap::new()),
            config,
            metrics: Metrics::register(registry)?,
        }))
    }

    /// Handles one datagram; returns the immediate answer, if any.
    pub fn handle_datagram(&self, from: SocketAddr, bytes: &[u8]) -> Option<ServerMsg> {
        self.handle_in(&mut self.rooms.lock(), from, bytes)
    }

    /// Handles a batch of datagrams under one lock; returns the immediate answers.
    pub fn handle_batch<'a>(
        &self,
        batch: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    ) -> Vec<(SocketAddr, ServerMsg)> {
        let mut rooms = self.rooms.lock();
        let mut replies = Vec::new();
        let mut n = 0;
        for (from, bytes) in batch {
            n += 1;
            if let Some(r) = self.handle_in(&mut rooms, from, bytes) {
                replies.push((from, r));
            }
        }
        drop(rooms);
        self.metrics.datagrams.with_label_values(&["in"]).inc_by(n);
        replies
    }

    fn handle_in(
        &self,
        rooms: &mut BTreeMap<u64, Room>,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<ServerMsg> {
        let msg = match decode_client(bytes) {
            Ok(m) => m,
            Err(_) => {
                return Some(ServerMsg::Error {
                    session: 0,
                    code: ErrorCode::Malformed,
                });
            }
        };
        match msg {
            ClientMsg::Ping { client_time_us } => Some(ServerMsg::Pong { client_time_us }),
            ClientMsg::Join { session, player } => {
                let room = rooms.entry(session).or_insert_with(|| Room {
                    session: Session::new(session, self.config.world_bytes),
                    peers: HashMap::new(),
                    standby: false,
                });
                if room.session.player(player).is_none()
                    && room.session.players().count() >= self.config.max_players
                {
                    return Some(ServerMsg::Error {
                        session,
                        code: ErrorCode::SessionFull,
                    });
                }
                room.session.join(player);
                room.peers.insert(player, (from, 0));
                None
            }
            ClientMsg::Input {
                session,
                player,
                seq,
                dx,
                dy,
                buttons,
                client_time_us,
            } => {
                let Some(room) = rooms.get_mut(&session) else {
                    return Some(ServerMsg::Error {
                        session,
                        code: ErrorCode::UnknownSession,
                    });
                };
                if room.session.player(player).is_none() {
                    return Some(ServerMsg::Error {
                        session,
                        code: ErrorCode::UnknownPlayer,
                    });
                }
                room.session.submit(
                    player,
                    Input {
                        seq,
                        dx,
                        dy,
                        buttons,
                    },
                );
                let peer = room.peers.entry(player).or_insert((from, 0));
                peer.0 = from;
                peer.1 = peer.1.max(client_time_us);
                None
            }
            ClientMsg::Leave { session, player } => {
                if let Some(room) = rooms.get_mut(&session) {
                    room.session.leave(player);
                    room.peers.remove(&player);
                }
                None
            }
        }
    }

    /// Advances every session one tick and returns the snapshots to send.
    pub fn tick(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let timer = self.metrics.tick_seconds.start_timer();
        let mut out = Vec::new();
        let mut rooms = self.rooms.lock();
        let mut players = 0;
        for room in rooms.values_mut() {
            if room.standby || !room.session.step() {
                continue; // frozen: the client keeps its last snapshot
            }
            let views: Vec<PlayerView> = room
                .session
                .players()
                .take(arena_proto::MAX_SNAPSHOT_PLAYERS)
                .map(PlayerView::from)
                .collect();
            players += views.len();
            for p in room.session.players() {
                let Some(&(addr, echo)) = room.peers.get(&p.id) else {
                    continue; // imported player whose client has not reached us yet
                };
                let msg = ServerMsg::Snapshot {
                    session: room.session.id(),
                    tick: room.session.tick(),
                    ack_seq: p.last_seq,
                    echo_time_us: echo,
                    players: views.clone(),
                };
                if let Ok(bytes) = msg.encode() {
                    out.push((addr, bytes));
                }
            }
        }
        self.metrics.sessions.set(rooms.len() as i64);
        self.metrics.players.set(players as i64);
        drop(rooms);
        timer.observe_duration();
        out
    }
}

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Socket buffer size asked for (the kernel may cap it).
const SOCKET_BUFFER: usize = 8 << 20;

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Runs the game loop on `socket`, on the calling thread, forever (or until an IO error).
///
/// One thread owns the socket: it receives in batches (`recvmmsg`, up to [`BATCH`] datagrams
/// per system call, waiting at most until the next tick), ticks on time, and sends the
/// tick's snapshots in batches (`sendmmsg`). Per-datagram system calls and runtime wake-ups
/// were what starved the game loop.
pub fn run_game(arena: Arc<Arena>, socket: std::net::UdpSocket) -> std::io::Result<()> {
    let fd = socket.as_raw_fd();
    for opt in [true, false] {
        let r = if opt {
            setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER)
        } else {
            setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not enlarge the socket buffer");
        }
    }
    let period = Duration::from_secs(1) / arena.config.tick_hz.max(1);
    let mut next_tick = Instant::now() + period;
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut bufs = vec![[0u8; 1500]; BATCH];
    let out_counter = arena.metrics.datagrams.with_label_values(&["out"]);
    let dropped = arena.metrics.datagrams.with_label_values(&["dropped"]);
    let mut send = |batch: &[(SocketAddr, Vec<u8>)]| {
        for chunk in batch.chunks(BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|(a, _)| Some(SockaddrStorage::from(*a)))
                .collect();
            let sent = sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &addrs,
                [] as [ControlMessage<'_>; 0],
                MsgFlags::MSG_DONTWAIT,
            )
            .map_or(0, Iterator::count);
            out_counter.inc_by(sent as u64);
            // A full buffer drops the rest: a late snapshot is worthless next tick.
            dropped.inc_by((chunk.len() - sent) as u64);
        }
    };
    loop {
        let now = Instant::now();
        if now + Duration::from_micros(50) >= next_tick {
            let out = arena.tick();
            send(&out);
            next_tick += period;
            if next_tick < now {
                next_tick = now + period; // we fell behind: skip, never burst
            }
            continue;
        }
        socket.set_read_timeout(Some(next_tick - now))?;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let received: Vec<(SocketAddr, Vec<u8>)> = match recvmmsg(
            fd,
            &mut recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(msgs) => msgs
                .filter_map(|m| {
                    let from = m.address.as_ref().and_then(to_socket_addr)?;
                    let bytes = m.iovs().next()?;
                    Some((from, bytes[..m.bytes.min(bytes.len())].to_vec()))
                })
                .collect(),
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            // ICMP errors from earlier sends surface here on Linux; keep going.
            Err(Errno::ECONNREFUSED) => continue,
            Err(e) => return Err(e.into()),
        };
        let replies = arena.handle_batch(received.iter().map(|(a, b)| (*a, b.as_slice())));
        let replies: Vec<(SocketAddr, Vec<u8>)> = replies
            .into_iter()
            .filter_map(|(a, m)| m.encode().ok().map(|b| (a, b)))
            .collect();
        send(&replies);
    }
}

// === control ===

#[derive(Clone)]
struct Ctl {
    arena: Arc<Arena>,
    registry: Registry,
}

/// One session in `GET /sessions`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Session id.
    pub id: u64,
    /// Tick.
    pub tick: u64,
    /// Version (for deltas).
    pub version: u64,
    /// Players.
    pub players: usize,
    /// Frozen.
    pub frozen: bool,
}

#[derive(Deserialize)]
struct ExportQuery {
    since: Option<u64>,
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(id: u64) -> Response {
    problem(StatusCode::NOT_FOUND, format!("no session {id} here"))
}

fn import_problem(e: &ImportError) -> Response {
    let status = match e {
        ImportError::BaseMismatch { .. } | ImportError::WrongSession { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    problem(status, e.to_string())
}

/// The control router.
pub fn control_router(arena: Arc<Arena>, registry: Registry) -> Router {
    Router::new()
        .route("/ready", get(|| async { "ok\n" }))
        .route("/sessions", get(list))
        .route("/metrics", get(metrics))
        .route("/sessions/{id}", axum::routing::delete(remove))
        .route("/sessions/{id}/export", get(export))
        .route("/sessions/{id}/import", put(import))
        .route("/sessions/{id}/delta", post(delta))
        .route("/sessions/{id}/freeze", post(freeze))
        .route("/sessions/{id}/thaw", post(thaw))
        .with_state(Ctl { arena, registry })
}

async fn list(State(c): State<Ctl>) -> Json<Vec<SessionInfo>> {
    let rooms = c.arena.rooms.lock();
    Json(
        rooms
            .values()
            .map(|r| SessionInfo {
                id: r.session.id(),
                tick: r.session.tick(),
                version: r.session.version(),
                players: r.session.players().count(),
                frozen: r.session.is_frozen() || r.standby,
            })
            .collect(),
    )
}

async fn metrics(State(c): State<Ctl>) -> Response {
    match prometheus::TextEncoder::new().encode_to_string(&c.registry.gather()) {
        Ok(text) => text.into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn export(
    State(c): State<Ctl>,
    Path(id): Path<u64>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let rooms = c.arena.rooms.lock();
    let Some(room) = rooms.get(&id) else {
        return not_found(id);
    };
    let bytes = match q.since {
        Some(v) => room.session.export_delta(v),
        None => room.session.export(),
    };
    let version = room.session.version().to_string();
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static("x-arena-version"), version),
        ],
        bytes,
    )
        .into_response()
}

async fn import(State(c): State<Ctl>, Path(id): Path<u64>, body: Bytes) -> Response {
    let session = match Session::import(&body) {
        Ok(s) => s,
        Err(e) => return import_problem(&e),
    };
    if session.id() != id {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("snapshot is of session {}, not {id}", session.id()),
        );
    }
    let mut rooms = c.arena.rooms.lock();
    if rooms.contains_key(&id) {
        return problem(
            StatusCode::CONFLICT,
            format!("session {id} already runs here"),
        );
    }
    let version = session.version();
    rooms.insert(
        id,
        Room {
            session,
            peers: HashMap::new(),
            standby: true,
        },
    );
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "version": version })),
    )
        .into_response()
}

async fn delta(State(c): State<Ctl>, Path(id): Path<u64>, body: Bytes) -> Response {
    let mut rooms = c.arena.rooms.lock();
    let Some(room) = rooms.get_mut(&id) else {
        return not_found(id);
    };
    match room.session.apply_delta(&body) {
        Ok(()) => Json(serde_json::json!({ "version": room.session.version() })).into_response(),
        Err(e) => import_problem(&e),
    }
}

async fn freeze(State(c): State<Ctl>, Path(id): Path<u64>) -> Response {
    set_frozen(&c, id, true)
}

async fn thaw(State(c): State<Ctl>, Path(id): Path<u64>) -> Response {
    set_frozen(&c, id, false)
}

fn set_frozen(c: &Ctl, id: u64, frozen: bool) -> Response {
    let mut rooms = c.arena.rooms.lock();
    let Some(room) = rooms.get_mut(&id) else {
        return not_found(id);
    };
    if frozen {
        room.session.freeze();
    } else {
        room.standby = false;
        room.session.thaw();
    }
    Json(serde_json::json!({
        "version": room.session.version(),
        "tick": room.session.tick(),
    }))
    .into_response()
}

async fn remove(State(c): State<Ctl>, Path(id): Path<u64>) -> StatusCode {
    c.arena.rooms.lock().remove(&id);
    StatusCode::NO_CONTENT
}
