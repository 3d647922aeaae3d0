//! The etcd backend: the real etcd v3 API through `etcd-client`.
//!
//! Watches resume by themselves: when the stream breaks (etcd restarted, connection lost) the
//! watch task reconnects with back-off and re-watches from the revision after the last one it
//! delivered, so the consumer sees every revision once, in order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use etcd_client::{
    Client, Compare as ECompare, CompareOp as ECompareOp, ConnectOptions, GetOptions, PutOptions,
    Txn as ETxn, TxnOp as ETxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, LeaseId, Page, Result, Revision,
    Store, StoreError, Txn, TxnOp, TxnOpResult, TxnResponse, Watcher, prefix_end,
};

const WATCH_OUT_BUFFER: usize = 256;

/// A store on an etcd cluster. Clones share the connections.
///
/// Each member has its own connection, and requests go to the member that answered last;
/// one that fails with a transient error (connection refused or lost, no leader, timeout)
/// is tried on the next member, once round the cluster, so a dead member costs the requests
/// in flight to it, not a share of all requests for as long as it is down. Every mecfed
/// write is a guarded transaction or idempotent, so one sent again after an ambiguous
/// failure cannot apply twice.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Members>,
}

struct Members {
    clients: Vec<Client>,
    /// The member that answered last.
    current: AtomicUsize,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

/// gRPC codes after which a retry may succeed: CANCELLED, UNKNOWN, DEADLINE_EXCEEDED,
/// UNAVAILABLE (as numbers, so this crate need not name tonic).
const TRANSIENT_GRPC_CODES: [i32; 4] = [1, 2, 4, 14];

fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let transient = match &e {
        E::GRpcStatus(s) => TRANSIENT_GRPC_CODES.contains(&(s.code() as i32)),
        E::TransportError(_) | E::IoError(_) => true,
        _ => false,
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

fn map_lease_err(e: etcd_client::Error, lease: LeaseId) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
            StoreError::LeaseNotFound(lease)
        }
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            StoreError::LeaseNotFound(lease)
        }
        _ => map_err(e),
    }
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn kv_from(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: rev(kv.create_revision()),
        mod_revision: rev(kv.mod_revision()),
        version: rev(kv.version()),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| rev(h.revision()))
}

fn compare_to_etcd(c: &Compare) -> ECompare {
    let op = match c.op {
        CompareOp::Equal => ECompareOp::Equal,
        CompareOp::NotEqual => ECompareOp::NotEqual,
        CompareOp::Greater => ECompareOp::Greater,
        CompareOp::Less => ECompareOp::Less,
    };
    let key = c.key.clone();
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match &c.target {
        CompareTarget::Value(v) => ECompare::value(key, op, v.clone()),
        CompareTarget::Version(v) => ECompare::version(key, op, i(*v)),
        CompareTarget::CreateRevision(r) => ECompare::create_revision(key, op, i(*r)),
        CompareTarget::ModRevision(r) => ECompare::mod_revision(key, op, i(*r)),
    }
}

fn op_to_etcd(op: &TxnOp) -> ETxnOp {
    match op {
        TxnOp::Get(k) => ETxnOp::get(k.clone(), None),
        TxnOp::Put { key, value, lease } => ETxnOp::put(
            key.clone(),
            value.clone(),
            lease.map(|l| PutOptions::new().with_lease(l)),
        ),
        TxnOp::Delete(k) => ETxnOp::delete(k.clone(), None),
        TxnOp::DeletePrefix(p) => ETxnOp::delete(p.clone(), Some(prefix_delete_options(p))),
    }
}

fn prefix_delete_options(prefix: &[u8]) -> etcd_client::DeleteOptions {
    match prefix_end(prefix) {
        Some(end) => etcd_client::DeleteOptions::new().with_range(end),
        // "\0" as range end means "to the end of the keyspace".
        None => etcd_client::DeleteOptions::new().with_range(vec![0]),
    }
}

