//! The scheduler's documents in the state store, and the world it reads from there.
//!
//! - `policies/<app>` ([`AppPolicy`]): the placement policy attached to an app (written by
//!   the API; an app without one gets the default policy).
//! - `placements/<app>/<site>` ([`Placement`]): instances of an app on a site; agents run
//!   what these say.
//! - `siteallocations/<site>` ([`SiteAllocation`]): the capacity ledger of a site, one entry
//!   per app placed there. Every commit that changes a site's placements rewrites its ledger
//!   in the same transaction, guarded by the ledger's revision, so two schedulers that
//!   decided on the same capacity cannot both commit: concurrent scheduling never
//!   over-commits a site.
//! - `schedules/<app>` ([`AppSchedule`]): what the last decision was made from and what it
//!   could not meet, and the sites the app failed over from.
//! - `sitehealth/<site>` ([`SiteHealthRecord`]): since when a site is NotReady, so failover
//!   delays survive a controller restart.

use std::collections::{BTreeMap, HashMap, HashSet};

use mecfed_core::{App, AppId, Instance, Placement, PlacementPolicy, Resources, Site, SiteId};
use mecfed_store::{
    Revision, Store,
    typed::{Resource, Typed, TypedError},
};
use serde::{Deserialize, Serialize};

use crate::{
    decide::Unmet,
    snapshot::{SiteHealth, Snapshot, SnapshotBuilder},
};

/// A placement policy attached to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppPolicy {
    /// The app.
    pub app: AppId,
    /// Its policy.
    pub policy: PlacementPolicy,
}

impl Resource for AppPolicy {
    const KIND: &'static str = "policies";
    fn id(&self) -> String {
        self.app.to_string()
    }
}

/// One app's share of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allocation {
    /// Instances.
    pub replicas: u32,
    /// What they reserve in all.
    pub reserved: Resources,
}

/// The capacity ledger of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteAllocation {
    /// The site.
    pub site: Option<SiteId>,
    /// Per app placed there.
    #[serde(default)]
    pub apps: BTreeMap<AppId, Allocation>,
}

impl SiteAllocation {
    /// What every app reserves in all.
    pub fn total(&self) -> Resources {
        self.apps.values().fold(Resources::ZERO, |acc, a| {
            acc.checked_add(&a.reserved).unwrap_or(acc)
        })
    }
}

impl Resource for SiteAllocation {
    const KIND: &'static str = "siteallocations";
    fn id(&self) -> String {
        self.site
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// What an app's last decision was made from, and what it left unmet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSchedule {
    /// The app.
    pub app: AppId,
    /// Revision of the app document decided on.
    pub app_revision: Revision,
    /// Revision of the policy document decided on (0: default policy).
    pub policy_revision: Revision,
    /// Instances wanted.
    pub wanted: u32,
    /// Instances per demand area the decision was made for (the autoscaler's, when the
    /// policy autoscales; empty when the app's declared demand was used).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub demand: BTreeMap<String, u32>,
    /// Needs the decision could not meet.
    #[serde(default)]
    pub unmet: Vec<Unmet>,
    /// Sites the app's instances failed over from (for failback).
    #[serde(default)]
    pub failed_over_from: Vec<SiteId>,
    /// When it was decided (seconds since the Unix epoch).
    pub decided_at: u64,
}

impl Resource for AppSchedule {
    const KIND: &'static str = "schedules";
    fn id(&self) -> String {
        self.app.to_string()
    }
}

/// Since when a site is NotReady.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteHealthRecord {
    /// The site.
    pub site: SiteId,
    /// First seen NotReady (seconds since the Unix epoch).
    pub not_ready_since: u64,
}

impl Resource for SiteHealthRecord {
    const KIND: &'static str = "sitehealth";
    fn id(&self) -> String {
        self.site.to_string()
    }
}

/// A site's liveness record, as the API's site registry writes it (only the site is read
/// here).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiveSite {
    site: SiteId,
}

impl Resource for LiveSite {
    const KIND: &'static str = "siteleases";
    fn id(&self) -> String {
        self.site.to_string()
    }
}

/// A document with its revision, or nothing (revision 0).
#[derive(Debug, Clone)]
pub struct Doc<T> {
    /// The document.
    pub value: T,
    /// Its modification revision.
    pub revision: Revision,
}

/// Everything the scheduler reads, from one listing of the store.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Sites.
    pub sites: Vec<Site>,
    /// Sites whose agent holds a live lease.
    pub live: HashSet<SiteId>,
    /// NotReady records.
    pub health: HashMap<SiteId, Doc<SiteHealthRecord>>,
    /// Apps.
    pub apps: Vec<Doc<App>>,
    /// Policies by app.
    pub policies: HashMap<AppId, Doc<PlacementPolicy>>,
    /// Placements.
    pub placements: Vec<Doc<Placement>>,
    /// Capacity ledgers by site.
    pub allocations: HashMap<SiteId, Doc<SiteAllocation>>,
    /// Schedule records by app.
    pub schedules: HashMap<AppId, Doc<AppSchedule>>,
    /// Instances as their sites report them.
    pub instances: Vec<Instance>,
}

