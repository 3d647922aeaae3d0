//! The embedded backend: redb on local disk.
//!
//! All writes go through one committer thread. It drains every request waiting in its queue
//! into a single redb write transaction and commits it with `Durability::Immediate` (fsync),
//! so concurrent writers share one fsync (group commit) and nothing is acknowledged before it
//! is on disk. Each mutating request gets its own revision; the events of each revision are
//! appended to a log table that watches replay from. Reads use redb's MVCC read
//! transactions directly from the caller's thread.
//!
//! Leases are durable (id and TTL); their deadlines are kept in memory and restart at the full
//! TTL when the store is reopened, as etcd does on a leader change.

use std::{
    collections::HashMap,
    ops::Bound,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Event, EventKind, KeyValue, LeaseId, Page, Result, Revision, Store, StoreError, Txn, TxnOp,
    TxnOpResult, TxnResponse, Watcher, prefix_end,
};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: MultimapTableDefinition<i64, &[u8]> = MultimapTableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_LEASE_SEQ: &str = "lease_seq";

/// Events buffered per watcher before it falls back to replaying from the log.
const WATCH_LIVE_BUFFER: usize = 1024;
/// Events buffered between a watch task and its consumer.
const WATCH_OUT_BUFFER: usize = 256;
/// Revisions read from the log per replay step.
const REPLAY_CHUNK: u64 = 512;

/// Configuration of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Database file.
    pub path: PathBuf,
    /// Revisions of history kept for watches; older ones are compacted automatically.
    pub history_revisions: u64,
    /// Most requests committed in one group.
    pub max_batch: usize,
}

impl EmbeddedConfig {
    /// Defaults for a database at `path`: 100,000 revisions of history, batches of up to 1,024.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history_revisions: 100_000,
            max_batch: 1024,
        }
    }
}

/// The embedded durable store. Clones share the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

/// Owned by store handles; dropping the last one stops the committer.
struct Handle {
    tx: std_mpsc::Sender<Request>,
    shared: Arc<Shared>,
    committer: Mutex<Option<thread::JoinHandle<()>>>,
}

/// State shared by handles, the committer and watch tasks.
struct Shared {
    db: Database,
    hub: Mutex<Hub>,
    leases: Mutex<HashMap<LeaseId, LiveLease>>,
    closed: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct LiveLease {
    ttl: Duration,
    deadline: Instant,
}

/// One committed revision and its events, shared by every live watcher.
type LiveBatch = Arc<(Revision, Vec<Event>)>;

/// Live watch subscribers and the last revision published to them.
struct Hub {
    published: Revision,
    subs: Vec<mpsc::Sender<LiveBatch>>,
}

enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    LeaseGrant(u64, oneshot::Sender<Result<LeaseId>>),
    LeaseRevoke(LeaseId, Option<oneshot::Sender<Result<()>>>),
    Compact(Revision, oneshot::Sender<Result<()>>),
}

/// A key's stored form (the key itself is the table key).
#[derive(Serialize, Deserialize)]
struct StoredKv {
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
    lease: Option<LeaseId>,
    value: Vec<u8>,
}

impl StoredKv {
    fn into_kv(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

fn decode_kv(key: &[u8], bytes: &[u8]) -> Result<KeyValue> {
    let s: StoredKv = postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(Box::new(e)))?;
    Ok(s.into_kv(key.to_vec()))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| StoreError::Backend(Box::new(e)))
}

// === impl EmbeddedStore ===

