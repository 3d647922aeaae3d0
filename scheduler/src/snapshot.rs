//! The world as one scheduling pass sees it: sites with their health and reservations, the
//! placements of every app, sites apps failed over from, and measured round trips.
//!
//! A [`Snapshot`] is built once per pass ([`SnapshotBuilder`]) and then read by every
//! decision of the pass; [`Snapshot::commit`] applies a decision's reservations so the next
//! decision of the same pass sees them. Strings are interned into small integers here, once,
//! so the per-site work of a decision compares integers.

use std::collections::HashMap;

use mecfed_core::{
    AccessKind, App, AppId, OperatorId, Resources, Site, SiteId,
    latency::{access_rtt_ms, queueing_ms, transport_rtt_ms},
};

use crate::decide::Decision;

/// Whether a site is up, as the controller observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteHealth {
    /// The site's agent holds a live lease.
    Ready,
    /// The lease is gone since `since` (seconds since the Unix epoch).
    NotReady {
        /// When the site was first seen NotReady.
        since: u64,
    },
}

/// Index of a site in a [`Snapshot`] (sites are kept in id order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteIdx(pub(crate) u32);

impl SiteIdx {
    /// The index as a `usize`.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Strings to dense integers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).expect("fewer than 2^32 distinct strings");
        self.ids.insert(s.to_string(), id);
        id
    }

    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// One site, pre-digested for decisions: only what the per-site loop reads, so a thousand
/// rows stay in cache (the full [`Site`] is kept aside in `Snapshot::infos`).
#[derive(Debug, Clone)]
pub(crate) struct SiteRow {
    pub(crate) health: SiteHealth,
    /// Total capacity.
    pub(crate) capacity: Resources,
    /// Whether the site has any taint.
    pub(crate) tainted: bool,
    /// Position on the unit sphere.
    pub(crate) unit: [f64; 3],
    /// Access round trip of the fastest radio the site serves (5G when it serves none).
    pub(crate) access_rtt_ms: f64,
    /// Load in [0, 1]: the busier of CPU and session slots in use, as the agent reports.
    pub(crate) utilisation: f64,
    /// Queueing delay at that load ([`queueing_ms`]).
    pub(crate) queue_ms: f64,
    pub(crate) operator: u32,
    pub(crate) region: u32,
    pub(crate) zone: u32,
    /// (key, value) label ids, sorted by key.
    pub(crate) labels: Vec<(u32, u32)>,
    /// Sum of every placement's reservation on this site.
    pub(crate) allocated: Resources,
    /// 1 / capacity for CPU, memory, GPUs, session slots (0 where there is none).
    pub(crate) inv_capacity: [f64; 4],
}

impl SiteRow {
    /// Predicted round trip to a user `farthest_m` away: the site's access, transport, and
    /// queueing at its load.
    pub(crate) fn predicted_rtt_ms(&self, farthest_m: f64) -> f64 {
        self.access_rtt_ms + self.queue_ms + transport_rtt_ms(farthest_m)
    }

    pub(crate) fn label(&self, key: u32) -> Option<u32> {
        self.labels
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.labels[i].1)
    }
}

/// One placement of an app on a site, as the snapshot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) site: SiteIdx,
    pub(crate) replicas: u32,
    /// What it reserves on the site.
    pub(crate) reserved: Resources,
    /// Being replaced elsewhere: still reserved, no longer counted as the app's instances.
    pub(crate) evicting: bool,
}

/// What the snapshot knows of one app.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppRecord {
    pub(crate) placed: Vec<Placed>,
    /// Sites the app's instances failed over from.
    pub(crate) failed_over_from: Vec<SiteIdx>,
    /// Rebalanced too recently to shed load again.
    pub(crate) rebalance_held: bool,
}

impl AppRecord {
    /// What the live (not evicting) placements reserve on `site`.
    pub(crate) fn reserved(&self, site: SiteIdx) -> Resources {
        self.placed
            .iter()
            .filter(|p| p.site == site && !p.evicting)
            .fold(Resources::ZERO, |acc, p| {
                acc.checked_add(&p.reserved).unwrap_or(acc)
            })
    }

    /// Live (not evicting) replicas on `site`.
    pub(crate) fn current(&self, site: SiteIdx) -> u32 {
        self.placed
            .iter()
            .filter(|p| p.site == site && !p.evicting)
            .map(|p| p.replicas)
            .sum()
    }
}

