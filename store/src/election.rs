//! Leader election on any [`Store`]: the leader holds a key attached to a lease it keeps
//! alive; when it stops (or stalls past the TTL) the key vanishes with the lease and another
//! candidate takes it. One holder at a time, by a create-if-absent transaction.

use std::time::Duration;

use crate::{Compare, LeaseId, Result, Store, StoreError, Txn, TxnOp};

/// One candidate for a leadership key.
#[derive(Debug)]
pub struct Election<S> {
    store: S,
    key: Vec<u8>,
    id: String,
    ttl: Duration,
    lease: Option<LeaseId>,
}

impl<S: Store> Election<S> {
    /// A candidate named `id` for `key`, holding it on a lease of `ttl`.
    pub fn new(store: S, key: impl Into<Vec<u8>>, id: impl Into<String>, ttl: Duration) -> Self {
        Self {
            store,
            key: key.into(),
            id: id.into(),
            ttl,
            lease: None,
        }
    }

    /// The candidate's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keeps the leadership alive, or tries to take it. Returns whether this candidate leads
    /// now. Call it more often than every third of the TTL.
    pub async fn campaign(&mut self) -> Result<bool> {
        if let Some(lease) = self.lease {
            match self.store.lease_keep_alive(lease).await {
                Ok(_) => {
                    // The key may have been deleted by hand: lead only while it is ours.
                    if let Some(kv) = self.store.get(&self.key).await?
                        && kv.value == self.id.as_bytes()
                        && kv.lease == Some(lease)
                    {
                        return Ok(true);
                    }
                    let _ = self.store.lease_revoke(lease).await;
                    self.lease = None;
                }
                Err(StoreError::LeaseNotFound(_)) => self.lease = None,
                Err(e) => return Err(e),
            }
        }
        let lease = self.store.lease_grant(self.ttl).await?;
        let txn = Txn::new()
            .when([Compare::absent(self.key.clone())])
            .and_then([TxnOp::Put {
                key: self.key.clone(),
                value: self.id.as_bytes().to_vec(),
                lease: Some(lease),
            }]);
        match self.store.txn(txn).await {
            Ok(r) if r.succeeded => {
                self.lease = Some(lease);
                Ok(true)
            }
            Ok(_) => {
                let _ = self.store.lease_revoke(lease).await;
                Ok(false)
            }
            Err(e) => {
                let _ = self.store.lease_revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Gives the leadership up at once (the key goes with the lease).
    pub async fn resign(&mut self) -> Result<()> {
        if let Some(lease) = self.lease.take() {
            self.store.lease_revoke(lease).await?;
        }
        Ok(())
    }
}
