//! Typed documents on top of a [`Store`]: JSON values under `/mecfed/v1/<kind>/<id>`, with
//! optimistic concurrency through the key's modification revision.

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::{Compare, Revision, Store, StoreError, Txn, TxnOp, TxnOpResult};

/// The root of every mecfed key.
pub const KEY_ROOT: &str = "/mecfed/v1/";

/// Page size used when listing.
const LIST_PAGE: usize = 500;

/// A kind of document kept in the store.
pub trait Resource: Serialize + DeserializeOwned + Send + Sync {
    /// Plural kind, one key segment (e.g. `sites`).
    const KIND: &'static str;
    /// The document's id within its kind; may contain `/` to nest (e.g. `app/site`).
    fn id(&self) -> String;
}

/// The key of `id` of kind `R`.
pub fn key<R: Resource>(id: &str) -> Vec<u8> {
    format!("{KEY_ROOT}{}/{id}", R::KIND).into_bytes()
}

/// The key prefix of every `R`.
pub fn kind_prefix<R: Resource>() -> Vec<u8> {
    format!("{KEY_ROOT}{}/", R::KIND).into_bytes()
}

/// A document with the revision it was last modified at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The document.
    pub value: T,
    /// Its modification revision, to pass back to [`Typed::update`].
    pub revision: Revision,
}

/// Why a typed operation failed.
#[derive(Debug, Error)]
pub enum TypedError {
    /// No such document.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Id.
        id: String,
    },
    /// A create found the document already there.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// Kind.
        kind: &'static str,
        /// Id.
        id: String,
    },
    /// An update's expected revision is stale.
    #[error("{kind} {id:?} changed: expected revision {expected}, found {actual}")]
    Conflict {
        /// Kind.
        kind: &'static str,
        /// Id.
        id: String,
        /// Revision the caller read.
        expected: Revision,
        /// Revision now stored.
        actual: Revision,
    },
    /// The stored JSON does not decode as the kind.
    #[error("{kind} at {key:?} does not decode")]
    Decode {
        /// Kind.
        kind: &'static str,
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The document does not encode (should not happen for mecfed's types).
    #[error("{kind} does not encode")]
    Encode {
        /// Kind.
        kind: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Typed access to a store.
#[derive(Debug, Clone)]
pub struct Typed<S> {
    store: S,
}

fn decode<R: Resource>(key: &[u8], bytes: &[u8]) -> Result<R, TypedError> {
    serde_json::from_slice(bytes).map_err(|source| TypedError::Decode {
        kind: R::KIND,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<R: Resource>(r: &R) -> Result<Vec<u8>, TypedError> {
    serde_json::to_vec(r).map_err(|source| TypedError::Encode {
        kind: R::KIND,
        source,
    })
}

impl<S: Store> Typed<S> {
    /// Typed access over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads one document.
    pub async fn get<R: Resource>(&self, id: &str) -> Result<Option<Versioned<R>>, TypedError> {
        let k = key::<R>(id);
        match self.store.get(&k).await? {
            Some(kv) => Ok(Some(Versioned {
                value: decode(&k, &kv.value)?,
                revision: kv.mod_revision,
            })),
            None => Ok(None),
        }
    }

    /// Lists every document of a kind, in id order, with the revision of the last page read.
    pub async fn list<R: Resource>(&self) -> Result<(Vec<Versioned<R>>, Revision), TypedError> {
        let prefix = kind_prefix::<R>();
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .range(&prefix, after.as_deref(), LIST_PAGE)
                .await?;
            for kv in &page.kvs {
                out.push(Versioned {
                    value: decode(&kv.key, &kv.value)?,
                    revision: kv.mod_revision,
                });
            }
            if !page.more {
                return Ok((out, page.revision));
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
    }

    /// Creates a document; [`TypedError::AlreadyExists`] when its id is taken.
    pub async fn create<R: Resource>(&self, r: &R) -> Result<Revision, TypedError> {
        let id = r.id();
        let k = key::<R>(&id);
        let txn = Txn::new()
            .when([Compare::absent(k.clone())])
            .and_then([TxnOp::put(k, encode(r)?)]);
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else {
            Err(TypedError::AlreadyExists { kind: R::KIND, id })
        }
    }

    /// Replaces a document if it is still at `expected`; [`TypedError::Conflict`] when it
    /// moved, [`TypedError::NotFound`] when it is gone.
    pub async fn update<R: Resource>(
        &self,
        r: &R,
        expected: Revision,
    ) -> Result<Revision, TypedError> {
        let id = r.id();
        let k = key::<R>(&id);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), expected)])
            .and_then([TxnOp::put(k.clone(), encode(r)?)])
            .or_else([TxnOp::Get(k)]);
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        match resp.results.first() {
            Some(TxnOpResult::Get(Some(kv))) => Err(TypedError::Conflict {
                kind: R::KIND,
                id,
                expected,
                actual: kv.mod_revision,
            }),
            _ => Err(TypedError::NotFound { kind: R::KIND, id }),
        }
    }

    /// Writes a document whatever is stored (create or replace).
    pub async fn put<R: Resource>(&self, r: &R) -> Result<Revision, TypedError> {
        Ok(self
            .store
            .put(&key::<R>(&r.id()), &encode(r)?, None)
            .await?)
    }

    /// Writes a document attached to `lease`: it vanishes when the lease expires.
    pub async fn put_leased<R: Resource>(
        &self,
        r: &R,
        lease: crate::LeaseId,
    ) -> Result<Revision, TypedError> {
        Ok(self
            .store
            .put(&key::<R>(&r.id()), &encode(r)?, Some(lease))
            .await?)
    }

    /// Deletes a document, only if still at `expected` when given. Returns whether it existed.
    pub async fn delete<R: Resource>(
        &self,
        id: &str,
        expected: Option<Revision>,
    ) -> Result<bool, TypedError> {
        let k = key::<R>(id);
        let Some(expected) = expected else {
            return Ok(self.store.delete(&k).await?);
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), expected)])
            .and_then([TxnOp::Delete(k.clone())])
            .or_else([TxnOp::Get(k)]);
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            return Ok(true);
        }
        match resp.results.first() {
            Some(TxnOpResult::Get(Some(kv))) => Err(TypedError::Conflict {
                kind: R::KIND,
                id: id.to_string(),
                expected,
                actual: kv.mod_revision,
            }),
            _ => Ok(false),
        }
    }
}

// === resources of mecfed-core ===

/// Implements [`Resource`] for a core type whose `id` field is its document id.
macro_rules! resource_by_id {
    ($($ty:ty => $kind:literal),* $(,)?) => {$(
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            fn id(&self) -> String {
                self.id.to_string()
            }
        }
    )*};
}

resource_by_id!(
    mecfed_core::Site => "sites",
    mecfed_core::App => "apps",
    mecfed_core::Instance => "instances",
    mecfed_core::Ue => "ues",
    mecfed_core::Session => "sessions",
);

/// Placements nest under their app: `placements/<app>/<site>`.
impl Resource for mecfed_core::Placement {
    const KIND: &'static str = "placements";
    fn id(&self) -> String {
        format!("{}/{}", self.app, self.site)
    }
}
