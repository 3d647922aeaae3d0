//! UE updates through the UE engine's core: the indexed view table, the subscription index
//! and the matcher, to the notifications each update queues (their JSON bodies built), in
//! process and on one thread, without the store write that commits them.
//!
//! World: 1,000 sites in 100 zones, 4 cells each (4,000 access points, one PLMN); 100,000
//! UEs on random cells, each sharing its data with one of 10 tenants; 10,000 subscriptions:
//! 1,000 zone entry/exit (10 per zone), 500 zone user-count thresholds (5 per zone), 8,000
//! user location events (one per UE, the first 8,000 UEs) and 500 cell changes (by the UE's
//! IPv4 address). Updates: 200,000 moves of random UEs, 70 % to another cell of the same
//! zone and 30 % to another zone's, seeded.
//!
//! Run with `cargo bench -p mecfed-api --bench ue_events`; prints throughput, latency
//! percentiles and notifications per update.

#![allow(clippy::print_stdout)] // a bench binary prints its figures

use std::time::Instant;

use hdrhistogram::Histogram;
use mecfed_api::{
    engine::{Matcher, ue::UeSource},
    notify::{Delivery, Subscription},
};
use mecfed_core::{
    AccessKind, Attachment, DeveloperId, GeoPoint, OperatorId, Plmn, Resources, Site, SiteId, Ue,
    UeId, UeIdentity, ZoneId,
};
use mecfed_store::{EmbeddedStore, typed::Typed};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

const SITES: usize = 1_000;
const ZONES: usize = 100;
const CELLS_PER_SITE: usize = 4;
const UES: usize = 100_000;
const UPDATES: usize = 200_000;

fn cell(site: usize, c: usize) -> String {
    format!("cell-{site}-{c}")
}

fn ip(k: usize) -> String {
    format!("10.{}.{}.{}", k >> 16, (k >> 8) & 0xff, k & 0xff)
}

