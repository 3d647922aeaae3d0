//! Periodic location reports (`UserLocationPeriodicSubscription`): once a second the elected
//! leader queues the reports that are due ([`model::periodic_due`]) and ends each
//! subscription with its final report.

use std::time::Duration;

use mecfed_store::{Store, typed::Typed};

use super::{LocationSubscription, directory, model, queue, tenant_sees, ues};
use crate::{
    ApiError,
    notify::{self, Subscription},
    util::now_unix,
};

/// The key the reporting process holds.
pub const LEADER_KEY: &[u8] = b"/mecfed/v1/leaders/location-reporter";

/// Queues periodic location reports; see the module docs.
pub struct Reporter<S> {
    store: Typed<S>,
    leader_ttl: Duration,
}

impl<S: Store> Reporter<S> {
    /// A reporter over `store`.
    pub fn new(store: Typed<S>) -> Self {
        Self {
            store,
            leader_ttl: Duration::from_secs(10),
        }
    }

    /// Reports once a second while this process leads, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let this = &self;
        crate::util::each_second_as_leader(
            self.store.store().clone(),
            LEADER_KEY,
            self.leader_ttl,
            "location reporter",
            shutdown,
            || async move {
                if let Err(e) = this.report(now_unix()).await {
                    tracing::warn!(error = %e, "location reporter: pass failed");
                }
            },
        )
        .await;
    }

    /// Queues every report due at `now`; returns how many.
    pub async fn report(&self, now: u64) -> Result<usize, ApiError> {
        let family = model::Kind::UserLocationPeriodic.family();
        let subs: Vec<Subscription> = notify::of_family(&self.store, &family).await?;
        if subs.is_empty() {
            return Ok(0);
        }
        let dir = directory(&self.store).await?;
        let all = ues(&self.store).await?;
        let mut queued = 0;
        for sub in subs {
            let Ok(parsed) = serde_json::from_value::<LocationSubscription>(sub.body.clone())
            else {
                continue;
            };
            let (Some(info), Some(addr)) = (parsed.periodic_event_info, parsed.address.as_deref())
            else {
                continue;
            };
            let tests = u64::from(parsed.request_test_notification == Some(true));
            let sent = sub.next_seq.saturating_sub(tests);
            let Some(last) = model::periodic_due(&info, sub.created_at, sent, now) else {
                continue;
            };
            let ue = all
                .iter()
                .find(|u| model::names(addr, u) && tenant_sees(&sub, u));
            // The final report and the end of the subscription are one write.
            queue(
                &self.store,
                &sub,
                model::periodic_report(addr, ue, &dir, last),
                last,
            )
            .await?;
            queued += 1;
        }
        Ok(queued)
    }
}
