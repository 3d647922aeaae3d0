//! Engines: the notifications a kind of document implies, derived level-triggered from the
//! store, never by the handlers that write the documents.
//!
//! An [`Engine`] follows one kind of document (a [`Source`]: UEs, app instances). It keeps,
//! per document, the version it last turned into notifications: its *view*, stored under
//! `/mecfed/v1/views/<source>/<id>`. A document that differs from its view is *dirty*; the
//! engine asks the source what the change from view to document implies for each
//! subscription that may concern it, and writes those notifications, the subscriptions'
//! advanced sequence numbers and the new view in one transaction (the view in the last one
//! when a change touches more subscriptions than one transaction may hold). A crash at any
//! point leaves either the old view (the change is computed again: at least once) or the new
//! one with every notification queued. Nothing the documents imply is forgotten, and the
//! engine needs no history of the store, so compaction cannot make it lose events.
//!
//! Cost: subscriptions are indexed by the keys they name ([`Source::keys_of`]: zones,
//! addresses, cells, instances), and a change is checked only against the subscriptions under
//! the keys it touches ([`Source::change_keys`]), so a change costs work in proportion to the
//! subscriptions it may match, not to the number of documents or subscriptions.
//!
//! Only the elected leader (`/mecfed/v1/leaders/<source>-events`) runs an engine; every
//! write is guarded by the revisions it read, so a deposed leader's late write fails.

pub mod instance;
pub mod ue;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    marker::PhantomData,
    time::Duration,
};

use mecfed_store::{
    Compare, Event, EventKind, Revision, Store, Txn, TxnOp, Watcher,
    typed::{self, KEY_ROOT, Resource, Typed},
};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;

use crate::{
    ApiError,
    notify::{self, Emit, MAX_PENDING_PER_SUBSCRIPTION, Subscription},
};

/// Most operations in one transaction (etcd refuses more than 128).
const MAX_OPS: usize = 100;

/// Dirty documents processed between two looks at the watches.
const BATCH: usize = 256;

/// A kind of document whose changes imply notifications, and how.
pub trait Source: Sized + Send + Sync + 'static {
    /// The document followed.
    type Doc: Resource + Clone + PartialEq + Send + Sync + 'static;
    /// A subscription of this source's families, parsed once.
    type Parsed: Send + Sync + 'static;
    /// The source's name: views under `/mecfed/v1/views/<NAME>/`, metrics label.
    const NAME: &'static str;

    /// The part of a document the source depends on; views keep only it, and a change of
    /// anything else is no change.
    fn normalize(doc: Self::Doc) -> Self::Doc {
        doc
    }

    /// The prefix of documents the source reads besides its own (sites, for UEs).
    fn context_prefix() -> Option<Vec<u8>> {
        None
    }

    /// The source's state over `views` (the documents as last processed), with whatever
    /// context it reads.
    fn load<S: Store>(
        store: &Typed<S>,
        views: Vec<Self::Doc>,
    ) -> impl Future<Output = Result<Self, ApiError>> + Send;

    /// A change of a context document.
    fn on_context(&mut self, _event: &Event) {}

    /// The view of document `id`.
    fn view(&self, id: &str) -> Option<&Self::Doc>;

    /// Sets the view of document `id` (`None`: gone).
    fn set_view(&mut self, id: &str, doc: Option<Self::Doc>);

    /// `sub` parsed, when it is of this source's families.
    fn parse(sub: &Subscription) -> Option<Self::Parsed>;

    /// The index keys `sub` names; `None` when every change must be checked against it.
    fn keys_of(sub: &Subscription, parsed: &Self::Parsed) -> Option<Vec<String>>;

    /// The index keys the change of `id` from its view to `now` touches.
    fn change_keys(&self, id: &str, now: Option<&Self::Doc>) -> Vec<String>;

    /// What each of `subs` gets for the change of document `id` from its view to `now`
    /// (`None`: nothing), in their order; the change is worked out once for all of them.
    fn plan<'a, S: Store>(
        &'a self,
        store: &'a Typed<S>,
        id: &'a str,
        now: Option<&'a Self::Doc>,
        subs: Vec<(&'a Subscription, &'a Self::Parsed)>,
    ) -> impl Future<Output = Result<Vec<Option<Emit>>, ApiError>> + Send + 'a;
}

