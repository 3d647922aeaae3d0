//! The UE-event engine: every MEC 013 location and MEC 012 cell-change notification that the
//! UE table implies, derived level-triggered from the store.
//!
//! Handlers only write UEs (`/mecfed/v1/ues/<id>`). The engine keeps, per UE, the version it
//! last turned into notifications: its *view*, `/mecfed/v1/ueviews/<id>`. A UE whose stored
//! document differs from its view is *dirty*; the engine computes the notifications of the
//! change from view to document and writes them, the subscriptions' advanced sequence
//! numbers and the new view in one transaction (the view in the last one when a change
//! touches more subscriptions than one transaction may hold). A crash at any point leaves
//! either the old view (the change is computed again, at least once) or the new one with
//! every notification queued; nothing the table implies is forgotten, and the engine needs
//! no history of the store, so compaction cannot make it lose events.
//!
//! Cost: the engine holds the views in an indexed [`UeTable`] (by id, by address, user
//! counts per zone and access point) and the subscriptions in an index by the zones,
//! addresses and cells they name, so a UE change costs work in proportion to the
//! subscriptions it may match, not to the number of UEs, sites or subscriptions. Sites are
//! followed by a watch; the directory is rebuilt only when a site's zone, position, access
//! points or PLMN change.
//!
//! Watches: `ues/`, `subscriptions/`, `sites/`. Writes: `ueviews/`, `subscriptions/` (sequence
//! numbers, ends), `notifications/`. Only the elected leader ([`LEADER_KEY`]) runs it; every
//! write is guarded by the revisions it read, so a deposed leader's late write fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mecfed_core::{Instance, Site, Ue, UeId};
use mecfed_store::{
    Compare, Election, Event, EventKind, Revision, Store, StoreError, Txn, TxnOp, Watcher,
    typed::{self, Resource, Typed},
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::{
    ApiError,
    mec::{
        location::{
            self, Kind, LocationSubscription,
            model::{self, Changed, Directory, UeTable, Ues, World, addresses_of},
        },
        rni::{self, CellChangeSubscription, Cells, Ecgi},
    },
    notify::{self, Emit, MAX_PENDING_PER_SUBSCRIPTION, Subscription},
};

/// The key the engine's leader holds.
pub const LEADER_KEY: &[u8] = b"/mecfed/v1/leaders/ue-events";

/// Most operations in one transaction (etcd refuses more than 128).
const MAX_OPS: usize = 100;

/// Dirty UEs processed between two looks at the watches.
const BATCH: usize = 256;

/// A UE as the engine last turned it into notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UeView(pub Ue);

impl Resource for UeView {
    const KIND: &'static str = "ueviews";
    fn id(&self) -> String {
        self.0.id.to_string()
    }
}

/// Engine metrics, `mecfed_ue_events_*`.
#[derive(Debug, Clone)]
pub struct UeEventMetrics {
    processed: IntCounter,
    queued: IntCounterVec,
    dropped: IntCounterVec,
    conflicts: IntCounter,
    backlog: IntGauge,
    leader: IntGauge,
}

impl UeEventMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            processed: IntCounter::new(
                "mecfed_ue_events_processed_total",
                "UE changes turned into notifications",
            )?,
            queued: IntCounterVec::new(
                Opts::new(
                    "mecfed_ue_events_notifications_total",
                    "Notifications queued for UE changes",
                ),
                &["family"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "mecfed_ue_events_dropped_total",
                    "Notifications not queued because their subscription's outbox was full",
                ),
                &["family"],
            )?,
            conflicts: IntCounter::new(
                "mecfed_ue_events_conflicts_total",
                "Engine writes refused because a subscription or view changed meanwhile",
            )?,
            backlog: IntGauge::new(
                "mecfed_ue_events_backlog",
                "UEs changed and not yet processed",
            )?,
            leader: IntGauge::new(
                "mecfed_ue_events_leader",
                "1 while this process runs the UE-event engine",
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

/// A subscription the engine feeds, parsed once.
#[derive(Debug, Clone)]
enum Parsed {
    Location(Kind, Box<LocationSubscription>),
    Cell(Box<CellChangeSubscription>),
}

#[derive(Debug, Clone)]
struct SubEntry {
    sub: Subscription,
    revision: Revision,
    parsed: Parsed,
}

/// The location and cell-change subscriptions, indexed by what they name.
#[derive(Debug, Default)]
struct SubIndex {
    entries: HashMap<String, SubEntry>,
    /// `zone:<id>`, `addr:<address>`, `cell:<ecgi>` to subscription ids.
    by_key: HashMap<String, BTreeSet<String>>,
    /// Subscriptions that name nothing indexable: every change is checked against them.
    unkeyed: BTreeSet<String>,
    /// The revision of the last change seen per subscription, deletions included.
    seen: HashMap<String, Revision>,
}

fn cell_key(e: &Ecgi) -> String {
    format!("cell:{}", serde_json::to_string(e).unwrap_or_default())
}

/// The index keys of a subscription; `None` when it must see every change.
fn keys_of(p: &Parsed) -> Option<Vec<String>> {
    fn addrs(v: &Option<Vec<String>>) -> impl Iterator<Item = String> + '_ {
        v.iter().flatten().map(|a| format!("addr:{a}"))
    }
    match p {
        Parsed::Location(kind, s) => Some(match kind {
            Kind::UserLocationEvent => s.address.iter().map(|a| format!("addr:{a}")).collect(),
            Kind::ZoneLocationEvent | Kind::ZoneStatus => {
                s.zone_id.iter().map(|z| format!("zone:{z}")).collect()
            }
            Kind::UserArea => addrs(&s.address_list).collect(),
            Kind::UserDistance => addrs(&s.monitored_address)
                .chain(addrs(&s.reference_address))
                .collect(),
            // Periodic reports follow time, not moves.
            Kind::UserLocationPeriodic => Vec::new(),
        }),
        Parsed::Cell(c) => {
            let f = &c.filter_criteria_assoc_ho;
            if let Some(ids) = f.associate_id.as_ref().filter(|i| !i.is_empty()) {
                // Only IPv4 associations can match (`rni::passes`).
                Some(
                    ids.iter()
                        .filter(|a| a.kind == 1)
                        .map(|a| format!("addr:acr:{}", a.value))
                        .collect(),
                )
            } else {
                f.ecgi
                    .as_ref()
                    .filter(|c| !c.is_empty())
                    .map(|cells| cells.iter().map(cell_key).collect())
            }
        }
    }
}

fn parse(sub: &Subscription) -> Option<Parsed> {
    if let Some(kind) = Kind::of_family(&sub.family) {
        let s: LocationSubscription = serde_json::from_value(sub.body.clone()).ok()?;
        return Some(Parsed::Location(kind, Box::new(s)));
    }
    if sub.family == rni::CELL_CHANGE {
        let s: CellChangeSubscription = serde_json::from_value(sub.body.clone()).ok()?;
        return Some(Parsed::Cell(Box::new(s)));
    }
    None
}

impl SubIndex {
    fn unlink(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id) {
            match keys_of(&old.parsed) {
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
        let Some(parsed) = parse(&sub) else { return };
        match keys_of(&parsed) {
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

    /// The subscriptions a change of a UE touching `keys` may concern, in id order.
    fn candidates(&self, keys: &[String]) -> BTreeSet<String> {
        let mut out = self.unkeyed.clone();
        for k in keys {
            if let Some(set) = self.by_key.get(k) {
                out.extend(set.iter().cloned());
            }
        }
        out
    }
}

// === the engine's state ===

/// What the leader keeps in memory while it runs.
struct Live {
    sites: BTreeMap<String, Site>,
    dir: Directory,
    cells: Cells,
    views: UeTable,
    view_revisions: HashMap<UeId, Revision>,
    /// The revision of the last change seen per UE, deletions included.
    observed: HashMap<UeId, Revision>,
    /// The latest document of each UE that differs from its view (`None`: deleted).
    dirty: BTreeMap<UeId, Option<Ue>>,
    subs: SubIndex,
    watches: Option<[Watcher; 3]>,
}

fn suffix<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
    std::str::from_utf8(key.strip_prefix(prefix)?).ok()
}

/// Which parts of a site the directory and the cells depend on.
fn site_shape(s: &Site) -> impl PartialEq + use<> {
    (
        s.zone.to_string(),
        s.location,
        s.access_points.clone(),
        s.access_kinds.clone(),
        s.plmn.clone(),
    )
}

impl Live {
    fn rebuild_directory(&mut self) {
        let sites: Vec<Site> = self.sites.values().cloned().collect();
        self.dir = Directory::new(&sites);
        self.cells = Cells::new(&sites);
        self.views.recount(&self.dir);
    }

    fn observe_ue(&mut self, id: UeId, revision: Revision, ue: Option<Ue>) {
        if self.observed.get(&id).is_some_and(|r| *r >= revision) {
            return;
        }
        self.observed.insert(id.clone(), revision);
        if self.views.get(&id) == ue.as_ref() {
            self.dirty.remove(&id);
        } else {
            self.dirty.insert(id, ue);
        }
    }

    fn on_event(&mut self, ev: Event) {
        let rev = ev.kv.mod_revision;
        let put = ev.kind == EventKind::Put;
        if let Some(id) = suffix(&ev.kv.key, &typed::kind_prefix::<Ue>()) {
            let Ok(id) = UeId::new(id) else { return };
            let ue = if put {
                match serde_json::from_slice::<Ue>(&ev.kv.value) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        tracing::warn!(ue = %id, error = %e, "ue events: undecodable UE");
                        return;
                    }
                }
            } else {
                None
            };
            self.observe_ue(id, rev, ue);
        } else if let Some(id) = suffix(&ev.kv.key, &typed::kind_prefix::<Subscription>()) {
            let sub = put
                .then(|| serde_json::from_slice::<Subscription>(&ev.kv.value).ok())
                .flatten();
            self.subs.observe(id, rev, sub);
        } else if let Some(id) = suffix(&ev.kv.key, &typed::kind_prefix::<Site>()) {
            let site = put
                .then(|| serde_json::from_slice::<Site>(&ev.kv.value).ok())
                .flatten();
            let before = self.sites.get(id).map(site_shape);
            let after = site.as_ref().map(site_shape);
            match site {
                Some(s) => self.sites.insert(id.to_string(), s),
                None => self.sites.remove(id),
            };
            if before != after {
                self.rebuild_directory();
            }
        }
    }
}

/// One transaction of a change: guards, writes, and per subscription what it becomes (and
/// whether it ends).
#[derive(Default)]
struct Chunk {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    subs: Vec<(String, Subscription, bool)>,
}

/// What one UE change queues for one subscription.
struct Plan {
    id: String,
    emit: Emit,
}

/// The index keys a UE's change from `was` to `now` touches.
fn change_keys(dir: &Directory, cells: &Cells, was: Option<&Ue>, now: Option<&Ue>) -> Vec<String> {
    let mut keys = Vec::new();
    for u in [was, now].into_iter().flatten() {
        keys.extend(addresses_of(u).into_iter().map(|a| format!("addr:{a}")));
        if let Some(p) = dir.place(u) {
            keys.push(format!("zone:{}", p.zone));
        }
        if let Some(c) = cells.of(u) {
            keys.push(cell_key(c));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

// === the engine ===

/// The UE-event engine; see the module docs.
pub struct UeEvents<S> {
    store: Typed<S>,
    metrics: Option<UeEventMetrics>,
    leader_ttl: std::time::Duration,
}

impl<S: Store> UeEvents<S> {
    /// An engine over `store`.
    pub fn new(store: Typed<S>) -> Self {
        Self {
            store,
            metrics: None,
            leader_ttl: std::time::Duration::from_secs(10),
        }
    }

    /// Records metrics in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: UeEventMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads the sites, views, subscriptions and UEs, following them from before the reads
    /// when `follow`.
    async fn load(&self, follow: bool) -> Result<Live, ApiError> {
        let store = self.store.store();
        let watches = if follow {
            let from = store.current_revision().await? + 1;
            Some([
                store.watch(&typed::kind_prefix::<Ue>(), from).await?,
                store
                    .watch(&typed::kind_prefix::<Subscription>(), from)
                    .await?,
                store.watch(&typed::kind_prefix::<Site>(), from).await?,
            ])
        } else {
            None
        };
        let (sites, _) = self.store.list::<Site>().await?;
        let sites: BTreeMap<String, Site> = sites
            .into_iter()
            .map(|v| (v.value.id.to_string(), v.value))
            .collect();
        let (views, _) = self.store.list::<UeView>().await?;
        let mut live = Live {
            sites,
            dir: Directory::default(),
            cells: Cells::default(),
            views: UeTable::default(),
            view_revisions: views
                .iter()
                .map(|v| (v.value.0.id.clone(), v.revision))
                .collect(),
            observed: HashMap::new(),
            dirty: BTreeMap::new(),
            subs: SubIndex::default(),
            watches,
        };
        live.rebuild_directory();
        live.views = UeTable::new(&live.dir, views.into_iter().map(|v| v.value.0));
        let (subs, _) = self.store.list::<Subscription>().await?;
        for s in subs {
            let id = s.value.id.clone();
            live.subs.observe(&id, s.revision, Some(s.value));
        }
        let (ues, _) = self.store.list::<Ue>().await?;
        let mut present = std::collections::HashSet::new();
        for u in ues {
            present.insert(u.value.id.clone());
            let id = u.value.id.clone();
            live.observe_ue(id, u.revision, Some(u.value));
        }
        let gone: Vec<UeId> = live
            .views
            .iter()
            .map(|u| u.id.clone())
            .filter(|id| !present.contains(id))
            .collect();
        for id in gone {
            live.dirty.entry(id).or_insert(None);
        }
        Ok(live)
    }

    /// Processes every UE whose document differs from its view, once, from a fresh read of
    /// the store; returns how many it processed. For tests and tools: the running engine
    /// ([`UeEvents::run`]) does the same continuously.
    pub async fn settle(&self) -> Result<usize, ApiError> {
        let mut live = self.load(false).await?;
        let mut n = 0;
        while let Some((id, ue)) = live.dirty.pop_first() {
            self.process(&mut live, id, ue).await?;
            n += 1;
        }
        Ok(n)
    }

    /// The notifications UE `id`'s change from its view to `now` implies.
    async fn plan(
        &self,
        live: &Live,
        id: &UeId,
        now: Option<&Ue>,
        skip: &BTreeSet<String>,
    ) -> Result<Vec<Plan>, ApiError> {
        let was = live.views.get(id);
        let Some(subject) = now.or(was) else {
            return Ok(Vec::new());
        };
        let keys = change_keys(&live.dir, &live.cells, was, now);
        let changed = Changed {
            base: &live.views,
            id,
            was,
            now,
        };
        let before = World {
            dir: &live.dir,
            ues: &live.views,
        };
        let after = World {
            dir: &live.dir,
            ues: &changed,
        };
        let t = location::now();
        let hand_over = match (was, now) {
            (Some(w), Some(n)) => match (live.cells.of(w), live.cells.of(n)) {
                (Some(src), Some(trg)) if src != trg => Some((src, trg, n)),
                _ => None,
            },
            _ => None,
        };
        let mut plans = Vec::new();
        for sid in live.subs.candidates(&keys) {
            if skip.contains(&sid) {
                continue;
            }
            let Some(entry) = live.subs.entries.get(&sid) else {
                continue;
            };
            let sub = &entry.sub;
            let emit = match &entry.parsed {
                Parsed::Location(kind, ls) => {
                    let visible = |u: &Ue| location::tenant_sees(sub, u);
                    let events = model::events(ls, *kind, subject, &before, &after, &visible, t);
                    if events.is_empty() {
                        continue;
                    }
                    location::emission(sub, events, false, t)
                }
                Parsed::Cell(c) => {
                    let Some((src, trg, ue)) = hand_over else {
                        continue;
                    };
                    if sub
                        .developer
                        .as_ref()
                        .is_some_and(|d| !ue.shared_with.contains(d))
                    {
                        continue;
                    }
                    let f = &c.filter_criteria_assoc_ho;
                    let site_cells = match &f.app_instance_id {
                        Some(inst) => match self.store.get::<Instance>(inst).await? {
                            Some(i) => Some(live.cells.of_site(i.value.site.as_str())),
                            None => continue,
                        },
                        None => None,
                    };
                    if !rni::passes(f, ue, src, trg, site_cells.as_deref()) {
                        continue;
                    }
                    Emit {
                        bodies: vec![rni::cell_change_body(sub, ue, src, trg)],
                        end: false,
                    }
                }
            };
            plans.push(Plan { id: sid, emit });
        }
        Ok(plans)
    }

    /// Turns UE `id`'s change from its view to `now` into notifications and a new view.
    async fn process(&self, live: &mut Live, id: UeId, now: Option<Ue>) -> Result<(), ApiError> {
        let view_key = typed::key::<UeView>(id.as_str());
        // Subscriptions whose notifications of this change are already written (a change
        // split over several transactions, then retried).
        let mut done = BTreeSet::new();
        loop {
            let plans = self.plan(live, &id, now.as_ref(), &done).await?;
            // Transactions of at most MAX_OPS operations; the view goes in the last.
            let mut chunks: Vec<Chunk> = vec![Chunk::default()];
            for p in plans {
                let entry = &live.subs.entries[&p.id];
                let mut sub = entry.sub.clone();
                let n = p.emit.bodies.len() as u64;
                let pending = notify::pending(&self.store, &sub.id, sub.next_seq).await?;
                if pending + n > MAX_PENDING_PER_SUBSCRIPTION {
                    tracing::warn!(subscription = %sub.id, callback = %sub.callback,
                        "notification dropped: the subscription's outbox is full");
                    if let Some(m) = &self.metrics {
                        m.dropped.with_label_values(&[&sub.family]).inc_by(n);
                    }
                    continue;
                }
                let end = p.emit.end;
                let (guard, ops) = notify::emit_ops(&mut sub, entry.revision, p.emit)?;
                let last = chunks.last_mut().expect("one chunk at least");
                if !last.ops.is_empty() && last.ops.len() + ops.len() > MAX_OPS {
                    chunks.push(Chunk::default());
                }
                let last = chunks.last_mut().expect("one chunk at least");
                last.compares.push(guard);
                last.ops.extend(ops);
                last.subs.push((p.id, sub, end));
            }
            let last = chunks.last_mut().expect("one chunk at least");
            last.compares.push(Compare::mod_revision(
                view_key.clone(),
                live.view_revisions.get(&id).copied().unwrap_or(0),
            ));
            last.ops.push(match &now {
                Some(ue) => TxnOp::put(view_key.clone(), json(&UeView(ue.clone()))?),
                None => TxnOp::Delete(view_key.clone()),
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
                        m.conflicts.inc();
                    }
                    self.refresh(live, &id, subs.iter().map(|(s, _, _)| s.as_str()))
                        .await?;
                    break;
                }
                for (sid, sub, end) in subs {
                    if let Some(m) = &self.metrics {
                        let queued = sub.next_seq - live.subs.entries[&sid].sub.next_seq;
                        m.queued.with_label_values(&[&sub.family]).inc_by(queued);
                    }
                    done.insert(sid.clone());
                    live.subs
                        .observe(&sid, resp.revision, (!end).then_some(sub));
                }
                if i + 1 == count {
                    live.views.apply(&live.dir, &id, now.clone());
                    match &now {
                        Some(_) => live.view_revisions.insert(id.clone(), resp.revision),
                        None => live.view_revisions.remove(&id),
                    };
                }
            }
            if !conflict {
                if let Some(m) = &self.metrics {
                    m.processed.inc();
                }
                return Ok(());
            }
            // Something changed meanwhile: look again with what the store holds now.
            if live.views.get(&id) == now.as_ref() {
                return Ok(());
            }
        }
    }

    /// Reads again the subscriptions `subs` and UE `id`'s view after a refused write.
    async fn refresh<'a>(
        &self,
        live: &mut Live,
        id: &UeId,
        subs: impl Iterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        for sid in subs {
            let key = typed::key::<Subscription>(sid);
            match self.store.store().get(&key).await? {
                Some(kv) => {
                    let sub = serde_json::from_slice::<Subscription>(&kv.value).ok();
                    live.subs.observe(sid, kv.mod_revision, sub);
                }
                None => {
                    let rev = self.store.store().current_revision().await?;
                    live.subs.observe(sid, rev, None);
                }
            }
        }
        let view = self.store.get::<UeView>(id.as_str()).await?;
        match view {
            Some(v) => {
                live.view_revisions.insert(id.clone(), v.revision);
                live.views.apply(&live.dir, id, Some(v.value.0));
            }
            None => {
                live.view_revisions.remove(id);
                live.views.apply(&live.dir, id, None);
            }
        }
        Ok(())
    }

    /// Runs while this process leads ([`LEADER_KEY`]), until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut election = Election::new(
            self.store.store().clone(),
            LEADER_KEY,
            format!("pid-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            self.leader_ttl,
        );
        let mut live: Option<Live> = None;
        let mut campaign_at = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= campaign_at {
                let leading = match election.campaign().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "ue events: leader election failed");
                        false
                    }
                };
                campaign_at = tokio::time::Instant::now() + self.leader_ttl / 3;
                if leading != live.is_some() {
                    tracing::info!(id = election.id(), leading, "ue events leadership");
                    if let Some(m) = &self.metrics {
                        m.leader.set(i64::from(leading));
                    }
                }
                if !leading {
                    live = None;
                } else if live.is_none() {
                    match self.load(true).await {
                        Ok(l) => live = Some(l),
                        Err(e) => tracing::warn!(error = %e, "ue events: cannot read the store"),
                    }
                }
            }
            if let Some(l) = live.as_mut()
                && let Err(e) = self.drain(l).await
            {
                tracing::warn!(error = %e, "ue events: reading again");
                live = None;
            }
            if let (Some(m), Some(l)) = (&self.metrics, &live) {
                m.backlog
                    .set(i64::try_from(l.dirty.len()).unwrap_or(i64::MAX));
            }
            let busy = live.as_ref().is_some_and(|l| !l.dirty.is_empty());
            let watches = live.as_mut().and_then(|l| l.watches.as_mut());
            let (w0, w1, w2) = match watches {
                Some([a, b, c]) => (Some(a), Some(b), Some(c)),
                None => (None, None, None),
            };
            let ev = tokio::select! {
                biased;
                () = &mut shutdown => {
                    if let Err(e) = election.resign().await {
                        tracing::warn!(error = %e, "ue events: cannot resign the leadership");
                    }
                    return;
                }
                ev = next_event(w0) => Some(ev),
                ev = next_event(w1) => Some(ev),
                ev = next_event(w2) => Some(ev),
                () = std::future::ready(()), if busy => None,
                () = tokio::time::sleep_until(campaign_at) => None,
            };
            if let (Some(ev), Some(l)) = (ev, live.as_mut()) {
                match ev {
                    Some(Ok(ev)) => l.on_event(ev),
                    other => {
                        tracing::warn!(error = ?other.and_then(Result::err),
                            "ue events: a watch ended; reading again");
                        live = None;
                    }
                }
            }
        }
    }

    /// Applies what the watches already delivered, then processes up to [`BATCH`] dirty UEs.
    async fn drain(&self, live: &mut Live) -> Result<(), ApiError> {
        if let Some(watches) = live.watches.as_mut() {
            let mut events = Vec::new();
            for w in watches.iter_mut() {
                while let Some(ev) = w.try_next() {
                    events.push(ev.map_err(ApiError::from)?);
                }
            }
            for ev in events {
                live.on_event(ev);
            }
        }
        for _ in 0..BATCH {
            let Some((id, ue)) = live.dirty.pop_first() else {
                break;
            };
            if let Err(e) = self.process(live, id.clone(), ue.clone()).await {
                // Keep it dirty for the next reader.
                live.dirty.entry(id).or_insert(ue);
                return Err(e);
            }
        }
        Ok(())
    }
}

async fn next_event(w: Option<&mut Watcher>) -> Option<Result<Event, StoreError>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(Box::new(e)))
}
