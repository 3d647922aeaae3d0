//! One conformance suite, generic over `S: Store`, run against the embedded store and a real
//! etcd server. Each case works under its own key prefix so cases cannot see each other.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mecfed_core::{GeoPoint, OperatorId, Resources, Site, SiteId, ZoneId};
use mecfed_store::{
    Compare, CompareOp, CompareTarget, Election, EmbeddedStore, EtcdStore, EventKind, Store,
    StoreError, Txn, TxnOp, TxnOpResult, Watcher,
    testing::EtcdProcess,
    typed::{Typed, TypedError},
};

/// Generous bound for an event that should arrive promptly; only reached on failure.
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn next_event(w: &mut Watcher) -> Result<mecfed_store::Event> {
    match tokio::time::timeout(EVENT_WAIT, w.next()).await {
        Ok(Some(Ok(e))) => Ok(e),
        Ok(Some(Err(e))) => bail!("watch failed: {e}"),
        Ok(None) => bail!("watch ended"),
        Err(_) => bail!("no watch event within {EVENT_WAIT:?}"),
    }
}

async fn put_get_and_revisions<S: Store>(s: &S) -> Result<()> {
    let r0 = s.current_revision().await?;
    let r1 = s.put(b"/pg/a", b"1", None).await?;
    ensure!(
        r1 == r0 + 1,
        "a put advances the revision by one ({r0} -> {r1})"
    );
    let kv = s.get(b"/pg/a").await?.context("key present")?;
    ensure!(kv.value == b"1" && kv.version == 1);
    ensure!(kv.create_revision == r1 && kv.mod_revision == r1);
    let r2 = s.put(b"/pg/a", b"2", None).await?;
    let kv = s.get(b"/pg/a").await?.context("key present")?;
    ensure!(kv.value == b"2" && kv.version == 2);
    ensure!(kv.create_revision == r1 && kv.mod_revision == r2);
    ensure!(s.get(b"/pg/missing").await?.is_none());
    ensure!(s.current_revision().await? == r2);
    ensure!(matches!(
        s.put(b"", b"x", None).await,
        Err(StoreError::InvalidArgument(_))
    ));
    Ok(())
}

async fn delete_semantics<S: Store>(s: &S) -> Result<()> {
    s.put(b"/del/a", b"1", None).await?;
    let before = s.current_revision().await?;
    ensure!(s.delete(b"/del/a").await?, "existing key reports deleted");
    ensure!(s.current_revision().await? == before + 1);
    ensure!(s.get(b"/del/a").await?.is_none());
    let before = s.current_revision().await?;
    ensure!(
        !s.delete(b"/del/a").await?,
        "missing key reports not deleted"
    );
    ensure!(
        s.current_revision().await? == before,
        "deleting nothing does not advance the revision"
    );
    // Recreated keys start a new life.
    let r = s.put(b"/del/a", b"again", None).await?;
    let kv = s.get(b"/del/a").await?.context("recreated")?;
    ensure!(kv.version == 1 && kv.create_revision == r);
    Ok(())
}

async fn range_paging<S: Store>(s: &S) -> Result<()> {
    for i in 0..25 {
        s.put(format!("/rg/k{i:02}").as_bytes(), b"v", None).await?;
    }
    s.put(b"/rg0", b"outside", None).await?;
    s.put(b"/rf", b"outside", None).await?;
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut pages = 0;
    loop {
        let page = s.range(b"/rg/", after.as_deref(), 10).await?;
        ensure!(page.revision >= 27, "page carries the store revision");
        pages += 1;
        all.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
    }
    ensure!(
        pages == 3,
        "25 keys in pages of 10 take 3 pages, took {pages}"
    );
    let expected: Vec<Vec<u8>> = (0..25)
        .map(|i| format!("/rg/k{i:02}").into_bytes())
        .collect();
    ensure!(all == expected, "keys in order, prefix respected");
    let page = s.range(b"/rg/", None, 100).await?;
    ensure!(page.kvs.len() == 25 && !page.more);
    let page = s.range(b"/nothing/", None, 10).await?;
    ensure!(page.kvs.is_empty() && !page.more);
    Ok(())
}