/// The world one scheduling pass reads. See the module docs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) now: u64,
    pub(crate) home_operator: Option<u32>,
    /// Per interned operator: whether it accepts placements; empty means every operator does.
    pub(crate) operator_allowed: Vec<bool>,
    pub(crate) sites: Vec<SiteRow>,
    /// The full sites, in the same order as `sites`.
    pub(crate) infos: Vec<Site>,
    pub(crate) by_id: HashMap<SiteId, SiteIdx>,
    pub(crate) operators: Interner,
    pub(crate) regions: Interner,
    pub(crate) zones: Interner,
    pub(crate) label_keys: Interner,
    pub(crate) label_values: Interner,
    pub(crate) apps: HashMap<AppId, AppRecord>,
    /// Measured round trips (EWMA, ms) by demand area name, then site.
    pub(crate) measured: HashMap<String, HashMap<SiteIdx, f64>>,
}

/// Builds a [`Snapshot`].
#[derive(Debug, Default)]
#[must_use]
pub struct SnapshotBuilder {
    now: u64,
    home_operator: Option<OperatorId>,
    allowed: Option<Vec<OperatorId>>,
    sites: Vec<(Site, SiteHealth)>,
    placements: Vec<(AppId, SiteId, u32, Resources, bool)>,
    failed_over: Vec<(AppId, SiteId)>,
    rebalance_held: Vec<AppId>,
    measured: Vec<(SiteId, String, f64)>,
}

