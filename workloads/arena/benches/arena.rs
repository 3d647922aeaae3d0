//! Arena benchmark: `cargo bench -p arena --bench arena`.
//!
//! 1. Game loop cost: 1,000 sessions of 4 players, each tick one input per player, one
//!    `step`, and one encoded snapshot datagram per player; reported as CPU per tick, the
//!    share of one core at 60 Hz, and CPU per session.
//! 2. Snapshot costs for sessions holding 1 KB to 1 MB of world state: full export and
//!    import time and size, and the delta after one tick (size, export, apply).
//!
//! Single-threaded, so "one core" is literal. Network sends are not included (the server
//! benchmark measures those).

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::time::{Duration, Instant};

use arena::{Input, Session};
use arena_proto::{PlayerView, ServerMsg};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn game_loop(sessions: u64, players: u32, ticks: u32) -> Duration {
    let mut all: Vec<Session> = (0..sessions)
        .map(|id| {
            let mut s = Session::new(id, 16 * 1024);
            for p in 0..players {
                s.join(p);
            }
            s
        })
        .collect();
    let mut bytes = 0usize;
    let start = Instant::now();
    for t in 1..=ticks {
        for s in &mut all {
            for p in 0..players {
                let dx = ((t + p) % 255) as u8 as i8;
                s.submit(
                    p,
                    Input {
                        seq: t,
                        dx,
                        dy: dx.wrapping_neg(),
                        buttons: u8::from(t.is_multiple_of(7)),
                    },
                );
            }
            s.step();
            let views: Vec<PlayerView> = s.players().map(PlayerView::from).collect();
            for p in s.players() {
                let msg = ServerMsg::Snapshot {
                    session: s.id(),
                    tick: s.tick(),
                    ack_seq: p.last_seq,
                    echo_time_us: u64::from(t),
                    players: views.clone(),
                };
                bytes += msg.encode().expect("fits").len();
            }
        }
    }
    let per_tick = start.elapsed() / ticks;
    assert!(bytes > 0);
    per_tick
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (sessions, ticks) = if quick { (50, 10) } else { (1000, 600) };
    let per_tick = game_loop(sessions, 4, ticks);
    let core_share = per_tick.as_secs_f64() * 60.0;
    println!("## Game loop: {sessions} sessions x 4 players, {ticks} ticks, one thread");
    println!();
    println!("| CPU per tick | share of one core at 60 Hz | CPU per session at 60 Hz |");
    println!("| --- | --- | --- |");
    println!(
        "| {:.2} ms | {:.1} % | {:.2} µs per second |",
        per_tick.as_secs_f64() * 1e3,
        core_share * 100.0,
        core_share * 1e6 / sessions as f64,
    );
    println!();
    println!(
        "## Snapshots (4 players; medians of {} runs)",
        if quick { 3 } else { 21 }
    );
    println!();
    println!(
        "| world | full size | export | import | delta after 1 tick | delta export | delta apply |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let reps = if quick { 3 } else { 21 };
    for world in [1 << 10, 10 << 10, 100 << 10, 1 << 20] {
        let mut s = Session::new(1, world);
        for p in 0..4 {
            s.join(p);
        }
        for _ in 0..120 {
            s.step();
        }
        let (mut ex, mut im, mut dex, mut dap) = (vec![], vec![], vec![], vec![]);
        let mut full_len = 0;
        let mut delta_len = 0;
        for _ in 0..reps {
            let t = Instant::now();
            let full = s.export();
            ex.push(t.elapsed());
            full_len = full.len();
            let t = Instant::now();
            let mut copy = Session::import(&full).expect("import");
            im.push(t.elapsed());
            let v = s.version();
            s.step();
            let t = Instant::now();
            let delta = s.export_delta(v);
            dex.push(t.elapsed());
            delta_len = delta.len();
            let t = Instant::now();
            copy.apply_delta(&delta).expect("apply");
            dap.push(t.elapsed());
            assert_eq!(copy, s);
        }
        println!(
            "| {} KiB | {} B | {:.1} µs | {:.1} µs | {} B | {:.1} µs | {:.1} µs |",
            world >> 10,
            full_len,
            median(ex).as_secs_f64() * 1e6,
            median(im).as_secs_f64() * 1e6,
            delta_len,
            median(dex).as_secs_f64() * 1e6,
            median(dap).as_secs_f64() * 1e6,
        );
    }
}