async fn transactions<S: Store>(s: &S) -> Result<()> {
    let k = b"/tx/a".to_vec();
    let create = || {
        Txn::new()
            .when([Compare::absent(k.clone())])
            .and_then([TxnOp::put(k.clone(), b"one".to_vec())])
            .or_else([TxnOp::Get(k.clone())])
    };
    let r = s.txn(create()).await?;
    ensure!(r.succeeded && r.results == vec![TxnOpResult::Put]);
    let created_at = r.revision;
    let r = s.txn(create()).await?;
    ensure!(!r.succeeded, "second create fails");
    match &r.results[..] {
        [TxnOpResult::Get(Some(kv))] => ensure!(kv.value == b"one"),
        other => bail!("failure branch returns the get: {other:?}"),
    }
    ensure!(
        r.revision == created_at,
        "a failed guard without writes keeps the revision"
    );

    // Compare on mod revision (optimistic concurrency).
    let stale = Txn::new()
        .when([Compare::mod_revision(k.clone(), created_at - 1)])
        .and_then([TxnOp::put(k.clone(), b"lost".to_vec())]);
    ensure!(!s.txn(stale).await?.succeeded);
    let fresh = Txn::new()
        .when([Compare::mod_revision(k.clone(), created_at)])
        .and_then([TxnOp::put(k.clone(), b"two".to_vec())]);
    ensure!(s.txn(fresh).await?.succeeded);
    ensure!(s.get(&k).await?.context("present")?.value == b"two");

    // Value and version compares.
    let by_value = Txn::new().when([Compare::new(
        k.clone(),
        CompareOp::Equal,
        CompareTarget::Value(b"two".to_vec()),
    )]);
    ensure!(s.txn(by_value).await?.succeeded);
    let by_version = Txn::new().when([Compare::new(
        k.clone(),
        CompareOp::Greater,
        CompareTarget::Version(1),
    )]);
    ensure!(s.txn(by_version).await?.succeeded);
    let missing_value = Txn::new().when([Compare::new(
        b"/tx/missing".to_vec(),
        CompareOp::NotEqual,
        CompareTarget::Value(b"x".to_vec()),
    )]);
    ensure!(
        !s.txn(missing_value).await?.succeeded,
        "value compares on a missing key never hold"
    );

    // Several writes in one transaction share one revision and are all-or-nothing.
    let before = s.current_revision().await?;
    let multi = Txn::new().and_then([
        TxnOp::put(b"/tx/m1".to_vec(), b"1".to_vec()),
        TxnOp::put(b"/tx/m2".to_vec(), b"2".to_vec()),
        TxnOp::Delete(k.clone()),
    ]);
    let r = s.txn(multi).await?;
    ensure!(r.revision == before + 1, "one revision per transaction");
    let m1 = s.get(b"/tx/m1").await?.context("m1")?;
    let m2 = s.get(b"/tx/m2").await?.context("m2")?;
    ensure!(m1.mod_revision == r.revision && m2.mod_revision == r.revision);
    ensure!(s.get(&k).await?.is_none());

    let r = s
        .txn(Txn::new().and_then([TxnOp::DeletePrefix(b"/tx/m".to_vec())]))
        .await?;
    ensure!(r.results == vec![TxnOpResult::Delete(2)]);
    ensure!(s.range(b"/tx/m", None, 10).await?.kvs.is_empty());

    // A transaction referring to a missing lease changes nothing.
    let before = s.current_revision().await?;
    let bad = Txn::new().and_then([
        TxnOp::put(b"/tx/z1".to_vec(), b"1".to_vec()),
        TxnOp::Put {
            key: b"/tx/z2".to_vec(),
            value: b"2".to_vec(),
            lease: Some(0x7fff_0000_dead),
        },
    ]);
    ensure!(
        matches!(s.txn(bad).await, Err(StoreError::LeaseNotFound(_))),
        "unknown lease refused"
    );
    ensure!(s.get(b"/tx/z1").await?.is_none(), "nothing half-applied");
    ensure!(s.current_revision().await? == before);
    Ok(())
}

