//! Choosing a backend at run time.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use crate::{
    EmbeddedConfig, EmbeddedStore, EtcdStore, KeyValue, LeaseId, Page, Result, Revision, Store,
    Txn, TxnResponse, Watcher,
};

/// Where the state lives: `etcd://host:port[,host:port...]`, or a directory for the embedded
/// store (`embedded:///path`, `embedded:relative/path` or a plain path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// Embedded store in this data directory (database file `state.redb` inside it).
    Embedded(PathBuf),
    /// etcd cluster endpoints as `http://host:port`.
    Etcd(Vec<String>),
}

/// A malformed [`StoreUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store URL {url:?}: {reason}")]
pub struct StoreUrlError {
    url: String,
    reason: &'static str,
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| StoreUrlError {
            url: s.to_string(),
            reason,
        };
        if let Some(rest) = s.strip_prefix("etcd://") {
            let eps: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| format!("http://{e}"))
                .collect();
            if eps.is_empty() {
                return Err(err("names no endpoint; use etcd://host:port[,host:port]"));
            }
            for e in &eps {
                let hostport = &e["http://".len()..];
                match hostport.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                    _ => return Err(err("each endpoint must be host:port")),
                }
            }
            return Ok(Self::Etcd(eps));
        }
        let path = s
            .strip_prefix("embedded://")
            .or_else(|| s.strip_prefix("embedded:"))
            .unwrap_or(s);
        if path.is_empty() {
            return Err(err("names no directory"));
        }
        if s.contains("://") && !s.starts_with("embedded://") {
            return Err(err("unknown scheme; use etcd:// or embedded://"));
        }
        Ok(Self::Embedded(PathBuf::from(path)))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(p) => write!(f, "embedded://{}", p.display()),
            Self::Etcd(eps) => {
                let hosts: Vec<&str> = eps
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

/// Either backend, picked at run time.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The embedded store.
    Embedded(EmbeddedStore),
    /// etcd.
    Etcd(Box<EtcdStore>),
}

impl AnyStore {
    /// Opens the store `url` names.
    pub async fn open(url: &StoreUrl) -> Result<Self> {
        Ok(match url {
            StoreUrl::Embedded(dir) => Self::Embedded(EmbeddedStore::open(EmbeddedConfig::new(
                dir.join("state.redb"),
            ))?),
            StoreUrl::Etcd(eps) => Self::Etcd(Box::new(EtcdStore::connect(eps).await?)),
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Embedded($s) => $e.await,
            AnyStore::Etcd($s) => $e.await,
        }
    };
}

impl Store for AnyStore {
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        delegate!(self, s => s.get(key))
    }
    async fn range(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page> {
        delegate!(self, s => s.range(prefix, after, limit))
    }
    async fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        delegate!(self, s => s.put(key, value, lease))
    }
    async fn delete(&self, key: &[u8]) -> Result<bool> {
        delegate!(self, s => s.delete(key))
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        delegate!(self, s => s.txn(txn))
    }
    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<Watcher> {
        delegate!(self, s => s.watch(prefix, from))
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        delegate!(self, s => s.lease_grant(ttl))
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        delegate!(self, s => s.lease_keep_alive(lease))
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        delegate!(self, s => s.lease_revoke(lease))
    }
    async fn current_revision(&self) -> Result<Revision> {
        delegate!(self, s => s.current_revision())
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        delegate!(self, s => s.compact(revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            "etcd://127.0.0.1:2379,h2:22379"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://h2:22379".into()
            ])
        );
        assert_eq!(
            "./mecfed-data".parse::<StoreUrl>().unwrap(),
            StoreUrl::Embedded("./mecfed-data".into())
        );
        assert_eq!(
            "embedded:///var/lib/mecfed".parse::<StoreUrl>().unwrap(),
            StoreUrl::Embedded("/var/lib/mecfed".into())
        );
        assert!("etcd://".parse::<StoreUrl>().is_err());
        assert!("etcd://host".parse::<StoreUrl>().is_err());
        assert!("redis://x:1".parse::<StoreUrl>().is_err());
        let u: StoreUrl = "etcd://a:1,b:2".parse().unwrap();
        assert_eq!(u.to_string(), "etcd://a:1,b:2");
    }
}
