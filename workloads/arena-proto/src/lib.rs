//! The arena wire protocol: one message per UDP datagram, little-endian.
//!
//! ```text
//! magic u16 = 0xA7E1 | version u8 = 1 | type u8 | body
//! ```
//!
//! Clients send [`ClientMsg`] (join, input, leave, ping); the server sends [`ServerMsg`]
//! (a snapshot per player per tick, pong, error). Snapshots echo the newest client timestamp
//! the server has seen from that player, so the client measures its round trip from the
//! game stream itself. [`decode_client`] and [`decode_server`] never panic: malformed
//! datagrams are a [`DecodeError`].
//!
//! Architecture Invariant: no IO; this crate only turns messages into bytes and back.

use thiserror::Error;

/// First two bytes of every datagram.
pub const MAGIC: u16 = 0xA7E1;
/// Protocol version.
pub const VERSION: u8 = 1;
/// Largest datagram either side sends (fits any path MTU of the edge).
pub const MAX_DATAGRAM: usize = 1200;
/// Most players one snapshot carries.
pub const MAX_SNAPSHOT_PLAYERS: usize = (MAX_DATAGRAM - 40) / 24;

const T_JOIN: u8 = 1;
const T_INPUT: u8 = 2;
const T_LEAVE: u8 = 3;
const T_PING: u8 = 4;
const T_SNAPSHOT: u8 = 16;
const T_PONG: u8 = 17;
const T_ERROR: u8 = 18;

/// From a client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Join `player` to `session`.
    Join {
        /// Session (room).
        session: u64,
        /// Player id.
        player: u32,
    },
    /// One input.
    Input {
        /// Session.
        session: u64,
        /// Player.
        player: u32,
        /// Input sequence number.
        seq: u32,
        /// Steering x.
        dx: i8,
        /// Steering y.
        dy: i8,
        /// Buttons.
        buttons: u8,
        /// Client clock when sent, µs; echoed in snapshots.
        client_time_us: u64,
    },
    /// Leave the session.
    Leave {
        /// Session.
        session: u64,
        /// Player.
        player: u32,
    },
    /// Round-trip probe.
    Ping {
        /// Client clock, µs; echoed in the pong.
        client_time_us: u64,
    },
}

/// One player in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerView {
    /// Player id.
    pub id: u32,
    /// Position, mm.
    pub x: i32,
    /// Position, mm.
    pub y: i32,
    /// Velocity, mm/tick.
    pub vx: i32,
    /// Velocity, mm/tick.
    pub vy: i32,
    /// Score.
    pub score: u32,
}

/// Why the server refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No such session here (it may have moved).
    UnknownSession,
    /// The player has not joined.
    UnknownPlayer,
    /// The session is full.
    SessionFull,
    /// The datagram did not decode.
    Malformed,
    /// A code this build does not know.
    Other(u8),
}

impl ErrorCode {
    fn to_u8(self) -> u8 {
        match self {
            Self::UnknownSession => 1,
            Self::UnknownPlayer => 2,
            Self::SessionFull => 3,
            Self::Malformed => 4,
            Self::Other(c) => c,
        }
    }

    fn from_u8(c: u8) -> Self {
        match c {
            1 => Self::UnknownSession,
            2 => Self::UnknownPlayer,
            3 => Self::SessionFull,
            4 => Self::Malformed,
            c => Self::Other(c),
        }
    }
}

/// From the server to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The game state after a tick.
    Snapshot {
        /// Session.
        session: u64,
        /// Tick.
        tick: u64,
        /// Last input sequence applied for the receiving player.
        ack_seq: u32,
        /// Newest client timestamp received from the receiving player.
        echo_time_us: u64,
        /// Players (at most [`MAX_SNAPSHOT_PLAYERS`]).
        players: Vec<PlayerView>,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's client timestamp.
        client_time_us: u64,
    },
    /// A refusal.
    Error {
        /// Session it concerns (0 when none).
        session: u64,
        /// Why.
        code: ErrorCode,
    },
}

/// Why a datagram did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not an arena datagram.
    #[error("bad magic")]
    BadMagic,
    /// Another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// Too short, too long or inconsistent.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
}

