//! The decision: where an app's instances go, and why every other site was not chosen.
//!
//! [`schedule`] runs in three steps over one [`Snapshot`]:
//!
//! 1. **Filter** every site: readiness (with the policy's failover delay), taints against
//!    tolerations, affinity groups, operators allowed, capacity for one more instance (CPU,
//!    memory, GPUs, session slots, net of the app's own reservations), the latency budget to
//!    at least one demand area, required app (anti-)affinity, failback, spread labels. A site
//!    may fail several filters; it carries all of its reasons.
//! 2. **Score** the feasible sites, each part normalised to 0..=100 and weighted
//!    ([`Weights`]): demand-weighted latency, capacity balance, locality (the app already runs
//!    there), cost (home operator before partners), preferred app (anti-)affinity.
//! 3. **Place**: instances follow demand. Each demand area needs enough instances in reach
//!    (within the latency budget) to hold its expected sessions at the app's sessions per
//!    instance; `minReplicas`, spread minimums and `maxReplicas` adjust the total. Sites that
//!    must keep what they run (NotReady but not yet failed over, or newly tainted
//!    `NoSchedule`) keep it; spread minimums are seeded with the best site of each missing
//!    group; then each area's remaining need is divided among the sites in reach of it, one
//!    affinity group at a time in order, overflowing to the next group only when the current
//!    one cannot hold it, by the policy's replica scheduling (dynamic or static weights,
//!    aggregated, duplicated), never opening more spread groups than allowed.
//!
//! "Nothing fits" is a [`Decision`] with no targets and its [`Unmet`] needs, not an error.
//! Every rejected site carries its reasons; a site certainly beyond every demand area's reach
//! carries that one alone (its other filters are not run), and [`crate::explain`] gives
//! every reason of every site.
//! The same snapshot and input always give the same decision: ties break on site id.
//!
//! Architecture Invariant: no IO, no clock reads, no randomness; `now` is in the snapshot.

use std::fmt;

use mecfed_core::{
    App, Failback, Failover, PlacementPolicy, ReplicaScheduling, Resources, SiteSelector, SpreadBy,
    SpreadConstraint, TaintEffect, chord_to_m, chord2,
    latency::{access_rtt_ms, max_transport_distance_m},
    m_to_chord,
};
use serde::{Deserialize, Serialize};

use crate::snapshot::{AppRecord, SiteHealth, SiteIdx, SiteRow, Snapshot};

/// Why a site was not chosen; a site can have several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// The site is NotReady (and any instances there have failed over, or there are none).
    NotReady,
    /// The site has a taint the policy does not tolerate.
    Tainted,
    /// The site is in none of the policy's affinity groups.
    OutsideAffinity,
    /// The site's operator does not accept this placement (no federation agreement).
    OperatorNotAllowed,
    /// Not enough CPU left for one instance.
    InsufficientCpu,
    /// Not enough memory left for one instance.
    InsufficientMemory,
    /// Not enough GPUs left for one instance.
    InsufficientGpus,
    /// Not enough session slots left for one instance.
    InsufficientSessionSlots,
    /// No demand area is within the app's latency budget of the site.
    OutOfLatencyBudget,
    /// An app this one must stay apart from runs there.
    AppAntiAffinity,
    /// An app this one must run together with does not run there.
    AppAffinityMissing,
    /// The app failed over from this site and its policy never fails back.
    FailbackNever,
    /// The site lacks the label a spread constraint counts.
    SpreadLabelMissing,
    /// Feasible, but in a spread group beyond the constraint's maximum.
    SpreadMaxGroups,
    /// Feasible, but cannot hold the full duplicated count.
    CannotHoldDuplicate,
    /// Feasible, but the demand was met by better sites or earlier affinity groups.
    NotNeeded,
    /// The site's zone is not one the app is deployed to.
    ZoneNotDeployed,
    /// The app is pinned to other sites of this zone.
    PinnedElsewhere,
}

impl Reason {
    const ALL: [Reason; 18] = [
        Self::NotReady,
        Self::Tainted,
        Self::OutsideAffinity,
        Self::OperatorNotAllowed,
        Self::InsufficientCpu,
        Self::InsufficientMemory,
        Self::InsufficientGpus,
        Self::InsufficientSessionSlots,
        Self::OutOfLatencyBudget,
        Self::AppAntiAffinity,
        Self::AppAffinityMissing,
        Self::FailbackNever,
        Self::SpreadLabelMissing,
        Self::SpreadMaxGroups,
        Self::CannotHoldDuplicate,
        Self::NotNeeded,
        Self::ZoneNotDeployed,
        Self::PinnedElsewhere,
    ];

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotReady => "site not ready",
            Self::Tainted => "untolerated taint",
            Self::OutsideAffinity => "outside every affinity group",
            Self::OperatorNotAllowed => "operator does not accept the app",
            Self::InsufficientCpu => "insufficient cpu",
            Self::InsufficientMemory => "insufficient memory",
            Self::InsufficientGpus => "insufficient gpus",
            Self::InsufficientSessionSlots => "insufficient session slots",
            Self::OutOfLatencyBudget => "no demand area within the latency budget",
            Self::AppAntiAffinity => "runs an app this one must stay apart from",
            Self::AppAffinityMissing => "lacks an app this one must run with",
            Self::FailbackNever => "failed over from; the policy never fails back",
            Self::SpreadLabelMissing => "lacks the label a spread constraint counts",
            Self::SpreadMaxGroups => "beyond the spread constraint's maximum groups",
            Self::CannotHoldDuplicate => "cannot hold the full duplicated count",
            Self::NotNeeded => "feasible, not needed: demand met by better sites",
            Self::ZoneNotDeployed => "zone not among the app's deployed zones",
            Self::PinnedElsewhere => "the app is pinned to another site of the zone",
        })
    }
}

/// A set of [`Reason`]s, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Reasons(u32);

impl Reasons {
    /// Whether the set is empty (the site passed every filter).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `r` is in the set.
    pub fn contains(self, r: Reason) -> bool {
        self.0 & r.bit() != 0
    }

