//! The embedded backend: redb on local disk behind a write-ahead log.
//!
//! All writes go through one committer thread. It drains every request waiting in its queue
//! into one group, applies the group in a redb write transaction, appends the group's requests
//! to the write-ahead log and fdatasyncs it, and only then commits the redb transaction and
//! acknowledges. Concurrent writers therefore share one small sequential fsync (group commit),
//! nothing is acknowledged before it is durable, and readers never see a write that is not.
//!
//! The redb commits in between are non-durable (`Durability::None`): redb's copy-on-write
//! B-tree would otherwise fsync every page a group touched. Every `checkpoint_interval` (or
//! `checkpoint_bytes` of log) a group commits with `Durability::Immediate` and the log is
//! emptied. Opening the store replays the log records newer than the last checkpoint; replay
//! is deterministic because lease expiries and automatic compactions are logged as explicit
//! operations.
//!
//! Each mutating request gets its own revision; the events of each revision are appended to a
//! log table that watches replay from. Reads use redb's MVCC read transactions directly from
//! the caller's thread.
//!
//! Leases are durable (id and TTL); their deadlines are kept in memory and restart at the full
//! TTL when the store is reopened, as etcd does on a leader change.

use std::{
    collections::HashMap,
    ops::Bound,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
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
    TxnOpResult, TxnResponse, Watcher, prefix_end, wal::Wal,
};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const LEASE_KEYS: MultimapTableDefinition<i64, &[u8]> = MultimapTableDefinition::new("lease_keys");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_LEASE_SEQ: &str = "lease_seq";
const META_WAL_SEQ: &str = "wal_seq";

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
    /// Longest time between durable redb checkpoints (the write-ahead log covers the rest).
    pub checkpoint_interval: Duration,
    /// Write-ahead log size that forces a checkpoint.
    pub checkpoint_bytes: u64,
}

impl EmbeddedConfig {
    /// Defaults for a database at `path`: 100,000 revisions of history, groups of up to
    /// 1,024 requests, a checkpoint every second or 64 MiB of log.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            history_revisions: 100_000,
            max_batch: 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 64 << 20,
        }
    }

    /// The write-ahead log beside the database file (`<name>.wal`).
    pub fn wal_path(&self) -> PathBuf {
        self.path.with_extension("wal")
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
    /// Last compacted revision (mirrors the meta table, for the committer).
    compacted: AtomicU64,
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

/// A write operation as the committer applies it and the write-ahead log records it.
#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Txn(Txn),
    LeaseGrant(u64),
    LeaseRevoke(LeaseId),
    Compact(Revision),
}

/// Where an operation's outcome goes.
enum ReplyTx {
    Txn(oneshot::Sender<Result<TxnResponse>>),
    Lease(oneshot::Sender<Result<LeaseId>>),
    Unit(oneshot::Sender<Result<()>>),
    /// Internal operations (lease expiry, automatic compaction).
    None,
}

/// What applying an operation produced.
enum Outcome {
    Txn(Result<TxnResponse>),
    Lease(Result<LeaseId>),
    Unit(Result<()>),
}

struct Request {
    op: Op,
    reply: ReplyTx,
}

/// A write-ahead log record: one group.
#[derive(Serialize)]
struct WalRecordRef<'a> {
    seq: u64,
    ops: &'a [Op],
}