/// A message too large for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("message needs {0} bytes, more than one datagram ({MAX_DATAGRAM})")]
pub struct TooLarge(pub usize);

struct W(Vec<u8>);

impl W {
    fn new(t: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.push(VERSION);
        v.push(t);
        Self(v)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.0.len() < N {
            return Err(DecodeError::Malformed("too short"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("trailing bytes"))
        }
    }
}

fn header(b: &[u8]) -> Result<(u8, R<'_>), DecodeError> {
    if b.len() > MAX_DATAGRAM {
        return Err(DecodeError::Malformed("larger than a datagram"));
    }
    let mut r = R(b);
    if r.u16().map_err(|_| DecodeError::BadMagic)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let v = r.u8()?;
    if v != VERSION {
        return Err(DecodeError::Version(v));
    }
    let t = r.u8()?;
    Ok((t, r))
}

impl ClientMsg {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Self::Join { session, player } => W::new(T_JOIN).u64(session).u32(player).0.clone(),
            Self::Input {
                session,
                player,
                seq,
                dx,
                dy,
                buttons,
                client_time_us,
            } => W::new(T_INPUT)
                .u64(session)
                .u32(player)
                .u32(seq)
                .u8(dx as u8)
                .u8(dy as u8)
                .u8(buttons)
                .u64(client_time_us)
                .0
                .clone(),
            Self::Leave { session, player } => W::new(T_LEAVE).u64(session).u32(player).0.clone(),
            Self::Ping { client_time_us } => W::new(T_PING).u64(client_time_us).0.clone(),
        }
    }
}