impl EmbeddedStore {
    /// Opens (or creates) the database and starts the committer thread.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        if config.max_batch == 0 {
            return Err(StoreError::InvalidArgument("max_batch must be at least 1"));
        }
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let db = Database::create(&config.path)?;
        let (revision, leases) = {
            let wtx = db.begin_write()?;
            let revision;
            let mut leases = HashMap::new();
            {
                wtx.open_table(KV)?;
                wtx.open_table(LOG)?;
                wtx.open_multimap_table(LEASE_KEYS)?;
                let meta = wtx.open_table(META)?;
                revision = meta.get(META_REVISION)?.map_or(0, |g| g.value());
                let now = Instant::now();
                for row in wtx.open_table(LEASES)?.iter()? {
                    let (id, ttl) = row?;
                    let ttl = Duration::from_secs(ttl.value());
                    leases.insert(
                        id.value(),
                        LiveLease {
                            ttl,
                            deadline: now + ttl,
                        },
                    );
                }
            }
            wtx.commit()?;
            (revision, leases)
        };
        let shared = Arc::new(Shared {
            db,
            hub: Mutex::new(Hub {
                published: revision,
                subs: Vec::new(),
            }),
            leases: Mutex::new(leases),
            closed: AtomicBool::new(false),
        });
        let (tx, rx) = std_mpsc::channel();
        let committer = Committer {
            shared: shared.clone(),
            rx,
            revision,
            config,
        };
        let join = thread::Builder::new()
            .name("mecfed-store-commit".into())
            .spawn(move || committer.run())
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            handle: Arc::new(Handle {
                tx,
                shared,
                committer: Mutex::new(Some(join)),
            }),
        })
    }

    /// Opens with default configuration.
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self> {
        Self::open(EmbeddedConfig::new(path))
    }

    fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> oneshot::Receiver<Result<T>> {
        let (tx, rx) = oneshot::channel();
        // A send error means the committer is gone; the dropped reply sender makes `rx`
        // resolve to an error, reported as Closed below.
        let _ = self.handle.tx.send(make(tx));
        rx
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        self.send(make).await.map_err(|_| StoreError::Closed)?
    }

    fn read_revision(&self) -> Result<Revision> {
        let rtx = self.handle.shared.db.begin_read()?;
        let meta = rtx.open_table(META)?;
        Ok(meta.get(META_REVISION)?.map_or(0, |g| g.value()))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing `tx` (dropped after this) stops the committer; wait for it so that the
        // database file is released when the last handle is gone.
        let (dummy, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.tx, dummy));
        if let Some(join) = self.committer.lock().take() {
            let _ = join.join();
        }
    }
}

impl Store for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let rtx = self.handle.shared.db.begin_read()?;
        let kv = rtx.open_table(KV)?;
        match kv.get(key)? {
            Some(g) => Ok(Some(decode_kv(key, g.value())?)),
            None => Ok(None),
        }
    }

    async fn range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page> {
        let rtx = self.handle.shared.db.begin_read()?;
        let revision = rtx
            .open_table(META)?
            .get(META_REVISION)?
            .map_or(0, |g| g.value());
        let kv = rtx.open_table(KV)?;
        let lower = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let end = prefix_end(prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut kvs = Vec::new();
        let mut more = false;
        for row in kv.range::<&[u8]>((lower, upper))? {
            let (k, v) = row?;
            if kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(decode_kv(k.value(), v.value())?);
        }
        Ok(Page {
            kvs,
            more,
            revision,
        })
    }

    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        let txn = Txn::new().and_then([TxnOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        }]);
        Ok(self.txn(txn).await?.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let resp = self
            .txn(Txn::new().and_then([TxnOp::Delete(key.to_vec())]))
            .await?;
        Ok(matches!(resp.results.first(), Some(TxnOpResult::Delete(n)) if *n > 0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.call(|reply| Request::Txn(txn, reply)).await
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher> {
        if self.handle.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (out, rx) = mpsc::channel(WATCH_OUT_BUFFER);
        let task = tokio::spawn(run_watch(
            self.handle.shared.clone(),
            prefix.to_vec(),
            from,
            out,
        ));
        Ok(Watcher { rx, task })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs();
        if secs == 0 {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be at least one second",
            ));
        }
        self.call(|reply| Request::LeaseGrant(secs, reply)).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let mut leases = self.handle.shared.leases.lock();
        let live = leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        live.deadline = Instant::now() + live.ttl;
        Ok(live.ttl)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.call(|reply| Request::LeaseRevoke(lease, Some(reply)))
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.read_revision()
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.call(|reply| Request::Compact(revision, reply)).await
    }
}

// === watch ===

