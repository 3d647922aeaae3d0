//! Prometheus metrics around any [`Store`].

use std::{future::Future, time::Duration};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::{KeyValue, LeaseId, Page, Result, Revision, Store, Txn, TxnResponse, Watcher};

/// Store operation metrics: `mecfed_store_operation_duration_seconds{op}` and
/// `mecfed_store_errors_total{op,kind}`.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    duration: HistogramVec,
    errors: IntCounterVec,
}

impl StoreMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mecfed_store_operation_duration_seconds",
                "Latency of state store operations",
            )
            .buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("mecfed_store_errors_total", "Failed state store operations"),
            &["op", "kind"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self { duration, errors })
    }
}

/// A store that records [`StoreMetrics`] for every call.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: StoreMetrics,
}

impl<S: Store> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn observe<T>(&self, op: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        let timer = self.metrics.duration.with_label_values(&[op]).start_timer();
        let res = f.await;
        timer.observe_duration();
        if let Err(e) = &res {
            self.metrics.errors.with_label_values(&[op, e.kind()]).inc();
        }
        res
    }
}

impl<S: Store> Store for Metered<S> {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.observe("get", self.inner.get(key)).await
    }
    async fn range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page> {
        self.observe("range", self.inner.range(prefix, after, limit))
            .await
    }
    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        self.observe("put", self.inner.put(key, value, lease)).await
    }
    async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.observe("delete", self.inner.delete(key)).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.observe("txn", self.inner.txn(txn)).await
    }
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher> {
        self.observe("watch", self.inner.watch(prefix, from)).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.observe("lease_grant", self.inner.lease_grant(ttl))
            .await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.observe("lease_keep_alive", self.inner.lease_keep_alive(lease))
            .await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.observe("lease_revoke", self.inner.lease_revoke(lease))
            .await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.observe("current_revision", self.inner.current_revision())
            .await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.observe("compact", self.inner.compact(revision)).await
    }
}
