//! The UE source: every MEC 013 location and MEC 012 cell-change notification the UE table
//! (`/mecfed/v1/ues`) implies, through the [engine](super).
//!
//! The views are held in an indexed [`UeTable`] (by id, by address, user counts per zone and
//! access point), and the world after a change is that table with the one UE laid over it
//! ([`Changed`]), so a change costs the subscriptions it may match, not the number of UEs.
//! Location subscriptions are indexed by the zones and addresses they name, cell-change
//! subscriptions by their associated addresses or cells. Sites are followed as context: the
//! directory and the cells are rebuilt only when a site's zone, position, access points,
//! radio kinds or PLMN change (a changed directory moves no view: it produces no events).
//!
//! Watches: `ues/`, `subscriptions/`, `sites/`. Writes: `views/ue/`, `subscriptions/`
//! (sequence numbers, ends), `notifications/`.

use std::collections::BTreeMap;

use mecfed_core::{Instance, Site, Ue, UeId};
use mecfed_store::{
    Event, EventKind, Store,
    typed::{self, Typed},
};

use super::{Engine, Source};
use crate::{
    ApiError,
    mec::{
        location::{
            self, Kind, LocationSubscription,
            model::{self, Changed, Directory, UeTable, Ues, World, addresses_of},
        },
        rni::{self, CellChangeSubscription, Cells, Ecgi},
    },
    notify::{Emit, Subscription},
};

/// The UE engine.
pub type UeEvents<S> = Engine<S, UeSource>;

/// A subscription the UE source feeds, parsed once.
#[derive(Debug, Clone)]
pub enum UeSub {
    /// A MEC 013 subscription of a kind.
    Location(Kind, Box<LocationSubscription>),
    /// A MEC 012 cell-change subscription.
    Cell(Box<CellChangeSubscription>),
}

/// A UE's change as the UE source sees it, worked out once per change.
#[allow(missing_debug_implementations)]
pub struct UeChange<'a> {
    was: Option<&'a Ue>,
    now: Option<&'a Ue>,
    /// The views with the change laid over them; `None` for an id that is no UE id.
    after: Option<Changed<'a>>,
    /// The source and target cells, when the change is a hand-over.
    hand_over: Option<(&'a Ecgi, &'a Ecgi)>,
    /// When it is told.
    at: (u64, u32),
}

/// The UE source's state: the sites, their directory and cells, and the views.
#[derive(Debug, Default)]
pub struct UeSource {
    sites: BTreeMap<String, Site>,
    dir: Directory,
    cells: Cells,
    views: UeTable,
}

fn cell_key(e: &Ecgi) -> String {
    format!("cell:{}-{}/{}", e.plmn.mcc, e.plmn.mnc, e.cell_id)
}

fn addrs(v: &Option<Vec<String>>) -> impl Iterator<Item = String> + '_ {
    v.iter().flatten().map(|a| format!("addr:{a}"))
}

/// Which parts of a site the directory and the cells depend on.
fn site_shape(s: &Site) -> impl PartialEq + use<> {
    (
        s.zone.to_string(),
        s.location,
        s.access_points.clone(),
        s.access_kinds.clone(),
        s.plmn.clone(),
    )
}

impl UeSource {
    /// The source over `sites` with `views` (the UEs as last processed).
    pub fn new(sites: Vec<Site>, views: impl IntoIterator<Item = Ue>) -> Self {
        let mut me = Self {
            sites: sites.into_iter().map(|s| (s.id.to_string(), s)).collect(),
            ..Self::default()
        };
        me.rebuild_directory();
        me.views = UeTable::new(&me.dir, views);
        me
    }

    fn rebuild_directory(&mut self) {
        let sites: Vec<Site> = self.sites.values().cloned().collect();
        self.dir = Directory::new(&sites);
        self.cells = Cells::new(&sites);
        self.views.recount(&self.dir);
    }

    fn view_of(&self, id: &str) -> Option<&Ue> {
        self.views.get(&UeId::new(id).ok()?)
    }
}

impl Source for UeSource {
    type Doc = Ue;
    type Parsed = UeSub;
    const NAME: &'static str = "ue";

    fn context_prefix() -> Option<Vec<u8>> {
        Some(typed::kind_prefix::<Site>())
    }

    async fn load<S: Store>(store: &Typed<S>, views: Vec<Ue>) -> Result<Self, ApiError> {
        let (sites, _) = store.list::<Site>().await?;
        Ok(Self::new(
            sites.into_iter().map(|v| v.value).collect(),
            views,
        ))
    }