impl World {
    /// Reads the world from the store.
    pub async fn load<S: Store>(store: &Typed<S>) -> Result<Self, TypedError> {
        let (sites, _) = store.list::<Site>().await?;
        let (live, _) = store.list::<LiveSite>().await?;
        let (health, _) = store.list::<SiteHealthRecord>().await?;
        let (apps, _) = store.list::<App>().await?;
        let (policies, _) = store.list::<AppPolicy>().await?;
        let (placements, _) = store.list::<Placement>().await?;
        let (allocations, _) = store.list::<SiteAllocation>().await?;
        let (schedules, _) = store.list::<AppSchedule>().await?;
        let (instances, _) = store.list::<Instance>().await?;
        Ok(Self {
            sites: sites.into_iter().map(|v| v.value).collect(),
            live: live.into_iter().map(|v| v.value.site).collect(),
            health: health
                .into_iter()
                .map(|v| {
                    (
                        v.value.site.clone(),
                        Doc {
                            value: v.value,
                            revision: v.revision,
                        },
                    )
                })
                .collect(),
            apps: apps
                .into_iter()
                .map(|v| Doc {
                    value: v.value,
                    revision: v.revision,
                })
                .collect(),
            policies: policies
                .into_iter()
                .map(|v| {
                    (
                        v.value.app.clone(),
                        Doc {
                            value: v.value.policy,
                            revision: v.revision,
                        },
                    )
                })
                .collect(),
            placements: placements
                .into_iter()
                .map(|v| Doc {
                    value: v.value,
                    revision: v.revision,
                })
                .collect(),
            allocations: allocations
                .into_iter()
                .filter_map(|v| {
                    let site = v.value.site.clone()?;
                    Some((
                        site,
                        Doc {
                            value: v.value,
                            revision: v.revision,
                        },
                    ))
                })
                .collect(),
            schedules: schedules
                .into_iter()
                .map(|v| {
                    (
                        v.value.app.clone(),
                        Doc {
                            value: v.value,
                            revision: v.revision,
                        },
                    )
                })
                .collect(),
            instances: instances.into_iter().map(|v| v.value).collect(),
        })
    }

    /// A site's health at `now`: Ready while its lease lives, else NotReady since its
    /// record (or since `now` when there is none yet).
    pub fn health_of(&self, site: &SiteId, now: u64) -> SiteHealth {
        if self.live.contains(site) {
            SiteHealth::Ready
        } else {
            SiteHealth::NotReady {
                since: self
                    .health
                    .get(site)
                    .map_or(now, |h| h.value.not_ready_since),
            }
        }
    }

    /// The policy of `app` (the default when none is attached).
    pub fn policy_of(&self, app: &AppId) -> PlacementPolicy {
        self.policies
            .get(app)
            .map(|p| p.value.clone())
            .unwrap_or_default()
    }

    /// The snapshot decisions read. Reservations come from the ledgers; placements say
    /// which are evicting.
    pub fn snapshot(&self, now: u64, home_operator: Option<&mecfed_core::OperatorId>) -> Snapshot {
        let mut b = SnapshotBuilder::new(now);
        if let Some(op) = home_operator {
            b = b.home_operator(op.clone());
        }
        for s in &self.sites {
            let health = self.health_of(&s.id, now);
            let mut site = s.clone();
            site.status = if health == SiteHealth::Ready {
                mecfed_core::SiteStatus::Ready
            } else {
                mecfed_core::SiteStatus::NotReady
            };
            b.add_site(site, health);
        }
        let evicting: std::collections::HashSet<(&AppId, &SiteId)> = self
            .placements
            .iter()
            .filter(|p| p.value.evicting_until.is_some())
            .map(|p| (&p.value.app, &p.value.site))
            .collect();
        for (site, alloc) in &self.allocations {
            for (app, a) in &alloc.value.apps {
                b.add_placement(
                    app.clone(),
                    site.clone(),
                    a.replicas,
                    a.reserved,
                    evicting.contains(&(app, site)),
                );
            }
        }
        for sched in self.schedules.values() {
            for site in &sched.value.failed_over_from {
                b.add_failed_over(sched.value.app.clone(), site.clone());
            }
            if now.saturating_sub(sched.value.decided_at)
                < crate::controller::REBALANCE_COOLDOWN_SECONDS
            {
                b.add_rebalance_held(sched.value.app.clone());
            }
        }
        b.build()
    }
}
