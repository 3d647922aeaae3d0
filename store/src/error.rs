use thiserror::Error;

use crate::{LeaseId, Revision};

/// An erased error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A watch asked for history that compaction removed.
    #[error("revision {requested} was compacted (history starts after {compacted})")]
    Compacted {
        /// Revision asked for.
        requested: Revision,
        /// Last compacted revision.
        compacted: Revision,
    },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// The request itself is invalid (empty key, zero TTL, ...).
    #[error("invalid request: {0}")]
    InvalidArgument(&'static str),
    /// The backend could not be reached; retrying later may succeed.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend failed (disk, database, protocol).
    #[error("store backend failed")]
    Backend(#[source] BoxError),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt")]
    Corrupt(#[source] BoxError),
    /// The store was shut down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Closed)
    }

    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Compacted { .. } => "compacted",
            Self::LeaseNotFound(_) => "lease_not_found",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Unavailable(_) => "unavailable",
            Self::Backend(_) => "backend",
            Self::Corrupt(_) => "corrupt",
            Self::Closed => "closed",
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Backend(Box::new(e))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Backend(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);
