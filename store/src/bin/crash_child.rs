//! Child process of the embedded store's crash test (`store/tests/crash.rs`).
//!
//! `store-crash-child DB WRITERS [CHECKPOINT_MS]` opens the store at DB (checkpointing every
//! CHECKPOINT_MS, default 1000) and runs WRITERS concurrent writers until it is killed. Writer `t` continues its sequence from what the store already holds:
//! each step is one transaction that puts `/crash/w{t}/k{i}` and `/crash/w{t}/last = i`, and
//! moves one unit between two of ten accounts guarded by their mod revisions (so the account
//! total is an invariant). After each acknowledged step it prints `ack {t} {i} {revision}`.

use std::io::Write;

use std::time::Duration;

use mecfed_store::{Compare, EmbeddedConfig, EmbeddedStore, Store, Txn, TxnOp};

const ACCOUNTS: u64 = 10;
const INITIAL_BALANCE: i64 = 1000;

fn acct(n: u64) -> Vec<u8> {
    format!("/crash/acct/{n}").into_bytes()
}

fn parse_i64(b: &[u8]) -> i64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MIN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(writers)) = (args.next(), args.next()) else {
        eprintln!("usage: store-crash-child DB WRITERS");
        std::process::exit(2);
    };
    let writers: u64 = writers.parse().expect("WRITERS is a number");
    let checkpoint_ms: u64 = args
        .next()
        .map_or(1000, |a| a.parse().expect("CHECKPOINT_MS"));
    let mut config = EmbeddedConfig::new(&db);
    config.checkpoint_interval = Duration::from_millis(checkpoint_ms);
    let store = EmbeddedStore::open(config).expect("open store");
    // Accounts are created once, atomically.
    let init = Txn::new()
        .when([Compare::absent(acct(0))])
        .and_then((0..ACCOUNTS).map(|n| TxnOp::put(acct(n), INITIAL_BALANCE.to_string())));
    store.txn(init).await.expect("init accounts");

    let stdout = std::sync::Arc::new(parking_lot::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..writers {
        let store = store.clone();
        let stdout = stdout.clone();
        tasks.push(tokio::spawn(async move {
            let last_key = format!("/crash/w{t}/last").into_bytes();
            let mut i = match store.get(&last_key).await.expect("read last") {
                Some(kv) => parse_i64(&kv.value) as u64 + 1,
                None => 0,
            };
            loop {
                let (a, b) = ((t + i) % ACCOUNTS, (t + i + 1 + t % 3) % ACCOUNTS);
                let ka = store
                    .get(&acct(a))
                    .await
                    .expect("get a")
                    .expect("account a");
                let kb = store
                    .get(&acct(b))
                    .await
                    .expect("get b")
                    .expect("account b");
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(acct(a), ka.mod_revision),
                        Compare::mod_revision(acct(b), kb.mod_revision),
                    ])
                    .and_then([
                        TxnOp::put(format!("/crash/w{t}/k{i}"), format!("v{i}")),
                        TxnOp::put(last_key.clone(), i.to_string()),
                        TxnOp::put(acct(a), (parse_i64(&ka.value) - 1).to_string()),
                        TxnOp::put(acct(b), (parse_i64(&kb.value) + 1).to_string()),
                    ]);
                let resp = store.txn(txn).await.expect("txn");
                if !resp.succeeded {
                    continue; // another writer moved an account; retry this step
                }
                let mut out = stdout.lock();
                let _ = writeln!(out, "ack {t} {i} {}", resp.revision);
                let _ = out.flush();
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
