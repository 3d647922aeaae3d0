use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::StoreError;

/// A store revision: a logical clock that every mutation advances by one. Starts at 1.
pub type Revision = u64;

/// A lease id.
pub type LeaseId = i64;

/// A stored key with its value and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in delete events).
    pub value: Vec<u8>,
    /// Revision of the put that created the key.
    pub create_revision: Revision,
    /// Revision of the last change to the key.
    pub mod_revision: Revision,
    /// Number of puts since creation (1 after the first).
    pub version: u64,
    /// Lease the key is attached to.
    pub lease: Option<LeaseId>,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted (explicitly or by lease expiry).
    Delete,
}

/// One change, as a watch delivers it. `kv.mod_revision` is the revision of the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for deletes the value is empty and `mod_revision` is the
    /// deletion's revision.
    pub kv: KeyValue,
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys in order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys follow.
    pub more: bool,
    /// Store revision when read.
    pub revision: Revision,
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value bytes. A missing key never compares true.
    Value(Vec<u8>),
    /// The version (0 when missing).
    Version(u64),
    /// The creation revision (0 when missing).
    CreateRevision(Revision),
    /// The last modification revision (0 when missing).
    ModRevision(Revision),
}

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// Stored == given.
    Equal,
    /// Stored != given.
    NotEqual,
    /// Stored > given.
    Greater,
    /// Stored < given.
    Less,
}

/// A guard of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// Key compared.
    pub key: Vec<u8>,
    /// Operator.
    pub op: CompareOp,
    /// Field and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// `key`'s field `target` compared with `op`.
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Self {
            key: key.into(),
            op,
            target,
        }
    }

    /// Holds when `key` does not exist.
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::CreateRevision(0))
    }

    /// Holds when `key` was last modified at `rev`.
    pub fn mod_revision(key: impl Into<Vec<u8>>, rev: Revision) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(rev))
    }

    /// Evaluates against the stored key (`None` when missing). The one definition of compare
    /// semantics, shared by the embedded backend and the tests.
    pub fn holds(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord: Ordering = match (&self.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }
}

/// An operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Read one key.
    Get(Vec<u8>),
    /// Write one key.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Lease to attach.
        lease: Option<LeaseId>,
    },
    /// Delete one key.
    Delete(Vec<u8>),
    /// Delete every key under a prefix.
    DeletePrefix(Vec<u8>),
}

impl TxnOp {
    /// A put without lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
}

/// A transaction: if every compare holds, run `success`, else run `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Guards (all must hold).
    pub compares: Vec<Compare>,
    /// Operations when they hold.
    pub success: Vec<TxnOp>,
    /// Operations when one fails.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds guards.
    #[must_use]
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds operations run when the guards hold.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations run when a guard fails.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one [`TxnOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// Result of a get.
    Get(Option<KeyValue>),
    /// A put happened.
    Put,
    /// Number of keys deleted.
    Delete(u64),
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the guards held.
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: Revision,
    /// One result per executed operation.
    pub results: Vec<TxnOpResult>,
}

/// A stream of changes from [`crate::Store::watch`]. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    pub(crate) rx: mpsc::Receiver<Result<Event, StoreError>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// The next change, in revision order. `None` when the store shut down; after an error
    /// the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.recv().await
    }

    /// The next change if one has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is
/// none (empty prefix or all `0xff`), meaning "to the end".
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn compare_semantics_on_missing_keys() {
        assert!(Compare::absent("k").holds(None));
        assert!(!Compare::new("k", CompareOp::Equal, CompareTarget::Value(vec![])).holds(None));
        assert!(!Compare::new("k", CompareOp::NotEqual, CompareTarget::Value(vec![])).holds(None));
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            lease: None,
        };
        assert!(!Compare::absent("k").holds(Some(&kv)));
        assert!(Compare::mod_revision("k", 5).holds(Some(&kv)));
        assert!(Compare::new("k", CompareOp::Greater, CompareTarget::Version(1)).holds(Some(&kv)));
        assert!(
            Compare::new("k", CompareOp::Less, CompareTarget::Value(b"w".to_vec()))
                .holds(Some(&kv))
        );
    }
}
