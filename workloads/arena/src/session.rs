//! One game session (room): authoritative, deterministic state advanced one tick at a time.
//!
//! Everything is integer arithmetic, so a session imported on another machine continues
//! exactly as the original would have. Every mutation bumps the session's `version`; players
//! and world chunks remember the version that last changed them, which is what a delta export
//! selects on.

use std::collections::{BTreeMap, VecDeque};

/// Side of the square arena, in millimetres.
pub const ARENA_MM: i32 = 100_000;
/// Bytes per world chunk (the unit of delta transfer).
pub const CHUNK: usize = 1024;
/// World cells per side: the world blob is a `WORLD_SIDE` x `WORLD_SIDE` grid when it is that
/// large, or fewer cells otherwise.
const WORLD_SIDE: i64 = 1024;
/// Inputs buffered per player; older ones beyond this are dropped.
pub const MAX_PENDING: usize = 64;
/// Velocity change per unit of input, mm/tick.
const ACCEL: i32 = 40;
/// Speed limit, mm/tick.
const MAX_SPEED: i32 = 1_000;

/// A player's input for one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Input {
    /// Client sequence number, increasing by one per input.
    pub seq: u32,
    /// Steering, -127..=127 on each axis.
    pub dx: i8,
    /// Steering on y.
    pub dy: i8,
    /// Button bits; bit 0 boosts.
    pub buttons: u8,
}

/// A player's authoritative state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Player {
    /// Player id within the session.
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
    /// Sequence number of the last input applied (acknowledged in snapshots).
    pub last_seq: u32,
    /// Session version of the last change to this player.
    pub modified_at: u64,
}

impl From<&Player> for arena_proto::PlayerView {
    /// What other players see of a player in a snapshot.
    fn from(p: &Player) -> Self {
        Self {
            id: p.id,
            x: p.x,
            y: p.y,
            vx: p.vx,
            vy: p.vy,
            score: p.score,
        }
    }
}

/// A session: players, their pending inputs, a world blob, a tick counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub(crate) id: u64,
    pub(crate) tick: u64,
    pub(crate) version: u64,
    pub(crate) frozen: bool,
    pub(crate) players: BTreeMap<u32, Player>,
    pub(crate) pending: BTreeMap<u32, VecDeque<Input>>,
    pub(crate) world: Vec<u8>,
    pub(crate) chunk_modified: Vec<u64>,
}

impl Session {
    /// A new session with a world blob of `world_bytes` (its size sets the state size).
    pub fn new(id: u64, world_bytes: usize) -> Self {
        let chunks = world_bytes.div_ceil(CHUNK);
        Self {
            id,
            tick: 0,
            version: 1,
            frozen: false,
            players: BTreeMap::new(),
            pending: BTreeMap::new(),
            // A deterministic, non-trivial initial world.
            world: (0..world_bytes)
                .map(|i| (i.wrapping_mul(31) % 251) as u8)
                .collect(),
            chunk_modified: vec![1; chunks],
        }
    }

    /// Session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Ticks advanced so far.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Version: bumped by every change; a delta export is taken "since a version".
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the session is frozen (not advancing).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Players in id order.
    pub fn players(&self) -> impl Iterator<Item = &Player> {
        self.players.values()
    }

    /// One player.
    pub fn player(&self, id: u32) -> Option<&Player> {
        self.players.get(&id)
    }

