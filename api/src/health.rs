//! Which of the process's engines (scheduler, notifier, reporters, event engines) still
//! run: an engine task that returns or panics before shutdown is recorded dead with its
//! reason, and `/ready` then fails with it ([`crate::AdminState::with_health`]).

use std::{collections::BTreeMap, future::Future, sync::Arc};

use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle};

/// The engines of one process and their state. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    engines: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl Health {
    /// A registry with no engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `name` running.
    pub fn running(&self, name: &'static str) {
        self.engines.lock().insert(name, None);
    }

    /// Records `name` dead because of `why`.
    pub fn dead(&self, name: &'static str, why: impl Into<String>) {
        self.engines.lock().insert(name, Some(why.into()));
    }

    /// `Ok` with the running engines' names when none is dead; else `Err` naming every dead
    /// engine with its reason.
    pub fn check(&self) -> Result<String, String> {
        let engines = self.engines.lock();
        let dead: Vec<String> = engines
            .iter()
            .filter_map(|(n, why)| why.as_ref().map(|w| format!("engine {n} died: {w}")))
            .collect();
        if dead.is_empty() {
            let names: Vec<&str> = engines.keys().copied().collect();
            Ok(format!("engines running: {}", names.join(", ")))
        } else {
            Err(dead.join("; "))
        }
    }

    /// Spawns engine `name`; if it returns or panics while `stopping` is still false, it is
    /// recorded dead (and logged). The handle resolves when the engine ended.
    pub fn spawn<F>(
        &self,
        name: &'static str,
        stopping: watch::Receiver<bool>,
        engine: F,
    ) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running(name);
        let health = self.clone();
        let task = tokio::spawn(engine);
        tokio::spawn(async move {
            let outcome = task.await;
            if *stopping.borrow() {
                return;
            }
            let why = match outcome {
                Ok(()) => "returned before shutdown".to_string(),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    format!("panicked: {msg}")
                }
                Err(e) => format!("cancelled: {e}"),
            };
            tracing::error!(engine = name, reason = %why, "engine died");
            health.dead(name, why);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_engine_is_recorded_dead_and_a_stopped_one_is_not() {
        let health = Health::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let ok = health.spawn("quiet", stop_rx.clone(), std::future::pending());
        let bad = health.spawn("boom", stop_rx.clone(), async {
            panic!("overflow when adding duration to instant");
        });
        bad.await.unwrap();
        let err = health.check().unwrap_err();
        assert!(err.contains("boom") && err.contains("overflow"), "{err}");
        assert!(!err.contains("quiet"), "{err}");

        let health = Health::new();
        let (tx2, rx2) = watch::channel(false);
        let ends = health.spawn("ends", rx2, async {});
        ends.await.unwrap();
        assert!(
            health
                .check()
                .unwrap_err()
                .contains("returned before shutdown")
        );
        drop(tx2);

        let health = Health::new();
        let mut rx = stop_rx.clone();
        let quits = health.spawn("quits", stop_rx, async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        stop_tx.send(true).unwrap();
        quits.await.unwrap();
        assert_eq!(health.check(), Ok("engines running: quits".to_string()));
        ok.abort();
    }
}
