//! Invariants of the decision core over random worlds, apps and policies (proptest).

use std::collections::{BTreeMap, BTreeSet};

use mecfed_core::{
    AccessKind, App, AppId, AppQos, Artefact, DemandArea, DeveloperId, GeoPoint, OperatorId,
    PlacementPolicy, ReplicaScheduling, Resources, Site, SiteId, SiteSelector, SpreadBy,
    SpreadConstraint, ZoneId,
    latency::{access_rtt_ms, queueing_ms, transport_rtt_ms},
};
use mecfed_scheduler::{Decision, SiteHealth, Snapshot, SnapshotBuilder, Unmet, schedule};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct SiteSpec {
    op: usize,
    zone: usize,
    rack: Option<usize>,
    dlat: f64,
    dlon: f64,
    cpu: u64,
    sessions: u32,
    gpus: u32,
    access: usize,
    ready: bool,
    used: u64,
}

fn site_spec() -> impl Strategy<Value = SiteSpec> {
    (
        (0usize..3, 0usize..5, proptest::option::of(0usize..3)),
        (-1.0f64..1.0, -1.0f64..1.0),
        (0u64..32, 0u32..20, 0u32..3),
        (0usize..4, proptest::bool::weighted(0.85), 0u64..100),
    )
        .prop_map(
            |((op, zone, rack), (dlat, dlon), (cpu, sessions, gpus), (access, ready, used))| {
                SiteSpec {
                    op,
                    zone,
                    rack,
                    dlat,
                    dlon,
                    cpu: cpu * 250,
                    sessions: sessions * 20,
                    gpus,
                    access,
                    ready,
                    used,
                }
            },
        )
}

fn build_site(i: usize, s: &SiteSpec) -> Site {
    let mut site = Site::new(
        SiteId::new(format!("s{i:02}")).unwrap(),
        OperatorId::new(format!("op-{}", s.op)).unwrap(),
        "cork",
        ZoneId::new(format!("z{}", s.zone)).unwrap(),
        GeoPoint::new(51.9 + s.dlat, -8.47 + s.dlon).unwrap(),
        Resources {
            cpu_millicores: s.cpu,
            memory_bytes: 64 << 30,
            gpus: s.gpus,
            session_slots: s.sessions,
        },
    )
    .unwrap();
    site.access_kinds = match s.access {
        0 => vec![AccessKind::Nr5g],
        1 => vec![AccessKind::Lte],
        2 => vec![AccessKind::Wifi, AccessKind::Nr5g],
        _ => vec![AccessKind::Fixed],
    };
    if let Some(r) = s.rack {
        site.labels.insert("rack".into(), format!("r{r}"));
    }
    site.usage.cpu_millicores = s.cpu * s.used / 100;
    site
}

#[derive(Debug, Clone)]
struct AppSpec {
    budget: u32,
    areas: Vec<(f64, f64, f64, u32)>,
    cpu: u64,
    sessions: u32,
    gpus: u32,
}

fn app_spec() -> impl Strategy<Value = AppSpec> {
    (
        5u32..30,
        proptest::collection::vec(
            (-1.0f64..1.0, -1.0f64..1.0, 100.0f64..20_000.0, 0u32..300),
            0..3,
        ),
        (1u64..5, 1u32..4, proptest::bool::weighted(0.15)),
    )
        .prop_map(|(budget, areas, (cpu, sessions, gpu))| AppSpec {
            budget,
            areas,
            cpu: cpu * 250,
            sessions: sessions * 10,
            gpus: u32::from(gpu),
        })
}

fn build_app(id: &str, a: &AppSpec) -> App {
    App {
        id: AppId::new(id).unwrap(),
        developer: DeveloperId::new("d").unwrap(),
        name: id.into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "x".into(),
            args: vec![],
            env: BTreeMap::new(),
        },
        ports: vec![],
        resources: Resources {
            cpu_millicores: a.cpu,
            memory_bytes: 1 << 20,
            gpus: a.gpus,
            session_slots: a.sessions,
        },
        readiness: None,
        qos: AppQos {
            latency_budget_ms: a.budget,
            five_qi: None,
            max_sessions_per_instance: 25,
            demand_areas: a
                .areas
                .iter()
                .enumerate()
                .map(|(i, (dlat, dlon, r, n))| {
                    DemandArea::circle(
                        format!("a{i}"),
                        GeoPoint::new(51.9 + dlat, -8.47 + dlon).unwrap(),
                        *r,
                        *n,
                    )
                })
                .collect(),
        },
        load: None,
        stateful: false,
        zones: None,
        pins: Default::default(),
    }
}