fn ue(k: usize, ap: &str) -> Ue {
    let mut u = Ue::new(
        UeId::new(format!("ue-{k}")).unwrap(),
        UeIdentity {
            ipv4_address: Some(ip(k).parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    u.attachment = Some(Attachment {
        access: AccessKind::Nr5g,
        access_point: ap.to_string(),
        operator: OperatorId::new("op-a").unwrap(),
        location: GeoPoint::new(52.0, -8.0).unwrap(),
    });
    u.shared_with = vec![DeveloperId::new(format!("d{}", k % 10)).unwrap()];
    u
}

fn sub(id: usize, family: &str, body: Value) -> Subscription {
    Subscription {
        id: format!("sub-{id}"),
        family: family.into(),
        subscription_type: body["subscriptionType"].as_str().unwrap_or("").into(),
        developer: Some(DeveloperId::new(format!("d{}", id % 10)).unwrap()),
        instance: None,
        callback: "http://127.0.0.1:9/cb".into(),
        href: format!("/x/sub-{id}"),
        body,
        expiry_deadline: None,
        expiry_notification: None,
        next_seq: 0,
        created_at: 0,
        delivery: Delivery::default(),
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    let sites: Vec<Site> = (0..SITES)
        .map(|i| {
            let mut s = Site::new(
                SiteId::new(format!("site-{i}")).unwrap(),
                OperatorId::new("op-a").unwrap(),
                "ireland",
                ZoneId::new(format!("zone-{}", i % ZONES)).unwrap(),
                GeoPoint::new(51.0 + (i as f64) / 1000.0, -8.0).unwrap(),
                Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
            )
            .unwrap();
            s.access_points = (0..CELLS_PER_SITE).map(|c| cell(i, c)).collect();
            s.access_kinds = vec![AccessKind::Nr5g];
            s.plmn = Some(Plmn::parse("272-01").unwrap());
            s
        })
        .collect();
    let mut at: Vec<(usize, usize)> = (0..UES)
        .map(|_| {
            (
                rng.random_range(0..SITES),
                rng.random_range(0..CELLS_PER_SITE),
            )
        })
        .collect();
    let views: Vec<Ue> = at
        .iter()
        .enumerate()
        .map(|(k, (s, c))| ue(k, &cell(*s, *c)))
        .collect();
    let t = Instant::now();
    let mut m = Matcher::new(UeSource::new(sites, views));
    let mut n = 0;
    for z in 0..ZONES {
        for _ in 0..10 {
            let body = json!({"subscriptionType": "ZoneLocationEventSubscription",
                "callbackReference": "http://127.0.0.1:9/cb", "zoneId": format!("zone-{z}")});
            let s = sub(n, "mec013.ZoneLocationEvent", body);
            m.observe_subscription(&s.id.clone(), 1, Some(s));
            n += 1;
        }
        for _ in 0..5 {
            let body = json!({"subscriptionType": "ZoneStatusSubscription",
                "callbackReference": "http://127.0.0.1:9/cb", "zoneId": format!("zone-{z}"),
                "upperNumberOfUsersZoneThreshold": 1000, "lowerNumberOfUsersAPThreshold": 20});
            let s = sub(n, "mec013.ZoneStatus", body);
            m.observe_subscription(&s.id.clone(), 1, Some(s));
            n += 1;
        }
    }
    for k in 0..8_000 {
        let body = json!({"subscriptionType": "UserLocationEventSubscription",
            "callbackReference": "http://127.0.0.1:9/cb", "address": format!("acr:{}", ip(k))});
        let mut s = sub(n, "mec013.UserLocationEvent", body);
        s.developer = Some(DeveloperId::new(format!("d{}", k % 10)).unwrap());
        m.observe_subscription(&s.id.clone(), 1, Some(s));
        n += 1;
    }
    for k in 8_000..8_500 {
        let body = json!({"subscriptionType": "CellChangeSubscription",
            "callbackReference": "http://127.0.0.1:9/cb",
            "filterCriteriaAssocHo": {"associateId": [{"type": 1, "value": ip(k)}]}});
        let mut s = sub(n, "mec012.cellChange", body);
        s.developer = Some(DeveloperId::new(format!("d{}", k % 10)).unwrap());
        m.observe_subscription(&s.id.clone(), 1, Some(s));
        n += 1;
    }
    println!(
        "built: {SITES} sites, {ZONES} zones, {UES} UEs, {n} subscriptions in {:.2?}",
        t.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Typed::new(EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let moves: Vec<(usize, usize, usize)> = (0..UPDATES)
        .map(|_| {
            let k = rng.random_range(0..UES);
            let (site, c) = at[k];
            let to = if rng.random_bool(0.7) {
                // Another cell of a site of the same zone.
                let other = (site + ZONES * rng.random_range(1..SITES / ZONES)) % SITES;
                (other, (c + 1) % CELLS_PER_SITE)
            } else {
                (
                    (site + rng.random_range(1..ZONES)) % SITES,
                    rng.random_range(0..CELLS_PER_SITE),
                )
            };
            at[k] = to;
            (k, to.0, to.1)
        })
        .collect();
    // The updates as they arrive: decoded documents.
    let moves: Vec<(String, Ue)> = moves
        .into_iter()
        .map(|(k, s, c)| {
            let u = ue(k, &cell(s, c));
            (u.id.to_string(), u)
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut notes, mut touched) = (0u64, 0u64);
    let start = Instant::now();
    rt.block_on(async {
        for (id, now) in moves {
            let t = Instant::now();
            let plans = m.plans(&store, &id, Some(&now)).await.unwrap();
            touched += plans.len() as u64;
            notes += plans
                .iter()
                .map(|(_, e)| e.bodies.len() as u64)
                .sum::<u64>();
            m.set_view(&id, Some(now));
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    });
    let took = start.elapsed();
    println!(
        "{UPDATES} updates in {took:.2?}: {:.0} updates/s; per update p50 {:.1} µs, p99 {:.1} µs, \
         max {:.1} µs; {:.2} notifications and {:.2} subscriptions told per update",
        UPDATES as f64 / took.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        notes as f64 / UPDATES as f64,
        touched as f64 / UPDATES as f64,
    );
}