async fn run_watch(
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    from: Revision,
    out: mpsc::Sender<Result<Event>>,
) {
    let mut next = from;
    let matches = |e: &Event| e.kv.key.starts_with(&prefix);
    loop {
        // Register for live batches first, then replay what was published before: together
        // they cover every revision exactly once.
        let (published, mut live) = {
            let mut hub = shared.hub.lock();
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            let (tx, rx) = mpsc::channel(WATCH_LIVE_BUFFER);
            hub.subs.push(tx);
            (hub.published, rx)
        };
        if next == 0 {
            next = published + 1;
        }
        while next <= published {
            let to = published.min(next + REPLAY_CHUNK - 1);
            let batches = match read_log(&shared.db, next, to) {
                Ok(b) => b,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            for (_, events) in batches {
                for e in events.into_iter().filter(|e| matches(e)) {
                    if out.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
            next = to + 1;
        }
        while let Some(batch) = live.recv().await {
            let (rev, events) = &*batch;
            if *rev < next {
                continue;
            }
            for e in events.iter().filter(|e| matches(e)) {
                if out.send(Ok(e.clone())).await.is_err() {
                    return;
                }
            }
            next = rev + 1;
        }
        // The committer dropped us: either we lagged (resume from the log) or it shut down.
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Events of revisions `from..=to` from the log, or `Compacted` when `from` is gone.
fn read_log(db: &Database, from: Revision, to: Revision) -> Result<Vec<(Revision, Vec<Event>)>> {
    let rtx = db.begin_read()?;
    let compacted = rtx
        .open_table(META)?
        .get(META_COMPACTED)?
        .map_or(0, |g| g.value());
    if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted,
        });
    }
    let log = rtx.open_table(LOG)?;
    let mut out = Vec::new();
    for row in log.range(from..=to)? {
        let (rev, bytes) = row?;
        let events: Vec<Event> =
            postcard::from_bytes(bytes.value()).map_err(|e| StoreError::Corrupt(Box::new(e)))?;
        out.push((rev.value(), events));
    }
    Ok(out)
}

// === committer ===

struct Committer {
    shared: Arc<Shared>,
    rx: std_mpsc::Receiver<Request>,
    revision: Revision,
    config: EmbeddedConfig,
}

/// A reply to send once the batch is durable.
enum Reply {
    Txn(oneshot::Sender<Result<TxnResponse>>, Result<TxnResponse>),
    Grant(oneshot::Sender<Result<LeaseId>>, Result<LeaseId>, Duration),
    Revoke(Option<oneshot::Sender<Result<()>>>, Result<()>, LeaseId),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn fail(self, e: &StoreError) {
        let err = || StoreError::Backend(e.to_string().into());
        match self {
            Reply::Txn(tx, _) => drop(tx.send(Err(err()))),
            Reply::Grant(tx, _, _) => drop(tx.send(Err(err()))),
            Reply::Revoke(tx, _, _) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(err()));
                }
            }
            Reply::Unit(tx, _) => drop(tx.send(Err(err()))),
        }
    }
}

