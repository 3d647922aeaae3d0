use std::collections::BTreeMap;

use mecfed_core::{
    AccessKind, App, AppAffinity, AppId, AppQos, AppRelation, Artefact, DemandArea, DeveloperId,
    Failback, Failover, GeoPoint, OperatorId, PlacementPolicy, ReplicaScheduling, Resources, Site,
    SiteId, SiteSelector, SpreadBy, SpreadConstraint, StaticWeight, Taint, TaintEffect, Toleration,
    ZoneId,
};

use super::*;
use crate::snapshot::{SiteHealth, SnapshotBuilder};

const CORK: (f64, f64) = (51.8985, -8.4756);
const DUBLIN: (f64, f64) = (53.3498, -6.2603);
const MELBOURNE: (f64, f64) = (-37.8136, 144.9631);

fn site(id: &str, op: &str, zone: &str, at: (f64, f64), cap: &str) -> Site {
    let mut s = Site::new(
        SiteId::new(id).unwrap(),
        OperatorId::new(op).unwrap(),
        "eu",
        ZoneId::new(zone).unwrap(),
        GeoPoint::new(at.0, at.1).unwrap(),
        Resources::parse(cap).unwrap(),
    )
    .unwrap();
    s.access_kinds = vec![AccessKind::Nr5g];
    s
}

fn area(name: &str, at: (f64, f64), sessions: u32) -> DemandArea {
    DemandArea::circle(name, GeoPoint::new(at.0, at.1).unwrap(), 2_000.0, sessions)
}

fn app(id: &str, budget: u32, areas: Vec<DemandArea>) -> App {
    App {
        id: AppId::new(id).unwrap(),
        developer: DeveloperId::new("studio").unwrap(),
        name: id.into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "arena".into(),
            args: vec![],
            env: BTreeMap::new(),
        },
        ports: vec![],
        resources: Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap(),
        readiness: None,
        qos: AppQos {
            latency_budget_ms: budget,
            five_qi: None,
            max_sessions_per_instance: 50,
            demand_areas: areas,
        },
        load: None,
        stateful: true,
        zones: None,
        pins: Default::default(),
    }
}

const BIG: &str = "cpu=16,memory=32Gi,sessions=1000";

fn ready(sites: Vec<Site>) -> SnapshotBuilder {
    sites.into_iter().fold(SnapshotBuilder::new(1_000), |b, s| {
        b.site(s, SiteHealth::Ready)
    })
}

fn replicas(d: &Decision) -> BTreeMap<String, u32> {
    d.targets
        .iter()
        .map(|t| (t.site.to_string(), t.replicas))
        .collect()
}

fn reasons_of(snap: &Snapshot, rej: &[Rejection], id: &str) -> Vec<Reason> {
    let idx = snap.index_of(&SiteId::new(id).unwrap()).unwrap();
    rej.iter()
        .find(|r| r.site == idx)
        .map(|r| r.reasons.iter().collect())
        .unwrap_or_default()
}

fn map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn instances_follow_demand_within_the_latency_budget() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site("dub-1", "op-a", "z-dub", DUBLIN, BIG),
        site("mel-1", "op-a", "z-mel", MELBOURNE, BIG),
    ])
    .build();
    // 400 sessions in Cork and 100 in Dublin at 50 per instance: 8 + 2 instances. The
    // budget of 11 ms admits a site in the same city (8 ms access + ~0.3 ms) but not the
    // other city (~12 ms), nor Melbourne.
    let a = app(
        "arena",
        11,
        vec![area("cork", CORK, 400), area("dublin", DUBLIN, 100)],
    );
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("cork-1", 8), ("dub-1", 2)]));
    assert!(d.unmet.is_empty(), "{:?}", d.unmet);
    assert_eq!(d.wanted, 10);
    assert_eq!(
        reasons_of(&snap, &rej, "mel-1"),
        vec![Reason::OutOfLatencyBudget]
    );
}

