//! Session snapshots: full exports, deltas since a version, and their import.
//!
//! Layout (little-endian), followed by a CRC-32 of everything before it:
//!
//! ```text
//! "ARNA" | format u16 | kind u8 (0 full, 1 delta) | session u64 | tick u64 | version u64
//! | base_version u64 (delta: the version it applies to; full: 0) | frozen u8 | world_len u32
//! | players: n u32, then n × (id u32, x i32, y i32, vx i32, vy i32, score u32,
//!                             last_seq u32, modified_at u64)        (delta: changed only)
//! | ids: n u32, then n × id u32                                   (delta only: all players)
//! | pending: n u32, then n × (id u32, k u16, k × (seq u32, dx i8, dy i8, buttons u8))
//! | chunks: n u32, then n × (index u32, modified_at u64, bytes)   (delta: changed only)
//! | crc32 u32
//! ```
//!
//! Decoding never panics on malformed bytes: every length is checked against what remains and
//! against limits, and a failed import leaves the target session untouched.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::session::{CHUNK, Input, MAX_PENDING, Player, Session};

const MAGIC: &[u8; 4] = b"ARNA";
/// Snapshot format version written by this build.
pub const FORMAT_VERSION: u16 = 1;
/// Largest world accepted on import.
pub const MAX_WORLD: usize = 64 << 20;
/// Most players accepted on import.
pub const MAX_PLAYERS: usize = 4096;

const KIND_FULL: u8 = 0;
const KIND_DELTA: u8 = 1;

/// Why bytes were not accepted as a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    /// Not a snapshot at all.
    #[error("not an arena snapshot (bad magic)")]
    BadMagic,
    /// Written by an incompatible build.
    #[error("snapshot format {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedFormat {
        /// Version in the bytes.
        found: u16,
    },
    /// Checksum mismatch: corrupted in transit or storage.
    #[error("snapshot checksum mismatch (corrupted)")]
    Checksum,
    /// Ended early or has trailing bytes.
    #[error("snapshot is truncated or malformed: {0}")]
    Malformed(&'static str),
    /// A full snapshot was given where a delta was expected, or the reverse.
    #[error("expected a {expected} snapshot")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
    },
    /// A delta for another session.
    #[error("delta is for session {found}, not {expected}")]
    WrongSession {
        /// Session id of the target.
        expected: u64,
        /// Session id in the delta.
        found: u64,
    },
    /// A delta taken against another version than the target's.
    #[error("delta applies to version {base}, but the session is at version {current}")]
    BaseMismatch {
        /// Version the delta applies to.
        base: u64,
        /// Version of the target.
        current: u64,
    },
}

// === encoding ===

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("counts fit in u32"));
    }
}

fn encode(s: &Session, base: Option<u64>) -> Vec<u8> {
    let since = base.unwrap_or(0);
    let changed = |v: u64| base.is_none() || v > since;
    let mut o = Out(Vec::with_capacity(
        64 + s.world.len() + s.players.len() * 40,
    ));
    o.0.extend_from_slice(MAGIC);
    o.u16(FORMAT_VERSION);
    o.u8(if base.is_some() {
        KIND_DELTA
    } else {
        KIND_FULL
    });
    o.u64(s.id);
    o.u64(s.tick);
    o.u64(s.version);
    o.u64(since);
    o.u8(u8::from(s.frozen));
    o.len(s.world.len());
    let players: Vec<&Player> = s
        .players
        .values()
        .filter(|p| changed(p.modified_at))
        .collect();
    o.len(players.len());
    for p in players {
        o.u32(p.id);
        o.i32(p.x);
        o.i32(p.y);
        o.i32(p.vx);
        o.i32(p.vy);
        o.u32(p.score);
        o.u32(p.last_seq);
        o.u64(p.modified_at);
    }
    if base.is_some() {
        o.len(s.players.len());
        for id in s.players.keys() {
            o.u32(*id);
        }
    }
    let pending: Vec<(&u32, &VecDeque<Input>)> =
        s.pending.iter().filter(|(_, q)| !q.is_empty()).collect();
    o.len(pending.len());
    for (id, q) in pending {
        o.u32(*id);
        o.u16(u16::try_from(q.len()).expect("bounded by MAX_PENDING"));
        for i in q {
            o.u32(i.seq);
            o.u8(i.dx as u8);
            o.u8(i.dy as u8);
            o.u8(i.buttons);
        }
    }
    let chunks: Vec<usize> = (0..s.chunk_modified.len())
        .filter(|&c| changed(s.chunk_modified[c]))
        .collect();
    o.len(chunks.len());
    for c in chunks {
        o.len(c);
        o.u64(s.chunk_modified[c]);
        let end = ((c + 1) * CHUNK).min(s.world.len());
        o.0.extend_from_slice(&s.world[c * CHUNK..end]);
    }
    let crc = crc32fast::hash(&o.0);
    o.u32(crc);
    o.0
}