/// Metrics of every engine, `mecfed_engine_*{engine}`.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    processed: IntCounterVec,
    queued: IntCounterVec,
    dropped: IntCounterVec,
    conflicts: IntCounterVec,
    backlog: IntGaugeVec,
    leader: IntGaugeVec,
}

impl EngineMetrics {
    /// Registers the metrics in `registry` (once per process; engines share clones).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["engine"]);
        let m = Self {
            processed: counter(
                "mecfed_engine_changes_processed_total",
                "Document changes turned into notifications",
                &["engine"],
            )?,
            queued: counter(
                "mecfed_engine_notifications_total",
                "Notifications queued by an engine",
                &["engine", "family"],
            )?,
            dropped: counter(
                "mecfed_engine_notifications_dropped_total",
                "Notifications not queued because their subscription's outbox was full",
                &["engine", "family"],
            )?,
            conflicts: counter(
                "mecfed_engine_conflicts_total",
                "Engine writes refused because a subscription or view changed meanwhile",
                &["engine"],
            )?,
            backlog: gauge(
                "mecfed_engine_backlog",
                "Documents changed and not yet processed",
            )?,
            leader: gauge(
                "mecfed_engine_leader",
                "1 while this process runs the engine",
            )?,
        };
        registry.register(Box::new(m.processed.clone()))?;
        registry.register(Box::new(m.queued.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.backlog.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        Ok(m)
    }
}

// === the subscription index ===

struct SubEntry<P> {
    sub: Subscription,
    revision: Revision,
    parsed: P,
}

/// A source's subscriptions, indexed by the keys they name.
struct SubIndex<X: Source> {
    entries: HashMap<String, SubEntry<X::Parsed>>,
    by_key: HashMap<String, BTreeSet<String>>,
    /// Subscriptions naming nothing indexable: every change is checked against them.
    unkeyed: BTreeSet<String>,
    /// The revision of the last change seen per subscription, deletions included.
    seen: HashMap<String, Revision>,
}

impl<X: Source> Default for SubIndex<X> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_key: HashMap::new(),
            unkeyed: BTreeSet::new(),
            seen: HashMap::new(),
        }
    }
}

impl<X: Source> SubIndex<X> {
    fn unlink(&mut self, id: &str) {
        let Some(old) = self.entries.remove(id) else {
            return;
        };
        match X::keys_of(&old.sub, &old.parsed) {
            Some(keys) => {
                for k in keys {
                    if let Some(set) = self.by_key.get_mut(&k) {
                        set.remove(id);
                        if set.is_empty() {
                            self.by_key.remove(&k);
                        }
                    }
                }
            }
            None => {
                self.unkeyed.remove(id);
            }
        }
    }

    /// Records subscription `id` as of `revision` (`None`: deleted), unless a later change
    /// of it was seen already.
    fn observe(&mut self, id: &str, revision: Revision, sub: Option<Subscription>) {
        if self.seen.get(id).is_some_and(|r| *r >= revision) {
            return;
        }
        self.seen.insert(id.to_string(), revision);
        self.unlink(id);
        let Some(sub) = sub else { return };
        let Some(parsed) = X::parse(&sub) else { return };
        match X::keys_of(&sub, &parsed) {
            Some(keys) => {
                for k in keys {
                    self.by_key.entry(k).or_default().insert(id.to_string());
                }
            }
            None => {
                self.unkeyed.insert(id.to_string());
            }
        }
        self.entries.insert(
            id.to_string(),
            SubEntry {
                sub,
                revision,
                parsed,
            },
        );
    }