#[test]
fn deployed_zones_restrict_the_sites_and_none_means_no_instances() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site("cork-2", "op-b", "z-cork-b", CORK, BIG),
    ])
    .build();
    let mut a = app("arena", 11, vec![area("cork", CORK, 100)]);
    a.zones = Some(vec![]);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(d, Decision::default());
    assert!(rej.is_empty());
    a.zones = Some(vec![ZoneId::new("z-cork-b").unwrap()]);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("cork-2", 2)]));
    assert_eq!(
        reasons_of(&snap, &rej, "cork-1"),
        vec![Reason::ZoneNotDeployed]
    );
}

#[test]
fn a_pinned_zone_places_only_on_its_pinned_sites() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site("cork-2", "op-a", "z-cork", CORK, BIG),
        site("cork-3", "op-b", "z-cork-b", CORK, BIG),
    ])
    .build();
    let mut a = app("arena", 11, vec![area("cork", CORK, 100)]);
    let z = |s: &str| ZoneId::new(s).unwrap();
    a.zones = Some(vec![z("z-cork"), z("z-cork-b")]);
    // Pinned in z-cork only; z-cork-b is unaffected.
    a.pins
        .insert(z("z-cork"), vec![SiteId::new("cork-2").unwrap()]);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    let placed = replicas(&d);
    assert!(
        placed.contains_key("cork-2") && placed.contains_key("cork-3"),
        "{placed:?}"
    );
    assert!(!placed.contains_key("cork-1"), "{placed:?}");
    assert_eq!(
        reasons_of(&snap, &rej, "cork-1"),
        vec![Reason::PinnedElsewhere]
    );
}

#[test]
fn every_deployed_zone_gets_an_instance_even_without_demand() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site("cork-2", "op-b", "z-cork-b", CORK, BIG),
        site("dub-1", "op-a", "z-dub", DUBLIN, BIG),
        site("mel-1", "op-a", "z-mel", MELBOURNE, BIG),
    ])
    .build();
    let mut a = app("arena", 100, vec![]);
    a.zones = Some(
        ["z-cork-b", "z-dub", "z-mel"]
            .iter()
            .map(|z| ZoneId::new(*z).unwrap())
            .collect(),
    );
    let (d, _) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(
        replicas(&d),
        map(&[("cork-2", 1), ("dub-1", 1), ("mel-1", 1)])
    );
    assert!(d.unmet.is_empty(), "{:?}", d.unmet);
    // Demand beyond one per zone still follows the demand.
    a.qos.demand_areas = vec![area("cork", CORK, 200)];
    a.qos.latency_budget_ms = 11;
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("cork-2", 4)]));
    // Dublin and Melbourne are out of the budget: the zone floor is reported unmet.
    assert!(!d.unmet.is_empty());
    assert_eq!(
        reasons_of(&snap, &rej, "mel-1"),
        vec![Reason::OutOfLatencyBudget]
    );
}

#[test]
fn a_generous_budget_lets_one_city_serve_both() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site("mel-1", "op-a", "z-mel", MELBOURNE, BIG),
    ])
    .build();
    let a = app(
        "arena",
        20,
        vec![area("cork", CORK, 400), area("dublin", DUBLIN, 100)],
    );
    let (d, _) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("cork-1", 10)]));
}