    fn on_context(&mut self, ev: &Event) {
        let Some(id) = ev
            .kv
            .key
            .strip_prefix(typed::kind_prefix::<Site>().as_slice())
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            return;
        };
        let site = (ev.kind == EventKind::Put)
            .then(|| serde_json::from_slice::<Site>(&ev.kv.value).ok())
            .flatten();
        let before = self.sites.get(id).map(site_shape);
        let after = site.as_ref().map(site_shape);
        match site {
            Some(s) => self.sites.insert(id.to_string(), s),
            None => self.sites.remove(id),
        };
        if before != after {
            self.rebuild_directory();
        }
    }

    fn view(&self, id: &str) -> Option<&Ue> {
        self.view_of(id)
    }

    fn set_view(&mut self, id: &str, doc: Option<Ue>) {
        if let Ok(id) = UeId::new(id) {
            self.views.apply(&self.dir, &id, doc);
        }
    }

    fn parse(sub: &Subscription) -> Option<UeSub> {
        if let Some(kind) = Kind::of_family(&sub.family) {
            let s: LocationSubscription = serde_json::from_value(sub.body.clone()).ok()?;
            return Some(UeSub::Location(kind, Box::new(s)));
        }
        if sub.family == rni::CELL_CHANGE {
            let s: CellChangeSubscription = serde_json::from_value(sub.body.clone()).ok()?;
            return Some(UeSub::Cell(Box::new(s)));
        }
        None
    }

    fn keys_of(_: &Subscription, p: &UeSub) -> Option<Vec<String>> {
        match p {
            UeSub::Location(kind, s) => Some(match kind {
                Kind::UserLocationEvent => s.address.iter().map(|a| format!("addr:{a}")).collect(),
                Kind::ZoneLocationEvent | Kind::ZoneStatus => {
                    s.zone_id.iter().map(|z| format!("zone:{z}")).collect()
                }
                Kind::UserArea => addrs(&s.address_list).collect(),
                Kind::UserDistance => addrs(&s.monitored_address)
                    .chain(addrs(&s.reference_address))
                    .collect(),
                // Periodic reports follow time, not moves.
                Kind::UserLocationPeriodic => Vec::new(),
            }),
            UeSub::Cell(c) => {
                let f = &c.filter_criteria_assoc_ho;
                if let Some(ids) = f.associate_id.as_ref().filter(|i| !i.is_empty()) {
                    // Only IPv4 associations can match (`rni::passes`).
                    Some(
                        ids.iter()
                            .filter(|a| a.kind == 1)
                            .map(|a| format!("addr:acr:{}", a.value))
                            .collect(),
                    )
                } else {
                    f.ecgi
                        .as_ref()
                        .filter(|c| !c.is_empty())
                        .map(|cells| cells.iter().map(cell_key).collect())
                }
            }
        }
    }

    fn change_keys(&self, id: &str, now: Option<&Ue>) -> Vec<String> {
        let was = self.view_of(id);
        let mut keys = Vec::with_capacity(8);
        for (i, u) in [was, now].into_iter().enumerate() {
            let Some(u) = u else { continue };
            // The second side only adds what differs from the first (a move keeps the
            // identities, often the zone).
            let first = if i == 1 { was } else { None };
            if first.is_none_or(|f| f.identity != u.identity) {
                keys.extend(addresses_of(u).into_iter().map(|a| format!("addr:{a}")));
            }
            let place = self.dir.place(u);
            if let Some(p) = &place
                && first
                    .and_then(|f| self.dir.place(f))
                    .is_none_or(|fp| fp.zone != p.zone)
            {
                keys.push(format!("zone:{}", p.zone));
            }
            if let Some(c) = self.cells.of(u) {
                keys.push(cell_key(c));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    async fn plan<'a, S: Store>(
        &'a self,
        store: &'a Typed<S>,
        id: &'a str,
        now: Option<&'a Ue>,
        subs: Vec<(&'a Subscription, &'a UeSub)>,
    ) -> Result<Vec<Option<Emit>>, ApiError> {
        let change = self.prepare(id, now);
        let mut out = Vec::with_capacity(subs.len());
        for (sub, parsed) in subs {
            // Only a hand-over checked against an app instance's site reads the store.
            let mut site = None;
            if let UeSub::Cell(c) = parsed
                && change.hand_over.is_some()
                && let Some(inst) = &c.filter_criteria_assoc_ho.app_instance_id
            {
                match store.get::<Instance>(inst).await? {
                    Some(i) => site = Some(i.value.site),
                    None => {
                        out.push(None);
                        continue;
                    }
                }
            }
            out.push(self.decide(&change, sub, parsed, site.as_ref()));
        }
        Ok(out)
    }
}

impl UeSource {
    fn prepare<'a>(&'a self, id: &'a str, now: Option<&'a Ue>) -> UeChange<'a> {
        let ue_id = UeId::new(id).ok();
        let was = ue_id.as_ref().and_then(|i| self.views.get(i));
        let hand_over = match (was, now) {
            (Some(w), Some(n)) => match (self.cells.of(w), self.cells.of(n)) {
                (Some(src), Some(trg)) if src != trg => Some((src, trg)),
                _ => None,
            },
            _ => None,
        };
        UeChange {
            after: ue_id.map(|i| Changed::new(&self.views, &self.dir, i, was, now)),
            was,
            now,
            hand_over,
            at: location::now(),
        }
    }

    /// What `sub` gets for `change`; `site` is the site of the app instance a cell-change
    /// filter names.
    fn decide(
        &self,
        change: &UeChange<'_>,
        sub: &Subscription,
        parsed: &UeSub,
        site: Option<&mecfed_core::SiteId>,
    ) -> Option<Emit> {
        let (Some(after), Some(subject)) = (&change.after, change.now.or(change.was)) else {
            return None;
        };
        match parsed {
            UeSub::Location(kind, ls) => {
                let before = World {
                    dir: &self.dir,
                    ues: &self.views,
                };
                let after = World {
                    dir: &self.dir,
                    ues: after,
                };
                let t = change.at;
                let visible = |u: &Ue| location::tenant_sees(sub, u);
                let events = model::events(ls, *kind, subject, &before, &after, &visible, t);
                (!events.is_empty()).then(|| location::emission_of(sub, Some(ls), events, false, t))
            }
            UeSub::Cell(c) => {
                let (Some(n), Some((src, trg))) = (change.now, change.hand_over) else {
                    return None;
                };
                if sub
                    .developer
                    .as_ref()
                    .is_some_and(|d| !n.shared_with.contains(d))
                {
                    return None;
                }
                let f = &c.filter_criteria_assoc_ho;
                let site_cells = site.map(|s| self.cells.of_site(s.as_str()));
                if !rni::passes(f, n, src, trg, site_cells.as_deref()) {
                    return None;
                }
                Some(Emit {
                    bodies: vec![rni::cell_change_body(sub, n, src, trg)],
                    end: false,
                })
            }
        }
    }
}
