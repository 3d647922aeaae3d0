//! A real three-member etcd cluster losing its leader: after the election every request
//! succeeds (the client leaves the dead member), a watch opened before the loss goes on
//! without a gap, and leases and leader elections keep working; then the member comes back.
//!
//! The counts of failed requests during and after the election are printed (the figures in
//! docs/benchmarks.md); the test asserts that none fails after the election.

use std::time::{Duration, Instant};

use mecfed_store::{
    Compare, Election, EtcdStore, EventKind, Store, Txn, TxnOp, testing::EtcdCluster,
};

/// The index of the member that leads the cluster.
async fn leader(endpoints: &[String]) -> usize {
    for (i, ep) in endpoints.iter().enumerate() {
        let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else {
            continue;
        };
        if let Ok(st) = c.status().await
            && st.header().is_some_and(|h| h.member_id() == st.leader())
        {
            return i;
        }
    }
    panic!("no member says it leads");
}

/// One guarded write, one read and one lease round: whether all succeeded.
async fn round(store: &EtcdStore, i: u64) -> bool {
    let key = format!("/t/k{}", i % 16).into_bytes();
    let write = async {
        let cur = store.get(&key).await?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                cur.map_or(0, |kv| kv.mod_revision),
            )])
            .and_then([TxnOp::put(key.clone(), i.to_string())]);
        store.txn(txn).await?;
        store.range(b"/t/", None, 100).await?;
        let lease = store.lease_grant(Duration::from_secs(5)).await?;
        store.lease_keep_alive(lease).await?;
        store.lease_revoke(lease).await?;
        Ok::<_, mecfed_store::StoreError>(())
    };
    write.await.is_ok()
}

#[tokio::test]
async fn the_cluster_serves_through_the_loss_of_its_leader() {
    let mut cluster = EtcdCluster::start(3).expect("a real three-member etcd cluster must start");
    let endpoints = cluster.endpoints();
    let store = EtcdStore::connect(&endpoints).await.unwrap();
    let mut watch = store.watch(b"/w/", 0).await.unwrap();
    for i in 0..20 {
        assert!(round(&store, i).await, "before the loss");
    }
    store.put(b"/w/before", b"1", None).await.unwrap();

    // Kill the leader: the client's first member is the worst case, so make it the leader.
    let dead = leader(&endpoints).await;
    let store = if dead == 0 {
        store
    } else {
        let mut order = endpoints.clone();
        order.swap(0, dead);
        EtcdStore::connect(&order).await.unwrap()
    };
    assert!(round(&store, 0).await);
    cluster.member(dead).kill().unwrap();
    let killed = Instant::now();

    // During the election: requests may fail, until one succeeds (bounded).
    let mut during = (0u32, 0u32);
    loop {
        during.0 += 1;
        if round(&store, u64::from(during.0)).await {
            break;
        }
        during.1 += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no request succeeded within 30 s of losing the leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elected = killed.elapsed();

    // After it: every request succeeds.
    let mut after = (0u32, 0u32);
    for i in 0..300 {
        after.0 += 1;
        if !round(&store, i).await {
            after.1 += 1;
        }
    }
    eprintln!(
        "etcd leader loss: {}/{} rounds failed until the first success {elected:?} after the kill; \
         {}/{} failed after it",
        during.1, during.0, after.1, after.0
    );
    assert_eq!(after.1, 0, "requests failed after the election");

    // Leader election on the store keeps working.
    let mut a = Election::new(
        store.clone(),
        b"/t/leader".to_vec(),
        "a",
        Duration::from_secs(5),
    );
    let mut b = Election::new(
        store.clone(),
        b"/t/leader".to_vec(),
        "b",
        Duration::from_secs(5),
    );
    assert!(a.campaign().await.unwrap());
    assert!(!b.campaign().await.unwrap());
    assert!(a.campaign().await.unwrap());
    a.resign().await.unwrap();
    assert!(b.campaign().await.unwrap());

    // The watch opened before the loss delivers what came before and after it, in order.
    store.put(b"/w/after", b"2", None).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, watch.next())
            .await
            .expect("the watch went silent after the loss")
            .expect("the watch ended")
            .unwrap();
        assert_eq!(ev.kind, EventKind::Put);
        seen.push(String::from_utf8(ev.kv.key).unwrap());
    }
    assert_eq!(seen, ["/w/before", "/w/after"]);

    // The member comes back and the cluster serves on.
    cluster.restart(dead).unwrap();
    for i in 0..20 {
        assert!(round(&store, i).await, "after the member's return");
    }
}