    /// Size of the world blob.
    pub fn world_len(&self) -> usize {
        self.world.len()
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Adds a player at a spawn point derived from its id; `false` if already present.
    pub fn join(&mut self, id: u32) -> bool {
        if self.players.contains_key(&id) {
            return false;
        }
        let v = self.bump();
        let spawn = |k: u32| (i64::from(k).wrapping_mul(7_919) % i64::from(ARENA_MM)) as i32;
        self.players.insert(
            id,
            Player {
                id,
                x: spawn(id),
                y: spawn(id.wrapping_add(13)),
                vx: 0,
                vy: 0,
                score: 0,
                last_seq: 0,
                modified_at: v,
            },
        );
        true
    }

    /// Removes a player; `false` if absent.
    pub fn leave(&mut self, id: u32) -> bool {
        if self.players.remove(&id).is_none() {
            return false;
        }
        self.pending.remove(&id);
        self.bump();
        true
    }

    /// Queues an input. Inputs already applied or already queued are ignored (`false`), so
    /// duplicates and reordering on the network do no harm; inputs are applied in `seq`
    /// order, one per tick.
    pub fn submit(&mut self, player: u32, input: Input) -> bool {
        let Some(p) = self.players.get(&player) else {
            return false;
        };
        if input.seq <= p.last_seq {
            return false;
        }
        let queue = self.pending.entry(player).or_default();
        let at = queue.partition_point(|i| i.seq < input.seq);
        if queue.get(at).is_some_and(|i| i.seq == input.seq) {
            return false;
        }
        queue.insert(at, input);
        if queue.len() > MAX_PENDING {
            queue.pop_front();
        }
        self.bump();
        true
    }

    /// Stops advancing at the current tick boundary (for the final delta of a relocation).
    pub fn freeze(&mut self) {
        if !self.frozen {
            self.frozen = true;
            self.bump();
        }
    }

    /// Resumes advancing.
    pub fn thaw(&mut self) {
        if self.frozen {
            self.frozen = false;
            self.bump();
        }
    }

    /// Advances one tick unless frozen; returns whether it did.
    pub fn step(&mut self) -> bool {
        if self.frozen {
            return false;
        }
        self.tick += 1;
        let v = self.bump();
        let ids: Vec<u32> = self.players.keys().copied().collect();
        for id in ids {
            let input = self.pending.get_mut(&id).and_then(VecDeque::pop_front);
            // An emptied queue goes, so equal games have equal state.
            if self.pending.get(&id).is_some_and(VecDeque::is_empty) {
                self.pending.remove(&id);
            }
            let p = self.players.get_mut(&id).expect("listed player");
            let before = (p.x, p.y, p.vx, p.vy, p.score, p.last_seq);
            if let Some(i) = input {
                let boost = if i.buttons & 1 == 1 { 2 } else { 1 };
                p.vx = (p.vx + i32::from(i.dx) * ACCEL / 127 * boost).clamp(-MAX_SPEED, MAX_SPEED);
                p.vy = (p.vy + i32::from(i.dy) * ACCEL / 127 * boost).clamp(-MAX_SPEED, MAX_SPEED);
                p.last_seq = i.seq;
            }
            // Friction, then movement with bounces off the walls.
            p.vx -= p.vx / 32;
            p.vy -= p.vy / 32;
            (p.x, p.vx) = bounce(p.x + p.vx, p.vx);
            (p.y, p.vy) = bounce(p.y + p.vy, p.vy);
            // Paint the world under the player; landing on a "gem" cell scores.
            if !self.world.is_empty() {
                let cell = world_cell(p.x, p.y, self.world.len());
                let b = self.world[cell].wrapping_add(id as u8 | 1);
                self.world[cell] = b;
                self.chunk_modified[cell / CHUNK] = v;
                if b.is_multiple_of(61) {
                    p.score += 1;
                }
            }
            if before != (p.x, p.y, p.vx, p.vy, p.score, p.last_seq) {
                p.modified_at = v;
            }
        }
        true
    }
}

fn bounce(pos: i32, v: i32) -> (i32, i32) {
    if pos < 0 {
        (-pos, -v)
    } else if pos > ARENA_MM {
        (2 * ARENA_MM - pos, -v)
    } else {
        (pos, v)
    }
}

fn world_cell(x: i32, y: i32, len: usize) -> usize {
    let cx = i64::from(x) * WORLD_SIDE / i64::from(ARENA_MM + 1);
    let cy = i64::from(y) * WORLD_SIDE / i64::from(ARENA_MM + 1);
    ((cy * WORLD_SIDE + cx) as usize) % len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(seq: u32, dx: i8, dy: i8) -> Input {
        Input {
            seq,
            dx,
            dy,
            buttons: 0,
        }
    }

    #[test]
    fn inputs_apply_in_order_once() {
        let mut s = Session::new(1, 4096);
        assert!(s.join(7));
        assert!(!s.join(7));
        assert!(s.submit(7, input(2, 127, 0)));
        assert!(s.submit(7, input(1, 0, 127)));
        assert!(!s.submit(7, input(1, 0, 127)), "duplicate");
        assert!(!s.submit(9, input(1, 0, 0)), "unknown player");
        s.step();
        assert_eq!(s.player(7).unwrap().last_seq, 1);
        assert!(s.player(7).unwrap().vy > 0);
        s.step();
        assert_eq!(s.player(7).unwrap().last_seq, 2);
        assert!(!s.submit(7, input(2, 0, 0)), "already applied");
        assert_eq!(s.tick(), 2);
    }

    #[test]
    fn frozen_sessions_do_not_advance() {
        let mut s = Session::new(1, 0);
        s.join(1);
        s.freeze();
        assert!(!s.step());
        assert_eq!(s.tick(), 0);
        s.thaw();
        assert!(s.step());
        assert_eq!(s.tick(), 1);
    }

    #[test]
    fn players_stay_inside_the_arena() {
        let mut s = Session::new(1, 1024);
        s.join(1);
        for seq in 1..=2000 {
            s.submit(1, input(seq, 127, -127));
            s.step();
            let p = s.player(1).unwrap();
            assert!(
                (0..=ARENA_MM).contains(&p.x) && (0..=ARENA_MM).contains(&p.y),
                "{p:?}"
            );
        }
    }
}