impl Committer {
    fn run(mut self) {
        loop {
            let timeout = self.next_lease_wakeup();
            let first = match self.rx.recv_timeout(timeout) {
                Ok(r) => Some(r),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch: Vec<Request> = self.expired_leases();
            batch.extend(first);
            while batch.len() < self.config.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        // Dropping the subscribers ends every watch task.
        self.shared.hub.lock().subs.clear();
    }

    fn next_lease_wakeup(&self) -> Duration {
        let leases = self.shared.leases.lock();
        let now = Instant::now();
        leases
            .values()
            .map(|l| l.deadline.saturating_duration_since(now))
            .min()
            .map_or(Duration::from_secs(3600), |d| {
                d.max(Duration::from_millis(1))
            })
    }

    /// Takes leases past their deadline out of the live set (so keep-alives now fail) and
    /// returns their revocations.
    fn expired_leases(&self) -> Vec<Request> {
        let now = Instant::now();
        let mut leases = self.shared.leases.lock();
        let expired: Vec<LeaseId> = leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .map(|id| {
                leases.remove(&id);
                tracing::debug!(lease = id, "lease expired");
                Request::LeaseRevoke(id, None)
            })
            .collect()
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let start_revision = self.revision;
        let mut published = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<()> {
            let wtx = self.shared.db.begin_write()?;
            {
                let mut w = Writer::open(&wtx, self.revision)?;
                for req in batch {
                    replies.push(w.apply(req, &mut published)?);
                }
                if w.revision - w.compacted()? > self.config.history_revisions * 11 / 10 {
                    let to = w.revision - self.config.history_revisions;
                    w.compact(to)?;
                }
                w.finish()?;
                self.revision = w.revision;
            }
            wtx.commit()?;
            Ok(())
        })();
        if let Err(e) = outcome {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store commit failed");
            self.revision = start_revision;
            for r in replies {
                r.fail(&e);
            }
            return;
        }
        // Durable: publish to watchers, then acknowledge.
        {
            let mut hub = self.shared.hub.lock();
            for batch in published {
                let batch = Arc::new(batch);
                hub.subs.retain(|s| s.try_send(batch.clone()).is_ok());
            }
            hub.published = self.revision;
        }
        for r in replies {
            match r {
                Reply::Txn(tx, res) => drop(tx.send(res)),
                Reply::Grant(tx, res, ttl) => {
                    if let Ok(id) = &res {
                        self.shared.leases.lock().insert(
                            *id,
                            LiveLease {
                                ttl,
                                deadline: Instant::now() + ttl,
                            },
                        );
                    }
                    let _ = tx.send(res);
                }
                Reply::Revoke(tx, res, id) => {
                    self.shared.leases.lock().remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(res);
                    }
                }
                Reply::Unit(tx, res) => drop(tx.send(res)),
            }
        }
    }
}

/// The tables of one write transaction and the revision being built.
struct Writer<'t> {
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    log: redb::Table<'t, u64, &'static [u8]>,
    meta: redb::Table<'t, &'static str, u64>,
    leases: redb::Table<'t, i64, u64>,
    lease_keys: redb::MultimapTable<'t, i64, &'static [u8]>,
    revision: Revision,
}

impl<'t> Writer<'t> {
    fn open(wtx: &'t WriteTransaction, revision: Revision) -> Result<Self> {
        Ok(Self {
            kv: wtx.open_table(KV)?,
            log: wtx.open_table(LOG)?,
            meta: wtx.open_table(META)?,
            leases: wtx.open_table(LEASES)?,
            lease_keys: wtx.open_multimap_table(LEASE_KEYS)?,
            revision,
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.meta.insert(META_REVISION, self.revision)?;
        Ok(())
    }

    fn compacted(&self) -> Result<Revision> {
        Ok(self.meta.get(META_COMPACTED)?.map_or(0, |g| g.value()))
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.kv.get(key)? {
            Some(g) => Ok(Some(decode_kv(key, g.value())?)),
            None => Ok(None),
        }
    }

    /// Applies one request. Logical refusals become the request's own error reply and change
    /// nothing; storage errors abort the whole batch.
    fn apply(
        &mut self,
        req: Request,
        published: &mut Vec<(Revision, Vec<Event>)>,
    ) -> Result<Reply> {
        Ok(match req {
            Request::Txn(txn, tx) => {
                let res = self.txn(&txn, published)?;
                Reply::Txn(tx, res)
            }
            Request::LeaseGrant(ttl, tx) => {
                let id = self.meta.get(META_LEASE_SEQ)?.map_or(0, |g| g.value()) + 1;
                self.meta.insert(META_LEASE_SEQ, id)?;
                let id = LeaseId::try_from(id).map_err(|e| StoreError::Backend(Box::new(e)))?;
                self.leases.insert(id, ttl)?;
                Reply::Grant(tx, Ok(id), Duration::from_secs(ttl))
            }
            Request::LeaseRevoke(id, tx) => {
                let res = self.revoke(id, published)?;
                Reply::Revoke(tx, res, id)
            }
            Request::Compact(rev, tx) => {
                let res = if rev > self.revision {
                    Err(StoreError::InvalidArgument(
                        "cannot compact a future revision",
                    ))
                } else {
                    self.compact(rev)
                };
                Reply::Unit(tx, res)
            }
        })
    }

    fn txn(
        &mut self,
        txn: &Txn,
        published: &mut Vec<(Revision, Vec<Event>)>,
    ) -> Result<Result<TxnResponse>> {
        let mut succeeded = true;
        for c in &txn.compares {
            if !c.holds(self.get(&c.key)?.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Refuse before changing anything.
        for op in ops {
            match op {
                TxnOp::Put { key, .. } | TxnOp::Delete(key) if key.is_empty() => {
                    return Ok(Err(StoreError::InvalidArgument("key must not be empty")));
                }
                TxnOp::Put { lease: Some(l), .. } if self.leases.get(*l)?.is_none() => {
                    return Ok(Err(StoreError::LeaseNotFound(*l)));
                }
                _ => {}
            }
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Get(key) => TxnOpResult::Get(self.get(key)?),
                TxnOp::Put { key, value, lease } => {
                    events.push(self.put(key, value, *lease, rev)?);
                    TxnOpResult::Put
                }
                TxnOp::Delete(key) => {
                    let n = self.delete_one(key, rev, &mut events)?;
                    TxnOpResult::Delete(n)
                }
                TxnOp::DeletePrefix(prefix) => {
                    let keys = self.keys_with_prefix(prefix)?;
                    let mut n = 0;
                    for key in keys {
                        n += self.delete_one(&key, rev, &mut events)?;
                    }
                    TxnOpResult::Delete(n)
                }
            });
        }
        self.record(rev, events, published)?;
        Ok(Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        }))
    }