impl Session {
    /// The whole session as bytes.
    pub fn export(&self) -> Vec<u8> {
        encode(self, None)
    }

    /// What changed since `version` (a value of [`Session::version`] seen earlier), as bytes
    /// to apply with [`Session::apply_delta`] to a copy taken at that version.
    pub fn export_delta(&self, version: u64) -> Vec<u8> {
        encode(self, Some(version))
    }

    /// A session from a full export.
    pub fn import(bytes: &[u8]) -> Result<Session, ImportError> {
        let d = decode(bytes)?;
        if d.kind != KIND_FULL {
            return Err(ImportError::WrongKind { expected: "full" });
        }
        let mut s = Session {
            id: d.id,
            tick: d.tick,
            version: d.version,
            frozen: d.frozen,
            players: BTreeMap::new(),
            pending: BTreeMap::new(),
            world: vec![0; d.world_len],
            chunk_modified: vec![0; d.world_len.div_ceil(CHUNK)],
        };
        if d.chunks.len() != s.chunk_modified.len() {
            return Err(ImportError::Malformed(
                "a full snapshot must carry every chunk",
            ));
        }
        if d.pending
            .iter()
            .any(|(id, _)| !d.players.iter().any(|p| p.id == *id))
        {
            return Err(ImportError::Malformed(
                "pending inputs of an unknown player",
            ));
        }
        d.apply_to(&mut s);
        Ok(s)
    }

    /// Applies a delta taken at this session's version. On any error the session is left as
    /// it was.
    pub fn apply_delta(&mut self, bytes: &[u8]) -> Result<(), ImportError> {
        let d = decode(bytes)?;
        if d.kind != KIND_DELTA {
            return Err(ImportError::WrongKind { expected: "delta" });
        }
        if d.id != self.id {
            return Err(ImportError::WrongSession {
                expected: self.id,
                found: d.id,
            });
        }
        if d.base != self.version {
            return Err(ImportError::BaseMismatch {
                base: d.base,
                current: self.version,
            });
        }
        if d.world_len != self.world.len() {
            return Err(ImportError::Malformed("the world size changed"));
        }
        let mut next = self.clone();
        next.tick = d.tick;
        next.version = d.version;
        next.frozen = d.frozen;
        let keep = d.ids.as_ref().expect("deltas carry ids");
        next.players.retain(|id, _| keep.contains(id));
        for id in keep {
            if !next.players.contains_key(id) && !d.players.iter().any(|p| p.id == *id) {
                return Err(ImportError::Malformed(
                    "delta lists a player it does not carry",
                ));
            }
        }
        next.pending.clear();
        d.apply_to(&mut next);
        *self = next;
        Ok(())
    }
}

// === decoding ===

