//! A deterministic, realistic world for the scheduler benchmarks: sites of three operators
//! clustered around 30 European cities (zones of about ten sites, cell and metro tiers, a
//! few tainted sites), other apps' placements already reserving capacity, and apps with
//! realistic policies: own operator first with partners as overflow, a zone spread, a
//! latency budget of 12 to 25 ms to two demand areas (a circle and a polygon) and dynamic
//! division.

use std::collections::BTreeMap;

use mecfed_core::{
    AccessKind, App, AppId, AppQos, Artefact, DemandArea, DeveloperId, GeoPoint, OperatorId,
    PlacementPolicy, ReplicaScheduling, Resources, Site, SiteId, SiteSelector, SpreadBy,
    SpreadConstraint, Taint, TaintEffect, ZoneId,
};
use mecfed_scheduler::{SiteHealth, Snapshot, SnapshotBuilder};

/// City centres (lat, lon).
const CITIES: [(f64, f64); 30] = [
    (51.90, -8.47),
    (53.35, -6.26),
    (51.51, -0.13),
    (48.86, 2.35),
    (52.52, 13.40),
    (40.42, -3.70),
    (41.39, 2.17),
    (45.46, 9.19),
    (41.90, 12.50),
    (52.37, 4.90),
    (50.85, 4.35),
    (48.21, 16.37),
    (47.37, 8.54),
    (50.08, 14.44),
    (52.23, 21.01),
    (59.33, 18.07),
    (55.68, 12.57),
    (59.91, 10.75),
    (60.17, 24.94),
    (38.72, -9.14),
    (53.48, -2.24),
    (55.95, -3.19),
    (45.76, 4.84),
    (43.30, 5.37),
    (48.14, 11.58),
    (50.11, 8.68),
    (53.55, 9.99),
    (47.50, 19.04),
    (44.43, 26.10),
    (37.98, 23.73),
];

/// A small deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn near(rng: &mut Rng, (lat, lon): (f64, f64), km: f64) -> GeoPoint {
    let dlat = (rng.unit() * 2.0 - 1.0) * km / 111.0;
    let dlon = (rng.unit() * 2.0 - 1.0) * km / (111.0 * lat.to_radians().cos());
    GeoPoint::new(lat + dlat, lon + dlon).expect("near a city")
}

/// `n` sites spread over the cities, about ten per zone.
pub fn sites(n: usize, seed: u64) -> Vec<Site> {
    let mut rng = Rng::new(seed);
    let ops = ["op-a", "op-b", "op-c"];
    (0..n)
        .map(|i| {
            let city = i % CITIES.len();
            let op = ops[(i / CITIES.len()) % 3];
            let zone = format!("{op}-c{city}-z{}", i / (CITIES.len() * 3 * 10));
            let metro = rng.below(10) == 0;
            let cap = if metro {
                "cpu=64,memory=256Gi,gpus=8,sessions=5000"
            } else {
                "cpu=16,memory=64Gi,gpus=1,sessions=1000"
            };
            let mut s = Site::new(
                SiteId::new(format!("site-{i:05}")).unwrap(),
                OperatorId::new(op).unwrap(),
                format!("city-{city}"),
                ZoneId::new(zone).unwrap(),
                near(&mut rng, CITIES[city], 25.0),
                Resources::parse(cap).unwrap(),
            )
            .unwrap();
            s.access_kinds = if metro {
                vec![AccessKind::Fixed]
            } else if rng.below(3) == 0 {
                vec![AccessKind::Nr5g, AccessKind::Wifi]
            } else {
                vec![AccessKind::Nr5g, AccessKind::Lte]
            };
            s.labels = BTreeMap::from([
                (
                    "tier".to_string(),
                    if metro { "metro" } else { "cell" }.to_string(),
                ),
                ("rack".to_string(), format!("r{}", rng.below(4))),
            ]);
            if rng.below(50) == 0 {
                s.taints = vec![Taint {
                    key: "maintenance".into(),
                    value: None,
                    effect: TaintEffect::NoSchedule,
                }];
            }
            s.usage.cpu_millicores = rng.below(s.capacity.cpu_millicores / 2);
            s
        })
        .collect()
}

/// An app with two demand areas near random cities.
pub fn app(i: usize, rng: &mut Rng) -> App {
    let city = CITIES[rng.below(CITIES.len() as u64) as usize];
    let other = CITIES[rng.below(CITIES.len() as u64) as usize];
    let corner = |rng: &mut Rng| near(rng, other, 8.0);
    let polygon = vec![corner(rng), corner(rng), corner(rng), corner(rng)];
    App {
        id: AppId::new(format!("app-{i:05}")).unwrap(),
        developer: DeveloperId::new("studio").unwrap(),
        name: "game".into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "arena".into(),
            args: vec![],
            env: BTreeMap::new(),
        },
        ports: vec![],
        resources: Resources::parse("cpu=500m,memory=512Mi,sessions=50").unwrap(),
        readiness: None,
        qos: AppQos {
            latency_budget_ms: 12 + rng.below(14) as u32,
            five_qi: None,
            max_sessions_per_instance: 50,
            demand_areas: vec![
                DemandArea::circle(
                    "centre",
                    near(rng, city, 5.0),
                    3_000.0,
                    100 + rng.below(1_900) as u32,
                ),
                DemandArea {
                    name: "suburb".into(),
                    center: None,
                    radius_m: None,
                    polygon,
                    expected_sessions: 50 + rng.below(450) as u32,
                },
            ],
        },
        load: None,
        stateful: true,
        zones: None,
        pins: Default::default(),
    }
}

/// Own operator first, partners as overflow, at least two zones.
pub fn policy() -> PlacementPolicy {
    PlacementPolicy {
        affinity: vec![
            SiteSelector {
                name: "own".into(),
                operators: vec![OperatorId::new("op-a").unwrap()],
                ..Default::default()
            },
            SiteSelector {
                name: "partners".into(),
                operators: vec![
                    OperatorId::new("op-b").unwrap(),
                    OperatorId::new("op-c").unwrap(),
                ],
                ..Default::default()
            },
        ],
        spread: vec![SpreadConstraint {
            by: SpreadBy::Zone,
            min_groups: 2,
            max_groups: Some(6),
        }],
        replica_scheduling: ReplicaScheduling::DividedDynamic,
        ..Default::default()
    }
}

/// A snapshot of `n` sites where `placed` other apps already hold capacity.
pub fn snapshot(n: usize, placed: usize, seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed ^ 0xABCD);
    let sites = sites(n, seed);
    let mut b = SnapshotBuilder::new(1_000_000).home_operator(OperatorId::new("op-a").unwrap());
    let ids: Vec<SiteId> = sites.iter().map(|s| s.id.clone()).collect();
    for s in sites {
        b.add_site(s, SiteHealth::Ready);
    }
    let one = Resources::parse("cpu=500m,memory=512Mi,sessions=50").unwrap();
    for i in 0..placed {
        for _ in 0..3 {
            let site = ids[rng.below(ids.len() as u64) as usize].clone();
            let k = 1 + rng.below(4) as u32;
            b.add_placement(
                AppId::new(format!("other-{i}")).unwrap(),
                site,
                k,
                one.checked_mul(k).unwrap(),
                false,
            );
        }
    }
    b.build()
}
