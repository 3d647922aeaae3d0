//! The scheduler's controller: a level-triggered reconcile loop over the state store.
//!
//! Each pass reads the [`World`], records since when sites are NotReady, finishes graceful
//! evictions whose replacements are ready (or whose time is up), re-decides every app whose
//! inputs call for it ([`needs_decision`]), highest priority first, and commits each changed
//! decision in one store transaction: the app's placements, the capacity ledgers of every
//! site it touches and its schedule record, guarded by the revisions it read. A guard that
//! fails means another writer moved first; the app is decided again on the next pass from
//! fresh state. Passes run on store changes (debounced) and at least every `resync`.
//!
//! Sites an app leaves are not dropped at once: their placement is marked evicting and
//! keeps its instances running until the app's instances elsewhere are ready, or until the
//! policy's graceful eviction time has passed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mecfed_core::{
    App, AppId, Instance, InstanceId, InstanceState, OperatorId, Placement, PlacementPolicy, SiteId,
};
use mecfed_store::{
    Compare, Election, Store, Txn, TxnOp,
    typed::{Resource, Typed, TypedError, key},
};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::{
    autoscale::{AreaScaler, area_sessions, declared, recommend, with_demand},
    decide::{Decision, OVERLOAD, Scheduler, Weights},
    snapshot::{SiteHealth, Snapshot},
    state::{Allocation, AppSchedule, Doc, SiteAllocation, SiteHealthRecord, World},
};

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The operator this platform belongs to (its sites cost less than partners').
    pub home_operator: Option<OperatorId>,
    /// Longest time between passes.
    pub resync: Duration,
    /// Score weights.
    pub weights: Weights,
    /// TTL of the leadership lease: only the leader runs passes, and a stopped leader is
    /// replaced within it.
    pub leader_ttl: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            home_operator: None,
            resync: Duration::from_secs(1),
            weights: Weights::default(),
            leader_ttl: Duration::from_secs(15),
        }
    }
}

/// The key the scheduler's leader holds.
pub const LEADER_KEY: &[u8] = b"/mecfed/v1/leaders/scheduler";

/// The controller's Prometheus metrics.
#[derive(Debug, Clone)]
pub struct SchedulerMetrics {
    decisions: IntCounter,
    decision_seconds: Histogram,
    commits: IntCounterVec,
    pass_seconds: Histogram,
    unmet_apps: IntGauge,
    evictions: IntCounter,
    leader: IntGauge,
}

