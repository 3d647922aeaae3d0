//! Store benchmark: the embedded store and a real etcd, on this machine, in the same run.
//!
//! `cargo bench -p mecfed-store --bench store` prints a Markdown table: durable writes/s with
//! 1 and 64 concurrent writers, get latency p50/p99, and put-to-watch-event latency p50/p99,
//! with the embedded/etcd ratio. Both backends fsync before acknowledging (etcd by default,
//! the embedded store with redb's `Durability::Immediate` and group commit).
//!
//! `MECFED_BENCH_SECS` sets the seconds per write phase (default 3).

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use mecfed_store::{EmbeddedStore, EtcdStore, Store, testing::EtcdProcess};

const VALUE_BYTES: usize = 256;
const READ_KEYS: u64 = 1_000;
const READS: u64 = 20_000;
const WATCH_SAMPLES: u64 = 2_000;

struct Figures {
    writes_1: f64,
    writes_64: f64,
    read_p50_us: f64,
    read_p99_us: f64,
    watch_p50_us: f64,
    watch_p99_us: f64,
}

async fn write_throughput<S: Store>(s: &S, writers: u64, secs: f64, tag: &str) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let value = vec![b'x'; VALUE_BYTES];
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (s, stop, done, value) = (s.clone(), stop.clone(), done.clone(), value.clone());
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.put(format!("/bench/{tag}/w{w}/{i}").as_bytes(), &value, None)
                    .await
                    .expect("put");
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn read_latency<S: Store>(s: &S) -> (f64, f64) {
    let value = vec![b'r'; VALUE_BYTES];
    for k in 0..READ_KEYS {
        s.put(format!("/bench/read/{k}").as_bytes(), &value, None)
            .await
            .expect("put");
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..READS {
        let key = format!("/bench/read/{}", (i * 7919) % READ_KEYS);
        let t = Instant::now();
        let kv = s.get(key.as_bytes()).await.expect("get");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
        assert!(kv.is_some());
    }
    (
        h.value_at_quantile(0.50) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

async fn watch_latency<S: Store>(s: &S) -> (f64, f64) {
    let mut w = s.watch(b"/bench/watch/", 0).await.expect("watch");
    let value = vec![b'w'; VALUE_BYTES];
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..WATCH_SAMPLES {
        let key = format!("/bench/watch/{i}");
        let t = Instant::now();
        s.put(key.as_bytes(), &value, None).await.expect("put");
        let ev = w.next().await.expect("watch open").expect("event");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
        assert_eq!(ev.kv.key, key.as_bytes());
    }
    (
        h.value_at_quantile(0.50) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

async fn measure<S: Store>(s: &S, secs: f64, tag: &str) -> Figures {
    let writes_1 = write_throughput(s, 1, secs, &format!("{tag}-1")).await;
    let writes_64 = write_throughput(s, 64, secs, &format!("{tag}-64")).await;
    let (read_p50_us, read_p99_us) = read_latency(s).await;
    let (watch_p50_us, watch_p99_us) = watch_latency(s).await;
    Figures {
        writes_1,
        writes_64,
        read_p50_us,
        read_p99_us,
        watch_p50_us,
        watch_p99_us,
    }
}

fn main() {
    let secs: f64 = std::env::var("MECFED_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    // Under `cargo test --benches` just prove the harness runs.
    let secs = if std::env::args().any(|a| a == "--bench") {
        secs
    } else {
        0.2
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = EmbeddedStore::open_path(dir.path().join("bench.redb")).expect("open");
        let e = measure(&embedded, secs, "emb").await;
        drop(embedded);

        let etcd_proc = EtcdProcess::start().expect("etcd starts (install etcd-server)");
        let etcd = EtcdStore::connect(&[etcd_proc.endpoint()])
            .await
            .expect("connect");
        let c = measure(&etcd, secs, "etcd").await;

        let row = |name: &str, a: f64, b: f64, unit: &str| {
            println!("| {name} | {a:.1} {unit} | {b:.1} {unit} | {:.3} |", a / b);
        };
        println!("| metric | embedded | etcd 3.4 | embedded/etcd |");
        println!("| --- | --- | --- | --- |");
        row("durable writes/s, 1 writer", e.writes_1, c.writes_1, "");
        row("durable writes/s, 64 writers", e.writes_64, c.writes_64, "");
        row("get p50", e.read_p50_us, c.read_p50_us, "µs");
        row("get p99", e.read_p99_us, c.read_p99_us, "µs");
        row("put-to-watch p50", e.watch_p50_us, c.watch_p50_us, "µs");
        row("put-to-watch p99", e.watch_p99_us, c.watch_p99_us, "µs");
    });
}