    fn add(&mut self, r: Reason) {
        self.0 |= r.bit();
    }

    /// Both sets together.
    #[must_use]
    pub fn union(self, other: Reasons) -> Reasons {
        Reasons(self.0 | other.0)
    }

    /// The reasons, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl Serialize for Reasons {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A site not chosen, with every reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The site ([`Snapshot::site`] gives it).
    pub site: SiteIdx,
    /// Why.
    pub reasons: Reasons,
}

/// Instances on one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The site.
    pub site: mecfed_core::SiteId,
    /// Instances there.
    pub replicas: u32,
}

/// A need the decision could not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Unmet {
    /// Fewer instances than wanted in reach of a demand area (`area` is `None` for instances
    /// wanted beyond the areas' needs: `minReplicas`, spread minimums, or an app without
    /// demand areas).
    #[serde(rename_all = "camelCase")]
    Demand {
        /// The demand area.
        area: Option<String>,
        /// Instances wanted.
        wanted: u32,
        /// Instances placed.
        placed: u32,
    },
    /// A spread constraint has fewer groups than its minimum.
    #[serde(rename_all = "camelCase")]
    Spread {
        /// What it counts.
        by: SpreadBy,
        /// Its minimum.
        min_groups: u32,
        /// Groups reached.
        groups: u32,
    },
}

/// Where an app's instances go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Sites and their instance counts, in site id order.
    pub targets: Vec<Target>,
    /// Instances wanted in all (per site for duplicated scheduling).
    pub wanted: u32,
    /// Needs not met; empty when the decision meets the policy in full.
    pub unmet: Vec<Unmet>,
}

impl Decision {
    /// Instances placed in all.
    pub fn total(&self) -> u32 {
        self.targets.iter().map(|t| t.replicas).sum()
    }
}

/// Reported load (the busier of CPU and session slots) at which a site sheds instances.
pub const OVERLOAD: f64 = 0.9;
/// Load a shedding site aims at: each app on it moves its share of the excess.
pub const REBALANCE_TARGET: f64 = 0.8;

/// Weights of the score parts (any non-negative numbers; they are normalised).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    /// Demand-weighted predicted round trip against the budget.
    pub latency: f64,
    /// Room left on the site after one more instance.
    pub capacity: f64,
    /// The app already runs on the site (fewer moves).
    pub locality: f64,
    /// The home operator's sites before partners'.
    pub cost: f64,
    /// Preferred app (anti-)affinity.
    pub app_affinity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            latency: 4.0,
            capacity: 2.0,
            locality: 1.5,
            cost: 1.5,
            app_affinity: 1.0,
        }
    }
}

/// A site's score, by part (each 0..=100) and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    /// Latency part.
    pub latency: f32,
    /// Capacity part.
    pub capacity: f32,
    /// Locality part.
    pub locality: f32,
    /// Cost part.
    pub cost: f32,
    /// App affinity part.
    pub app_affinity: f32,
    /// Weighted total, 0..=100.
    pub total: f32,
}

/// The decision core with its score weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scheduler {
    /// Score weights.
    pub weights: Weights,
}

/// Schedules `app` under `policy` with the default weights. See the module docs.
pub fn schedule(
    snap: &Snapshot,
    app: &App,
    policy: &PlacementPolicy,
) -> (Decision, Vec<Rejection>) {
    Scheduler::default().schedule(snap, app, policy)
}

impl Scheduler {
    /// Schedules `app` under `policy`. See the module docs.
    pub fn schedule(
        &self,
        snap: &Snapshot,
        app: &App,
        policy: &PlacementPolicy,
    ) -> (Decision, Vec<Rejection>) {
        if app.zones.as_ref().is_some_and(Vec::is_empty) {
            // Onboarded, not deployed anywhere yet: nothing wanted, nothing unmet.
            return (Decision::default(), Vec::new());
        }
        let floored = zone_floor(app, policy);
        let policy = floored.as_ref().unwrap_or(policy);
        let mut run = Run::new(self, snap, app, policy);
        run.filter_and_score();
        run.place();
        run.finish()
    }

    /// Filters and scores only: every site's reasons (all of them, also for sites out of
    /// reach) and, for feasible ones, its score. [`crate::explain`] uses it.
    pub(crate) fn evaluate<'a>(
        &self,
        snap: &'a Snapshot,
        app: &'a App,
        policy: &'a PlacementPolicy,
    ) -> Vec<(Reasons, Option<Score>)> {
        let floored = zone_floor(app, policy);
        let policy = floored.as_ref().unwrap_or(policy);
        let mut run = Run::new(self, snap, app, policy);
        run.full_reasons = true;
        run.filter_and_score();
        run.score_all();
        run.cands
            .iter()
            .map(|c| {
                (
                    c.reasons,
                    (c.reasons.is_empty() || c.hold).then_some(c.score),
                )
            })
            .collect()
    }
}

/// An app deployed to named zones (CAMARA deployments and app instances) runs at least one
/// instance in each: its policy gains a zone spread with one group per deployed zone (only
/// those zones' sites are feasible, so covering that many zones covers each). `None` when the
/// policy already asks for as much.
fn zone_floor(app: &App, policy: &PlacementPolicy) -> Option<PlacementPolicy> {
    let zones = app.zones.as_ref()?;
    let want = u32::try_from(zones.len()).unwrap_or(u32::MAX);
    let covered = policy
        .spread
        .iter()
        .any(|s| s.by == SpreadBy::Zone && s.min_groups >= want);
    if want == 0 || covered {
        return None;
    }
    let mut p = policy.clone();
    p.spread.push(SpreadConstraint {
        by: SpreadBy::Zone,
        min_groups: want,
        max_groups: None,
    });
    Some(p)
}

// === the run ===

const NO_GROUP: u16 = u16::MAX;