impl SnapshotBuilder {
    /// A builder for the world at `now` (seconds since the Unix epoch).
    pub fn new(now: u64) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }

    /// The operator whose platform schedules: its sites cost less than partners'.
    pub fn home_operator(mut self, op: OperatorId) -> Self {
        self.home_operator = Some(op);
        self
    }

    /// Only these operators accept placements (federation agreements); by default all do.
    pub fn allowed_operators(mut self, ops: impl IntoIterator<Item = OperatorId>) -> Self {
        self.allowed = Some(ops.into_iter().collect());
        self
    }

    /// Adds a site.
    pub fn site(mut self, site: Site, health: SiteHealth) -> Self {
        self.sites.push((site, health));
        self
    }

    /// Adds a site (by reference, for builders in loops).
    pub fn add_site(&mut self, site: Site, health: SiteHealth) {
        self.sites.push((site, health));
    }

    /// Records that `replicas` instances of `app` are placed on `site`, reserving `reserved`
    /// there in all; `evicting` marks instances being replaced elsewhere.
    pub fn placement(
        mut self,
        app: AppId,
        site: SiteId,
        replicas: u32,
        reserved: Resources,
        evicting: bool,
    ) -> Self {
        self.add_placement(app, site, replicas, reserved, evicting);
        self
    }

    /// [`Self::placement`] by reference.
    pub fn add_placement(
        &mut self,
        app: AppId,
        site: SiteId,
        replicas: u32,
        reserved: Resources,
        evicting: bool,
    ) {
        self.placements
            .push((app, site, replicas, reserved, evicting));
    }

    /// Records that `app`'s instances failed over from `site`.
    pub fn failed_over(mut self, app: AppId, site: SiteId) -> Self {
        self.failed_over.push((app, site));
        self
    }

    /// [`Self::failed_over`] by reference.
    pub fn add_failed_over(&mut self, app: AppId, site: SiteId) {
        self.failed_over.push((app, site));
    }

    /// Marks `app` as rebalanced too recently: its instances stay on overloaded sites.
    pub fn add_rebalance_held(&mut self, app: AppId) {
        self.rebalance_held.push(app);
    }

    /// A measured round trip (ms) from the demand area named `area` to `site`; it replaces
    /// the model's prediction for that pair.
    pub fn measured_rtt(mut self, site: SiteId, area: impl Into<String>, rtt_ms: f64) -> Self {
        self.measured.push((site, area.into(), rtt_ms));
        self
    }

    /// The snapshot. Sites are ordered by id; a later duplicate of a site id replaces an
    /// earlier one; placements on unknown sites are ignored.
    pub fn build(self) -> Snapshot {
        let mut sites = self.sites;
        sites.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        // Keep the last of duplicates: reverse, dedup keeps the first, reverse back.
        sites.reverse();
        sites.dedup_by(|a, b| a.0.id == b.0.id);
        sites.reverse();

        let mut operators = Interner::default();
        let mut regions = Interner::default();
        let mut zones = Interner::default();
        let mut label_keys = Interner::default();
        let mut label_values = Interner::default();
        let home_operator = self.home_operator.map(|o| operators.intern(o.as_str()));
        let mut rows = Vec::with_capacity(sites.len());
        let mut infos = Vec::with_capacity(sites.len());
        let mut by_id = HashMap::with_capacity(sites.len());
        for (i, (site, health)) in sites.into_iter().enumerate() {
            let idx = SiteIdx(u32::try_from(i).expect("fewer than 2^32 sites"));
            by_id.insert(site.id.clone(), idx);
            let mut labels: Vec<(u32, u32)> = site
                .labels
                .iter()
                .map(|(k, v)| (label_keys.intern(k), label_values.intern(v)))
                .collect();
            labels.sort_unstable();
            rows.push(SiteRow {
                unit: site.location.unit_vector(),
                access_rtt_ms: site_access_rtt_ms(&site.access_kinds),
                utilisation: utilisation(&site),
                queue_ms: queueing_ms(utilisation(&site)),
                operator: operators.intern(site.operator.as_str()),
                region: regions.intern(&site.region),
                zone: zones.intern(site.zone.as_str()),
                labels,
                allocated: Resources::ZERO,
                inv_capacity: {
                    let inv = |c: u64| if c == 0 { 0.0 } else { 1.0 / c as f64 };
                    let c = &site.capacity;
                    [
                        inv(c.cpu_millicores),
                        inv(c.memory_bytes),
                        inv(u64::from(c.gpus)),
                        inv(u64::from(c.session_slots)),
                    ]
                },
                health,
                capacity: site.capacity,
                tainted: !site.taints.is_empty(),
            });
            infos.push(site);
        }
        let operator_allowed = match self.allowed {
            None => Vec::new(),
            Some(allowed) => {
                for o in &allowed {
                    operators.intern(o.as_str());
                }
                let mut v = vec![false; operators.ids.len()];
                for o in &allowed {
                    v[operators.intern(o.as_str()) as usize] = true;
                }
                v
            }
        };
        let mut apps: HashMap<AppId, AppRecord> = HashMap::new();
        for (app, site, replicas, reserved, evicting) in self.placements {
            let Some(&idx) = by_id.get(&site) else {
                continue;
            };
            let row = &mut rows[idx.get()];
            row.allocated = row.allocated.checked_add(&reserved).unwrap_or(Resources {
                cpu_millicores: u64::MAX,
                memory_bytes: u64::MAX,
                gpus: u32::MAX,
                session_slots: u32::MAX,
            });
            apps.entry(app).or_default().placed.push(Placed {
                site: idx,
                replicas,
                reserved,
                evicting,
            });
        }
        for app in self.rebalance_held {
            apps.entry(app).or_default().rebalance_held = true;
        }
        for (app, site) in self.failed_over {
            if let Some(&idx) = by_id.get(&site) {
                apps.entry(app).or_default().failed_over_from.push(idx);
            }
        }
        let mut measured: HashMap<String, HashMap<SiteIdx, f64>> = HashMap::new();
        for (site, area, rtt) in self.measured {
            if let Some(&idx) = by_id.get(&site)
                && rtt.is_finite()
                && rtt >= 0.0
            {
                measured.entry(area).or_default().insert(idx, rtt);
            }
        }
        Snapshot {
            now: self.now,
            home_operator,
            operator_allowed,
            sites: rows,
            infos,
            by_id,
            operators,
            regions,
            zones,
            label_keys,
            label_values,
            apps,
            measured,
        }
    }
}

/// The access round trip UEs reach a site with: its fastest radio, or 5G for a site that
/// serves no radio itself (a metro data centre reached through the mobile core).
fn site_access_rtt_ms(kinds: &[AccessKind]) -> f64 {
    kinds
        .iter()
        .filter(|k| **k != AccessKind::Fixed)
        .map(|k| access_rtt_ms(*k))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
        .unwrap_or_else(|| access_rtt_ms(AccessKind::Nr5g))
}

fn ratio(used: u64, cap: u64) -> f64 {
    if cap == 0 {
        0.0
    } else {
        used as f64 / cap as f64
    }
}

/// Load of a site in [0, 1] from what its agent reports in use: the busier of CPU and
/// session slots.
pub fn utilisation(site: &Site) -> f64 {
    ratio(site.usage.cpu_millicores, site.capacity.cpu_millicores)
        .max(ratio(
            u64::from(site.usage.session_slots),
            u64::from(site.capacity.session_slots),
        ))
        .clamp(0.0, 1.0)
}

impl Snapshot {
    /// When the snapshot was taken (seconds since the Unix epoch).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether there are no sites.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The site at `idx`.
    pub fn site(&self, idx: SiteIdx) -> &Site {
        &self.infos[idx.get()]
    }