    /// Makes `rev` the new revision if `events` changed anything.
    fn record(
        &mut self,
        rev: Revision,
        events: Vec<Event>,
        published: &mut Vec<(Revision, Vec<Event>)>,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.log.insert(rev, encode(&events)?.as_slice())?;
        self.revision = rev;
        published.push((rev, events));
        Ok(())
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let end = prefix_end(prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = Vec::new();
        for row in self.kv.range::<&[u8]>((Bound::Included(prefix), upper))? {
            keys.push(row?.0.value().to_vec());
        }
        Ok(keys)
    }

    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        rev: Revision,
    ) -> Result<Event> {
        let old = self.get(key)?;
        if let Some(old_lease) = old.as_ref().and_then(|o| o.lease)
            && Some(old_lease) != lease
        {
            self.lease_keys.remove(old_lease, key)?;
        }
        if let Some(l) = lease {
            self.lease_keys.insert(l, key)?;
        }
        let stored = StoredKv {
            create_revision: old.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: old.as_ref().map_or(0, |o| o.version) + 1,
            lease,
            value: value.to_vec(),
        };
        self.kv.insert(key, encode(&stored)?.as_slice())?;
        Ok(Event {
            kind: EventKind::Put,
            kv: stored.into_kv(key.to_vec()),
        })
    }

    fn delete_one(&mut self, key: &[u8], rev: Revision, events: &mut Vec<Event>) -> Result<u64> {
        let Some(old) = self.get(key)? else {
            return Ok(0);
        };
        self.kv.remove(key)?;
        if let Some(l) = old.lease {
            self.lease_keys.remove(l, key)?;
        }
        events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                value: Vec::new(),
                create_revision: old.create_revision,
                mod_revision: rev,
                version: 0,
                lease: None,
            },
        });
        Ok(1)
    }

    fn revoke(
        &mut self,
        id: LeaseId,
        published: &mut Vec<(Revision, Vec<Event>)>,
    ) -> Result<Result<()>> {
        if self.leases.remove(id)?.is_none() {
            return Ok(Err(StoreError::LeaseNotFound(id)));
        }
        let mut keys = Vec::new();
        for k in self.lease_keys.remove_all(id)? {
            keys.push(k?.value().to_vec());
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for key in keys {
            // Only delete keys still attached to this lease.
            if self.get(&key)?.is_some_and(|kv| kv.lease == Some(id)) {
                self.delete_one(&key, rev, &mut events)?;
            }
        }
        self.record(rev, events, published)?;
        Ok(Ok(()))
    }

    fn compact(&mut self, rev: Revision) -> Result<()> {
        if rev <= self.compacted()? {
            return Ok(());
        }
        self.log.retain_in(..rev, |_, _| false)?;
        self.meta.insert(META_COMPACTED, rev)?;
        Ok(())
    }
}
