//! The controller over a real embedded store: two controllers scheduling the same apps at the
//! same time onto too little capacity never over-commit a site, and the capacity ledgers
//! agree with the placements afterwards.

use std::collections::{BTreeMap, HashMap};

use mecfed_core::{
    App, AppId, AppQos, Artefact, DemandArea, DeveloperId, GeoPoint, OperatorId, Placement,
    Resources, Site, SiteId, ZoneId,
};
use mecfed_scheduler::{Controller, ControllerConfig, SiteAllocation};
use mecfed_store::{EmbeddedStore, Store, typed::Typed};

fn site(i: usize) -> Site {
    Site::new(
        SiteId::new(format!("s{i}")).unwrap(),
        OperatorId::new("op-a").unwrap(),
        "cork",
        ZoneId::new(format!("z{i}")).unwrap(),
        GeoPoint::new(51.9 + 0.01 * i as f64, -8.47).unwrap(),
        Resources::parse("cpu=8,memory=32Gi,sessions=1000").unwrap(),
    )
    .unwrap()
}

/// Site `s<i>`, Ready: its document and the site registry's liveness record.
async fn add_ready_site<S: Store>(store: &S, i: usize) {
    Typed::new(store.clone()).put(&site(i)).await.unwrap();
    store
        .put(
            format!("/mecfed/v1/siteleases/s{i}").as_bytes(),
            format!(r#"{{"site":"s{i}"}}"#).as_bytes(),
            None,
        )
        .await
        .unwrap();
}

fn app(i: usize) -> App {
    App {
        id: AppId::new(format!("app-{i:02}")).unwrap(),
        developer: DeveloperId::new("d").unwrap(),
        name: "game".into(),
        version: "1".into(),
        artefact: Artefact::Process {
            command: "x".into(),
            args: vec![],
            env: BTreeMap::new(),
        },
        ports: vec![],
        resources: Resources::parse("cpu=1,memory=1Gi,sessions=50").unwrap(),
        readiness: None,
        qos: AppQos {
            latency_budget_ms: 20,
            five_qi: None,
            max_sessions_per_instance: 50,
            demand_areas: vec![DemandArea::circle(
                "cork",
                GeoPoint::new(51.9, -8.47).unwrap(),
                3_000.0,
                150,
            )],
        },
        load: None,
        stateful: false,
        zones: None,
        pins: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_controllers_never_over_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    for i in 0..3 {
        add_ready_site(&store, i).await;
    }
    // 12 apps of 3 instances of one core each: 36 cores wanted, 24 there.
    for i in 0..12 {
        typed.put(&app(i)).await.unwrap();
    }
    let a = Controller::new(store.clone(), ControllerConfig::default());
    let b = Controller::new(store.clone(), ControllerConfig::default());
    let mut committed = 0;
    let mut conflicts = 0;
    for round in 0..4 {
        let (ra, rb) = tokio::join!(a.pass(1_000 + round), b.pass(1_000 + round));
        for r in [ra.unwrap(), rb.unwrap()] {
            committed += r.committed;
            conflicts += r.conflicts;
        }
    }
    assert!(
        committed >= 8,
        "at most 8 apps fit in full: {committed} commits"
    );

    let (placements, _) = typed.list::<Placement>().await.unwrap();
    let (ledgers, _) = typed.list::<SiteAllocation>().await.unwrap();
    let mut used: HashMap<SiteId, u64> = HashMap::new();
    for p in &placements {
        *used.entry(p.value.site.clone()).or_default() += u64::from(p.value.replicas) * 1000;
    }
    for (site, cpu) in &used {
        assert!(*cpu <= 8000, "{site} over-committed: {cpu}m of 8000m");
    }
    // The ledgers say exactly what the placements say.
    let ledger_cpu: HashMap<SiteId, u64> = ledgers
        .iter()
        .map(|l| {
            (
                l.value.site.clone().unwrap(),
                l.value.total().cpu_millicores,
            )
        })
        .collect();
    assert_eq!(ledger_cpu, used, "conflicts seen: {conflicts}");
    assert_eq!(
        used.values().sum::<u64>(),
        24_000,
        "the capacity is used in full"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_follows_reported_sessions_up_and_down() {
    use mecfed_core::{Autoscaling, Instance, InstanceId, InstanceState, PlacementPolicy};
    use mecfed_scheduler::{AppPolicy, AppSchedule};

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    add_ready_site(&store, 0).await;
    let app = app(0); // declares 150 sessions: 3 instances of 50
    typed
        .put(&AppPolicy {
            app: app.id.clone(),
            policy: PlacementPolicy {
                autoscaling: Some(Autoscaling {
                    target_utilisation_percent: 50,
                    scale_up_stabilisation_seconds: 0,
                    scale_down_stabilisation_seconds: 60,
                    min_instances_per_area: 1,
                    max_instances_per_area: Some(6),
                }),
                ..PlacementPolicy::default()
            },
        })
        .await
        .unwrap();
    typed.put(&app).await.unwrap();
    let c = Controller::new(store.clone(), ControllerConfig::default());
    let replicas = || async {
        let (ps, _) = typed.list::<Placement>().await.unwrap();
        ps.iter().map(|p| p.value.replicas).sum::<u32>()
    };
    // No reports yet: the declared demand.
    c.pass(100).await.unwrap();
    assert_eq!(replicas().await, 3);
    // The site reports its instances' sessions, as agents do.
    let report = |sessions: [u32; 3]| {
        let typed = typed.clone();
        let app = app.id.clone();
        async move {
            for (i, n) in sessions.into_iter().enumerate() {
                typed
                    .put(&Instance {
                        id: InstanceId::new(format!("{app}-s0-{i}")).unwrap(),
                        app: app.clone(),
                        site: SiteId::new("s0").unwrap(),
                        state: InstanceState::Ready,
                        endpoint: None,
                        pid: None,
                        sessions: Some(n),
                    })
                    .await
                    .unwrap();
            }
        }
    };
    // 120 sessions at 25 per instance (50 %): 5 instances, at once (no up window).
    report([40, 40, 40]).await;
    c.pass(110).await.unwrap();
    assert_eq!(replicas().await, 5);
    let (sched, _) = typed.list::<AppSchedule>().await.unwrap();
    assert_eq!(sched[0].value.demand.get("cork"), Some(&5));
    // Far more than the cap: 6.
    report([200, 200, 200]).await;
    c.pass(120).await.unwrap();
    assert_eq!(replicas().await, 6);
    // Load gone: down only after 60 s of low recommendations.
    report([0, 0, 0]).await;
    c.pass(130).await.unwrap();
    assert_eq!(replicas().await, 6, "within the down window");
    c.pass(185).await.unwrap();
    assert_eq!(replicas().await, 1, "the window has passed");
}

/// etcd refuses transactions of more than 128 operations (its default `--max-txn-ops`): a
/// decision that big is not committed, and the other apps of the pass are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_does_not_stop_the_pass_on_etcd() {
    use mecfed_core::{PlacementPolicy, ReplicaScheduling};
    use mecfed_scheduler::AppPolicy;
    use mecfed_store::{EtcdStore, testing::EtcdProcess};

    let etcd = EtcdProcess::start().expect("a real etcd must start");
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    let typed = Typed::new(store.clone());
    for i in 0..70 {
        add_ready_site(&store, i).await;
    }
    // One instance on every one of 70 sites: 70 placements and 70 ledgers in one commit.
    let mut wide = app(0);
    wide.qos.demand_areas.clear();
    typed
        .put(&AppPolicy {
            app: wide.id.clone(),
            policy: PlacementPolicy {
                replica_scheduling: ReplicaScheduling::Duplicated,
                ..PlacementPolicy::default()
            },
        })
        .await
        .unwrap();
    typed.put(&wide).await.unwrap();
    let narrow = app(1);
    typed.put(&narrow).await.unwrap();
    let report = Controller::new(store.clone(), ControllerConfig::default())
        .pass(1_000)
        .await
        .expect("the pass goes on past a refused commit");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.committed, 1, "{report:?}");
    let (placements, _) = typed.list::<Placement>().await.unwrap();
    assert!(placements.iter().all(|p| p.value.app == narrow.id));
    assert_eq!(placements.iter().map(|p| p.value.replicas).sum::<u32>(), 3);
}

/// Two controllers on one store: one leads and places, the other waits; when the leader
/// stops, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_leads_and_the_other_takes_over() {
    use std::time::{Duration, Instant};

    use mecfed_scheduler::SchedulerMetrics;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap();
    let typed = Typed::new(store.clone());
    add_ready_site(&store, 0).await;
    let config = ControllerConfig {
        resync: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(2),
        ..ControllerConfig::default()
    };
    let start = |registry: &prometheus::Registry| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = Controller::new(store.clone(), config.clone())
            .with_metrics(SchedulerMetrics::register(registry).unwrap());
        let task = tokio::spawn(c.run(async {
            let _ = stopped.await;
        }));
        (stop, task)
    };
    let leader_of = |r: &prometheus::Registry| {
        r.gather()
            .iter()
            .find(|m| m.name() == "mecfed_scheduler_leader")
            .map_or(0.0, |m| m.get_metric()[0].get_gauge().value())
    };
    let (ra, rb) = (prometheus::Registry::new(), prometheus::Registry::new());
    let (stop_a, task_a) = start(&ra);
    let (stop_b, task_b) = start(&rb);
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_of(&ra) + leader_of(&rb) < 1.0 {
        assert!(Instant::now() < deadline, "nobody leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stays one leader over several keep-alive periods.
    for _ in 0..20 {
        assert_eq!(leader_of(&ra) + leader_of(&rb), 1.0, "exactly one leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The leader places a new app.
    typed.put(&app(0)).await.unwrap();
    while typed.list::<Placement>().await.unwrap().0.is_empty() {
        assert!(Instant::now() < deadline, "the leader placed nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The leader stops (and resigns): the other takes over and places the next app.
    let (stop_leader, task_leader, stop_other, task_other, other) = if leader_of(&ra) == 1.0 {
        (stop_a, task_a, stop_b, task_b, &rb)
    } else {
        (stop_b, task_b, stop_a, task_a, &ra)
    };
    stop_leader.send(()).unwrap();
    task_leader.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader_of(other) < 1.0 {
        assert!(Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    typed.put(&app(1)).await.unwrap();
    while typed.list::<Placement>().await.unwrap().0.len() < 2 {
        assert!(Instant::now() < deadline, "the new leader placed nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_other.send(()).unwrap();
    task_other.await.unwrap();
}