#[derive(Deserialize)]
struct WalRecord {
    seq: u64,
    ops: Vec<Op>,
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
        let (mut wal, records) =
            Wal::open(&config.wal_path()).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let (revision, wal_seq) = recover(&db, records)?;
        // Everything in the log is now in a durable checkpoint.
        wal.reset().map_err(|e| StoreError::Backend(Box::new(e)))?;
        let leases = load_leases(&db)?;
        let compacted = db
            .begin_read()?
            .open_table(META)?
            .get(META_COMPACTED)?
            .map_or(0, |g| g.value());
        let shared = Arc::new(Shared {
            db,
            hub: Mutex::new(Hub {
                published: revision,
                subs: Vec::new(),
            }),
            leases: Mutex::new(leases),
            closed: AtomicBool::new(false),
            compacted: AtomicU64::new(compacted),
        });
        let (tx, rx) = std_mpsc::channel();
        let committer = Committer {
            shared: shared.clone(),
            rx,
            revision,
            wal,
            wal_seq,
            last_checkpoint: Instant::now(),
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

    async fn call<T>(
        &self,
        op: Op,
        reply: impl FnOnce(oneshot::Sender<Result<T>>) -> ReplyTx,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        // A send error means the committer is gone; the dropped reply sender makes `rx`
        // resolve to an error, reported as Closed.
        let _ = self.handle.tx.send(Request {
            op,
            reply: reply(tx),
        });
        rx.await.map_err(|_| StoreError::Closed)?
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
        self.call(Op::Txn(txn), ReplyTx::Txn).await
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher> {
        if self.handle.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        // "After now" is after this call, not after the watch task first runs: writes made
        // between the two would otherwise be skipped.
        let from = if from == 0 {
            self.handle.shared.hub.lock().published + 1
        } else {
            from
        };
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
        self.call(Op::LeaseGrant(secs), ReplyTx::Lease).await
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
        self.call(Op::LeaseRevoke(lease), ReplyTx::Unit).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        // A stopped committer (after a failed commit) must not look healthy to readiness
        // checks, even though reads of what is stored would still work.
        if self.handle.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.read_revision()
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.call(Op::Compact(revision), ReplyTx::Unit).await
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

// === recovery ===

/// Ensures the tables exist and replays the log records newer than the last checkpoint, as
/// one durable commit. Returns the revision and log sequence number the store continues from.
fn recover(db: &Database, records: Vec<Vec<u8>>) -> Result<(Revision, u64)> {
    let wtx = db.begin_write()?;
    let (revision, wal_seq);
    {
        let mut w = Writer::open(&wtx, 0)?;
        w.revision = w.meta.get(META_REVISION)?.map_or(0, |g| g.value());
        let checkpointed = w.meta.get(META_WAL_SEQ)?.map_or(0, |g| g.value());
        let mut next = checkpointed + 1;
        let mut replayed = 0usize;
        for bytes in records {
            let Ok(rec) = postcard::from_bytes::<WalRecord>(&bytes) else {
                tracing::warn!("undecodable write-ahead log record; replay stops there");
                break;
            };
            if rec.seq < next {
                continue; // already in the checkpoint
            }
            if rec.seq != next {
                break; // stale bytes from before a reset
            }
            let mut ignored = Vec::new();
            for op in &rec.ops {
                w.apply(op, &mut ignored)?;
            }
            next += 1;
            replayed += 1;
        }
        wal_seq = next - 1;
        w.meta.insert(META_WAL_SEQ, wal_seq)?;
        w.finish()?;
        revision = w.revision;
        if replayed > 0 {
            tracing::info!(replayed, revision, "replayed the write-ahead log");
        }
    }
    wtx.commit()?;
    Ok((revision, wal_seq))
}

fn load_leases(db: &Database) -> Result<HashMap<LeaseId, LiveLease>> {
    let rtx = db.begin_read()?;
    let now = Instant::now();
    let mut leases = HashMap::new();
    for row in rtx.open_table(LEASES)?.iter()? {
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
    Ok(leases)
}

// === committer ===

struct Committer {
    shared: Arc<Shared>,
    rx: std_mpsc::Receiver<Request>,
    revision: Revision,
    wal: Wal,
    /// Sequence number of the last group in the log.
    wal_seq: u64,
    last_checkpoint: Instant,
    config: EmbeddedConfig,
}

/// Why a group failed.
enum GroupError {
    /// Nothing of the group took effect.
    Aborted(StoreError),
    /// The log may hold the group but redb did not commit it: memory is behind the disk, so
    /// the store stops; reopening replays the log.
    Poisoned(StoreError),
}

impl Committer {
    fn run(mut self) {
        loop {
            let timeout = self.next_wakeup();
            let first = match self.rx.recv_timeout(timeout) {
                Ok(r) => Some(r),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group: Vec<Request> = self.expired_leases();
            group.extend(first);
            while group.len() < self.config.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                if self.wal.len() > 0
                    && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval
                    && let Err(e) = self.checkpoint()
                {
                    tracing::warn!(error = %e, "idle checkpoint failed");
                }
            } else if !self.commit_group(group) {
                break;
            }
        }
        self.shutdown();
    }

    /// Marks the store closed, ends every watch, and leaves a clean checkpoint behind.
    fn shutdown(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.hub.lock().subs.clear();
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "final checkpoint failed; the log will be replayed");
        }
    }

    /// Makes every non-durable commit durable and empties the log.
    fn checkpoint(&mut self) -> Result<()> {
        let wtx = self.shared.db.begin_write()?;
        wtx.commit()?;
        self.wal
            .reset()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn next_wakeup(&self) -> Duration {
        let leases = self.shared.leases.lock();
        let now = Instant::now();
        leases
            .values()
            .map(|l| l.deadline.saturating_duration_since(now))
            .min()
            .map_or(Duration::from_secs(3600), |d| {
                d.max(Duration::from_millis(1))
            })
            .min(self.config.checkpoint_interval)
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
                Request {
                    op: Op::LeaseRevoke(id),
                    reply: ReplyTx::None,
                }
            })
            .collect()
    }

    /// Commits one group; returns false when the store must stop.
    fn commit_group(&mut self, group: Vec<Request>) -> bool {
        let (mut ops, mut replies): (Vec<Op>, Vec<ReplyTx>) =
            group.into_iter().map(|r| (r.op, r.reply)).unzip();
        if let Some(to) = self.auto_compaction() {
            ops.push(Op::Compact(to));
            replies.push(ReplyTx::None);
        }
        let checkpoint = self.wal.len() >= self.config.checkpoint_bytes
            || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        let mut published = Vec::new();
        match self.apply_group(&ops, checkpoint, &mut published) {
            Ok(outcomes) => {
                if checkpoint {
                    self.last_checkpoint = Instant::now();
                    if let Err(e) = self.wal.reset() {
                        // Harmless: its records are older than the checkpoint and skipped.
                        tracing::warn!(error = %e, "emptying the write-ahead log failed");
                    }
                }
                self.publish(published);
                self.acknowledge(&ops, outcomes, replies);
                true
            }
            Err(GroupError::Aborted(e)) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store commit failed");
                fail_all(replies, &e);
                true
            }
            Err(GroupError::Poisoned(e)) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store commit failed after logging; stopping the store");
                fail_all(replies, &e);
                false
            }
        }
    }