impl SchedulerMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounter::new(
            "mecfed_scheduler_decisions_total",
            "Scheduling decisions computed",
        )?;
        let decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "mecfed_scheduler_decision_duration_seconds",
                "Time to compute one decision",
            )
            .buckets(vec![1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]),
        )?;
        let commits = IntCounterVec::new(
            Opts::new(
                "mecfed_scheduler_commits_total",
                "Decision commits by outcome (committed, conflict, failed)",
            ),
            &["outcome"],
        )?;
        let pass_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "mecfed_scheduler_pass_duration_seconds",
                "Time of one reconcile pass, store reads and writes included",
            )
            .buckets(prometheus::exponential_buckets(1e-3, 3.0, 10)?),
        )?;
        let unmet_apps = IntGauge::new(
            "mecfed_scheduler_unmet_apps",
            "Apps whose last decision left a need unmet",
        )?;
        let evictions = IntCounter::new(
            "mecfed_scheduler_evictions_completed_total",
            "Evicting placements dropped after their replacement was ready or their time ran out",
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(decision_seconds.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(pass_seconds.clone()))?;
        registry.register(Box::new(unmet_apps.clone()))?;
        let leader = IntGauge::new(
            "mecfed_scheduler_leader",
            "1 while this process holds the scheduler's leadership",
        )?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            decisions,
            decision_seconds,
            commits,
            pass_seconds,
            unmet_apps,
            evictions,
            leader,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Apps decided.
    pub decided: usize,
    /// Decisions committed (changed placements or records).
    pub committed: usize,
    /// Commits refused because another writer moved first.
    pub conflicts: usize,
    /// Evicting placements dropped.
    pub evicted: usize,
    /// Commits the store refused for another reason than a race (logged; tried again).
    pub failed: usize,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `app` must be decided again (IO-free).
///
/// Yes when it was never decided, when its document or policy changed since, when the last
/// decision left something unmet (capacity may have appeared), when a site it runs on is
/// gone, NotReady, tainted, over-committed or near full (failover, eviction, rebalancing),
/// when a site it failed over from is Ready again (failback), or when the autoscaler's demand
/// differs from the one decided on.
pub fn needs_decision(
    snap: &Snapshot,
    app: &Doc<App>,
    policy_revision: u64,
    demand: &BTreeMap<String, u32>,
    schedule: Option<&AppSchedule>,
    placed_sites: &[SiteId],
) -> bool {
    let Some(s) = schedule else { return true };
    if s.app_revision != app.revision
        || s.policy_revision != policy_revision
        || !s.unmet.is_empty()
        || &s.demand != demand
    {
        return true;
    }
    let ready = |site: &SiteId| {
        snap.index_of(site)
            .is_some_and(|i| snap.health(i) == SiteHealth::Ready)
    };
    if s.failed_over_from.iter().any(ready) {
        return true;
    }
    placed_sites.iter().any(|site| match snap.index_of(site) {
        None => true,
        Some(i) => {
            let row = snap.site(i);
            snap.health(i) != SiteHealth::Ready
                || !row.taints.is_empty()
                || !row.capacity.fits(&snap.allocated(i))
                || (crate::snapshot::utilisation(row) >= OVERLOAD
                    && snap.now().saturating_sub(s.decided_at) >= REBALANCE_COOLDOWN_SECONDS)
        }
    })
}

/// Seconds after a decision before an app sheds load from an overloaded site again, so that
/// the sites' load reports catch up with the last move.
pub const REBALANCE_COOLDOWN_SECONDS: u64 = 30;

/// Whether an evicting placement may go (IO-free): its time is up, or the app has
/// replacements, at least `wanted` of them ready on its live placements. With no
/// replacement at all (nothing fits anywhere) the old instances serve until the time is up.
pub fn eviction_done(now: u64, until: u64, ready_live: u32, wanted: u32) -> bool {
    now >= until || (wanted > 0 && ready_live >= wanted)
}

/// The failover record after a decision (IO-free): sites left while NotReady are added;
/// sites chosen again are removed (failback done).
pub fn next_failed_over(
    previous: &[SiteId],
    dropped_not_ready: &[SiteId],
    targets: &[SiteId],
) -> Vec<SiteId> {
    let mut out: Vec<SiteId> = previous
        .iter()
        .chain(dropped_not_ready)
        .filter(|s| !targets.contains(s))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The scheduler's controller over a store.
pub struct Controller<S> {
    store: Typed<S>,
    config: ControllerConfig,
    scheduler: Scheduler,
    metrics: Option<SchedulerMetrics>,
    /// Recommendation histories per app and demand area (in memory, as the HPA keeps them).
    scalers: parking_lot::Mutex<HashMap<(AppId, String), AreaScaler>>,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("scheduler documents encode")
}

impl<S: Store> Controller<S> {
    /// A controller over `store`.
    pub fn new(store: S, config: ControllerConfig) -> Self {
        Self {
            store: Typed::new(store),
            scheduler: Scheduler {
                weights: config.weights,
            },
            config,
            metrics: None,
            scalers: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Records metrics in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: SchedulerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs passes while this process leads ([`LEADER_KEY`], held on a lease of
    /// `leader_ttl`), until `shutdown` resolves: after store changes (debounced by 50 ms) and
    /// at least every `resync`. A failed pass is logged and retried on the next trigger; the
    /// leadership is given up on shutdown.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut election = Election::new(
            self.store.store().clone(),
            LEADER_KEY,
            format!("pid-{}-{nanos:08x}", std::process::id()),
            self.config.leader_ttl,
        );
        let mut leading = false;
        let mut watcher = None;
        loop {
            let now_leading = match election.campaign().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: leader election failed");
                    false
                }
            };
            if now_leading != leading {
                tracing::info!(
                    id = election.id(),
                    leading = now_leading,
                    "scheduler leadership"
                );
                leading = now_leading;
                if let Some(m) = &self.metrics {
                    m.leader.set(i64::from(leading));
                }
            }
            if watcher.is_none() {
                match self.store.store().watch(b"/mecfed/v1/", 0).await {
                    Ok(w) => watcher = Some(w),
                    Err(e) => tracing::warn!(error = %e, "scheduler: watch failed; polling"),
                }
            }
            match if leading {
                self.pass(unix_now()).await
            } else {
                Ok(PassReport::default())
            } {
                Ok(r) if r.committed + r.evicted + r.conflicts + r.failed > 0 => {
                    tracing::info!(
                        decided = r.decided,
                        committed = r.committed,
                        conflicts = r.conflicts,
                        evicted = r.evicted,
                        failed = r.failed,
                        "scheduler pass"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
            }
            let wait = async {
                match watcher.as_mut() {
                    Some(w) => {
                        if w.next().await.is_none() {
                            return false;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        true
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    if let Err(e) = election.resign().await {
                        tracing::warn!(error = %e, "scheduler: cannot resign the leadership");
                    }
                    return;
                }
                alive = wait => if !alive { watcher = None },
                () = tokio::time::sleep(self.config.resync.min(self.config.leader_ttl / 3)) => {}
            }
            // Drain what queued up meanwhile: one pass covers it all.
            if let Some(w) = watcher.as_mut() {
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(1), w.next()).await
                {}
            }
        }
    }

    /// One reconcile pass at `now`.
    pub async fn pass(&self, now: u64) -> Result<PassReport, TypedError> {
        let started = std::time::Instant::now();
        let mut report = PassReport::default();
        let world = World::load(&self.store).await?;
        self.record_health(&world, now).await?;
        report.evicted = self.finish_evictions(&world, now).await?;
        let world = if report.evicted > 0 {
            World::load(&self.store).await?
        } else {
            world
        };
        let mut snap = world.snapshot(now, self.config.home_operator.as_ref());
        let mut ledgers: HashMap<SiteId, Doc<SiteAllocation>> = world.allocations.clone();

        let mut placements: HashMap<&AppId, Vec<&Doc<Placement>>> = HashMap::new();
        for p in &world.placements {
            placements.entry(&p.value.app).or_default().push(p);
        }
        let mut instances: HashMap<&AppId, Vec<&Instance>> = HashMap::new();
        for i in &world.instances {
            instances.entry(&i.app).or_default().push(i);
        }
        let app_ids: HashSet<&AppId> = world.apps.iter().map(|a| &a.value.id).collect();
        // Placements of deleted apps go, with their ledger entries and record.
        for (app, ps) in &placements {
            if !app_ids.contains(app) {
                let sched = world.schedules.get(*app);
                self.remove_app(app, ps, sched, &mut ledgers).await?;
            }
        }

        let mut order: Vec<(&Doc<App>, PlacementPolicy, u64)> = world
            .apps
            .iter()
            .map(|a| {
                let p = world.policies.get(&a.value.id);
                (
                    a,
                    p.map(|p| p.value.clone()).unwrap_or_default(),
                    p.map_or(0, |p| p.revision),
                )
            })
            .collect();
        order.sort_by(|a, b| {
            b.1.priority
                .cmp(&a.1.priority)
                .then(a.0.value.id.cmp(&b.0.value.id))
        });
        let mut unmet = 0i64;
        let mut batch = Batch::default();
        let mut stopped = false;
        for (app, policy, policy_rev) in order {
            let current: Vec<&Doc<Placement>> =
                placements.get(&app.value.id).cloned().unwrap_or_default();
            let placed: Vec<SiteId> = current
                .iter()
                .filter(|p| p.value.evicting_until.is_none())
                .map(|p| p.value.site.clone())
                .collect();
            let sched = world.schedules.get(&app.value.id);
            let own_instances = instances.get(&app.value.id).map_or(&[][..], Vec::as_slice);
            let scaled = self.autoscale(now, &snap, own_instances, app, &policy, sched, &placed);
            let demand: BTreeMap<String, u32> = match &scaled {
                Some(n) => app
                    .value
                    .qos
                    .demand_areas
                    .iter()
                    .map(|a| a.name.clone())
                    .zip(n.iter().copied())
                    .collect(),
                None => BTreeMap::new(),
            };
            if !needs_decision(
                &snap,
                app,
                policy_rev,
                &demand,
                sched.map(|s| &s.value),
                &placed,
            ) {
                continue;
            }
            let effective = scaled.as_deref().map(|n| with_demand(&app.value, n));
            let t = std::time::Instant::now();
            let (decision, _) =
                self.scheduler
                    .schedule(&snap, effective.as_ref().unwrap_or(&app.value), &policy);
            if let Some(m) = &self.metrics {
                m.decisions.inc();
                m.decision_seconds.observe(t.elapsed().as_secs_f64());
            }
            report.decided += 1;
            if !decision.unmet.is_empty() {
                unmet += 1;
            }
            let graceful = policy.graceful_eviction_seconds > 0;
            let stage = |batch: &Batch, ledgers: &HashMap<SiteId, Doc<SiteAllocation>>| {
                self.stage(
                    now,
                    &snap,
                    app,
                    &policy,
                    policy_rev,
                    demand.clone(),
                    &decision,
                    &current,
                    sched,
                    ledgers,
                    batch,
                )
            };
            let Some(mut staged) = stage(&batch, &ledgers) else {
                continue;
            };
            if batch.apps > 0 && batch.size_with(&staged) > MAX_TXN_OPS {
                if !self
                    .commit_batch(&mut batch, &mut ledgers, &mut report)
                    .await?
                {
                    stopped = true;
                    break;
                }
                // Staged against the revisions before that commit: stage again.
                let Some(again) = stage(&batch, &ledgers) else {
                    continue;
                };
                staged = again;
            }
            batch.add(staged);
            snap.commit(&app.value, &decision, graceful);
        }
        if !stopped {
            self.commit_batch(&mut batch, &mut ledgers, &mut report)
                .await?;
        }
        if let Some(m) = &self.metrics {
            m.commits
                .with_label_values(&["committed"])
                .inc_by(report.committed as u64);
            m.commits
                .with_label_values(&["conflict"])
                .inc_by(report.conflicts as u64);
            m.commits
                .with_label_values(&["failed"])
                .inc_by(report.failed as u64);
            m.evictions.inc_by(report.evicted as u64);
            if report.decided > 0 {
                m.unmet_apps.set(unmet);
            }
            m.pass_seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(report)
    }

    /// The autoscaler's instances per demand area, when the policy autoscales and the app's
    /// ready instances report their sessions; `None` means the declared demand applies.
    #[allow(clippy::too_many_arguments)]
    fn autoscale(
        &self,
        now: u64,
        snap: &Snapshot,
        instances: &[&Instance],
        app: &Doc<App>,
        policy: &PlacementPolicy,
        sched: Option<&Doc<AppSchedule>>,
        placed: &[SiteId],
    ) -> Option<Vec<u32>> {
        let cfg = policy.autoscaling?;
        let app = &app.value;
        if app.qos.demand_areas.is_empty() {
            return None;
        }
        let mut per_site: BTreeMap<crate::SiteIdx, u32> = BTreeMap::new();
        for i in instances {
            if i.state != InstanceState::Ready || !placed.contains(&i.site) {
                continue;
            }
            if let (Some(n), Some(idx)) = (i.sessions, snap.index_of(&i.site)) {
                *per_site.entry(idx).or_default() += n;
            }
        }
        if per_site.is_empty() {
            return None;
        }
        let per_site: Vec<_> = per_site.into_iter().collect();
        let load = area_sessions(snap, app, &per_site);
        let declared = declared(app);
        let mut scalers = self.scalers.lock();
        let out = app
            .qos
            .demand_areas
            .iter()
            .enumerate()
            .map(|(a, area)| {
                let current = sched
                    .and_then(|s| s.value.demand.get(&area.name).copied())
                    .unwrap_or(declared[a]);
                let rec = recommend(load[a], app.qos.max_sessions_per_instance, &cfg);
                scalers
                    .entry((app.id.clone(), area.name.clone()))
                    .or_default()
                    .handle_recommendation(now, rec, current, &cfg)
            })
            .collect();
        Some(out)
    }

    /// Writes since when each site is NotReady, and forgets it once Ready again.
    async fn record_health(&self, world: &World, now: u64) -> Result<(), TypedError> {
        for s in &world.sites {
            let live = world.live.contains(&s.id);
            match (live, world.health.get(&s.id)) {
                (false, None) => {
                    let rec = SiteHealthRecord {
                        site: s.id.clone(),
                        not_ready_since: now,
                    };
                    match self.store.create(&rec).await {
                        Ok(_) | Err(TypedError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                (true, Some(rec)) => {
                    match self
                        .store
                        .delete::<SiteHealthRecord>(s.id.as_str(), Some(rec.revision))
                        .await
                    {
                        Ok(_) | Err(TypedError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops evicting placements whose replacements are ready or whose time is up.
    async fn finish_evictions(&self, world: &World, now: u64) -> Result<usize, TypedError> {
        let mut done = 0;
        let live: HashSet<(&AppId, &SiteId)> = world
            .placements
            .iter()
            .filter(|p| p.value.evicting_until.is_none())
            .map(|p| (&p.value.app, &p.value.site))
            .collect();
        let ready_sites = &world.live;
        // Per app, in one pass each: live instances wanted, and ready ones on live placements.
        let mut wanted_by_app: HashMap<&AppId, u32> = HashMap::new();
        for q in world
            .placements
            .iter()
            .filter(|q| q.value.evicting_until.is_none())
        {
            *wanted_by_app.entry(&q.value.app).or_default() += q.value.replicas;
        }
        let mut ready_by_app: HashMap<&AppId, u32> = HashMap::new();
        for i in &world.instances {
            if i.state == InstanceState::Ready
                && live.contains(&(&i.app, &i.site))
                && ready_sites.contains(&i.site)
            {
                *ready_by_app.entry(&i.app).or_default() += 1;
            }
        }
        for p in &world.placements {
            let Some(until) = p.value.evicting_until else {
                continue;
            };
            let app = &p.value.app;
            let wanted = wanted_by_app.get(app).copied().unwrap_or(0);
            let ready_live = ready_by_app.get(app).copied().unwrap_or(0);
            if !eviction_done(now, until, ready_live, wanted) {
                continue;
            }
            let site = &p.value.site;
            let mut compares = vec![Compare::mod_revision(
                key::<Placement>(&p.value.id()),
                p.revision,
            )];
            let mut ops = vec![TxnOp::Delete(key::<Placement>(&p.value.id()))];
            ledger_update(&world.allocations, site, app, None, &mut compares, &mut ops);
            // A site that is down cannot clean up its instances' reports itself.
            if !ready_sites.contains(site) {
                for i in 0..p.value.replicas {
                    if let Ok(id) = InstanceId::new(format!("{app}-{site}-{i}")) {
                        ops.push(TxnOp::Delete(key::<Instance>(id.as_str())));
                    }
                }
            }
            let txn = Txn::new().when(compares).and_then(ops);
            if self.store.store().txn(txn).await?.succeeded {
                tracing::info!(app = %app, site = %site, ready_live, wanted, "eviction finished");
                done += 1;
            }
        }
        Ok(done)
    }

    async fn remove_app(
        &self,
        app: &AppId,
        placements: &[&Doc<Placement>],
        sched: Option<&Doc<AppSchedule>>,
        ledgers: &mut HashMap<SiteId, Doc<SiteAllocation>>,
    ) -> Result<(), TypedError> {
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut next_ledgers = Vec::new();
        for p in placements {
            compares.push(Compare::mod_revision(
                key::<Placement>(&p.value.id()),
                p.revision,
            ));
            ops.push(TxnOp::Delete(key::<Placement>(&p.value.id())));
            let site = &p.value.site;
            let next = ledger_update(ledgers, site, app, None, &mut compares, &mut ops);
            next_ledgers.push((site.clone(), next));
        }
        if let Some(s) = sched {
            compares.push(Compare::mod_revision(
                key::<AppSchedule>(app.as_str()),
                s.revision,
            ));
            ops.push(TxnOp::Delete(key::<AppSchedule>(app.as_str())));
        }
        let resp = self
            .store
            .store()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if resp.succeeded {
            for (site, value) in next_ledgers {
                ledgers.insert(
                    site,
                    Doc {
                        value,
                        revision: resp.revision,
                    },
                );
            }
            tracing::info!(app = %app, "placements of a deleted app removed");
        }
        Ok(())
    }

    /// Commits `batch`, counting its decisions in `report`. Returns whether the pass may go
    /// on: after a lost race the snapshot is ahead of the store, so the pass ends and the next
    /// one starts from fresh state.
    async fn commit_batch(
        &self,
        batch: &mut Batch,
        ledgers: &mut HashMap<SiteId, Doc<SiteAllocation>>,
        report: &mut PassReport,
    ) -> Result<bool, TypedError> {
        let n = batch.apps;
        match self.flush(batch, ledgers).await {
            Ok(true) => {
                report.committed += n;
                Ok(true)
            }
            Ok(false) => {
                tracing::debug!(
                    decisions = n,
                    "commit lost a race; deciding again next pass"
                );
                report.conflicts += n;
                Ok(false)
            }
            // The store is gone: the rest of the pass would fail the same way.
            Err(TypedError::Store(e)) if e.is_transient() => Err(e.into()),
            // Refused for another reason (e.g. one decision beyond etcd's operation limit):
            // logged and tried again next pass; a single decision does not stop the others.
            Err(e) => {
                tracing::warn!(decisions = n, error = %e, "decisions not committed");
                report.failed += n;
                Ok(n == 1)
            }
        }
    }

    /// Stages one decision's writes (see the module docs) over what `batch` already holds;
    /// `None` when nothing changes.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        now: u64,
        snap: &Snapshot,
        app: &Doc<App>,
        policy: &PlacementPolicy,
        policy_revision: u64,
        demand: BTreeMap<String, u32>,
        decision: &Decision,
        current: &[&Doc<Placement>],
        sched: Option<&Doc<AppSchedule>>,
        ledgers: &HashMap<SiteId, Doc<SiteAllocation>>,
        batch: &Batch,
    ) -> Option<Staged> {
        let app_id = &app.value.id;
        let targets: BTreeMap<&SiteId, u32> = decision
            .targets
            .iter()
            .map(|t| (&t.site, t.replicas))
            .collect();
        let target_sites: Vec<SiteId> = decision.targets.iter().map(|t| t.site.clone()).collect();
        let mut touched: BTreeMap<SiteId, Option<Allocation>> = BTreeMap::new();
        let mut st = Staged::default();
        let mut dropped_not_ready = Vec::new();
        // Dropped sites: evict gracefully (or at once when the policy allows no grace).
        for p in current {
            let site = &p.value.site;
            if targets.contains_key(site) || p.value.evicting_until.is_some() {
                continue;
            }
            let down = snap
                .index_of(site)
                .is_none_or(|i| snap.health(i) != SiteHealth::Ready);
            if down {
                dropped_not_ready.push(site.clone());
            }
            let k = key::<Placement>(&p.value.id());
            st.compares.push((k.clone(), p.revision));
            if policy.graceful_eviction_seconds > 0 {
                let evicting = Placement {
                    evicting_until: Some(now + u64::from(policy.graceful_eviction_seconds)),
                    ..p.value.clone()
                };
                st.ops.push((k.clone(), TxnOp::put(k, encode(&evicting))));
            } else {
                st.ops.push((k.clone(), TxnOp::Delete(k)));
                touched.insert(site.clone(), None);
            }
        }
        // Targets: write what changed.
        for t in &decision.targets {
            let existing = current.iter().find(|p| p.value.site == t.site);
            let want = Placement {
                app: app_id.clone(),
                site: t.site.clone(),
                replicas: t.replicas,
                evicting_until: None,
            };
            if existing.is_some_and(|p| p.value == want) {
                continue;
            }
            let k = key::<Placement>(&want.id());
            st.compares
                .push((k.clone(), existing.map_or(0, |p| p.revision)));
            st.ops.push((k.clone(), TxnOp::put(k, encode(&want))));
            let reserved = app
                .value
                .resources
                .checked_mul(t.replicas)
                .unwrap_or(app.value.resources);
            touched.insert(
                t.site.clone(),
                Some(Allocation {
                    replicas: t.replicas,
                    reserved,
                }),
            );
        }
        let previous_fof = sched
            .map(|s| s.value.failed_over_from.clone())
            .unwrap_or_default();
        let record = AppSchedule {
            app: app_id.clone(),
            app_revision: app.revision,
            policy_revision,
            wanted: decision.wanted,
            demand,
            unmet: decision.unmet.clone(),
            failed_over_from: next_failed_over(&previous_fof, &dropped_not_ready, &target_sites),
            decided_at: sched.map_or(now, |s| s.value.decided_at),
        };
        let record_same = sched.is_some_and(|s| {
            let mut old = s.value.clone();
            old.decided_at = record.decided_at;
            old == record
        });
        if st.ops.is_empty() && record_same {
            return None;
        }
        let record = AppSchedule {
            decided_at: now,
            ..record
        };
        let k = key::<AppSchedule>(app_id.as_str());
        st.compares
            .push((k.clone(), sched.map_or(0, |s| s.revision)));
        st.ops.push((k.clone(), TxnOp::put(k, encode(&record))));
        for (site, alloc) in &touched {
            let k = key::<SiteAllocation>(site.as_str());
            st.compares
                .push((k, ledgers.get(site).map_or(0, |l| l.revision)));
            let mut next = batch
                .ledgers
                .get(site)
                .cloned()
                .or_else(|| ledgers.get(site).map(|l| l.value.clone()))
                .unwrap_or_default();
            next.site = Some(site.clone());
            match alloc {
                Some(a) => next.apps.insert(app_id.clone(), *a),
                None => next.apps.remove(app_id),
            };
            st.ledgers.push((site.clone(), next));
        }
        tracing::debug!(app = %app_id, targets = ?decision.targets, unmet = ?decision.unmet, "decision staged");
        Some(st)
    }

    /// Commits what `batch` holds in one transaction; on success the ledgers it wrote are
    /// recorded at the new revision. Returns whether the guards held.
    async fn flush(
        &self,
        batch: &mut Batch,
        ledgers: &mut HashMap<SiteId, Doc<SiteAllocation>>,
    ) -> Result<bool, TypedError> {
        let b = std::mem::take(batch);
        if b.apps == 0 {
            return Ok(true);
        }
        let mut ops: Vec<TxnOp> = b.ops.into_values().collect();
        for (site, ledger) in &b.ledgers {
            ops.push(ledger_op(site, ledger));
        }
        let compares = b
            .compares
            .into_iter()
            .map(|(k, rev)| Compare::mod_revision(k, rev));
        let resp = self
            .store
            .store()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if !resp.succeeded {
            return Ok(false);
        }
        for (site, value) in b.ledgers {
            ledgers.insert(
                site,
                Doc {
                    value,
                    revision: resp.revision,
                },
            );
        }
        Ok(true)
    }
}

/// Most guards or operations in one commit: etcd refuses more than 128 by default.
const MAX_TXN_OPS: usize = 120;

/// Writes of one decision, before they join a [`Batch`].
#[derive(Debug, Default)]
struct Staged {
    compares: Vec<(Vec<u8>, u64)>,
    ops: Vec<(Vec<u8>, TxnOp)>,
    ledgers: Vec<(SiteId, SiteAllocation)>,
}

/// Decisions committed together: guards and operations by key (a key is guarded and
/// written once per transaction), and the ledgers as the batch leaves them.
#[derive(Debug, Default)]
struct Batch {
    compares: BTreeMap<Vec<u8>, u64>,
    ops: BTreeMap<Vec<u8>, TxnOp>,
    ledgers: BTreeMap<SiteId, SiteAllocation>,
    apps: usize,
}

impl Batch {
    /// Guards and operations with `st` added.
    fn size_with(&self, st: &Staged) -> usize {
        let new_ledgers = st
            .ledgers
            .iter()
            .filter(|(s, _)| !self.ledgers.contains_key(s))
            .count();
        (self.ops.len() + self.ledgers.len() + st.ops.len() + new_ledgers)
            .max(self.compares.len() + st.compares.len())
    }

    fn add(&mut self, st: Staged) {
        for (k, rev) in st.compares {
            self.compares.entry(k).or_insert(rev);
        }
        self.ops.extend(st.ops);
        self.ledgers.extend(st.ledgers);
        self.apps += 1;
    }
}

/// Adds to a transaction the change of `app`'s entry in `site`'s ledger (set to `alloc`, or
/// removed), guarded by the ledger's revision as read; returns the new ledger.
fn ledger_update(
    ledgers: &HashMap<SiteId, Doc<SiteAllocation>>,
    site: &SiteId,
    app: &AppId,
    alloc: Option<Allocation>,
    compares: &mut Vec<Compare>,
    ops: &mut Vec<TxnOp>,
) -> SiteAllocation {
    let ledger = ledgers.get(site);
    compares.push(Compare::mod_revision(
        key::<SiteAllocation>(site.as_str()),
        ledger.map_or(0, |l| l.revision),
    ));
    let mut next = ledger.map(|l| l.value.clone()).unwrap_or_default();
    next.site = Some(site.clone());
    match alloc {
        Some(a) => next.apps.insert(app.clone(), a),
        None => next.apps.remove(app),
    };
    ops.push(ledger_op(site, &next));
    next
}

fn ledger_op(site: &SiteId, ledger: &SiteAllocation) -> TxnOp {
    if ledger.apps.is_empty() {
        TxnOp::Delete(key::<SiteAllocation>(site.as_str()))
    } else {
        TxnOp::put(key::<SiteAllocation>(site.as_str()), encode(ledger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<SiteId> {
        v.iter().map(|s| SiteId::new(*s).unwrap()).collect()
    }

    #[test]
    fn failover_records_grow_on_failover_and_shrink_on_failback() {
        assert_eq!(
            next_failed_over(&[], &ids(&["a"]), &ids(&["b"])),
            ids(&["a"])
        );
        assert_eq!(
            next_failed_over(&ids(&["a"]), &ids(&["c"]), &ids(&["a", "b"])),
            ids(&["c"])
        );
        assert_eq!(
            next_failed_over(&ids(&["a", "a"]), &[], &ids(&["b"])),
            ids(&["a"])
        );
    }

    #[test]
    fn evictions_end_when_replacements_are_ready_or_time_is_up() {
        assert!(!eviction_done(100, 160, 1, 2));
        assert!(eviction_done(100, 160, 2, 2));
        assert!(eviction_done(160, 160, 0, 2));
        assert!(
            !eviction_done(100, 160, 0, 0),
            "no replacement: wait for the deadline"
        );
        assert!(eviction_done(160, 160, 0, 0));
    }
}