async fn watch_live_and_history<S: Store>(s: &S) -> Result<()> {
    let start = s.current_revision().await? + 1;
    let mut live = s.watch(b"/w/", 0).await?;
    s.put(b"/w/a", b"1", None).await?;
    s.put(b"/x/ignored", b"1", None).await?;
    s.put(b"/w/b", b"2", None).await?;
    s.delete(b"/w/a").await?;
    let e1 = next_event(&mut live).await?;
    let e2 = next_event(&mut live).await?;
    let e3 = next_event(&mut live).await?;
    ensure!(e1.kind == EventKind::Put && e1.kv.key == b"/w/a" && e1.kv.value == b"1");
    ensure!(e2.kind == EventKind::Put && e2.kv.key == b"/w/b");
    ensure!(e3.kind == EventKind::Delete && e3.kv.key == b"/w/a");
    ensure!(e1.kv.mod_revision < e2.kv.mod_revision && e2.kv.mod_revision < e3.kv.mod_revision);

    // Watching from a past revision replays the same events.
    let mut replay = s.watch(b"/w/", start).await?;
    for expected in [&e1, &e2, &e3] {
        let e = next_event(&mut replay).await?;
        ensure!(&e == expected, "replay equals live: {e:?} vs {expected:?}");
    }
    Ok(())
}

async fn watch_is_gap_free_under_concurrency<S: Store>(s: &S) -> Result<()> {
    // 3,200 events are written before the watcher reads any: more than the embedded
    // watcher's buffers, so it falls behind and must resume from the log without a gap.
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 400;
    let mut w = s.watch(b"/gf/", 0).await?;
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PER_WRITER {
                revs.push(s.put(format!("/gf/{t}/{i}").as_bytes(), b"v", None).await?);
            }
            Ok::<_, StoreError>(revs)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await??);
    }
    acked.sort_unstable();
    let mut seen = Vec::new();
    while seen.len() < WRITERS * PER_WRITER {
        seen.push(next_event(&mut w).await?.kv.mod_revision);
    }
    ensure!(
        seen.windows(2).all(|p| p[0] < p[1]),
        "events strictly ordered"
    );
    ensure!(
        seen == acked,
        "the watch saw exactly the acknowledged writes"
    );
    Ok(())
}

async fn watch_compacted<S: Store>(s: &S) -> Result<()> {
    let first = s.put(b"/wc/a", b"1", None).await?;
    s.put(b"/wc/a", b"2", None).await?;
    let last = s.put(b"/wc/a", b"3", None).await?;
    s.compact(last).await?;
    let mut w = s.watch(b"/wc/", first).await?;
    match tokio::time::timeout(EVENT_WAIT, w.next()).await {
        Ok(Some(Err(StoreError::Compacted {
            requested,
            compacted,
        }))) => {
            ensure!(
                requested == first && compacted >= last,
                "{requested} {compacted}"
            )
        }
        other => bail!("expected Compacted, got {other:?}"),
    }
    // From the compaction point on, history is still there.
    let mut w = s.watch(b"/wc/", last).await?;
    let e = next_event(&mut w).await?;
    ensure!(e.kv.value == b"3");
    Ok(())
}

