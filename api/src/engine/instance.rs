//! The app-instance source: the MEC 011 `AppTerminationNotification` when an instance starts
//! terminating, and the MEC 021 `AdjacentAppInfoNotification` when an instance of the
//! watcher's app becomes Ready or stops being Ready (or goes), through the [engine](super).
//!
//! An instance's view keeps what these depend on: its app, state and endpoint (a change of
//! its session count alone is no change here). Termination subscriptions are indexed by
//! their instance, adjacency subscriptions by their watching instance; a change touches its
//! own instance and its app's other instances, so it costs the app's instances and the
//! subscriptions on them, not every instance or subscription.
//!
//! Watches: `instances/`, `subscriptions/`. Writes: `views/instance/`, `subscriptions/`,
//! `notifications/`.

use std::collections::{BTreeSet, HashMap};

use mecfed_core::{AppId, Instance, InstanceId, InstanceState};
use mecfed_store::{Store, typed::Typed};

use super::{Engine, Source};
use crate::{
    ApiError,
    mec::{
        ams::{ADJACENT_APP_INFO, AmsSubscription, adjacent_notification},
        subscriptions::{APP_TERMINATION, termination_notification},
    },
    notify::{Emit, Subscription},
    sites::AGENT_STOP_GRACE_SECONDS,
};

/// The app-instance engine.
pub type InstanceEvents<S> = Engine<S, InstanceSource>;

/// A subscription the instance source feeds.
#[derive(Debug, Clone)]
pub enum InstanceSub {
    /// MEC 011 application termination of the subscription's own instance.
    Termination(InstanceId),
    /// MEC 021 adjacent application info for the watching instance.
    Adjacent(String),
}

/// The instance source's state: the views, and the instances of each app.
#[derive(Debug, Default)]
pub struct InstanceSource {
    views: HashMap<String, Instance>,
    by_app: HashMap<AppId, BTreeSet<String>>,
}

/// What the notifications depend on: a view keeps only this.
fn shape(i: &Instance) -> Instance {
    Instance {
        sessions: None,
        pid: None,
        ..i.clone()
    }
}

fn ready(i: Option<&Instance>) -> bool {
    i.is_some_and(|i| i.state == InstanceState::Ready)
}

impl Source for InstanceSource {
    type Doc = Instance;
    type Parsed = InstanceSub;
    const NAME: &'static str = "instance";

    async fn load<S: Store>(_: &Typed<S>, views: Vec<Instance>) -> Result<Self, ApiError> {
        let mut me = Self::default();
        for v in views {
            let id = v.id.to_string();
            me.set_view(&id, Some(v));
        }
        Ok(me)
    }

    fn normalize(doc: Instance) -> Instance {
        shape(&doc)
    }

    fn view(&self, id: &str) -> Option<&Instance> {
        self.views.get(id)
    }

    fn set_view(&mut self, id: &str, doc: Option<Instance>) {
        if let Some(old) = self.views.remove(id)
            && let Some(set) = self.by_app.get_mut(&old.app)
        {
            set.remove(id);
            if set.is_empty() {
                self.by_app.remove(&old.app);
            }
        }
        if let Some(d) = doc {
            self.by_app
                .entry(d.app.clone())
                .or_default()
                .insert(id.to_string());
            self.views.insert(id.to_string(), d);
        }
    }

    fn parse(sub: &Subscription) -> Option<InstanceSub> {
        if sub.family == APP_TERMINATION {
            return Some(InstanceSub::Termination(sub.instance.clone()?));
        }
        if sub.family == ADJACENT_APP_INFO {
            let a: AmsSubscription = serde_json::from_value(sub.body.clone()).ok()?;
            return Some(InstanceSub::Adjacent(a.filter_criteria.app_instance_id?));
        }
        None
    }

    fn keys_of(_: &Subscription, p: &InstanceSub) -> Option<Vec<String>> {
        Some(vec![match p {
            InstanceSub::Termination(i) => format!("term:{i}"),
            InstanceSub::Adjacent(w) => format!("adj:{w}"),
        }])
    }

    fn change_keys(&self, id: &str, now: Option<&Instance>) -> Vec<String> {
        let mut keys = vec![format!("term:{id}")];
        if let Some(app) = now.or(self.views.get(id)).map(|i| &i.app) {
            for sibling in self.by_app.get(app).into_iter().flatten() {
                if sibling != id {
                    keys.push(format!("adj:{sibling}"));
                }
            }
        }
        keys
    }

    async fn plan<'a, S: Store>(
        &'a self,
        _: &'a Typed<S>,
        id: &'a str,
        now: Option<&'a Instance>,
        subs: Vec<(&'a Subscription, &'a InstanceSub)>,
    ) -> Result<Vec<Option<Emit>>, ApiError> {
        Ok(subs
            .into_iter()
            .map(|(sub, parsed)| self.plan_one(id, now, sub, parsed))
            .collect())
    }
}

