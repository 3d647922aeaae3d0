//! The scheduler benchmark table of `docs/benchmarks.md`:
//!
//! 1. decisions/s and decision latency p50/p99/max at 100, 1,000 and 10,000 sites (one thread,
//!    the realistic world of `support/world.rs`);
//! 2. the controller end to end: 10,000 apps placed over 1,000 sites by one pass of the
//!    controller on the embedded store, every decision committed in its own durable
//!    transaction (placements, capacity ledgers, schedule record).
//!
//! Run with `cargo bench -p mecfed-scheduler --bench placement`; `MECFED_BENCH_APPS` changes
//! the number of apps of part 2.
#![allow(missing_docs, clippy::print_stdout)]

use std::time::Instant;

use hdrhistogram::Histogram;
use mecfed_core::{AppId, Placement, Site};
use mecfed_scheduler::{AppPolicy, Controller, ControllerConfig, schedule};
use mecfed_store::{EmbeddedStore, Store, typed::Typed};

#[path = "support/world.rs"]
#[allow(dead_code, unreachable_pub)]
mod world;

fn decisions() {
    println!("| sites | decisions | decisions/s | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (n, count) in [(100usize, 50_000u32), (1_000, 20_000), (10_000, 2_000)] {
        let snap = world::snapshot(n, n, 7);
        let mut rng = world::Rng::new(11);
        let apps: Vec<_> = (0..256).map(|i| world::app(i, &mut rng)).collect();
        let policy = world::policy();
        // Warm up.
        for app in apps.iter().take(32) {
            std::hint::black_box(schedule(&snap, app, &policy));
        }
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let started = Instant::now();
        for i in 0..count {
            let t = Instant::now();
            std::hint::black_box(schedule(&snap, &apps[i as usize % apps.len()], &policy));
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {n} | {count} | {:.0} | {:.1} µs | {:.1} µs | {:.1} µs |",
            f64::from(count) / secs,
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            hist.max() as f64 / 1e3,
        );
    }
}

fn controller() {
    let apps: usize = std::env::var("MECFED_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_path(dir.path().join("bench.redb")).unwrap();
        let typed = Typed::new(store.clone());
        let sites: Vec<Site> = world::sites(1_000, 7);
        for s in &sites {
            typed.put(s).await.unwrap();
            store
                .put(
                    format!("/mecfed/v1/siteleases/{}", s.id).as_bytes(),
                    format!(r#"{{"site":"{}"}}"#, s.id).as_bytes(),
                    None,
                )
                .await
                .unwrap();
        }
        let mut rng = world::Rng::new(3);
        let policy = world::policy();
        for i in 0..apps {
            let mut app = world::app(i, &mut rng);
            // A twentieth of the decision benchmark's demand: 10,000 apps fit on 1,000 sites.
            for a in &mut app.qos.demand_areas {
                a.expected_sessions = (a.expected_sessions / 20).max(1);
            }
            typed
                .put(&AppPolicy {
                    app: app.id.clone(),
                    policy: policy.clone(),
                })
                .await
                .unwrap();
            typed.put(&app).await.unwrap();
        }
        let controller = Controller::new(store.clone(), ControllerConfig::default());
        let started = Instant::now();
        let report = controller.pass(1_000_000).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let (placements, _) = typed.list::<Placement>().await.unwrap();
        let placed_apps: std::collections::BTreeSet<AppId> =
            placements.iter().map(|p| p.value.app.clone()).collect();
        let instances: u32 = placements.iter().map(|p| p.value.replicas).sum();
        println!();
        println!("| apps | sites | pass (decide + commit) | apps placed/s | apps with placements | instances | commits | conflicts |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {apps} | 1000 | {secs:.2} s | {:.0} | {} | {instances} | {} | {} |",
            report.committed as f64 / secs,
            placed_apps.len(),
            report.committed,
            report.conflicts,
        );
    });
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    decisions();
    controller();
}