async fn leases<S: Store>(s: &S) -> Result<()> {
    let lease = s.lease_grant(Duration::from_secs(30)).await?;
    s.put(b"/ls/a", b"1", Some(lease)).await?;
    s.put(b"/ls/b", b"1", Some(lease)).await?;
    ensure!(s.get(b"/ls/a").await?.context("a")?.lease == Some(lease));
    let ttl = s.lease_keep_alive(lease).await?;
    ensure!(
        ttl >= Duration::from_secs(29),
        "keep-alive reports the TTL: {ttl:?}"
    );
    let mut w = s.watch(b"/ls/", 0).await?;
    s.lease_revoke(lease).await?;
    let mut deleted = [next_event(&mut w).await?, next_event(&mut w).await?];
    deleted.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
    ensure!(deleted.iter().all(|e| e.kind == EventKind::Delete));
    ensure!(deleted[0].kv.key == b"/ls/a" && deleted[1].kv.key == b"/ls/b");
    ensure!(s.get(b"/ls/a").await?.is_none());
    let ka = s.lease_keep_alive(lease).await;
    ensure!(
        matches!(
            ka,
            Err(StoreError::LeaseNotFound(l)) if l == lease
        ),
        "keep-alive of a revoked lease: {ka:?}"
    );
    ensure!(matches!(
        s.put(b"/ls/c", b"1", Some(lease)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    ensure!(matches!(
        s.lease_revoke(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    ensure!(matches!(
        s.lease_grant(Duration::ZERO).await,
        Err(StoreError::InvalidArgument(_))
    ));

    // A lease that is not kept alive expires and takes its keys (etcd's minimum TTL is
    // about 2 s, so ask for that). Bounded wait, not a timing assertion.
    let short = s.lease_grant(Duration::from_secs(2)).await?;
    s.put(b"/ls/short", b"1", Some(short)).await?;
    let mut w = s.watch(b"/ls/short", 0).await?;
    let e = match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
        Ok(Some(Ok(e))) => e,
        other => bail!("expected the expiry delete event, got {other:?}"),
    };
    ensure!(e.kind == EventKind::Delete);
    ensure!(s.get(b"/ls/short").await?.is_none());
    ensure!(matches!(
        s.lease_keep_alive(short).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    Ok(())
}

async fn typed_layer<S: Store>(s: &S) -> Result<()> {
    let t = Typed::new(s.clone());
    let site = Site::new(
        SiteId::new("cork-1")?,
        OperatorId::new("op-a")?,
        "cork",
        ZoneId::new("cork-z1")?,
        GeoPoint::new(51.9, -8.47)?,
        Resources::parse("cpu=8,memory=16Gi,sessions=500")?,
    )?;
    let rev = t.create(&site).await?;
    ensure!(matches!(
        t.create(&site).await,
        Err(TypedError::AlreadyExists { .. })
    ));
    let got = t.get::<Site>("cork-1").await?.context("site stored")?;
    ensure!(got.value == site && got.revision == rev);
    ensure!(
        s.get(b"/mecfed/v1/sites/cork-1").await?.is_some(),
        "key layout /mecfed/v1/<kind>/<id>"
    );

    let mut changed = site.clone();
    changed.region = "munster".into();
    let rev2 = t.update(&changed, rev).await?;
    match t.update(&site, rev).await {
        Err(TypedError::Conflict {
            expected, actual, ..
        }) => ensure!(expected == rev && actual == rev2),
        other => bail!("stale update must conflict, got {other:?}"),
    }
    ensure!(
        t.get::<Site>("cork-1")
            .await?
            .context("still there")?
            .value
            .region
            == "munster",
        "a refused update loses nothing"
    );
    let mut ghost = site.clone();
    ghost.id = SiteId::new("ghost")?;
    ensure!(matches!(
        t.update(&ghost, 1).await,
        Err(TypedError::NotFound { .. })
    ));
    let (all, _) = t.list::<Site>().await?;
    ensure!(all.len() == 1 && all[0].value.region == "munster");
    ensure!(matches!(
        t.delete::<Site>("cork-1", Some(rev)).await,
        Err(TypedError::Conflict { .. })
    ));
    ensure!(t.delete::<Site>("cork-1", Some(rev2)).await?);
    ensure!(t.get::<Site>("cork-1").await?.is_none());
    Ok(())
}

async fn leader_election<S: Store>(s: &S) -> Result<()> {
    let key = b"/el/leader".to_vec();
    let ttl = Duration::from_secs(5);
    let mut a = Election::new(s.clone(), key.clone(), "a", ttl);
    let mut b = Election::new(s.clone(), key.clone(), "b", ttl);
    ensure!(a.campaign().await?, "a takes the free key");
    ensure!(!b.campaign().await?, "b does not while a holds it");
    ensure!(a.campaign().await?, "a keeps it");
    ensure!(s.get(&key).await?.context("held")?.value == b"a");
    a.resign().await?;
    ensure!(s.get(&key).await?.is_none(), "the key goes with the lease");
    ensure!(b.campaign().await?, "b takes it once a resigned");
    ensure!(!a.campaign().await?, "a does not get it back");
    // The key deleted by hand: the holder notices and takes it again.
    s.delete(&key).await?;
    ensure!(b.campaign().await?, "b re-takes a deleted key");
    ensure!(s.get(&key).await?.context("held")?.value == b"b");
    b.resign().await?;
    Ok(())
}

async fn run_suite<S: Store>(s: S) {
    let mut failed = Vec::new();
    macro_rules! case {
        ($name:ident) => {
            if let Err(e) = $name(&s).await {
                failed.push(format!("{}: {e:#}", stringify!($name)));
            }
        };
    }
    case!(put_get_and_revisions);
    case!(delete_semantics);
    case!(range_paging);
    case!(transactions);
    case!(watch_live_and_history);
    case!(watch_is_gap_free_under_concurrency);
    case!(typed_layer);
    case!(leases);
    case!(leader_election);
    // Compaction last: it removes history the other cases may replay.
    case!(watch_compacted);
    assert!(
        failed.is_empty(),
        "conformance failures:\n{}",
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_path(dir.path().join("state.redb")).unwrap();
    run_suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance() {
    let etcd = EtcdProcess::start().expect("a real etcd must start (scripts/test installs it)");
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    run_suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (rev, lease) = {
        let s = EmbeddedStore::open_path(&path).unwrap();
        s.put(b"/r/a", b"1", None).await.unwrap();
        let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
        s.put(b"/r/b", b"2", Some(lease)).await.unwrap();
        (s.current_revision().await.unwrap(), lease)
    };
    let s = EmbeddedStore::open_path(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.get(b"/r/a").await.unwrap().unwrap().value, b"1");
    // Leases survive a restart with their TTL restarted.
    assert_eq!(
        s.lease_keep_alive(lease).await.unwrap(),
        Duration::from_secs(60)
    );
    // History survives too.
    let mut w = s.watch(b"/r/", 1).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().kv.key, b"/r/a");
    assert_eq!(w.next().await.unwrap().unwrap().kv.key, b"/r/b");
    // New revisions continue from the old ones.
    assert_eq!(s.put(b"/r/c", b"3", None).await.unwrap(), rev + 1);
}

/// `watch(prefix, 0)` means after the call, not after the watch task first runs: writes made
/// in between (here from another thread while this one cannot run the task) are delivered.
#[tokio::test(flavor = "current_thread")]
async fn embedded_watch_from_now_starts_at_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open_path(dir.path().join("w.redb")).unwrap();
    s.put(b"/n/before", b"0", None).await.unwrap();
    let mut w = s.watch(b"/n/", 0).await.unwrap();
    let writer = s.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                writer.put(b"/n/a", b"1", None).await.unwrap();
                writer.put(b"/n/b", b"2", None).await.unwrap();
            });
    })
    .join()
    .unwrap();
    let a = next_event(&mut w).await.unwrap();
    let b = next_event(&mut w).await.unwrap();
    assert_eq!(
        (a.kv.key.as_slice(), b.kv.key.as_slice()),
        (&b"/n/a"[..], &b"/n/b"[..])
    );
}
