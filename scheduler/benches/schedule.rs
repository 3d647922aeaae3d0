//! Criterion benchmark of one scheduling decision at 100, 1,000 and 10,000 sites with the
//! realistic policies of `world.rs`. Run with `cargo bench -p mecfed-scheduler --bench
//! schedule`; `cargo bench -p mecfed-scheduler --bench placement` prints the table of
//! `docs/benchmarks.md`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mecfed_scheduler::schedule;

#[path = "support/world.rs"]
#[allow(dead_code, unreachable_pub)]
mod world;

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule");
    for n in [100usize, 1_000, 10_000] {
        let snap = world::snapshot(n, n, 7);
        let mut rng = world::Rng::new(11);
        let apps: Vec<_> = (0..64).map(|i| world::app(i, &mut rng)).collect();
        let policy = world::policy();
        let mut i = 0;
        group.bench_function(format!("{n}_sites"), |b| {
            b.iter(|| {
                i = (i + 1) % apps.len();
                black_box(schedule(&snap, &apps[i], &policy))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