// === impl EtcdStore ===

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`). A member
    /// that is down is connected to when it is back.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            // A member cut off from the others fails requests and watches at once rather
            // than serving stale data or a silent watch.
            .with_require_leader(true);
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument("no etcd endpoint"));
        }
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let c = Client::connect([e.as_str()], Some(options.clone()))
                .await
                .map_err(map_err)?;
            clients.push(c);
        }
        Ok(Self {
            inner: Arc::new(Members {
                clients,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// Runs `op` on the member that answered last, then on each other member while it fails
    /// transiently (`map` turns its errors into the store's); the last error otherwise.
    async fn call<T, F, Fut>(
        &self,
        map: impl Fn(etcd_client::Error) -> StoreError,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let m = &self.inner;
        let n = m.clients.len();
        let first = m.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match op(m.clients[at].clone()).await {
                Ok(v) => {
                    if at != first {
                        m.current.store(at, Ordering::Relaxed);
                        tracing::info!(member = at, "etcd: using another member");
                    }
                    return Ok(v);
                }
                Err(e) => match map(e) {
                    e @ StoreError::Unavailable(_) => last = Some(e),
                    e => return Err(e),
                },
            }
        }
        Err(last.unwrap_or(StoreError::Unavailable("no etcd member answered".into())))
    }

    /// The connection to try first, and then the others in turn, for `attempt`.
    fn member(&self, attempt: usize) -> Client {
        let m = &self.inner;
        let n = m.clients.len();
        m.clients[(m.current.load(Ordering::Relaxed) + attempt) % n].clone()
    }
}

impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let resp = self
            .call(map_err, |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(kv_from))
    }

    async fn range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page> {
        let start = match after {
            Some(a) if a >= prefix => {
                let mut s = a.to_vec();
                s.push(0);
                s
            }
            _ => prefix.to_vec(),
        };
        let start = if start.is_empty() { vec![0] } else { start };
        let end = prefix_end(prefix).unwrap_or_else(|| vec![0]);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let resp = self
            .call(map_err, |mut c| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let opts = GetOptions::new().with_range(end).with_limit(limit);
                    c.get(start, Some(opts)).await
                }
            })
            .await?;
        Ok(Page {
            kvs: resp.kvs().iter().map(kv_from).collect(),
            more: resp.more(),
            revision: header_revision(resp.header()),
        })
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        if key.is_empty() {
            return Err(StoreError::InvalidArgument("key must not be empty"));
        }
        let resp = self
            .call(
                |e| map_lease_err(e, lease.unwrap_or_default()),
                |mut c| async move {
                    let opts = lease.map(|l| PutOptions::new().with_lease(l));
                    c.put(key, value, opts).await
                },
            )
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        if key.is_empty() {
            return Err(StoreError::InvalidArgument("key must not be empty"));
        }
        let resp = self
            .call(map_err, |mut c| async move { c.delete(key, None).await })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let empty_key =
            txn.success.iter().chain(&txn.failure).any(
                |op| matches!(op, TxnOp::Put { key, .. } | TxnOp::Delete(key) if key.is_empty()),
            );
        if empty_key {
            return Err(StoreError::InvalidArgument("key must not be empty"));
        }
        let lease = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put { lease, .. } => *lease,
                _ => None,
            })
            .unwrap_or_default();
        let etxn = ETxn::new()
            .when(txn.compares.iter().map(compare_to_etcd).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(op_to_etcd).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(op_to_etcd).collect::<Vec<_>>());
        let resp = self
            .call(
                |e| map_lease_err(e, lease),
                |mut c| {
                    let etxn = etxn.clone();
                    async move { c.txn(etxn).await }
                },
            )
            .await?;
        let results = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => TxnOpResult::Get(g.kvs().first().map(kv_from)),
                TxnOpResponse::Put(_) => TxnOpResult::Put,
                TxnOpResponse::Delete(d) => TxnOpResult::Delete(rev(d.deleted())),
                TxnOpResponse::Txn(_) => TxnOpResult::Put,
            })
            .collect();
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header()),
            results,
        })
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher> {
        let from = if from == 0 {
            self.current_revision().await? + 1
        } else {
            from
        };
        let (out, rx) = mpsc::channel(WATCH_OUT_BUFFER);
        let task = tokio::spawn(run_watch(self.clone(), prefix.to_vec(), from, out));
        Ok(Watcher { rx, task })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        if secs == 0 {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be at least one second",
            ));
        }
        let resp = self
            .call(
                map_err,
                |mut c| async move { c.lease_grant(secs, None).await },
            )
            .await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let ttl = self
            .call(
                |e| map_lease_err(e, lease),
                |mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map(|r| r.ttl()))
                },
            )
            .await?;
        match ttl {
            Some(ttl) if ttl > 0 => Ok(Duration::from_secs(rev(ttl))),
            Some(_) => Err(StoreError::LeaseNotFound(lease)),
            None => Err(StoreError::Unavailable(
                "lease keep-alive stream closed".into(),
            )),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.call(
            |e| map_lease_err(e, lease),
            |mut c| async move { c.lease_revoke(lease).await },
        )
        .await?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        // A limit-1 count-only read of a key nobody writes returns the header revision.
        let resp = self
            .call(map_err, |mut c| async move {
                c.get(
                    &b"\0mecfed-revision-probe"[..],
                    Some(GetOptions::new().with_count_only()),
                )
                .await
            })
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let r = i64::try_from(revision)
            .map_err(|_| StoreError::InvalidArgument("revision too large"))?;
        let done = self
            .call(map_err, |mut c| async move {
                match c.compact(r, None).await {
                    Ok(_) => Ok(true),
                    Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("compacted") => {
                        Ok(true)
                    }
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.message().contains("future revision") =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        if done {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument(
                "cannot compact a future revision",
            ))
        }
    }
}

// === watch ===

async fn run_watch(
    store: EtcdStore,
    prefix: Vec<u8>,
    mut next: Revision,
    out: mpsc::Sender<Result<Event>>,
) {
    let mut backoff = Duration::from_millis(50);
    // Each broken stream is opened again on the next member.
    let mut attempt = 0;
    loop {
        let client = store.member(attempt);
        match watch_once(&client, &prefix, &mut next, &out).await {
            WatchEnd::ConsumerGone => return,
            WatchEnd::Fatal(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
            WatchEnd::Progressed => backoff = Duration::from_millis(50),
            WatchEnd::Broken(e) => {
                tracing::debug!(error = %e, next, "etcd watch broken; resuming");
                attempt += 1;
            }
        }
        if out.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

enum WatchEnd {
    ConsumerGone,
    Fatal(StoreError),
    /// The stream ended after delivering something; retry at once-ish.
    Progressed,
    /// The stream could not be opened or broke without progress.
    Broken(StoreError),
}

async fn watch_once(
    client: &Client,
    prefix: &[u8],
    next: &mut Revision,
    out: &mpsc::Sender<Result<Event>>,
) -> WatchEnd {
    let start_rev = i64::try_from(*next).unwrap_or(i64::MAX);
    let (key, opts) = if prefix.is_empty() {
        (vec![0], WatchOptions::new().with_range(vec![0]))
    } else {
        (prefix.to_vec(), WatchOptions::new().with_prefix())
    };
    let opts = opts.with_start_revision(start_rev);
    let mut stream = match client.clone().watch(key, Some(opts)).await {
        Ok(s) => s,
        Err(e) => return WatchEnd::Broken(map_err(e)),
    };
    let mut progressed = false;
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return if progressed {
                    WatchEnd::Progressed
                } else {
                    WatchEnd::Broken(StoreError::Unavailable("watch stream ended".into()))
                };
            }
            Err(e) => {
                return if progressed {
                    WatchEnd::Progressed
                } else {
                    WatchEnd::Broken(map_err(e))
                };
            }
        };
        if resp.compact_revision() > 0 {
            return WatchEnd::Fatal(StoreError::Compacted {
                requested: *next,
                compacted: rev(resp.compact_revision()),
            });
        }
        if resp.canceled() {
            return WatchEnd::Broken(StoreError::Unavailable(
                format!("watch canceled: {}", resp.cancel_reason()).into(),
            ));
        }
        let mut last = None;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let kind = match ev.event_type() {
                etcd_client::EventType::Put => EventKind::Put,
                etcd_client::EventType::Delete => EventKind::Delete,
            };
            let mut kv = kv_from(kv);
            if kind == EventKind::Delete {
                kv.lease = None;
            }
            last = Some(kv.mod_revision);
            if out.send(Ok(Event { kind, kv })).await.is_err() {
                return WatchEnd::ConsumerGone;
            }
        }
        if let Some(r) = last {
            *next = r + 1;
            progressed = true;
        }
    }
}