/// Per-site working state of one decision.
#[derive(Debug, Clone, Copy, Default)]
struct Cand {
    reasons: Reasons,
    /// Index of the first affinity group that holds the site.
    group: u16,
    /// Keeps exactly its current instances (NotReady within the failover delay, or a new
    /// `NoSchedule` taint).
    hold: bool,
    /// Demand areas within the latency budget, one bit each.
    reach: u64,
    /// Instances of the app that fit (its own live reservation counted as free).
    avail: u32,
    /// Live instances of the app there now.
    current: u32,
    /// Instances this decision puts there.
    assigned: u32,
    /// Left out at least once by a spread maximum.
    spread_cut: bool,
    /// Overloaded: takes no new instances (but may get shed ones back).
    no_new: bool,
    /// Instances this decision moves off the site if others take them.
    shed: u32,
    /// Sum over the areas in reach of expected sessions x round trip.
    wrtt: f64,
    /// Sum of the expected sessions of the areas in reach.
    reach_w: f64,
    /// The preferred app affinity part of the score.
    app_affinity: f32,
    /// Valid once its group is scored.
    score: Score,
}

impl Cand {
    fn room(&self) -> u32 {
        self.avail.saturating_sub(self.assigned)
    }
}

/// An affinity group or static-weight selector in interned form.
struct Compiled {
    operators: Option<Vec<u32>>,
    regions: Option<Vec<u32>>,
    zones: Option<Vec<u32>>,
    sites: Option<Vec<SiteIdx>>,
    labels: Vec<(u32, u32)>,
    exclude: Vec<SiteIdx>,
    /// A label the selector requires exists on no site.
    impossible: bool,
}

impl Compiled {
    fn new(sel: &SiteSelector, snap: &Snapshot) -> Self {
        let list = |v: Vec<Option<u32>>| -> Option<Vec<u32>> {
            (!v.is_empty()).then(|| v.into_iter().flatten().collect())
        };
        let mut impossible = false;
        let labels = sel
            .match_labels
            .iter()
            .filter_map(|(k, v)| {
                let pair = snap.label_keys.get(k).zip(snap.label_values.get(v));
                impossible |= pair.is_none();
                pair
            })
            .collect();
        Self {
            operators: list(
                sel.operators
                    .iter()
                    .map(|o| snap.operators.get(o.as_str()))
                    .collect(),
            ),
            regions: list(sel.regions.iter().map(|r| snap.regions.get(r)).collect()),
            zones: list(
                sel.zones
                    .iter()
                    .map(|z| snap.zones.get(z.as_str()))
                    .collect(),
            ),
            sites: (!sel.sites.is_empty())
                .then(|| sel.sites.iter().filter_map(|s| snap.index_of(s)).collect()),
            labels,
            exclude: sel
                .exclude
                .iter()
                .filter_map(|s| snap.index_of(s))
                .collect(),
            impossible,
        }
    }

    #[inline]
    fn matches(&self, idx: SiteIdx, row: &SiteRow) -> bool {
        !self.impossible
            && self
                .operators
                .as_ref()
                .is_none_or(|v| v.contains(&row.operator))
            && self
                .regions
                .as_ref()
                .is_none_or(|v| v.contains(&row.region))
            && self.zones.as_ref().is_none_or(|v| v.contains(&row.zone))
            && self.sites.as_ref().is_none_or(|v| v.contains(&idx))
            && self.labels.iter().all(|&(k, v)| row.label(k) == Some(v))
            && !self.exclude.contains(&idx)
    }
}

/// A demand area's geometry for fast distance checks.
struct AreaGeo {
    /// Circle centre or polygon centroid on the unit sphere.
    centre: [f64; 3],
    /// Circle radius; 0 for polygons.
    radius_m: f64,
    /// Polygon corners on the unit sphere.
    corners: Vec<[f64; 3]>,
    /// Squared chord from the centre beyond which the area is certainly out of budget.
    prune_chord2: f64,
    /// Expected sessions, at least 1 (weight of the area in the latency score).
    weight: f64,
}

impl AreaGeo {
    /// Great-circle distance (m) to the area's farthest point from `site`.
    fn farthest_m(&self, site: &[f64; 3], centre_chord2: f64) -> f64 {
        if self.corners.is_empty() {
            chord_to_m(centre_chord2.sqrt()) + self.radius_m
        } else {
            let c2 = self
                .corners
                .iter()
                .map(|c| chord2(c, site))
                .fold(0.0, f64::max);
            chord_to_m(c2.sqrt())
        }
    }
}

/// Interned spread constraint.
struct Spread<'a> {
    c: &'a SpreadConstraint,
    label_key: Option<u32>,
    /// Groups with instances so far.
    used: Vec<u32>,
}

impl Spread<'_> {
    fn group(&self, idx: SiteIdx, row: &SiteRow) -> Option<u32> {
        match &self.c.by {
            SpreadBy::Operator => Some(row.operator),
            SpreadBy::Region => Some(row.region),
            SpreadBy::Zone => Some(row.zone),
            SpreadBy::Site => Some(idx.0),
            SpreadBy::Label { .. } => row.label(self.label_key?),
        }
    }

    fn max(&self) -> usize {
        self.c.max_groups.map_or(usize::MAX, |m| m as usize)
    }
}

struct Run<'a> {
    weights: Weights,
    /// Every reason of every site (for explanations), rather than stopping at a sufficient
    /// one for sites certainly out of reach.
    full_reasons: bool,
    snap: &'a Snapshot,
    app: &'a App,
    policy: &'a PlacementPolicy,
    rec: Option<&'a AppRecord>,
    cands: Vec<Cand>,
    areas: Vec<AreaGeo>,
    spreads: Vec<Spread<'a>>,
    /// Feasible (or held) sites: earlier affinity groups first, then best score.
    ranked: Vec<SiteIdx>,
    /// Where each affinity group's sites start in `ranked` (one more entry: the end).
    group_starts: Vec<usize>,
    /// Whether a group's sites are scored and sorted best first.
    scored: Vec<bool>,
    /// Sum of all demand areas' weights.
    total_weight: f64,
    /// Number of affinity groups (at least one).
    groups: usize,
    /// Instances still wanted per area, and (last) beyond the areas.
    need: Vec<u32>,
    wanted_per_bucket: Vec<u32>,
    wanted: u32,
    unmet: Vec<Unmet>,
}

