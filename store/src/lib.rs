//! The mecfed state store: every controller's desired and observed state lives here.
//!
//! [`Store`] is modelled on the etcd v3 API: keys and values are bytes; every mutation bumps a
//! global [`Revision`]; [`Txn`]s compare on value, version or revisions and then apply one of
//! two operation lists atomically; watches stream every change from a revision, in order and
//! without gaps, and fail with [`StoreError::Compacted`] when that history is gone; leases
//! expire unless kept alive and take their attached keys with them.
//!
//! Two backends implement it: [`EmbeddedStore`] (redb on local disk, fsync before every
//! acknowledgement, group commit) and [`EtcdStore`] (a real etcd cluster through
//! `etcd-client`). [`AnyStore`] picks one at run time from a URL; [`Metered`] adds Prometheus
//! metrics to any store; [`typed`] stores JSON documents under `/mecfed/v1/<kind>/<id>` with
//! optimistic concurrency.
//!
//! Architecture Invariant: this is the only crate that knows about etcd or redb.

mod any;
mod election;
mod embedded;
mod error;
mod etcd;
mod metered;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod typed;
mod types;
mod wal;

pub use any::{AnyStore, StoreUrl};
pub use election::Election;
pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use error::{BoxError, StoreError};
pub use etcd::EtcdStore;
pub use metered::{Metered, StoreMetrics};
pub use types::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, LeaseId, Page, Revision, Txn,
    TxnOp, TxnOpResult, TxnResponse, Watcher, prefix_end,
};

use std::{future::Future, time::Duration};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key-value state store with revisions, transactions, watches and leases.
///
/// Clones share one connection or database.
pub trait Store: Clone + Send + Sync + 'static {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<KeyValue>>> + Send;

    /// Up to `limit` keys starting with `prefix`, in key order, strictly after `after` when
    /// given. [`Page::more`] says whether keys remain; [`Page::revision`] is the store
    /// revision the page was read at.
    fn range(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// Stores `value` under `key`, attached to `lease` when given. Returns the new revision.
    fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<Revision>> + Send;

    /// Deletes `key`. Returns whether it existed.
    fn delete(&self, key: &[u8]) -> impl Future<Output = Result<bool>> + Send;

    /// Runs a transaction atomically.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnResponse>> + Send;

    /// Streams every change to keys under `prefix` with revision `>= from`; `from == 0`
    /// means changes after now. Resumes by itself after lost connections; yields
    /// [`StoreError::Compacted`] (then ends) when `from` is no longer in the history.
    fn watch(&self, prefix: &[u8], from: Revision) -> impl Future<Output = Result<Watcher>> + Send;

    /// Grants a lease of `ttl` (whole seconds, at least one).
    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId>> + Send;

    /// Refreshes a lease. Returns its TTL; [`StoreError::LeaseNotFound`] once it expired.
    fn lease_keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<Duration>> + Send;

    /// Revokes a lease and deletes its keys.
    fn lease_revoke(&self, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// The current revision.
    fn current_revision(&self) -> impl Future<Output = Result<Revision>> + Send;

    /// Drops history before `revision`; watches from earlier revisions then fail.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send;
}
