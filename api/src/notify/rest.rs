//! `GET /mecfed/v1/subscriptions` and `DELETE /mecfed/v1/subscriptions/{id}` (mecfed
//! extension): every family's subscriptions the caller owns, with what is waiting to be
//! delivered, and removal; for `mecfed ctl subscriptions`.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
};
use mecfed_store::Store;
use serde::{Deserialize, Serialize};

use super::{Subscription, pending};
use crate::{ApiError, ApiState, auth::Principal};

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// Id.
    pub id: String,
    /// Family, e.g. `mec013.ZoneLocationEvent`.
    pub family: String,
    /// The spec's `subscriptionType`.
    pub subscription_type: String,
    /// The resource.
    pub href: String,
    /// `callbackReference`.
    pub callback_reference: String,
    /// Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer: Option<String>,
    /// Instance that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deadline: Option<u64>,
    /// Notifications queued so far.
    pub queued: u64,
    /// Notifications waiting for delivery.
    pub pending: u64,
}

fn visible(p: &Principal, s: &Subscription) -> bool {
    p.is_operator()
        || (s.developer.is_some()
            && s.developer == p.developer
            && (p.instance.is_none() || s.instance == p.instance))
}

pub(crate) async fn list<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    let (all, _) = st.store.list::<Subscription>().await?;
    let mut out = Vec::new();
    for s in all.into_iter().map(|v| v.value).filter(|s| visible(&p, s)) {
        out.push(SubscriptionView {
            pending: pending(&st.store, &s.id, s.next_seq).await?,
            queued: s.next_seq,
            id: s.id,
            family: s.family,
            subscription_type: s.subscription_type,
            href: s.href,
            callback_reference: s.callback,
            developer: s.developer.map(|d| d.to_string()),
            instance: s.instance.map(|i| i.to_string()),
            expiry_deadline: s.expiry_deadline,
        });
    }
    Ok(Json(out))
}

pub(crate) async fn delete<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = st
        .store
        .get::<Subscription>(&id)
        .await?
        .filter(|s| visible(&p, &s.value));
    if found.is_none() {
        return Err(ApiError::NotFound(format!("subscription {id} not found")));
    }
    super::remove(&st.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