fn ceil_div(a: u32, b: u32) -> u32 {
    a.div_ceil(b.max(1))
}

/// Instances of `need` that fit into `free`; `u32::MAX` when `need` is zero throughout.
fn fits_count(free: &Resources, need: &Resources) -> u32 {
    let mut n = u64::from(u32::MAX);
    let mut dim = |f: u64, w: u64| {
        if let Some(k) = f.checked_div(w) {
            n = n.min(k);
        }
    };
    dim(free.cpu_millicores, need.cpu_millicores);
    dim(free.memory_bytes, need.memory_bytes);
    dim(u64::from(free.gpus), u64::from(need.gpus));
    dim(u64::from(free.session_slots), u64::from(need.session_slots));
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'a> Run<'a> {
    fn new(
        sched: &Scheduler,
        snap: &'a Snapshot,
        app: &'a App,
        policy: &'a PlacementPolicy,
    ) -> Self {
        let budget = f64::from(app.qos.latency_budget_ms);
        // Pruning bound: the fastest access (Wi-Fi, 5 ms) and an idle site.
        let best_access = access_rtt_ms(mecfed_core::AccessKind::Wifi);
        let reach_m = max_transport_distance_m(budget - best_access);
        let areas = app
            .qos
            .demand_areas
            .iter()
            .map(|a| {
                let centre = a.centroid().unit_vector();
                let (radius_m, corners) = match (a.center, a.radius_m) {
                    (Some(_), Some(r)) => (r, Vec::new()),
                    _ => (0.0, a.polygon.iter().map(|p| p.unit_vector()).collect()),
                };
                // The farthest point is at least the centre's distance (+ radius for circles).
                let limit = reach_m - radius_m;
                let prune_chord2 = if limit < 0.0 {
                    -1.0
                } else {
                    m_to_chord(limit).powi(2)
                };
                AreaGeo {
                    centre,
                    radius_m,
                    corners,
                    prune_chord2,
                    weight: f64::from(a.expected_sessions.max(1)),
                }
            })
            .collect();
        let spreads = policy
            .spread
            .iter()
            .map(|c| Spread {
                c,
                label_key: match &c.by {
                    SpreadBy::Label { key } => snap.label_keys.get(key),
                    _ => None,
                },
                used: Vec::new(),
            })
            .collect();
        Self {
            weights: sched.weights,
            full_reasons: false,
            snap,
            app,
            policy,
            rec: snap.apps.get(&app.id),
            cands: vec![Cand::default(); snap.sites.len()],
            areas,
            spreads,
            ranked: Vec::new(),
            group_starts: Vec::new(),
            scored: Vec::new(),
            total_weight: 0.0,
            groups: policy.affinity.len().max(1),
            need: Vec::new(),
            wanted_per_bucket: Vec::new(),
            wanted: 0,
            unmet: Vec::new(),
        }
    }

    fn filter_and_score(&mut self) {
        let snap = self.snap;
        let app = self.app;
        let policy = self.policy;
        let groups: Vec<Compiled> = policy
            .affinity
            .iter()
            .map(|g| Compiled::new(g, snap))
            .collect();
        // Sites of the apps named in app (anti-)affinities, one list per entry.
        let related: Vec<Vec<SiteIdx>> = policy
            .app_affinity
            .iter()
            .map(|a| {
                snap.apps.get(&a.app).map_or_else(Vec::new, |r| {
                    r.placed
                        .iter()
                        .filter(|p| !p.evicting && p.replicas > 0)
                        .map(|p| p.site)
                        .collect()
                })
            })
            .collect();
        let measured: Vec<Option<&std::collections::HashMap<SiteIdx, f64>>> = app
            .qos
            .demand_areas
            .iter()
            .map(|a| snap.measured.get(&a.name).filter(|m| !m.is_empty()))
            .collect();
        let failover_due = |since: u64| match policy.failover {
            Failover::Never => false,
            Failover::Immediately => true,
            Failover::AfterNotReady { seconds } => {
                snap.now.saturating_sub(since) >= u64::from(seconds)
            }
        };
        let budget = f64::from(app.qos.latency_budget_ms);
        let total_weight: f64 = self.areas.iter().map(|a| a.weight).sum();
        let need = app.resources;

        let full = self.full_reasons;
        for (i, row) in snap.sites.iter().enumerate() {
            let idx = SiteIdx(i as u32);
            let cand = &mut self.cands[i];
            // A site certainly beyond every demand area's reach stops here, as a node stops
            // at its first failing filter in kube-scheduler: its other reasons are left to
            // `explain`.
            if !full
                && !self.areas.is_empty()
                && self.areas.iter().enumerate().all(|(a, area)| {
                    measured[a].is_none_or(|m| !m.contains_key(&idx))
                        && chord2(&area.centre, &row.unit) > area.prune_chord2
                })
            {
                cand.reasons.add(Reason::OutOfLatencyBudget);
                continue;
            }
            let mut reasons = Reasons::default();
            if let Some(zones) = &app.zones
                && !zones.contains(&snap.infos[i].zone)
            {
                reasons.add(Reason::ZoneNotDeployed);
            }
            if let Some(pinned) = app.pins.get(&snap.infos[i].zone)
                && !pinned.contains(&snap.infos[i].id)
            {
                reasons.add(Reason::PinnedElsewhere);
            }
            let mut keep_only = false;
            let own = self.rec.map_or(Resources::ZERO, |r| r.reserved(idx));
            cand.current = self.rec.map_or(0, |r| r.current(idx));

            // Readiness, with the failover delay.
            if let SiteHealth::NotReady { since } = row.health {
                if cand.current > 0 && !failover_due(since) {
                    keep_only = true;
                } else {
                    reasons.add(Reason::NotReady);
                }
            }
            // Taints: NoExecute evicts; NoSchedule only keeps new instances away.
            let taints: &[mecfed_core::Taint] = if row.tainted {
                &snap.infos[i].taints
            } else {
                &[]
            };
            for t in taints {
                if policy.tolerations.iter().any(|tol| tol.tolerates(t)) {
                    continue;
                }
                match t.effect {
                    TaintEffect::NoSchedule if cand.current > 0 => keep_only = true,
                    _ => reasons.add(Reason::Tainted),
                }
            }
            // Affinity groups: the first that holds the site.
            cand.group = if groups.is_empty() {
                0
            } else {
                groups
                    .iter()
                    .position(|g| g.matches(idx, row))
                    .map_or(NO_GROUP, |g| g as u16)
            };
            if cand.group == NO_GROUP {
                reasons.add(Reason::OutsideAffinity);
            }
            if !snap.operator_allowed.is_empty()
                && !snap
                    .operator_allowed
                    .get(row.operator as usize)
                    .copied()
                    .unwrap_or(false)
            {
                reasons.add(Reason::OperatorNotAllowed);
            }
            // Capacity for one more instance, the app's own reservation counted as free.
            let free = row
                .capacity
                .saturating_sub(&row.allocated.saturating_sub(&own));
            if !free.fits(&need) {
                if free.cpu_millicores < need.cpu_millicores {
                    reasons.add(Reason::InsufficientCpu);
                }
                if free.memory_bytes < need.memory_bytes {
                    reasons.add(Reason::InsufficientMemory);
                }
                if free.gpus < need.gpus {
                    reasons.add(Reason::InsufficientGpus);
                }
                if free.session_slots < need.session_slots {
                    reasons.add(Reason::InsufficientSessionSlots);
                }
            }
            // Latency budget to at least one demand area.
            let mut reach = 0u64;
            let mut weighted_rtt = 0.0;
            let mut reach_weight = 0.0;
            for (a, area) in self.areas.iter().enumerate() {
                let m = measured[a].and_then(|m| m.get(&idx)).copied();
                let rtt = match m {
                    Some(rtt) => rtt,
                    None => {
                        let c2 = chord2(&area.centre, &row.unit);
                        if c2 > area.prune_chord2 {
                            continue;
                        }
                        row.predicted_rtt_ms(area.farthest_m(&row.unit, c2))
                    }
                };
                if rtt <= budget {
                    reach |= 1 << a;
                    weighted_rtt += area.weight * rtt;
                    reach_weight += area.weight;
                }
            }
            cand.reach = reach;
            if !self.areas.is_empty() && reach == 0 {
                reasons.add(Reason::OutOfLatencyBudget);
            }
            // Required app (anti-)affinity; preferred ones score below.
            let mut affinity_hits = 0i32;
            let mut preferred = 0i32;
            for (a, sites) in policy.app_affinity.iter().zip(&related) {
                let there = sites.contains(&idx);
                match a.relation {
                    mecfed_core::AppRelation::RequiredTogether if !there => {
                        reasons.add(Reason::AppAffinityMissing);
                    }
                    mecfed_core::AppRelation::RequiredApart if there => {
                        reasons.add(Reason::AppAntiAffinity);
                    }
                    mecfed_core::AppRelation::PreferredTogether => {
                        preferred += 1;
                        affinity_hits += i32::from(there);
                    }
                    mecfed_core::AppRelation::PreferredApart => {
                        preferred += 1;
                        affinity_hits -= i32::from(there);
                    }
                    _ => {}
                }
            }
            if policy.failback == Failback::Never
                && self.rec.is_some_and(|r| r.failed_over_from.contains(&idx))
            {
                reasons.add(Reason::FailbackNever);
            }
            for s in &self.spreads {
                if s.group(idx, row).is_none() {
                    reasons.add(Reason::SpreadLabelMissing);
                }
            }
            // A held site keeps its instances only when nothing else rules it out.
            let hard = {
                let mut r = reasons;
                for soft in [
                    Reason::InsufficientCpu,
                    Reason::InsufficientMemory,
                    Reason::InsufficientGpus,
                    Reason::InsufficientSessionSlots,
                ] {
                    r.0 &= !soft.bit();
                }
                r
            };
            if keep_only && hard.is_empty() {
                cand.hold = true;
                reasons = Reasons::default();
            } else if keep_only {
                reasons.add(if matches!(row.health, SiteHealth::NotReady { .. }) {
                    Reason::NotReady
                } else {
                    Reason::Tainted
                });
            }
            cand.reasons = reasons;
            if !reasons.is_empty() {
                continue;
            }
            cand.avail = fits_count(&free, &need);

            // Scored later, per affinity group, only for the groups placement reaches.
            cand.wrtt = weighted_rtt;
            cand.reach_w = reach_weight;
            cand.app_affinity = if preferred == 0 {
                50.0
            } else {
                (50.0 + 50.0 * f64::from(affinity_hits) / f64::from(preferred)) as f32
            };
            self.ranked.push(idx);
        }
        // Group the feasible sites by affinity group (counting sort; id order within).
        let mut starts = vec![0usize; self.groups + 1];
        for i in &self.ranked {
            starts[usize::from(self.cands[i.get()].group) + 1] += 1;
        }
        for g in 0..self.groups {
            starts[g + 1] += starts[g];
        }
        let mut grouped = vec![SiteIdx(0); self.ranked.len()];
        let mut next = starts.clone();
        for &i in &self.ranked {
            let g = usize::from(self.cands[i.get()].group);
            grouped[next[g]] = i;
            next[g] += 1;
        }
        self.ranked = grouped;
        self.group_starts = starts;
        self.scored = vec![false; self.groups];
        self.total_weight = total_weight;
    }

    /// The score of a feasible site. See the module docs for the parts.
    fn score_of(&self, idx: SiteIdx) -> Score {
        let (snap, app, w) = (self.snap, self.app, &self.weights);
        let row = &snap.sites[idx.get()];
        let c = &self.cands[idx.get()];
        let budget = f64::from(app.qos.latency_budget_ms);
        let latency = if c.reach_w > 0.0 && self.total_weight > 0.0 {
            let rtt = c.wrtt / c.reach_w;
            // Covering more of the demand is better too: scale by the share in reach.
            100.0 * (1.0 - rtt / budget).clamp(0.0, 1.0) * (c.reach_w / self.total_weight)
        } else {
            0.0
        };
        let own = self.rec.map_or(Resources::ZERO, |r| r.reserved(idx));
        let after = row
            .allocated
            .saturating_sub(&own)
            .checked_add(&app.resources)
            .unwrap_or(row.allocated);
        let inv = &row.inv_capacity;
        let used = (after.cpu_millicores as f64 * inv[0])
            .max(after.memory_bytes as f64 * inv[1])
            .max(f64::from(after.gpus) * inv[2])
            .max(f64::from(after.session_slots) * inv[3]);
        let capacity = 100.0 * (1.0 - used).clamp(0.0, 1.0);
        let locality = if c.current > 0 { 100.0 } else { 0.0 };
        let cost = match snap.home_operator {
            Some(home) if home != row.operator => 0.0,
            _ => 100.0,
        };
        let app_affinity = f64::from(c.app_affinity);
        let sum = w.latency + w.capacity + w.locality + w.cost + w.app_affinity;
        let total = if sum > 0.0 {
            (w.latency * latency
                + w.capacity * capacity
                + w.locality * locality
                + w.cost * cost
                + w.app_affinity * app_affinity)
                / sum
        } else {
            0.0
        };
        Score {
            latency: latency as f32,
            capacity: capacity as f32,
            locality: locality as f32,
            cost: cost as f32,
            app_affinity: app_affinity as f32,
            total: total as f32,
        }
    }

    /// Scores group `g`'s sites and orders them best first (ties: site id), once.
    fn score_group(&mut self, g: usize) {
        if self.scored[g] {
            return;
        }
        self.scored[g] = true;
        let (from, to) = (self.group_starts[g], self.group_starts[g + 1]);
        for k in from..to {
            let idx = self.ranked[k];
            self.cands[idx.get()].score = self.score_of(idx);
        }
        // Scores are non-negative, so their bits order as the numbers do; packed integer
        // keys make a total order, so the unstable sort is deterministic.
        let cands = &self.cands;
        let mut keys: Vec<(u32, u32)> = self.ranked[from..to]
            .iter()
            .map(|i| (!cands[i.get()].score.total.max(0.0).to_bits(), i.0))
            .collect();
        keys.sort_unstable();
        for (k, (_, i)) in keys.into_iter().enumerate() {
            self.ranked[from + k] = SiteIdx(i);
        }
    }

    fn score_all(&mut self) {
        for g in 0..self.groups {
            self.score_group(g);
        }
    }

    fn row(&self, idx: SiteIdx) -> &'a SiteRow {
        &self.snap.sites[idx.get()]
    }

    /// Whether a new instance on `idx` keeps every spread maximum.
    fn spread_allows(&self, idx: SiteIdx) -> bool {
        let row = self.row(idx);
        self.spreads.iter().all(|s| match s.group(idx, row) {
            Some(g) => s.used.contains(&g) || s.used.len() < s.max(),
            None => false,
        })
    }

    fn mark_used(&mut self, idx: SiteIdx) {
        let row = self.row(idx);
        for s in &mut self.spreads {
            if let Some(g) = s.group(idx, row)
                && !s.used.contains(&g)
            {
                s.used.push(g);
            }
        }
    }

    /// Gives up to `k` instances on `idx` to the buckets in reach, largest remaining need
    /// first; returns how many some need took.
    fn attribute(&mut self, idx: SiteIdx, k: u32) -> u32 {
        let reach = self.cands[idx.get()].reach;
        let areas = self.areas.len();
        let mut left = k;
        while left > 0 {
            let best = (0..areas)
                .filter(|&a| reach & (1 << a) != 0 && self.need[a] > 0)
                .max_by(|&a, &b| self.need[a].cmp(&self.need[b]).then(b.cmp(&a)))
                .unwrap_or(areas);
            let take = left.min(self.need[best]);
            if take == 0 {
                break; // beyond every need (a held site keeping more than wanted)
            }
            self.need[best] -= take;
            left -= take;
        }
        k - left
    }

    /// Whether the app should be placed afresh rather than kept where it runs: its policy
    /// fails back and a site it failed over from is usable again.
    fn failing_back(&self) -> bool {
        self.policy.failback == Failback::WhenRecovered
            && self.rec.is_some_and(|r| {
                r.failed_over_from
                    .iter()
                    .any(|s| self.cands[s.get()].reasons.is_empty())
            })
    }

    fn place(&mut self) {
        let app = self.app;
        let policy = self.policy;
        let per = app.qos.max_sessions_per_instance.max(1);
        let mut need: Vec<u32> = app
            .qos
            .demand_areas
            .iter()
            .map(|a| ceil_div(a.expected_sessions, per))
            .collect();
        let duplicated = policy.replica_scheduling == ReplicaScheduling::Duplicated;
        let spread_min = if duplicated {
            0
        } else {
            policy
                .spread
                .iter()
                .map(|s| s.min_groups)
                .max()
                .unwrap_or(0)
        };
        let sum: u32 = need.iter().sum();
        let mut n = sum.max(policy.min_replicas).max(spread_min).max(1);
        if let Some(max) = policy.max_replicas
            && n > max
        {
            n = max;
            if sum > max {
                scale_down(&mut need, max);
            }
        }
        let floating = n - need.iter().sum::<u32>();
        need.push(floating);
        self.wanted = n;
        self.wanted_per_bucket = need.clone();
        self.need = need;
        if duplicated {
            self.place_duplicated();
        } else {
            self.place_divided();
        }
    }

    fn place_divided(&mut self) {
        // Held sites keep what they run.
        for i in 0..self.ranked.len() {
            let idx = self.ranked[i];
            let c = &mut self.cands[idx.get()];
            if c.hold {
                c.assigned = c.current;
                let k = c.current;
                self.mark_used(idx);
                self.attribute(idx, k);
            }
        }
        // Stability: instances stay on feasible sites, best first, as far as they serve a
        // need (Karmada divides only the difference on a re-schedule, too); a failback
        // places afresh.
        if !self.failing_back() {
            if self.rec.is_some() {
                self.score_all();
            }
            let may_shed = self.rec.is_some_and(|r| !r.rebalance_held);
            for i in 0..self.ranked.len() {
                let idx = self.ranked[i];
                let c = self.cands[idx.get()];
                if c.hold || c.current == 0 || !self.spread_allows(idx) {
                    continue;
                }
                // An overloaded site sheds its share of the excess load: the app's instances
                // there shrink in proportion, the rest is placed elsewhere if it fits.
                let load = self.row(idx).utilisation;
                let mut keep = c.current.min(c.avail);
                if may_shed && load >= OVERLOAD {
                    let shed = (f64::from(keep) * (load - REBALANCE_TARGET) / load).ceil() as u32;
                    let cand = &mut self.cands[idx.get()];
                    cand.no_new = true;
                    cand.shed = shed.min(keep);
                    keep -= cand.shed;
                }
                let kept = self.attribute(idx, keep);
                if kept > 0 {
                    self.cands[idx.get()].assigned = kept;
                    self.mark_used(idx);
                }
            }
        }
        // Seed spread minimums with the best site of each missing group.
        for s in 0..self.spreads.len() {
            while self.spreads[s].used.len() < self.spreads[s].c.min_groups as usize
                && self.need.iter().any(|&n| n > 0)
            {
                let mut pick = None;
                for g in 0..self.groups {
                    self.score_group(g);
                    let slice = &self.ranked[self.group_starts[g]..self.group_starts[g + 1]];
                    pick = slice.iter().copied().find(|&idx| {
                        let c = &self.cands[idx.get()];
                        let row = self.row(idx);
                        !c.hold
                            && !c.no_new
                            && c.room() > 0
                            && self.useful(idx)
                            && self.spreads[s]
                                .group(idx, row)
                                .is_some_and(|g| !self.spreads[s].used.contains(&g))
                            && self.spread_allows(idx)
                    });
                    if pick.is_some() {
                        break;
                    }
                }
                let Some(idx) = pick else { break };
                self.cands[idx.get()].assigned += 1;
                self.mark_used(idx);
                self.attribute(idx, 1);
            }
        }
        // Each bucket's need, affinity group by group.
        let mut order: Vec<usize> = (0..self.areas.len()).collect();
        let areas = &self.app.qos.demand_areas;
        order.sort_by(|&a, &b| {
            self.need[b]
                .cmp(&self.need[a])
                .then_with(|| areas[a].name.cmp(&areas[b].name))
        });
        order.push(self.areas.len());
        for bucket in order {
            for g in 0..self.groups {
                if self.need[bucket] == 0 {
                    break;
                }
                let subset = self.subset(bucket, g as u16);
                if subset.is_empty() {
                    continue;
                }
                let given = self.divide(self.need[bucket], &subset);
                self.need[bucket] -= given;
            }
        }
        // What no other site took goes back to the overloaded sites that shed it.
        for i in 0..self.ranked.len() {
            let idx = self.ranked[i];
            let shed = self.cands[idx.get()].shed;
            if shed > 0 {
                let back = self.attribute(idx, shed);
                let c = &mut self.cands[idx.get()];
                c.assigned += back;
                c.shed -= back;
                if back > 0 {
                    self.mark_used(idx);
                }
            }
        }
        for (b, &left) in self.need.iter().enumerate() {
            if left > 0 {
                self.unmet.push(Unmet::Demand {
                    area: areas.get(b).map(|a| a.name.clone()),
                    wanted: self.wanted_per_bucket[b],
                    placed: self.wanted_per_bucket[b] - left,
                });
            }
        }
    }

    /// Whether an instance on `idx` serves some remaining need.
    fn useful(&self, idx: SiteIdx) -> bool {
        let reach = self.cands[idx.get()].reach;
        let areas = self.areas.len();
        self.need[areas] > 0 && (areas == 0 || reach != 0)
            || (0..areas).any(|a| reach & (1 << a) != 0 && self.need[a] > 0)
    }

    /// The candidates of `bucket` in affinity group `g`, best first, cut to the spread
    /// maximums.
    fn subset(&mut self, bucket: usize, g: u16) -> Vec<SiteIdx> {
        self.score_group(usize::from(g));
        let areas = self.areas.len();
        let mut out = Vec::new();
        // Spread groups the subset may open, beyond those in use.
        let mut opened: Vec<Vec<u32>> = self.spreads.iter().map(|s| s.used.clone()).collect();
        for i in self.group_starts[usize::from(g)]..self.group_starts[usize::from(g) + 1] {
            let idx = self.ranked[i];
            let c = &self.cands[idx.get()];
            let in_reach = if bucket < areas {
                c.reach & (1 << bucket) != 0
            } else {
                areas == 0 || c.reach != 0
            };
            if c.hold || c.no_new || !in_reach || c.room() == 0 {
                continue;
            }
            let row = self.row(idx);
            let ok = self
                .spreads
                .iter()
                .zip(&opened)
                .all(|(s, open)| match s.group(idx, row) {
                    Some(grp) => open.contains(&grp) || open.len() < s.max(),
                    None => false,
                });
            if !ok {
                self.cands[idx.get()].spread_cut = true;
                continue;
            }
            for (s, open) in self.spreads.iter().zip(opened.iter_mut()) {
                if let Some(grp) = s.group(idx, row)
                    && !open.contains(&grp)
                {
                    open.push(grp);
                }
            }
            out.push(idx);
        }
        out
    }

    /// Places up to `n` instances on `subset` (best first) by the policy's replica
    /// scheduling; returns how many it placed.
    fn divide(&mut self, n: u32, subset: &[SiteIdx]) -> u32 {
        let weights: Vec<u64> = match &self.policy.replica_scheduling {
            ReplicaScheduling::Aggregated => return self.aggregate(n, subset),
            ReplicaScheduling::DividedStatic { weights } => {
                let compiled: Vec<(Compiled, u32)> = weights
                    .iter()
                    .map(|w| (Compiled::new(&w.sites, self.snap), w.weight))
                    .collect();
                subset
                    .iter()
                    .map(|&idx| {
                        let row = self.row(idx);
                        compiled
                            .iter()
                            .find(|(c, _)| c.matches(idx, row))
                            .map_or(0, |(_, w)| u64::from(*w))
                    })
                    .collect()
            }
            // Dynamic weights: the room each site has.
            _ => subset
                .iter()
                .map(|i| u64::from(self.cands[i.get()].room()))
                .collect(),
        };
        // Largest remainder, capped by room; what a full site cannot take is re-divided
        // among the others until all is placed or nobody has room.
        let mut left = n;
        loop {
            let live: Vec<usize> = (0..subset.len())
                .filter(|&k| weights[k] > 0 && self.cands[subset[k].get()].room() > 0)
                .collect();
            let total: u64 = live.iter().map(|&k| weights[k]).sum();
            if left == 0 || total == 0 {
                break;
            }
            let mut given = 0u32;
            let mut rems: Vec<usize> = Vec::with_capacity(live.len());
            for &k in &live {
                let exact = u64::from(left) * weights[k];
                let share = u32::try_from(exact / total).unwrap_or(u32::MAX);
                let c = &mut self.cands[subset[k].get()];
                let take = share.min(c.room());
                c.assigned += take;
                given += take;
                if take == share {
                    rems.push(k);
                }
            }
            // The remainder goes to the best-ranked sites (subset is best first), so latency
            // and preferences decide what proportions leave open.
            for k in rems {
                if given == left {
                    break;
                }
                let c = &mut self.cands[subset[k].get()];
                if c.room() > 0 {
                    c.assigned += 1;
                    given += 1;
                }
            }
            for &idx in subset {
                if self.cands[idx.get()].assigned > 0 {
                    self.mark_used(idx);
                }
            }
            left -= given;
            if given == 0 {
                break;
            }
        }
        n - left
    }

    /// Aggregated: as few sites as hold `n`, those already used first, then the roomiest.
    fn aggregate(&mut self, n: u32, subset: &[SiteIdx]) -> u32 {
        let mut order = subset.to_vec();
        let cands = &self.cands;
        order.sort_by(|a, b| {
            let (ca, cb) = (&cands[a.get()], &cands[b.get()]);
            let used = |c: &Cand| c.assigned > 0 || c.current > 0;
            used(cb)
                .cmp(&used(ca))
                .then(cb.room().cmp(&ca.room()))
                .then(cb.score.total.total_cmp(&ca.score.total))
                .then(a.cmp(b))
        });
        let mut left = n;
        for idx in order {
            if left == 0 {
                break;
            }
            let c = &mut self.cands[idx.get()];
            let take = left.min(c.room());
            c.assigned += take;
            left -= take;
            if take > 0 {
                self.mark_used(idx);
            }
        }
        n - left
    }

    fn place_duplicated(&mut self) {
        let n = self.wanted;
        let areas = self.areas.len();
        for g in 0..self.groups {
            self.score_group(g);
            let mut any = false;
            for i in self.group_starts[g]..self.group_starts[g + 1] {
                let idx = self.ranked[i];
                let c = self.cands[idx.get()];
                if areas > 0 && c.reach == 0 {
                    continue;
                }
                if c.hold {
                    self.cands[idx.get()].assigned = c.current;
                    self.mark_used(idx);
                    any = true;
                    continue;
                }
                if c.avail < n {
                    self.cands[idx.get()]
                        .reasons
                        .add(Reason::CannotHoldDuplicate);
                    continue;
                }
                if !self.spread_allows(idx) {
                    self.cands[idx.get()].spread_cut = true;
                    continue;
                }
                self.cands[idx.get()].assigned = n;
                self.mark_used(idx);
                any = true;
            }
            if any {
                break;
            }
        }
        let names = &self.app.qos.demand_areas;
        let mut covered = 0u64;
        let mut sites = 0u32;
        for c in &self.cands {
            if c.assigned > 0 {
                covered |= c.reach;
                sites += 1;
            }
        }
        if areas == 0 && sites == 0 {
            self.unmet.push(Unmet::Demand {
                area: None,
                wanted: n,
                placed: 0,
            });
        }
        for (a, area) in names.iter().enumerate() {
            if covered & (1 << a) == 0 {
                self.unmet.push(Unmet::Demand {
                    area: Some(area.name.clone()),
                    wanted: n,
                    placed: 0,
                });
            }
        }
    }

    fn finish(mut self) -> (Decision, Vec<Rejection>) {
        for s in &self.spreads {
            if s.used.len() < s.c.min_groups as usize {
                self.unmet.push(Unmet::Spread {
                    by: s.c.by.clone(),
                    min_groups: s.c.min_groups,
                    groups: s.used.len() as u32,
                });
            }
        }
        let mut targets = Vec::new();
        let mut rejections = Vec::with_capacity(self.cands.len());
        for (i, c) in self.cands.iter().enumerate() {
            let idx = SiteIdx(i as u32);
            if c.assigned > 0 {
                targets.push(Target {
                    site: self.snap.infos[i].id.clone(),
                    replicas: c.assigned,
                });
                continue;
            }
            let mut reasons = c.reasons;
            if reasons.is_empty() {
                reasons.add(if c.spread_cut {
                    Reason::SpreadMaxGroups
                } else {
                    Reason::NotNeeded
                });
            }
            rejections.push(Rejection { site: idx, reasons });
        }
        (
            Decision {
                targets,
                wanted: self.wanted,
                unmet: self.unmet,
            },
            rejections,
        )
    }
}

/// Scales `need` down to sum to `max`, in proportion, largest remainders first.
fn scale_down(need: &mut [u32], max: u32) {
    let sum: u64 = need.iter().map(|&n| u64::from(n)).sum();
    if sum == 0 {
        return;
    }
    let mut rems: Vec<(u64, usize)> = Vec::with_capacity(need.len());
    let mut given = 0u32;
    for (i, n) in need.iter_mut().enumerate() {
        let exact = u64::from(*n) * u64::from(max);
        *n = u32::try_from(exact / sum).unwrap_or(u32::MAX);
        given += *n;
        rems.push((exact % sum, i));
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems.into_iter().take((max - given) as usize) {
        need[i] += 1;
    }
}

#[cfg(test)]
mod tests;