impl InstanceSource {
    /// What `sub` gets for the change of `id` from its view to `now`.
    fn plan_one(
        &self,
        id: &str,
        now: Option<&Instance>,
        sub: &Subscription,
        parsed: &InstanceSub,
    ) -> Option<Emit> {
        let was = self.views.get(id);
        let body = match parsed {
            InstanceSub::Termination(inst) => {
                let terminating =
                    |i: Option<&Instance>| i.is_some_and(|i| i.state == InstanceState::Terminating);
                if inst.as_str() != id || terminating(was) || !terminating(now) {
                    return None;
                }
                termination_notification(sub, inst, AGENT_STOP_GRACE_SECONDS)
            }
            InstanceSub::Adjacent(watcher) => {
                let app = now.or(was).map(|i| &i.app)?;
                let sibling = self.views.get(watcher).is_some_and(|w| w.app == *app);
                if watcher == id || !sibling || ready(was) == ready(now) {
                    return None;
                }
                // The app's Ready instances after the change, in id order.
                let mut after: Vec<&Instance> = self
                    .by_app
                    .get(app)
                    .into_iter()
                    .flatten()
                    .filter(|i| *i != id)
                    .filter_map(|i| self.views.get(i))
                    .chain(now)
                    .filter(|i| i.state == InstanceState::Ready)
                    .collect();
                after.sort_by(|a, b| a.id.cmp(&b.id));
                adjacent_notification(sub, watcher, after.into_iter())
            }
        };
        Some(Emit {
            bodies: vec![body],
            end: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use mecfed_core::SiteId;
    use mecfed_store::EmbeddedStore;
    use serde_json::json;

    use super::*;

    fn inst(id: &str, app: &str, state: InstanceState) -> Instance {
        Instance {
            id: InstanceId::new(id).unwrap(),
            app: AppId::new(app).unwrap(),
            site: SiteId::new("cork-a").unwrap(),
            state,
            endpoint: Some("10.0.0.1:4000".into()),
            pid: Some(7),
            sessions: Some(3),
        }
    }

    fn sub(family: &str, instance: Option<&str>, body: serde_json::Value) -> Subscription {
        Subscription {
            id: "s".into(),
            family: family.into(),
            subscription_type: "T".into(),
            developer: None,
            instance: instance.map(|i| InstanceId::new(i).unwrap()),
            callback: "http://127.0.0.1:9/cb".into(),
            href: "/x/s".into(),
            body,
            expiry_deadline: None,
            expiry_notification: None,
            next_seq: 0,
            created_at: 0,
            delivery: Default::default(),
        }
    }

    #[tokio::test]
    async fn termination_and_adjacency_follow_state_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Typed::new(EmbeddedStore::open_path(dir.path().join("s.redb")).unwrap());
        let mut src = InstanceSource::load(
            &store,
            vec![
                shape(&inst("a-0", "arena", InstanceState::Ready)),
                shape(&inst("a-1", "arena", InstanceState::Starting)),
                shape(&inst("o-0", "other", InstanceState::Ready)),
            ],
        )
        .await
        .unwrap();
        let term = sub(APP_TERMINATION, Some("a-0"), json!({}));
        let tp = InstanceSource::parse(&term).unwrap();
        let adj = sub(
            ADJACENT_APP_INFO,
            None,
            json!({"subscriptionType": "AdjacentAppInfoSubscription",
                "callbackReference": "http://127.0.0.1:9/cb",
                "filterCriteria": {"appInstanceId": "a-0"}}),
        );
        let ap = InstanceSource::parse(&adj).unwrap();
        let plan = async |src: &InstanceSource, id: &str, now: Option<Instance>, s, p| {
            let now = now.map(|n| shape(&n));
            src.plan(&store, id, now.as_ref(), vec![(s, p)])
                .await
                .unwrap()
                .pop()
                .flatten()
        };
        // a-1 becomes Ready: a-0's adjacency watcher hears of it; termination does not.
        let ready = inst("a-1", "arena", InstanceState::Ready);
        assert!(
            src.change_keys("a-1", Some(&ready))
                .contains(&"adj:a-0".to_string())
        );
        let e = plan(&src, "a-1", Some(ready.clone()), &adj, &ap)
            .await
            .unwrap();
        let n = &e.bodies[0]["AdjacentAppInfoNotification"];
        assert_eq!(n["adjacentAppInfo"][0]["appInstanceId"], "a-1");
        assert!(
            plan(&src, "a-1", Some(ready.clone()), &term, &tp)
                .await
                .is_none()
        );
        src.set_view("a-1", Some(shape(&ready)));
        // A session count alone is no change; another app's instance is no sibling.
        let mut busier = ready.clone();
        busier.sessions = Some(40);
        assert_eq!(InstanceSource::normalize(busier), shape(&ready));
        let gone = inst("o-0", "other", InstanceState::Terminating);
        assert!(plan(&src, "o-0", Some(gone), &adj, &ap).await.is_none());
        // The watcher itself changing is not adjacent news.
        let me_down = inst("a-0", "arena", InstanceState::Terminating);
        assert!(
            plan(&src, "a-0", Some(me_down.clone()), &adj, &ap)
                .await
                .is_none()
        );
        // a-0 terminating: its termination subscription is told, once.
        let e = plan(&src, "a-0", Some(me_down.clone()), &term, &tp)
            .await
            .unwrap();
        assert_eq!(
            e.bodies[0]["subscriptionNotification"]["notificationType"],
            "AppTerminationNotification"
        );
        src.set_view("a-0", Some(shape(&me_down)));
        assert!(plan(&src, "a-0", Some(me_down), &term, &tp).await.is_none());
        // a-1 going away (deleted) is adjacency news for a-0 with nobody left.
        let e = plan(&src, "a-1", None, &adj, &ap).await.unwrap();
        assert_eq!(
            e.bodies[0]["AdjacentAppInfoNotification"]["adjacentAppInfo"],
            json!([])
        );
    }
}