/// Decodes a client datagram.
pub fn decode_client(b: &[u8]) -> Result<ClientMsg, DecodeError> {
    let (t, mut r) = header(b)?;
    let msg = match t {
        T_JOIN => ClientMsg::Join {
            session: r.u64()?,
            player: r.u32()?,
        },
        T_INPUT => ClientMsg::Input {
            session: r.u64()?,
            player: r.u32()?,
            seq: r.u32()?,
            dx: r.u8()? as i8,
            dy: r.u8()? as i8,
            buttons: r.u8()?,
            client_time_us: r.u64()?,
        },
        T_LEAVE => ClientMsg::Leave {
            session: r.u64()?,
            player: r.u32()?,
        },
        T_PING => ClientMsg::Ping {
            client_time_us: r.u64()?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    r.end()?;
    Ok(msg)
}

impl ServerMsg {
    /// The datagram; a snapshot with more than [`MAX_SNAPSHOT_PLAYERS`] players is refused.
    pub fn encode(&self) -> Result<Vec<u8>, TooLarge> {
        let bytes = match self {
            Self::Snapshot {
                session,
                tick,
                ack_seq,
                echo_time_us,
                players,
            } => {
                if players.len() > MAX_SNAPSHOT_PLAYERS {
                    return Err(TooLarge(36 + players.len() * 24));
                }
                let mut w = W::new(T_SNAPSHOT);
                w.u64(*session)
                    .u64(*tick)
                    .u32(*ack_seq)
                    .u64(*echo_time_us)
                    .u16(players.len() as u16);
                for p in players {
                    w.u32(p.id)
                        .i32(p.x)
                        .i32(p.y)
                        .i32(p.vx)
                        .i32(p.vy)
                        .u32(p.score);
                }
                w.0
            }
            Self::Pong { client_time_us } => W::new(T_PONG).u64(*client_time_us).0.clone(),
            Self::Error { session, code } => {
                W::new(T_ERROR).u64(*session).u8(code.to_u8()).0.clone()
            }
        };
        Ok(bytes)
    }
}

/// Decodes a server datagram.
pub fn decode_server(b: &[u8]) -> Result<ServerMsg, DecodeError> {
    let (t, mut r) = header(b)?;
    let msg = match t {
        T_SNAPSHOT => {
            let session = r.u64()?;
            let tick = r.u64()?;
            let ack_seq = r.u32()?;
            let echo_time_us = r.u64()?;
            let n = r.u16()? as usize;
            if n > MAX_SNAPSHOT_PLAYERS {
                return Err(DecodeError::Malformed("too many players"));
            }
            let mut players = Vec::with_capacity(n);
            for _ in 0..n {
                players.push(PlayerView {
                    id: r.u32()?,
                    x: r.i32()?,
                    y: r.i32()?,
                    vx: r.i32()?,
                    vy: r.i32()?,
                    score: r.u32()?,
                });
            }
            ServerMsg::Snapshot {
                session,
                tick,
                ack_seq,
                echo_time_us,
                players,
            }
        }
        T_PONG => ServerMsg::Pong {
            client_time_us: r.u64()?,
        },
        T_ERROR => ServerMsg::Error {
            session: r.u64()?,
            code: ErrorCode::from_u8(r.u8()?),
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    r.end()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (any::<u64>(), any::<u32>())
                .prop_map(|(session, player)| ClientMsg::Join { session, player }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<i8>(),
                any::<i8>(),
                any::<u8>(),
                any::<u64>()
            )
                .prop_map(|(session, player, seq, dx, dy, buttons, client_time_us)| {
                    ClientMsg::Input {
                        session,
                        player,
                        seq,
                        dx,
                        dy,
                        buttons,
                        client_time_us,
                    }
                }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(session, player)| ClientMsg::Leave { session, player }),
            any::<u64>().prop_map(|client_time_us| ClientMsg::Ping { client_time_us }),
        ]
    }

    fn player() -> impl Strategy<Value = PlayerView> {
        (
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<u32>(),
        )
            .prop_map(|(id, x, y, vx, vy, score)| PlayerView {
                id,
                x,
                y,
                vx,
                vy,
                score,
            })
    }

    fn server_msg() -> impl Strategy<Value = ServerMsg> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                prop::collection::vec(player(), 0..=MAX_SNAPSHOT_PLAYERS)
            )
                .prop_map(|(session, tick, ack_seq, echo_time_us, players)| {
                    ServerMsg::Snapshot {
                        session,
                        tick,
                        ack_seq,
                        echo_time_us,
                        players,
                    }
                }),
            any::<u64>().prop_map(|client_time_us| ServerMsg::Pong { client_time_us }),
            (any::<u64>(), any::<u8>()).prop_map(|(session, c)| ServerMsg::Error {
                session,
                code: ErrorCode::from_u8(c)
            }),
        ]
    }

    proptest! {
        #[test]
        fn client_round_trip(m in client_msg()) {
            prop_assert_eq!(decode_client(&m.encode()), Ok(m));
        }

        #[test]
        fn server_round_trip(m in server_msg()) {
            let bytes = m.encode().unwrap();
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(decode_server(&bytes), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..1500)) {
            let _ = decode_client(&b);
            let _ = decode_server(&b);
        }

        #[test]
        fn truncation_is_an_error(m in server_msg(), cut in any::<prop::sample::Index>()) {
            let bytes = m.encode().unwrap();
            let n = cut.index(bytes.len());
            prop_assert!(decode_server(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn refuses_foreign_and_future_datagrams() {
        let mut b = ClientMsg::Ping { client_time_us: 1 }.encode();
        assert_eq!(decode_client(&b[..1]), Err(DecodeError::BadMagic));
        b[2] = 9;
        assert_eq!(decode_client(&b), Err(DecodeError::Version(9)));
        b[2] = VERSION;
        b[3] = 99;
        assert_eq!(decode_client(&b), Err(DecodeError::UnknownType(99)));
        let mut b = ClientMsg::Ping { client_time_us: 1 }.encode();
        b.push(0);
        assert_eq!(
            decode_client(&b),
            Err(DecodeError::Malformed("trailing bytes"))
        );
        let too_many = ServerMsg::Snapshot {
            session: 1,
            tick: 1,
            ack_seq: 0,
            echo_time_us: 0,
            players: vec![
                PlayerView {
                    id: 0,
                    x: 0,
                    y: 0,
                    vx: 0,
                    vy: 0,
                    score: 0
                };
                MAX_SNAPSHOT_PLAYERS + 1
            ],
        };
        assert!(too_many.encode().is_err());
    }
}