    /// The subscriptions a change touching `keys` may concern, in id order, once each.
    fn candidates(&self, keys: &[String]) -> Vec<&str> {
        let mut out: Vec<&str> = self.unkeyed.iter().map(String::as_str).collect();
        for k in keys {
            if let Some(set) = self.by_key.get(k) {
                out.extend(set.iter().map(String::as_str));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

// === the engine's state ===

/// What the leader keeps in memory while it runs.
struct Live<X: Source> {
    m: Matcher<X>,
    view_revisions: HashMap<String, Revision>,
    /// The revision of the last change seen per document, deletions included.
    observed: HashMap<String, Revision>,
    /// The latest version of each document that differs from its view (`None`: deleted).
    dirty: BTreeMap<String, Option<X::Doc>>,
    watches: Vec<Watcher>,
}

/// A source's views with its subscription index: what a change of a document implies,
/// without IO of its own (a source may read the store for a filter). The engine's core,
/// public for benchmarks and tools.
pub struct Matcher<X: Source> {
    source: X,
    subs: SubIndex<X>,
}

impl<X: Source> Matcher<X> {
    /// A matcher over `source`, with no subscription.
    pub fn new(source: X) -> Self {
        Self {
            source,
            subs: SubIndex::default(),
        }
    }

    /// The source.
    pub fn source(&self) -> &X {
        &self.source
    }

    /// Records subscription `id` as of `revision` (`None`: deleted).
    pub fn observe_subscription(
        &mut self,
        id: &str,
        revision: Revision,
        sub: Option<Subscription>,
    ) {
        self.subs.observe(id, revision, sub);
    }

    /// Sets the view of document `id`.
    pub fn set_view(&mut self, id: &str, doc: Option<X::Doc>) {
        self.source.set_view(id, doc);
    }

    /// What the change of document `id` from its view to `now` queues, per subscription
    /// (in id order): the subscriptions it may concern, asked of the source.
    pub async fn plans<S: Store>(
        &self,
        store: &Typed<S>,
        id: &str,
        now: Option<&X::Doc>,
    ) -> Result<Vec<(String, Emit)>, ApiError> {
        self.plans_but(store, id, now, &BTreeSet::new()).await
    }

    async fn plans_but<S: Store>(
        &self,
        store: &Typed<S>,
        id: &str,
        now: Option<&X::Doc>,
        skip: &BTreeSet<String>,
    ) -> Result<Vec<(String, Emit)>, ApiError> {
        let keys = self.source.change_keys(id, now);
        let candidates: Vec<(&str, &SubEntry<X::Parsed>)> = self
            .subs
            .candidates(&keys)
            .into_iter()
            .filter(|sid| !skip.contains(*sid))
            .filter_map(|sid| Some((sid, self.subs.entries.get(sid)?)))
            .collect();
        let asked = candidates
            .iter()
            .map(|(_, e)| (&e.sub, &e.parsed))
            .collect();
        let emits = self.source.plan(store, id, now, asked).await?;
        let mut out = Vec::new();
        for ((sid, _), emit) in candidates.into_iter().zip(emits) {
            if let Some(emit) = emit
                && (!emit.bodies.is_empty() || emit.end)
            {
                out.push((sid.to_string(), emit));
            }
        }
        Ok(out)
    }
}

fn suffix<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
    std::str::from_utf8(key.strip_prefix(prefix)?).ok()
}

impl<X: Source> Live<X> {
    fn observe_doc(&mut self, id: &str, revision: Revision, doc: Option<X::Doc>) {
        if self.observed.get(id).is_some_and(|r| *r >= revision) {
            return;
        }
        let doc = doc.map(X::normalize);
        self.observed.insert(id.to_string(), revision);
        if self.m.source.view(id) == doc.as_ref() {
            self.dirty.remove(id);
        } else {
            self.dirty.insert(id.to_string(), doc);
        }
    }

    fn on_event(&mut self, ev: Event) {
        let rev = ev.kv.mod_revision;
        let put = ev.kind == EventKind::Put;
        if let Some(id) = suffix(&ev.kv.key, &typed::kind_prefix::<X::Doc>()) {
            let doc = if put {
                match serde_json::from_slice::<X::Doc>(&ev.kv.value) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(engine = X::NAME, id, error = %e, "undecodable document");
                        return;
                    }
                }
            } else {
                None
            };
            let id = id.to_string();
            self.observe_doc(&id, rev, doc);
        } else if let Some(id) = suffix(&ev.kv.key, &typed::kind_prefix::<Subscription>()) {
            let sub = put
                .then(|| serde_json::from_slice::<Subscription>(&ev.kv.value).ok())
                .flatten();
            self.m.subs.observe(id, rev, sub);
        } else {
            self.m.source.on_context(&ev);
        }
    }
}

/// One transaction of a change: guards, writes, and per subscription what it becomes and
/// whether it ends.
#[derive(Default)]
struct Chunk {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    subs: Vec<(String, Subscription, bool)>,
}

/// The key of the view of document `id` of source `X`.
pub fn view_key<X: Source>(id: &str) -> Vec<u8> {
    format!("{KEY_ROOT}views/{}/{id}", X::NAME).into_bytes()
}

fn view_prefix<X: Source>() -> Vec<u8> {
    format!("{KEY_ROOT}views/{}/", X::NAME).into_bytes()
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(Box::new(e)))
}