#[test]
fn nothing_fits_is_a_result_with_reasons() {
    let snap = ready(vec![site(
        "mel-1",
        "op-a",
        "z-mel",
        MELBOURNE,
        "cpu=100m,memory=1Gi,sessions=10",
    )])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 100)]);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert!(d.targets.is_empty());
    assert_eq!(
        d.unmet,
        vec![Unmet::Demand {
            area: Some("cork".into()),
            wanted: 2,
            placed: 0
        }]
    );
    // Certainly out of reach: the decision stops at that reason ...
    assert_eq!(
        reasons_of(&snap, &rej, "mel-1"),
        vec![Reason::OutOfLatencyBudget]
    );
    // ... and the explanation gives every one.
    let e = crate::explain(
        &Scheduler::default(),
        &snap,
        &a,
        &PlacementPolicy::default(),
    );
    assert_eq!(
        e.sites[0].reasons,
        vec![
            Reason::InsufficientCpu,
            Reason::InsufficientSessionSlots,
            Reason::OutOfLatencyBudget
        ]
    );
    // A site within reach carries all of its reasons in the decision too.
    let near = ready(vec![site(
        "cork-1",
        "op-a",
        "z",
        CORK,
        "cpu=100m,memory=1Gi,sessions=10",
    )])
    .build();
    let (_, rej) = schedule(&near, &a, &PlacementPolicy::default());
    assert_eq!(
        reasons_of(&near, &rej, "cork-1"),
        vec![Reason::InsufficientCpu, Reason::InsufficientSessionSlots]
    );
}

#[test]
fn affinity_groups_overflow_in_order() {
    // op-a's site holds 3 instances (1,500m of CPU); demand is 5.
    let snap = ready(vec![
        site(
            "a-1",
            "op-a",
            "z1",
            CORK,
            "cpu=1500m,memory=8Gi,sessions=1000",
        ),
        site("b-1", "op-b", "z2", CORK, BIG),
        site("c-1", "op-c", "z3", CORK, BIG),
    ])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 250)]);
    let policy = PlacementPolicy {
        affinity: vec![
            SiteSelector {
                name: "own".into(),
                operators: vec![OperatorId::new("op-a").unwrap()],
                ..Default::default()
            },
            SiteSelector {
                name: "partner b".into(),
                operators: vec![OperatorId::new("op-b").unwrap()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let (d, rej) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("a-1", 3), ("b-1", 2)]));
    assert_eq!(
        reasons_of(&snap, &rej, "c-1"),
        vec![Reason::OutsideAffinity]
    );
    // With room in op-a, nothing overflows.
    let snap = ready(vec![
        site("a-1", "op-a", "z1", CORK, BIG),
        site("b-1", "op-b", "z2", CORK, BIG),
    ])
    .build();
    let (d, rej) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("a-1", 5)]));
    assert_eq!(reasons_of(&snap, &rej, "b-1"), vec![Reason::NotNeeded]);
}

#[test]
fn dynamic_division_follows_available_capacity() {
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, "cpu=6,memory=32Gi,sessions=1000"),
        site("s2", "op-a", "z1", CORK, "cpu=2,memory=32Gi,sessions=1000"),
    ])
    .build();
    // 8 instances; room 12 and 4: 3:1.
    let a = app("arena", 20, vec![area("cork", CORK, 400)]);
    let (d, _) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("s1", 6), ("s2", 2)]));
}

#[test]
fn static_weights_divide_and_spill_when_full() {
    let snap = ready(vec![
        site("a-1", "op-a", "z1", CORK, BIG),
        site("b-1", "op-b", "z1", CORK, "cpu=1,memory=32Gi,sessions=1000"),
    ])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 400)]);
    let weight = |op: &str, w| StaticWeight {
        sites: SiteSelector {
            operators: vec![OperatorId::new(op).unwrap()],
            ..Default::default()
        },
        weight: w,
    };
    let policy = PlacementPolicy {
        replica_scheduling: ReplicaScheduling::DividedStatic {
            weights: vec![weight("op-a", 1), weight("op-b", 1)],
        },
        ..Default::default()
    };
    // 1:1 of 8 would be 4 and 4, but b-1 holds 2: the rest goes to a-1.
    let (d, _) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("a-1", 6), ("b-1", 2)]));
}

#[test]
fn aggregated_uses_the_fewest_sites() {
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, "cpu=2,memory=32Gi,sessions=1000"),
        site("s2", "op-a", "z1", CORK, "cpu=3,memory=32Gi,sessions=1000"),
        site("s3", "op-a", "z1", CORK, "cpu=1,memory=32Gi,sessions=1000"),
    ])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 400)]);
    let policy = PlacementPolicy {
        replica_scheduling: ReplicaScheduling::Aggregated,
        ..Default::default()
    };
    let (d, _) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("s1", 2), ("s2", 6)]));
}