    /// A compaction to keep `history_revisions`, once history has grown 10% past it.
    fn auto_compaction(&self) -> Option<Revision> {
        let history = self.config.history_revisions;
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        (self.revision.saturating_sub(compacted) > history + history / 10)
            .then(|| self.revision - history)
    }

    /// Applies `ops` in a redb transaction, logs them durably, then commits redb.
    fn apply_group(
        &mut self,
        ops: &[Op],
        checkpoint: bool,
        published: &mut Vec<(Revision, Vec<Event>)>,
    ) -> Result<Vec<Outcome>, GroupError> {
        let seq = self.wal_seq + 1;
        let aborted = GroupError::Aborted;
        let mut wtx = self
            .shared
            .db
            .begin_write()
            .map_err(|e| aborted(e.into()))?;
        let durability = if checkpoint {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        wtx.set_durability(durability)
            .map_err(|e| aborted(StoreError::Backend(Box::new(e))))?;
        let (outcomes, revision, compacted) = {
            let mut w = Writer::open(&wtx, self.revision).map_err(aborted)?;
            let outcomes = ops
                .iter()
                .map(|op| w.apply(op, published))
                .collect::<Result<Vec<_>>>()
                .map_err(aborted)?;
            w.meta
                .insert(META_WAL_SEQ, seq)
                .map_err(|e| aborted(e.into()))?;
            w.finish().map_err(aborted)?;
            (outcomes, w.revision, w.compacted().map_err(aborted)?)
        };
        let record = encode(&WalRecordRef { seq, ops }).map_err(aborted)?;
        // From here on the group may be durable: a failure poisons the store.
        self.wal
            .append(&record)
            .map_err(|e| GroupError::Poisoned(StoreError::Backend(Box::new(e))))?;
        wtx.commit().map_err(|e| GroupError::Poisoned(e.into()))?;
        self.wal_seq = seq;
        self.revision = revision;
        self.shared.compacted.store(compacted, Ordering::Release);
        Ok(outcomes)
    }

    fn publish(&self, published: Vec<(Revision, Vec<Event>)>) {
        let mut hub = self.shared.hub.lock();
        for batch in published {
            let batch = Arc::new(batch);
            hub.subs.retain(|s| s.try_send(batch.clone()).is_ok());
        }
        hub.published = self.revision;
    }

    fn acknowledge(&self, ops: &[Op], outcomes: Vec<Outcome>, replies: Vec<ReplyTx>) {
        for ((op, outcome), reply) in ops.iter().zip(outcomes).zip(replies) {
            match (op, &outcome) {
                (Op::LeaseGrant(ttl), Outcome::Lease(Ok(id))) => {
                    let ttl = Duration::from_secs(*ttl);
                    self.shared.leases.lock().insert(
                        *id,
                        LiveLease {
                            ttl,
                            deadline: Instant::now() + ttl,
                        },
                    );
                }
                (Op::LeaseRevoke(id), _) => {
                    self.shared.leases.lock().remove(id);
                }
                _ => {}
            }
            match (reply, outcome) {
                (ReplyTx::Txn(tx), Outcome::Txn(r)) => drop(tx.send(r)),
                (ReplyTx::Lease(tx), Outcome::Lease(r)) => drop(tx.send(r)),
                (ReplyTx::Unit(tx), Outcome::Unit(r)) => drop(tx.send(r)),
                (ReplyTx::None, _) => {}
                _ => unreachable!("each operation kind has its own reply kind"),
            }
        }
    }
}

fn fail_all(replies: Vec<ReplyTx>, e: &StoreError) {
    let err = || StoreError::Backend(e.to_string().into());
    for r in replies {
        match r {
            ReplyTx::Txn(tx) => drop(tx.send(Err(err()))),
            ReplyTx::Lease(tx) => drop(tx.send(Err(err()))),
            ReplyTx::Unit(tx) => drop(tx.send(Err(err()))),
            ReplyTx::None => {}
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

    /// Applies one operation. Logical refusals become the operation's own error outcome and
    /// change nothing; storage errors abort the whole group.
    fn apply(&mut self, op: &Op, published: &mut Vec<(Revision, Vec<Event>)>) -> Result<Outcome> {
        Ok(match op {
            Op::Txn(txn) => Outcome::Txn(self.txn(txn, published)?),
            Op::LeaseGrant(ttl) => {
                let id = self.meta.get(META_LEASE_SEQ)?.map_or(0, |g| g.value()) + 1;
                self.meta.insert(META_LEASE_SEQ, id)?;
                let id = LeaseId::try_from(id).map_err(|e| StoreError::Backend(Box::new(e)))?;
                self.leases.insert(id, *ttl)?;
                Outcome::Lease(Ok(id))
            }
            Op::LeaseRevoke(id) => Outcome::Unit(self.revoke(*id, published)?),
            Op::Compact(rev) => Outcome::Unit(if *rev > self.revision {
                Err(StoreError::InvalidArgument(
                    "cannot compact a future revision",
                ))
            } else {
                self.compact(*rev)
            }),
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
