//! Small helpers shared by the handlers.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hex SHA-256 of `s`.
pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `bytes` random bytes, hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A `Location` for `path`: absolute when the request named its `Host`.
pub(crate) fn location(headers: &axum::http::HeaderMap, path: &str) -> String {
    match headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        Some(host) if !host.is_empty() => format!("http://{host}{path}"),
        _ => path.to_string(),
    }
}

/// Runs `pass` once a second while this process holds the leadership `key` (TTL `ttl`),
/// until `shutdown` resolves; then resigns ([`lead`]). `what` names the loop in logs. The
/// passes of the periodic producers (location reports, CAMARA status) run only on the leader.
pub(crate) async fn each_second_as_leader<S, F, Fut>(
    store: S,
    key: &'static [u8],
    ttl: std::time::Duration,
    what: &'static str,
    shutdown: impl std::future::Future<Output = ()>,
    pass: F,
) where
    S: mecfed_store::Store,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pass = &pass;
    lead(
        store,
        key.to_vec(),
        ttl,
        what,
        shutdown,
        |_| {},
        || async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                pass().await;
            }
        },
    )
    .await;
}

/// Runs `work` while this process holds the leadership `key` (TTL `ttl`), until `shutdown`
/// resolves; then resigns. The lease is kept alive every third of the TTL beside the work;
/// when it is lost the work future is dropped at once (it must keep its progress in the
/// store, as every engine does), and started again from scratch when leadership returns.
/// A work future that ends is started again a second later. `what` names it in logs, and
/// `on_change(leading)` is told each change of leadership (metrics).
pub(crate) async fn lead<S, F, Fut>(
    store: S,
    key: Vec<u8>,
    ttl: std::time::Duration,
    what: &'static str,
    shutdown: impl std::future::Future<Output = ()>,
    on_change: impl Fn(bool),
    mut work: F,
) where
    S: mecfed_store::Store,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let mut election = mecfed_store::Election::new(
        store,
        key,
        format!("pid-{}-{:08x}", std::process::id(), rand::random::<u32>()),
        ttl,
    );
    let every = ttl / 3;
    loop {
        let leading = match election.campaign().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "{what}: leader election failed");
                false
            }
        };
        if leading {
            tracing::info!(id = election.id(), "{what}: leading");
            on_change(true);
            let job = work();
            tokio::pin!(job);
            let mut keep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let resign = loop {
                tokio::select! {
                    () = &mut shutdown => break true,
                    () = &mut job => {
                        tracing::warn!("{what}: work ended; starting it again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        break false;
                    }
                    _ = keep.tick() => match election.campaign().await {
                        Ok(true) => {}
                        Ok(false) => break false,
                        Err(e) => {
                            tracing::warn!(error = %e, "{what}: cannot keep the leadership");
                            break false;
                        }
                    },
                }
            };
            on_change(false);
            if resign {
                if let Err(e) = election.resign().await {
                    tracing::warn!(error = %e, "{what}: cannot resign");
                }
                return;
            }
            continue;
        }
        tokio::select! {
            () = &mut shutdown => {
                if let Err(e) = election.resign().await {
                    tracing::warn!(error = %e, "{what}: cannot resign");
                }
                return;
            }
            () = tokio::time::sleep(every) => {}
        }
    }
}