#[test]
fn duplicated_puts_the_full_count_on_every_feasible_site() {
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, BIG),
        site("s2", "op-a", "z2", CORK, BIG),
        site("s3", "op-a", "z3", CORK, "cpu=1,memory=32Gi,sessions=1000"),
    ])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 150)]);
    let policy = PlacementPolicy {
        replica_scheduling: ReplicaScheduling::Duplicated,
        ..Default::default()
    };
    let (d, rej) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("s1", 3), ("s2", 3)]));
    assert_eq!(
        reasons_of(&snap, &rej, "s3"),
        vec![Reason::CannotHoldDuplicate]
    );
}

#[test]
fn spread_minimum_opens_groups_and_maximum_caps_them() {
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, BIG),
        site("s2", "op-a", "z1", CORK, BIG),
        site("s3", "op-a", "z2", CORK, BIG),
        site("s4", "op-a", "z3", CORK, BIG),
    ])
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 50)]);
    let spread = |min, max| PlacementPolicy {
        spread: vec![SpreadConstraint {
            by: SpreadBy::Zone,
            min_groups: min,
            max_groups: max,
        }],
        replica_scheduling: ReplicaScheduling::Aggregated,
        ..Default::default()
    };
    // One instance is enough for the demand; min 3 zones raises it to 3, one per zone.
    let (d, _) = schedule(&snap, &a, &spread(3, None));
    assert_eq!(d.total(), 3);
    let zones: std::collections::BTreeSet<_> = d
        .targets
        .iter()
        .map(|t| snap.site(snap.index_of(&t.site).unwrap()).zone.clone())
        .collect();
    assert_eq!(zones.len(), 3);
    assert!(d.unmet.is_empty());
    // Four zones wanted, three exist: placed on three, and the decision says so.
    let (d, _) = schedule(&snap, &a, &spread(4, None));
    assert_eq!(
        d.unmet,
        vec![Unmet::Spread {
            by: SpreadBy::Zone,
            min_groups: 4,
            groups: 3
        }]
    );
    // Max one zone with a demand of 12 instances on dynamic division: only z1's sites.
    let a = app("arena", 20, vec![area("cork", CORK, 600)]);
    let mut p = spread(1, Some(1));
    p.replica_scheduling = ReplicaScheduling::DividedDynamic;
    let (d, rej) = schedule(&snap, &a, &p);
    assert_eq!(d.total(), 12);
    let zones: std::collections::BTreeSet<_> = d
        .targets
        .iter()
        .map(|t| snap.site(snap.index_of(&t.site).unwrap()).zone.clone())
        .collect();
    assert_eq!(zones.len(), 1);
    assert!(
        rej.iter()
            .any(|r| r.reasons.contains(Reason::SpreadMaxGroups))
    );
}

#[test]
fn taints_evict_or_only_keep_new_instances_away() {
    let a = app("arena", 20, vec![area("cork", CORK, 100)]);
    let tainted = |effect| {
        let mut s = site("t", "op-a", "z1", CORK, BIG);
        s.taints = vec![Taint {
            key: "maintenance".into(),
            value: None,
            effect,
        }];
        s
    };
    let one = Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap();
    let with_current = |effect| {
        ready(vec![tainted(effect), site("u", "op-a", "z1", CORK, BIG)])
            .placement(
                a.id.clone(),
                SiteId::new("t").unwrap(),
                2,
                one.checked_mul(2).unwrap(),
                false,
            )
            .build()
    };
    // NoSchedule: the 2 running instances stay, nothing new goes there.
    let (d, _) = schedule(
        &with_current(TaintEffect::NoSchedule),
        &a,
        &PlacementPolicy::default(),
    );
    assert_eq!(replicas(&d), map(&[("t", 2)]));
    // NoExecute: they move.
    let snap = with_current(TaintEffect::NoExecute);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("u", 2)]));
    assert_eq!(reasons_of(&snap, &rej, "t"), vec![Reason::Tainted]);
    // Tolerated: stays.
    let p = PlacementPolicy {
        tolerations: vec![Toleration {
            key: "maintenance".into(),
            value: None,
            effect: None,
        }],
        ..Default::default()
    };
    let (d, _) = schedule(&snap, &a, &p);
    assert_eq!(replicas(&d), map(&[("t", 2)]));
}