fn policy() -> impl Strategy<Value = PlacementPolicy> {
    (
        0usize..3,
        proptest::option::of((0usize..3, 1u32..4, proptest::option::of(0u32..3))),
        0usize..4,
        (0u32..4, proptest::option::of(1u32..12)),
    )
        .prop_map(|(groups, spread, sched, (min, max))| {
            let affinity = match groups {
                0 => vec![],
                1 => vec![SiteSelector {
                    operators: vec![OperatorId::new("op-0").unwrap()],
                    ..Default::default()
                }],
                _ => vec![
                    SiteSelector {
                        operators: vec![OperatorId::new("op-0").unwrap()],
                        ..Default::default()
                    },
                    SiteSelector {
                        operators: vec![
                            OperatorId::new("op-1").unwrap(),
                            OperatorId::new("op-2").unwrap(),
                        ],
                        ..Default::default()
                    },
                ],
            };
            let spread = spread
                .map(|(by, min_groups, extra)| SpreadConstraint {
                    by: match by {
                        0 => SpreadBy::Zone,
                        1 => SpreadBy::Operator,
                        _ => SpreadBy::Label { key: "rack".into() },
                    },
                    min_groups,
                    max_groups: extra.map(|e| min_groups + e),
                })
                .into_iter()
                .collect();
            PlacementPolicy {
                affinity,
                spread,
                replica_scheduling: match sched {
                    0 => ReplicaScheduling::DividedDynamic,
                    1 => ReplicaScheduling::Aggregated,
                    2 => ReplicaScheduling::Duplicated,
                    _ => ReplicaScheduling::DividedStatic {
                        weights: vec![mecfed_core::StaticWeight {
                            sites: SiteSelector::default(),
                            weight: 1,
                        }],
                    },
                },
                min_replicas: min,
                max_replicas: max.map(|m| m.max(min)),
                ..Default::default()
            }
        })
}

fn snapshot(sites: &[SiteSpec], others: &[(usize, u32)], reverse: bool) -> Snapshot {
    let mut built: Vec<Site> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| build_site(i, s))
        .collect();
    if reverse {
        built.reverse();
    }
    let mut b = SnapshotBuilder::new(10_000);
    for (site, spec) in built.iter().zip(if reverse {
        sites.iter().rev().collect::<Vec<_>>()
    } else {
        sites.iter().collect()
    }) {
        let health = if spec.ready {
            SiteHealth::Ready
        } else {
            SiteHealth::NotReady { since: 9_000 }
        };
        b.add_site(site.clone(), health);
    }
    // Other apps' reservations, each within what the site has left.
    let mut left: Vec<Resources> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| build_site(i, s).capacity)
        .collect();
    for (k, (site, cpu)) in others.iter().enumerate() {
        let i = site % sites.len();
        let want = Resources {
            cpu_millicores: u64::from(*cpu) * 250,
            ..Resources::ZERO
        };
        if left[i].fits(&want) {
            left[i] = left[i].saturating_sub(&want);
            b.add_placement(
                AppId::new(format!("other-{k}")).unwrap(),
                SiteId::new(format!("s{i:02}")).unwrap(),
                1,
                want,
                false,
            );
        }
    }
    b.build()
}

/// The model's round trip from an area's farthest point to a site, computed here from the
/// core latency functions and haversine distances, independently of the scheduler.
fn rtt(site: &Site, area: &DemandArea, load: f64) -> f64 {
    let access = site
        .access_kinds
        .iter()
        .filter(|k| **k != AccessKind::Fixed)
        .map(|k| access_rtt_ms(*k))
        .fold(f64::INFINITY, f64::min);
    let access = if access.is_finite() {
        access
    } else {
        access_rtt_ms(AccessKind::Nr5g)
    };
    access + transport_rtt_ms(area.farthest_m(&site.location)) + queueing_ms(load)
}

