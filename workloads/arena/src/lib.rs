//! `arena`: a real-time multiplayer game server whose sessions can move between edge sites.
//!
//! [`Session`] is the authoritative game state of one room, advanced at a fixed tick by
//! integer arithmetic (so it is deterministic across machines); [`snapshot`] turns it into
//! versioned bytes, full or as a delta since a version, and back, so that a relocation can
//! stream the bulk ahead of time and finish with a small delta after a freeze at a tick
//! boundary.
//!
//! [`server`] is the process around them: a UDP game loop and an HTTP control interface.
//!
//! Architecture Invariant: `session` and `snapshot` do no IO and read no clock; the server
//! around them does.

pub mod mec;
pub mod server;
pub mod session;
pub mod snapshot;

pub use session::{Input, Player, Session};
pub use snapshot::{FORMAT_VERSION, ImportError};