#[test]
fn failover_waits_for_the_policy_delay_and_failback_never_sticks() {
    let a = app("arena", 20, vec![area("cork", CORK, 100)]);
    let one = Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap();
    let snap_at = |now: u64, since: u64| {
        SnapshotBuilder::new(now)
            .site(
                site("near", "op-a", "z1", CORK, BIG),
                SiteHealth::NotReady { since },
            )
            .site(site("other", "op-a", "z2", CORK, BIG), SiteHealth::Ready)
            .placement(
                a.id.clone(),
                SiteId::new("near").unwrap(),
                2,
                one.checked_mul(2).unwrap(),
                false,
            )
            .build()
    };
    let policy = PlacementPolicy {
        failover: Failover::AfterNotReady { seconds: 30 },
        ..Default::default()
    };
    let (d, _) = schedule(&snap_at(110, 100), &a, &policy);
    assert_eq!(replicas(&d), map(&[("near", 2)]), "within the delay: held");
    let snap = snap_at(131, 100);
    let (d, rej) = schedule(&snap, &a, &policy);
    assert_eq!(replicas(&d), map(&[("other", 2)]), "past it: failed over");
    assert_eq!(reasons_of(&snap, &rej, "near"), vec![Reason::NotReady]);
    let never = PlacementPolicy {
        failover: Failover::Never,
        ..Default::default()
    };
    let (d, _) = schedule(&snap, &a, &never);
    assert_eq!(replicas(&d), map(&[("near", 2)]));

    // Recovered, failed over from: failback never keeps it off the site.
    let recovered = ready(vec![
        site("near", "op-a", "z1", CORK, BIG),
        site("far", "op-a", "z2", (51.95, -8.3), BIG),
    ])
    .placement(
        a.id.clone(),
        SiteId::new("far").unwrap(),
        2,
        one.checked_mul(2).unwrap(),
        false,
    )
    .failed_over(a.id.clone(), SiteId::new("near").unwrap())
    .build();
    let p = PlacementPolicy {
        failback: Failback::Never,
        ..Default::default()
    };
    let (d, rej) = schedule(&recovered, &a, &p);
    assert_eq!(replicas(&d), map(&[("far", 2)]));
    assert_eq!(
        reasons_of(&recovered, &rej, "near"),
        vec![Reason::FailbackNever]
    );
}

#[test]
fn app_affinity_required_and_preferred() {
    let one = Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap();
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, BIG),
        site("s2", "op-a", "z1", CORK, BIG),
    ])
    .placement(
        AppId::new("matchmaker").unwrap(),
        SiteId::new("s2").unwrap(),
        1,
        one,
        false,
    )
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 50)]);
    let rel = |relation| PlacementPolicy {
        app_affinity: vec![AppAffinity {
            app: AppId::new("matchmaker").unwrap(),
            relation,
        }],
        ..Default::default()
    };
    let (d, rej) = schedule(&snap, &a, &rel(AppRelation::RequiredApart));
    assert_eq!(replicas(&d), map(&[("s1", 1)]));
    assert_eq!(reasons_of(&snap, &rej, "s2"), vec![Reason::AppAntiAffinity]);
    let (d, _) = schedule(&snap, &a, &rel(AppRelation::RequiredTogether));
    assert_eq!(replicas(&d), map(&[("s2", 1)]));
    // s1 and s2 tie otherwise (s1 would win on id); the preference breaks the tie.
    let (d, _) = schedule(&snap, &a, &rel(AppRelation::PreferredTogether));
    assert_eq!(replicas(&d), map(&[("s2", 1)]));
    let (d, _) = schedule(&snap, &a, &rel(AppRelation::PreferredApart));
    assert_eq!(replicas(&d), map(&[("s1", 1)]));
}

