//! The deployed zones and pins of CAMARA apps ([`App::zones`], [`App::pins`]), derived from
//! their app instances (`camarainstances/`) by a level-triggered controller: the handlers
//! write only the records, and this writes each app's zones and pins as the union of its
//! records' (`lifecycle::zones_of`). A crash between the two loses nothing: at
//! start the controller compares every CAMARA app with its records again.
//!
//! Watches: `camarainstances/`. Writes: `apps/<id>` (zones and pins only, guarded by the
//! app's revision). Reads on start: `camaraapps/`, `camarainstances/`. Only the elected
//! leader runs it.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use mecfed_core::{App, AppId};
use mecfed_store::{
    EventKind, Store,
    typed::{self, KEY_ROOT, Typed, TypedError},
};

use super::{
    eam::CamaraApp,
    lifecycle::{CamaraInstance, zones_of},
};
use crate::ApiError;

/// The CAMARA zone controller; see the module docs.
pub struct ZoneSync<S> {
    store: Typed<S>,
    leader_ttl: Duration,
}

/// The records in memory, by id and by app, with the revision of each one's last change.
#[derive(Default)]
struct Records {
    by_id: HashMap<String, CamaraInstance>,
    by_app: HashMap<AppId, BTreeSet<String>>,
    seen: HashMap<String, mecfed_store::Revision>,
}

impl Records {
    /// Record `id` as of `revision` (`None`: deleted), unless a later change was seen;
    /// returns the app concerned.
    fn set(
        &mut self,
        id: &str,
        revision: mecfed_store::Revision,
        rec: Option<CamaraInstance>,
    ) -> Option<AppId> {
        if self.seen.get(id).is_some_and(|r| *r >= revision) {
            return None;
        }
        self.seen.insert(id.to_string(), revision);
        let old = self.by_id.remove(id);
        if let Some(o) = &old
            && let Some(set) = self.by_app.get_mut(&o.app)
        {
            set.remove(id);
            if set.is_empty() {
                self.by_app.remove(&o.app);
            }
        }
        let app = rec.as_ref().or(old.as_ref()).map(|r| r.app.clone());
        if let Some(r) = rec {
            self.by_app
                .entry(r.app.clone())
                .or_default()
                .insert(id.to_string());
            self.by_id.insert(id.to_string(), r);
        }
        app
    }

    fn of(&self, app: &AppId) -> Vec<&CamaraInstance> {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
            .collect()
    }
}

impl<S: Store> ZoneSync<S> {
    /// A controller over `store`.
    pub fn new(store: Typed<S>) -> Self {
        Self {
            store,
            leader_ttl: Duration::from_secs(10),
        }
    }

    /// Writes app `app`'s zones and pins from `records` when they differ.
    async fn sync(&self, app: &AppId, records: &[&CamaraInstance]) -> Result<(), ApiError> {
        let (zones, pins) = zones_of(records.iter().copied());
        loop {
            let Some(current) = self.store.get::<App>(app.as_str()).await? else {
                return Ok(());
            };
            if current.value.zones.as_ref() == Some(&zones) && current.value.pins == pins {
                return Ok(());
            }
            let mut next = current.value;
            next.zones = Some(zones.clone());
            next.pins = pins.clone();
            match self.store.update(&next, current.revision).await {
                Ok(_) => return Ok(()),
                Err(TypedError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads every CAMARA app and record, and syncs every app; returns the records.
    async fn pass(&self) -> Result<Records, ApiError> {
        let mut records = Records::default();
        let (all, _) = self.store.list::<CamaraInstance>().await?;
        for r in all {
            records.set(&r.value.id.clone(), r.revision, Some(r.value));
        }
        let (apps, _) = self.store.list::<CamaraApp>().await?;
        for a in apps {
            self.sync(&a.value.app, &records.of(&a.value.app)).await?;
        }
        Ok(records)
    }

    /// One full pass, for tests and tools; the running controller ([`ZoneSync::run`])
    /// follows the records continuously.
    pub async fn settle(&self) -> Result<(), ApiError> {
        self.pass().await.map(|_| ())
    }

    /// Runs while this process leads, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let key = format!("{KEY_ROOT}leaders/camara-zones").into_bytes();
        crate::util::lead(
            self.store.store().clone(),
            key,
            self.leader_ttl,
            "camara zones",
            shutdown,
            |_| {},
            || self.follow(),
        )
        .await;
    }

    async fn follow(&self) {
        if let Err(e) = self.follow_once().await {
            tracing::warn!(error = %e, "camara zones: reading the store again");
        }
    }

    async fn follow_once(&self) -> Result<(), ApiError> {
        let prefix = typed::kind_prefix::<CamaraInstance>();
        let from = self.store.store().current_revision().await? + 1;
        let mut watch = self.store.store().watch(&prefix, from).await?;
        let mut records = self.pass().await?;
        loop {
            let mut dirty = BTreeSet::new();
            // The watch ends when the store shuts down: start again.
            let Some(first) = watch.next().await else {
                return Ok(());
            };
            for ev in std::iter::once(first).chain(std::iter::from_fn(|| watch.try_next())) {
                let ev = ev?;
                let Some(id) = ev
                    .kv
                    .key
                    .strip_prefix(prefix.as_slice())
                    .and_then(|k| std::str::from_utf8(k).ok())
                else {
                    continue;
                };
                let rec = (ev.kind == EventKind::Put)
                    .then(|| serde_json::from_slice::<CamaraInstance>(&ev.kv.value).ok())
                    .flatten();
                if let Some(app) = records.set(id, ev.kv.mod_revision, rec) {
                    dirty.insert(app);
                }
            }
            for app in dirty {
                self.sync(&app, &records.of(&app)).await?;
            }
        }
    }
}