    /// A site's health.
    pub fn health(&self, idx: SiteIdx) -> SiteHealth {
        self.sites[idx.get()].health
    }

    /// The index of site `id`.
    pub fn index_of(&self, id: &SiteId) -> Option<SiteIdx> {
        self.by_id.get(id).copied()
    }

    /// Every site's index, in id order.
    pub fn indices(&self) -> impl Iterator<Item = SiteIdx> + use<> {
        (0..u32::try_from(self.sites.len()).unwrap_or(u32::MAX)).map(SiteIdx)
    }

    /// What all placements reserve on a site.
    pub fn allocated(&self, idx: SiteIdx) -> Resources {
        self.sites[idx.get()].allocated
    }

    /// Live (not evicting) replicas of `app` on `site`.
    pub fn current_replicas(&self, app: &AppId, site: SiteIdx) -> u32 {
        self.apps.get(app).map_or(0, |r| r.current(site))
    }

    /// Replaces `app`'s live placements by `decision`'s targets, moving the reservations (one
    /// instance reserves `app.resources`). Evicting placements stay as they are; with
    /// `evict_gracefully`, live placements on sites the decision leaves become evicting and
    /// keep their reservation, as the controller's commit does.
    pub fn commit(&mut self, app: &App, decision: &Decision, evict_gracefully: bool) {
        let targets: Vec<SiteIdx> = decision
            .targets
            .iter()
            .filter_map(|t| self.by_id.get(&t.site).copied())
            .collect();
        let rec = self.apps.entry(app.id.clone()).or_default();
        for p in rec.placed.iter_mut().filter(|p| !p.evicting) {
            if evict_gracefully && !targets.contains(&p.site) {
                p.evicting = true;
                continue;
            }
            let row = &mut self.sites[p.site.get()];
            row.allocated = row.allocated.saturating_sub(&p.reserved);
            p.replicas = 0;
        }
        rec.placed.retain(|p| p.evicting);
        for t in &decision.targets {
            let Some(&idx) = self.by_id.get(&t.site) else {
                continue;
            };
            let reserved = app
                .resources
                .checked_mul(t.replicas)
                .unwrap_or(Resources::ZERO);
            let row = &mut self.sites[idx.get()];
            row.allocated = row
                .allocated
                .checked_add(&reserved)
                .unwrap_or(row.allocated);
            rec.placed.push(Placed {
                site: idx,
                replicas: t.replicas,
                reserved,
                evicting: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use mecfed_core::{GeoPoint, ZoneId};

    use super::*;

    fn site(id: &str, kinds: &[AccessKind]) -> Site {
        let mut s = Site::new(
            SiteId::new(id).unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new("z1").unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            Resources::parse("cpu=4,memory=8Gi,sessions=100").unwrap(),
        )
        .unwrap();
        s.access_kinds = kinds.to_vec();
        s
    }

    #[test]
    fn sites_are_ordered_deduplicated_and_reservations_summed() {
        let a = AppId::new("a").unwrap();
        let one = Resources::parse("cpu=1,sessions=10").unwrap();
        let mut late = site("s1", &[AccessKind::Wifi]);
        late.region = "dublin".into();
        let snap = SnapshotBuilder::new(7)
            .site(site("s2", &[]), SiteHealth::Ready)
            .site(site("s1", &[AccessKind::Nr5g]), SiteHealth::Ready)
            .site(late, SiteHealth::NotReady { since: 3 })
            .placement(a.clone(), SiteId::new("s1").unwrap(), 2, one, false)
            .placement(a.clone(), SiteId::new("s1").unwrap(), 1, one, true)
            .placement(a.clone(), SiteId::new("gone").unwrap(), 1, one, false)
            .build();
        assert_eq!(snap.len(), 2);
        let s1 = snap.index_of(&SiteId::new("s1").unwrap()).unwrap();
        assert_eq!(s1.get(), 0);
        assert_eq!(snap.site(s1).region, "dublin", "the later duplicate wins");
        assert_eq!(snap.health(s1), SiteHealth::NotReady { since: 3 });
        assert_eq!(snap.allocated(s1).cpu_millicores, 2000);
        assert_eq!(
            snap.current_replicas(&a, s1),
            2,
            "evicting ones do not count"
        );
        assert_eq!(snap.sites[0].access_rtt_ms, 5.0, "Wi-Fi");
        assert_eq!(
            snap.sites[1].access_rtt_ms, 8.0,
            "no radio: reached over 5G"
        );
    }
}