#[test]
fn measured_round_trips_override_the_model() {
    let snap = ready(vec![
        site("s1", "op-a", "z1", CORK, BIG),
        site("s2", "op-a", "z1", CORK, BIG),
    ])
    .measured_rtt(SiteId::new("s1").unwrap(), "cork", 35.0)
    .build();
    let a = app("arena", 20, vec![area("cork", CORK, 50)]);
    let (d, rej) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("s2", 1)]));
    assert_eq!(
        reasons_of(&snap, &rej, "s1"),
        vec![Reason::OutOfLatencyBudget]
    );
}

#[test]
fn replica_bounds_and_gpus() {
    let snap = ready(vec![
        site("cpu", "op-a", "z1", CORK, BIG),
        site(
            "gpu",
            "op-a",
            "z1",
            CORK,
            "cpu=16,memory=32Gi,gpus=2,sessions=1000",
        ),
    ])
    .build();
    let mut a = app("render", 20, vec![area("cork", CORK, 400)]);
    a.resources.gpus = 1;
    let p = PlacementPolicy {
        max_replicas: Some(5),
        ..Default::default()
    };
    let (d, rej) = schedule(&snap, &a, &p);
    assert_eq!(d.wanted, 5);
    assert_eq!(replicas(&d), map(&[("gpu", 2)]));
    assert_eq!(
        d.unmet,
        vec![Unmet::Demand {
            area: Some("cork".into()),
            wanted: 5,
            placed: 2
        }]
    );
    assert_eq!(
        reasons_of(&snap, &rej, "cpu"),
        vec![Reason::InsufficientGpus]
    );
    // No demand areas: minReplicas (at least one) anywhere.
    let mut b = app("batch", 20, vec![]);
    b.resources = Resources::ZERO;
    let p = PlacementPolicy {
        min_replicas: 3,
        replica_scheduling: ReplicaScheduling::Aggregated,
        ..Default::default()
    };
    let (d, _) = schedule(&snap, &b, &p);
    assert_eq!(d.total(), 3);
    assert!(d.unmet.is_empty());
}

#[test]
fn reservations_of_others_count_and_own_are_free_again() {
    let one = Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap();
    let a = app("arena", 20, vec![area("cork", CORK, 100)]);
    // The site holds 4 instances; another app reserves 2 of them, this app 2.
    let snap = ready(vec![site(
        "s1",
        "op-a",
        "z1",
        CORK,
        "cpu=2,memory=32Gi,sessions=1000",
    )])
    .placement(
        AppId::new("other").unwrap(),
        SiteId::new("s1").unwrap(),
        2,
        one.checked_mul(2).unwrap(),
        false,
    )
    .placement(
        a.id.clone(),
        SiteId::new("s1").unwrap(),
        2,
        one.checked_mul(2).unwrap(),
        false,
    )
    .build();
    let (d, _) = schedule(&snap, &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("s1", 2)]));
    let mut bigger = a.clone();
    bigger.qos.demand_areas[0].expected_sessions = 200;
    let (d, _) = schedule(&snap, &bigger, &PlacementPolicy::default());
    assert_eq!(
        replicas(&d),
        map(&[("s1", 2)]),
        "only 2 fit beside the other app"
    );
    assert_eq!(d.unmet.len(), 1);
    // Committing moves the reservation: a second app now finds the site full.
    let mut snap = snap;
    snap.commit(&a, &d, false);
    let (d2, _) = schedule(
        &snap,
        &app("third", 20, vec![area("cork", CORK, 50)]),
        &PlacementPolicy::default(),
    );
    assert!(d2.targets.is_empty());
}

