//! Crash tests.
//!
//! (a) A child process writes through the embedded store and is SIGKILLed at random points,
//!     repeatedly; after each kill the store is reopened and every acknowledged write must be
//!     there, and no transaction may be half-applied (the account total is invariant).
//! (b) etcd is SIGKILLed and restarted on its data directory while a client writes and
//!     watches; the client recovers and the watch resumes without missing or repeating an event.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use mecfed_store::{
    Compare, EmbeddedStore, EtcdStore, EventKind, Store, StoreError, Txn, TxnOp,
    testing::EtcdProcess,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const WRITERS: u64 = 4;
const ACCOUNTS: u64 = 10;
const INITIAL_BALANCE: i64 = 1000;

fn num(b: &[u8]) -> i64 {
    std::str::from_utf8(b).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kill_9_loses_no_acknowledged_write() {
    let rounds: u64 = std::env::var("MECFED_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("MECFED_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    // Highest acknowledged step per writer, over all rounds.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut max_acked_rev = 0;
    let mut total_acks = 0;

    for round in 0..rounds {
        // Odd rounds checkpoint every 20 ms, so kills also land in checkpoints and log resets;
        // even rounds use the default (1 s), so recovery mostly replays the log.
        let checkpoint_ms = if round % 2 == 1 { 20 } else { 1000 };
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-child"))
            .arg(&db)
            .arg(WRITERS.to_string())
            .arg(checkpoint_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Kill at a random point: sometimes almost at once, sometimes mid-stream.
        let wait_ms = rng.random_range(5..400);
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 4, "child printed {line:?}");
            let (t, i, rev): (u64, u64, u64) = (
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
                parts[3].parse().unwrap(),
            );
            let e = acked.entry(t).or_default();
            *e = (*e).max(i);
            max_acked_rev = max_acked_rev.max(rev);
        }
        total_acks += lines.len();

        // Reopen and check, then close before the next round.
        let store = EmbeddedStore::open_path(&db).unwrap();
        let ctx = format!(
            "round {round} (seed {seed}, checkpoint every {checkpoint_ms} ms, killed after {wait_ms} ms)"
        );
        assert!(
            store.current_revision().await.unwrap() >= max_acked_rev,
            "{ctx}: revision went back"
        );
        for (&t, &max_i) in &acked {
            let last = store
                .get(format!("/crash/w{t}/last").as_bytes())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{ctx}: writer {t} lost its progress"));
            let last = num(&last.value) as u64;
            assert!(
                last >= max_i,
                "{ctx}: writer {t} acked step {max_i}, store has {last}"
            );
            let page = store
                .range(format!("/crash/w{t}/k").as_bytes(), None, usize::MAX)
                .await
                .unwrap();
            let steps: BTreeSet<u64> = page
                .kvs
                .iter()
                .map(|kv| {
                    let k = String::from_utf8(kv.key.clone()).unwrap();
                    k.rsplit_once("/k").unwrap().1.parse().unwrap()
                })
                .collect();
            assert_eq!(
                steps,
                (0..=last).collect::<BTreeSet<u64>>(),
                "{ctx}: writer {t} has gaps or extra steps"
            );
        }
        let accounts = store.range(b"/crash/acct/", None, 100).await.unwrap();
        if !accounts.kvs.is_empty() {
            assert_eq!(
                accounts.kvs.len() as u64,
                ACCOUNTS,
                "{ctx}: accounts half-created"
            );
            let total: i64 = accounts.kvs.iter().map(|kv| num(&kv.value)).sum();
            assert_eq!(
                total,
                ACCOUNTS as i64 * INITIAL_BALANCE,
                "{ctx}: a transfer was half-applied"
            );
        }
        drop(store);
    }
    assert!(
        total_acks > 0,
        "the child never acknowledged a write in {rounds} rounds"
    );
}

/// Creates `/ec/{i}` exactly once, retrying through outages: an attempt whose outcome is
/// unknown is retried, and the create-if-absent guard makes the retry harmless.
async fn create_once(s: &EtcdStore, i: u64) {
    let key = format!("/ec/{i:05}").into_bytes();
    let mut backoff = Duration::from_millis(20);
    loop {
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::put(key.clone(), i.to_string())]);
        match s.txn(txn).await {
            Ok(_) => return,
            Err(e) if e.is_transient() || matches!(e, StoreError::Backend(_)) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_kill_9_watch_resumes_without_gaps_or_repeats() {
    const WRITES: u64 = 300;
    let mut etcd = EtcdProcess::start().expect("a real etcd must start");
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    let mut watch = store.watch(b"/ec/", 0).await.unwrap();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..WRITES {
                create_once(&store, i).await;
            }
        })
    };
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut kills = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < WRITES as usize {
        let ev = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("watch delivered every write in time")
            .expect("watch open")
            .expect("watch healthy");
        assert_eq!(ev.kind, EventKind::Put);
        seen.push((ev.kv.mod_revision, ev.kv.key.clone()));
        // Kill etcd twice while writes and the watch are in flight.
        if (seen.len() == 100 || seen.len() == 200) && kills < 2 {
            etcd.restart().expect("etcd restarts on its data directory");
            kills += 1;
        }
    }
    writer.await.unwrap();
    // A sentinel after everything: any repeated event would arrive before it.
    create_once(&store, WRITES).await;
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("sentinel in time")
        .unwrap()
        .unwrap();
    assert_eq!(
        ev.kv.key,
        format!("/ec/{WRITES:05}").into_bytes(),
        "an event repeated"
    );

    assert_eq!(kills, 2);
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions strictly increase"
    );
    let keys: BTreeSet<Vec<u8>> = seen.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys.len(), WRITES as usize, "no key seen twice");
    let page = store.range(b"/ec/", None, 10_000).await.unwrap();
    assert_eq!(page.kvs.len() as u64, WRITES + 1);
}