fn check(snap: &Snapshot, app: &App, policy: &PlacementPolicy, d: &Decision) {
    // Capacity: what the app takes fits beside the others' reservations.
    for t in &d.targets {
        let idx = snap.index_of(&t.site).unwrap();
        let site = snap.site(idx);
        let others = snap.allocated(idx);
        let mine = app.resources.checked_mul(t.replicas).unwrap();
        assert!(
            site.capacity.fits(&others.checked_add(&mine).unwrap()),
            "{} over-committed: {others:?} + {mine:?} > {:?}",
            t.site,
            site.capacity
        );
        assert_eq!(
            snap.health(idx),
            SiteHealth::Ready,
            "placed on a NotReady site"
        );
        // Latency: some demand area within the budget.
        if !app.qos.demand_areas.is_empty() {
            let load = (site.usage.cpu_millicores as f64
                / site.capacity.cpu_millicores.max(1) as f64)
                .clamp(0.0, 1.0);
            let best = app
                .qos
                .demand_areas
                .iter()
                .map(|a| rtt(site, a, load))
                .fold(f64::INFINITY, f64::min);
            assert!(
                best <= f64::from(app.qos.latency_budget_ms) + 1e-6,
                "{} at {best} ms is beyond the budget",
                t.site
            );
        }
    }
    // Spread: never beyond the maximum; below the minimum only with an unmet entry.
    for s in &policy.spread {
        let groups: BTreeSet<String> = d
            .targets
            .iter()
            .filter_map(|t| s.by.group_of(snap.site(snap.index_of(&t.site).unwrap())))
            .collect();
        if let Some(max) = s.max_groups {
            assert!(groups.len() as u32 <= max, "{groups:?} beyond max {max}");
        }
        if (groups.len() as u32) < s.min_groups {
            assert!(
                d.unmet
                    .iter()
                    .any(|u| matches!(u, Unmet::Spread { by, .. } if *by == s.by)),
                "{groups:?} below min {} without saying so",
                s.min_groups
            );
        }
    }
    // Demand: everything wanted is placed, or the decision says what is missing.
    if policy.replica_scheduling != ReplicaScheduling::Duplicated
        && !d.unmet.iter().any(|u| matches!(u, Unmet::Demand { .. }))
    {
        assert!(d.total() >= d.wanted, "{d:?}");
    }
    if let Some(max) = policy.max_replicas
        && policy.replica_scheduling != ReplicaScheduling::Duplicated
    {
        assert!(d.total() <= max, "{d:?} beyond maxReplicas {max}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decisions_respect_capacity_spread_latency_and_are_deterministic(
        sites in proptest::collection::vec(site_spec(), 1..30),
        others in proptest::collection::vec((0usize..30, 1u32..8), 0..20),
        spec in app_spec(),
        policy in policy(),
    ) {
        let snap = snapshot(&sites, &others, false);
        let app = build_app("app", &spec);
        let (d, rej) = schedule(&snap, &app, &policy);
        check(&snap, &app, &policy, &d);
        // Every site is either chosen or rejected with at least one reason.
        prop_assert_eq!(d.targets.len() + rej.len(), snap.len());
        for r in &rej {
            prop_assert!(!r.reasons.is_empty());
            prop_assert!(d.targets.iter().all(|t| snap.index_of(&t.site) != Some(r.site)));
        }
        // Same input, same decision; the order sites arrive in does not matter.
        prop_assert_eq!(&schedule(&snap, &app, &policy).0, &d);
        let reversed = snapshot(&sites, &others, true);
        prop_assert_eq!(&schedule(&reversed, &app, &policy).0, &d);
    }

    #[test]
    fn committed_decisions_never_over_commit_a_site(
        sites in proptest::collection::vec(site_spec(), 1..20),
        apps in proptest::collection::vec((app_spec(), policy()), 1..8),
    ) {
        let mut snap = snapshot(&sites, &[], false);
        for (i, (spec, policy)) in apps.iter().enumerate() {
            let app = build_app(&format!("app-{i}"), spec);
            let (d, _) = schedule(&snap, &app, policy);
            check(&snap, &app, policy, &d);
            snap.commit(&app, &d, false);
            for idx in snap.indices() {
                prop_assert!(
                    snap.site(idx).capacity.fits(&snap.allocated(idx)),
                    "{} over-committed after {}", snap.site(idx).id, app.id
                );
            }
        }
    }
}