#[test]
fn same_input_same_decision_whatever_the_site_order() {
    let mut sites: Vec<Site> = (0..40)
        .map(|i| {
            site(
                &format!("s{i:02}"),
                ["op-a", "op-b"][i % 2],
                &format!("z{}", i % 5),
                (51.8 + (i as f64) * 0.01, -8.5 + (i as f64) * 0.005),
                "cpu=2,memory=8Gi,sessions=200",
            )
        })
        .collect();
    let a = app(
        "arena",
        12,
        vec![area("cork", CORK, 700), area("north", (52.1, -8.3), 300)],
    );
    let policy = PlacementPolicy {
        spread: vec![SpreadConstraint {
            by: SpreadBy::Zone,
            min_groups: 2,
            max_groups: Some(4),
        }],
        ..Default::default()
    };
    let first = schedule(&ready(sites.clone()).build(), &a, &policy).0;
    sites.reverse();
    let second = schedule(&ready(sites).build(), &a, &policy).0;
    assert_eq!(first, second);
    assert!(first.total() >= 20, "{first:?}");
}

#[test]
fn explain_gives_numbers_for_every_site() {
    let snap = ready(vec![
        site("cork-1", "op-a", "z-cork", CORK, BIG),
        site(
            "mel-1",
            "op-a",
            "z-mel",
            MELBOURNE,
            "cpu=100m,memory=1Gi,sessions=10",
        ),
    ])
    .build();
    let a = app("arena", 15, vec![area("cork", CORK, 100)]);
    let e = crate::explain(
        &Scheduler::default(),
        &snap,
        &a,
        &PlacementPolicy::default(),
    );
    assert_eq!(e.sites[0].site.as_str(), "cork-1");
    assert_eq!(e.sites[0].replicas, 2);
    assert!(e.sites[0].score.is_some());
    assert!(e.sites[0].rtt[0].within_budget);
    let mel = &e.sites[1];
    assert_eq!(mel.replicas, 0);
    assert!(
        mel.details
            .iter()
            .any(|d| d.contains("cpu: an instance needs 500m, 100m free")),
        "{:?}",
        mel.details
    );
    assert!(
        mel.details.iter().any(
            |d| d.starts_with("nearest demand area \"cork\" at") && d.ends_with("budget 15 ms")
        ),
        "{:?}",
        mel.details
    );
}

#[test]
fn overloaded_sites_shed_their_share_when_others_can_take_it() {
    let a = app("arena", 20, vec![area("cork", CORK, 250)]); // 5 instances
    let one = Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap();
    let world = |other_cap: &str, held: bool| {
        let mut hot = site("hot", "op-a", "z1", CORK, BIG);
        hot.usage.cpu_millicores = hot.capacity.cpu_millicores; // fully loaded
        let mut b = ready(vec![hot, site("cool", "op-a", "z2", CORK, other_cap)]).placement(
            a.id.clone(),
            SiteId::new("hot").unwrap(),
            5,
            one.checked_mul(5).unwrap(),
            false,
        );
        if held {
            b.add_rebalance_held(a.id.clone());
        }
        b.build()
    };
    // Load 1.0 against a target of 0.8: a fifth of the app's 5 instances moves.
    let (d, _) = schedule(&world(BIG, false), &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("cool", 1), ("hot", 4)]));
    assert!(d.unmet.is_empty());
    // Nowhere to go: it stays.
    let (d, _) = schedule(
        &world("cpu=100m,memory=1Gi,sessions=10", false),
        &a,
        &PlacementPolicy::default(),
    );
    assert_eq!(replicas(&d), map(&[("hot", 5)]));
    assert!(d.unmet.is_empty());
    // Rebalanced a moment ago: no second move before the load reports catch up.
    let (d, _) = schedule(&world(BIG, true), &a, &PlacementPolicy::default());
    assert_eq!(replicas(&d), map(&[("hot", 5)]));
}