// === the engine ===

/// One source's engine; see the module docs.
pub struct Engine<S, X> {
    store: Typed<S>,
    metrics: Option<EngineMetrics>,
    leader_ttl: Duration,
    _source: PhantomData<fn() -> X>,
}

impl<S: Store, X: Source> Engine<S, X> {
    /// An engine over `store`.
    pub fn new(store: Typed<S>) -> Self {
        Self {
            store,
            metrics: None,
            leader_ttl: Duration::from_secs(10),
            _source: PhantomData,
        }
    }

    /// Records metrics in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: EngineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The view of document `id`, as stored.
    pub async fn view(&self, id: &str) -> Result<Option<X::Doc>, ApiError> {
        match self.store.store().get(&view_key::<X>(id)).await? {
            Some(kv) => Ok(Some(
                serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(Box::new(e)))?,
            )),
            None => Ok(None),
        }
    }

    /// Reads the views, the source's context, the subscriptions and the documents, following
    /// them from before the reads when `follow`.
    async fn load(&self, follow: bool) -> Result<Live<X>, ApiError> {
        let store = self.store.store();
        let mut watches = Vec::new();
        if follow {
            let from = store.current_revision().await? + 1;
            watches.push(store.watch(&typed::kind_prefix::<X::Doc>(), from).await?);
            watches.push(
                store
                    .watch(&typed::kind_prefix::<Subscription>(), from)
                    .await?,
            );
            if let Some(p) = X::context_prefix() {
                watches.push(store.watch(&p, from).await?);
            }
        }
        let mut views = Vec::new();
        let mut view_revisions = HashMap::new();
        let prefix = view_prefix::<X>();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.range(&prefix, after.as_deref(), 500).await?;
            for kv in &page.kvs {
                let doc: X::Doc = serde_json::from_slice(&kv.value)
                    .map_err(|e| ApiError::Internal(Box::new(e)))?;
                view_revisions.insert(doc.id(), kv.mod_revision);
                views.push(doc);
            }
            if !page.more {
                break;
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
        let viewed: Vec<String> = view_revisions.keys().cloned().collect();
        let mut live = Live {
            m: Matcher::new(X::load(&self.store, views).await?),
            view_revisions,
            observed: HashMap::new(),
            dirty: BTreeMap::new(),
            watches,
        };
        let (subs, _) = self.store.list::<Subscription>().await?;
        for s in subs {
            let id = s.value.id.clone();
            live.m.subs.observe(&id, s.revision, Some(s.value));
        }
        let (docs, _) = self.store.list::<X::Doc>().await?;
        let mut present = HashSet::new();
        for d in docs {
            let id = d.value.id();
            present.insert(id.clone());
            live.observe_doc(&id, d.revision, Some(d.value));
        }
        for id in viewed {
            if !present.contains(&id) {
                live.dirty.entry(id).or_insert(None);
            }
        }
        Ok(live)
    }

    /// Processes every document that differs from its view, once, from a fresh read of the
    /// store; returns how many it processed. For tests and tools: the running engine
    /// ([`Engine::run`]) does the same continuously.
    pub async fn settle(&self) -> Result<usize, ApiError> {
        let mut live = self.load(false).await?;
        let mut n = 0;
        while let Some((id, doc)) = live.dirty.pop_first() {
            self.process(&mut live, &id, doc).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Turns document `id`'s change from its view to `now` into notifications and a view.
    async fn process(
        &self,
        live: &mut Live<X>,
        id: &str,
        now: Option<X::Doc>,
    ) -> Result<(), ApiError> {
        let key = view_key::<X>(id);
        // Subscriptions whose notifications of this change are written already (a change
        // split over several transactions, then retried).
        let mut done = BTreeSet::new();
        loop {
            let mut chunks = vec![Chunk::default()];
            let plans = live
                .m
                .plans_but(&self.store, id, now.as_ref(), &done)
                .await?;
            for (sid, emit) in plans {
                let Some(entry) = live.m.subs.entries.get(&sid) else {
                    continue;
                };
                let mut sub = entry.sub.clone();
                let n = emit.bodies.len() as u64;
                let pending = notify::pending(&self.store, &sub.id, sub.next_seq).await?;
                if pending + n > MAX_PENDING_PER_SUBSCRIPTION {
                    tracing::warn!(engine = X::NAME, subscription = %sub.id, callback = %sub.callback,
                        "notification dropped: the subscription's outbox is full");
                    if let Some(m) = &self.metrics {
                        m.dropped
                            .with_label_values(&[X::NAME, &sub.family])
                            .inc_by(n);
                    }
                    continue;
                }
                let end = emit.end;
                let (guard, ops) = notify::emit_ops(&mut sub, entry.revision, emit)?;
                if chunks
                    .last()
                    .is_some_and(|c| !c.ops.is_empty() && c.ops.len() + ops.len() > MAX_OPS)
                {
                    chunks.push(Chunk::default());
                }
                let last = chunks.last_mut().expect("one chunk at least");
                last.compares.push(guard);
                last.ops.extend(ops);
                last.subs.push((sid, sub, end));
            }
            let last = chunks.last_mut().expect("one chunk at least");
            last.compares.push(Compare::mod_revision(
                key.clone(),
                live.view_revisions.get(id).copied().unwrap_or(0),
            ));
            last.ops.push(match &now {
                Some(doc) => TxnOp::put(key.clone(), json(doc)?),
                None => TxnOp::Delete(key.clone()),
            });
            let count = chunks.len();
            let mut conflict = false;
            for (
                i,
                Chunk {
                    compares,
                    ops,
                    subs,
                },
            ) in chunks.into_iter().enumerate()
            {
                let resp = self
                    .store
                    .store()
                    .txn(Txn::new().when(compares).and_then(ops))
                    .await?;
                if !resp.succeeded {
                    conflict = true;
                    if let Some(m) = &self.metrics {
                        m.conflicts.with_label_values(&[X::NAME]).inc();
                    }
                    self.refresh(live, id, subs.iter().map(|(s, _, _)| s.as_str()))
                        .await?;
                    break;
                }
                for (sid, sub, end) in subs {
                    if let Some(m) = &self.metrics {
                        let before = live.m.subs.entries.get(&sid).map_or(0, |e| e.sub.next_seq);
                        m.queued
                            .with_label_values(&[X::NAME, &sub.family])
                            .inc_by(sub.next_seq.saturating_sub(before));
                    }
                    done.insert(sid.clone());
                    live.m
                        .subs
                        .observe(&sid, resp.revision, (!end).then_some(sub));
                }
                if i + 1 == count {
                    live.m.source.set_view(id, now.clone());
                    match &now {
                        Some(_) => live.view_revisions.insert(id.to_string(), resp.revision),
                        None => live.view_revisions.remove(id),
                    };
                }
            }
            if !conflict {
                if let Some(m) = &self.metrics {
                    m.processed.with_label_values(&[X::NAME]).inc();
                }
                return Ok(());
            }
            // Something changed meanwhile: look again at what the store holds now.
            if live.m.source.view(id) == now.as_ref() {
                return Ok(());
            }
        }
    }

    /// Reads again the subscriptions `subs` and document `id`'s view after a refused write.
    async fn refresh<'a>(
        &self,
        live: &mut Live<X>,
        id: &str,
        subs: impl Iterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        let store = self.store.store();
        for sid in subs {
            match store.get(&typed::key::<Subscription>(sid)).await? {
                Some(kv) => {
                    let sub = serde_json::from_slice::<Subscription>(&kv.value).ok();
                    live.m.subs.observe(sid, kv.mod_revision, sub);
                }
                None => {
                    let rev = store.current_revision().await?;
                    live.m.subs.observe(sid, rev, None);
                }
            }
        }
        match store.get(&view_key::<X>(id)).await? {
            Some(kv) => {
                let doc: X::Doc = serde_json::from_slice(&kv.value)
                    .map_err(|e| ApiError::Internal(Box::new(e)))?;
                live.view_revisions.insert(id.to_string(), kv.mod_revision);
                live.m.source.set_view(id, Some(doc));
            }
            None => {
                live.view_revisions.remove(id);
                live.m.source.set_view(id, None);
            }
        }
        Ok(())
    }

    /// Runs while this process leads, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let key = format!("{KEY_ROOT}leaders/{}-events", X::NAME).into_bytes();
        let metrics = self.metrics.clone();
        crate::util::lead(
            self.store.store().clone(),
            key,
            self.leader_ttl,
            X::NAME,
            shutdown,
            |leading| {
                if let Some(m) = &metrics {
                    m.leader
                        .with_label_values(&[X::NAME])
                        .set(i64::from(leading));
                }
            },
            || self.follow(),
        )
        .await;
    }

    /// Loads, then follows the store until a watch or a write fails (the leader loop starts
    /// it again).
    async fn follow(&self) {
        let mut live = match self.load(true).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(engine = X::NAME, error = %e, "cannot read the store");
                return;
            }
        };
        loop {
            if let Err(e) = self.drain(&mut live).await {
                tracing::warn!(engine = X::NAME, error = %e, "reading the store again");
                return;
            }
            if let Some(m) = &self.metrics {
                m.backlog
                    .with_label_values(&[X::NAME])
                    .set(i64::try_from(live.dirty.len()).unwrap_or(i64::MAX));
            }
            if !live.dirty.is_empty() {
                tokio::task::yield_now().await;
                continue;
            }
            let next = {
                let nexts = live.watches.iter_mut().map(|w| Box::pin(w.next()));
                futures::future::select_all(nexts).await.0
            };
            match next {
                Some(Ok(ev)) => live.on_event(ev),
                other => {
                    tracing::warn!(engine = X::NAME, error = ?other.and_then(Result::err),
                        "a watch ended; reading the store again");
                    return;
                }
            }
        }
    }

    /// Applies what the watches already delivered, then processes up to [`BATCH`] dirty
    /// documents.
    async fn drain(&self, live: &mut Live<X>) -> Result<(), ApiError> {
        let mut events = Vec::new();
        for w in &mut live.watches {
            while let Some(ev) = w.try_next() {
                events.push(ev.map_err(ApiError::from)?);
            }
        }
        for ev in events {
            live.on_event(ev);
        }
        for _ in 0..BATCH {
            let Some((id, doc)) = live.dirty.pop_first() else {
                break;
            };
            if let Err(e) = self.process(live, &id, doc.clone()).await {
                // Still dirty, for whoever reads next.
                live.dirty.entry(id).or_insert(doc);
                return Err(e);
            }
        }
        Ok(())
    }
}