struct In<'a> {
    b: &'a [u8],
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        if self.b.len() < n {
            return Err(ImportError::Malformed("ends early"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ImportError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, ImportError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, ImportError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ImportError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A count, refused above `max` (so a corrupted count cannot trigger a huge allocation).
    fn count(&mut self, max: usize, what: &'static str) -> Result<usize, ImportError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(ImportError::Malformed(what));
        }
        Ok(n)
    }
}

struct Decoded {
    kind: u8,
    id: u64,
    tick: u64,
    version: u64,
    base: u64,
    frozen: bool,
    world_len: usize,
    players: Vec<Player>,
    ids: Option<Vec<u32>>,
    pending: Vec<(u32, VecDeque<Input>)>,
    chunks: Vec<(usize, u64, Vec<u8>)>,
}

impl Decoded {
    fn apply_to(self, s: &mut Session) {
        for p in self.players {
            s.players.insert(p.id, p);
        }
        for (id, q) in self.pending {
            s.pending.insert(id, q);
        }
        for (c, modified, bytes) in self.chunks {
            s.world[c * CHUNK..c * CHUNK + bytes.len()].copy_from_slice(&bytes);
            s.chunk_modified[c] = modified;
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded, ImportError> {
    if bytes.len() < MAGIC.len() || &bytes[..4] != MAGIC {
        return Err(ImportError::BadMagic);
    }
    if bytes.len() < 6 {
        return Err(ImportError::Malformed("ends early"));
    }
    let format = u16::from_le_bytes([bytes[4], bytes[5]]);
    if format != FORMAT_VERSION {
        return Err(ImportError::UnsupportedFormat { found: format });
    }
    if bytes.len() < 10 {
        return Err(ImportError::Malformed("ends early"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(ImportError::Checksum);
    }
    let mut r = In { b: &body[6..] };
    let kind = r.u8()?;
    if kind != KIND_FULL && kind != KIND_DELTA {
        return Err(ImportError::Malformed("unknown kind"));
    }
    let id = r.u64()?;
    let tick = r.u64()?;
    let version = r.u64()?;
    let base = r.u64()?;
    let frozen = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(ImportError::Malformed("frozen flag")),
    };
    let world_len = r.count(MAX_WORLD, "world too large")?;
    let n = r.count(MAX_PLAYERS, "too many players")?;
    let mut players = Vec::with_capacity(n);
    for _ in 0..n {
        players.push(Player {
            id: r.u32()?,
            x: r.i32()?,
            y: r.i32()?,
            vx: r.i32()?,
            vy: r.i32()?,
            score: r.u32()?,
            last_seq: r.u32()?,
            modified_at: r.u64()?,
        });
    }
    let ids = if kind == KIND_DELTA {
        let n = r.count(MAX_PLAYERS, "too many players")?;
        Some((0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?)
    } else {
        None
    };
    let n = r.count(MAX_PLAYERS, "too many pending queues")?;
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = r.u32()?;
        let k = r.u16()? as usize;
        if k > MAX_PENDING {
            return Err(ImportError::Malformed("too many pending inputs"));
        }
        let mut q = VecDeque::with_capacity(k);
        for _ in 0..k {
            q.push_back(Input {
                seq: r.u32()?,
                dx: r.u8()? as i8,
                dy: r.u8()? as i8,
                buttons: r.u8()?,
            });
        }
        pending.push((pid, q));
    }
    let chunk_count = world_len.div_ceil(CHUNK);
    let n = r.count(chunk_count, "more chunks than the world holds")?;
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let c = r.u32()? as usize;
        if c >= chunk_count {
            return Err(ImportError::Malformed("chunk index out of range"));
        }
        if chunks.last().is_some_and(|(prev, _, _)| *prev >= c) {
            return Err(ImportError::Malformed("chunk indices must increase"));
        }
        let modified = r.u64()?;
        let len = ((c + 1) * CHUNK).min(world_len) - c * CHUNK;
        chunks.push((c, modified, r.take(len)?.to_vec()));
    }
    if !r.b.is_empty() {
        return Err(ImportError::Malformed("trailing bytes"));
    }
    let known: std::collections::BTreeSet<u32> = players.iter().map(|p| p.id).collect();
    if known.len() != players.len() {
        return Err(ImportError::Malformed("duplicate player"));
    }
    Ok(Decoded {
        kind,
        id,
        tick,
        version,
        base,
        frozen,
        world_len,
        players,
        ids,
        pending,
        chunks,
    })
}
