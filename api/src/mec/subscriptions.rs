//! MEC 011 subscriptions, per application instance
//! (`{root}/applications/{appInstanceId}/subscriptions[/{subscriptionId}]`): application
//! termination (`mec_app_support`) and service availability (`mec_service_mgmt`), both kept
//! and delivered by the [subscription engine](crate::notify).
//!
//! Notifications are POSTed in the form of the vendored files' callbacks,
//! `{"subscriptionNotification": {...}}`, the inner object being the notification data type
//! the GS defines (`AppTerminationNotification`, `ServiceAvailabilityNotification`; the files
//! name the subscription type there, which cannot be what is meant).

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{DeveloperId, InstanceId};
use mecfed_store::Store;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    APP_SUPPORT_ROOT, MecBody, Wrapped, instance_for,
    service_mgmt::{CategoryRef, SERVICE_MGMT_ROOT, ServiceInfo},
};
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    notify::{self, Subscription},
    util::now_unix,
};

/// Family of application-termination subscriptions.
pub const APP_TERMINATION: &str = "mec011.appTermination";
/// Family of service-availability subscriptions.
pub const SER_AVAILABILITY: &str = "mec011.serAvailability";

/// A MEC 011 subscription type.
pub(crate) trait Mp1Subscription:
    Wrapped + DeserializeOwned + Serialize + Send + 'static
{
    /// The engine's family.
    const FAMILY: &'static str;
    /// API root.
    const ROOT: &'static str;
    /// Scope required.
    const SCOPE: &'static str;
    /// Its `callbackReference`.
    fn callback(&self) -> &str;
    /// Its `subscriptionType`.
    fn subscription_type(&self) -> &str;
    /// Checks the fields serde cannot, for a subscription of `instance`.
    fn check(&mut self, instance: &InstanceId) -> Result<(), ApiError>;
}

fn check_common<T: Mp1Subscription>(t: &T) -> Result<(), ApiError> {
    if t.subscription_type() != T::WRAPPER {
        return Err(ApiError::BadRequest(format!(
            "invalid subscriptionType: must be {}",
            T::WRAPPER
        )));
    }
    notify::validate_callback(t.callback(), "callbackReference")
}

/// `AppTerminationNotificationSubscription`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AppTerminationSubscription {
    subscription_type: String,
    callback_reference: String,
    /// Answered by the platform; ignored in requests.
    #[serde(rename = "_links", default, skip_serializing)]
    _links: Option<serde::de::IgnoredAny>,
    app_instance_id: String,
}

impl Wrapped for AppTerminationSubscription {
    const WRAPPER: &'static str = "AppTerminationNotificationSubscription";
}

impl Mp1Subscription for AppTerminationSubscription {
    const FAMILY: &'static str = APP_TERMINATION;
    const ROOT: &'static str = APP_SUPPORT_ROOT;
    const SCOPE: &'static str = scopes::MEC_APP_SUPPORT;
    fn callback(&self) -> &str {
        &self.callback_reference
    }
    fn subscription_type(&self) -> &str {
        &self.subscription_type
    }
    fn check(&mut self, instance: &InstanceId) -> Result<(), ApiError> {
        check_common(self)?;
        if self.app_instance_id != instance.as_str() {
            return Err(ApiError::BadRequest(
                "invalid appInstanceId: must be the instance of the path".into(),
            ));
        }
        Ok(())
    }
}

/// `FilteringCriteria` of service-availability subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilteringCriteria {
    /// Services by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ser_instance_ids: Vec<String>,
    /// Services by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ser_names: Vec<String>,
    /// Services by category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ser_categories: Vec<CategoryRef>,
    /// States after the change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// Whether the service runs on this platform (every service mecfed knows does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_local: Option<bool>,
}

impl FilteringCriteria {
    /// Whether a service as it is after a change passes (IO-free).
    pub fn matches(&self, s: &ServiceInfo) -> bool {
        let id = s.ser_instance_id.as_deref().unwrap_or_default();
        (self.ser_instance_ids.is_empty() || self.ser_instance_ids.iter().any(|i| i == id))
            && (self.ser_names.is_empty() || self.ser_names.contains(&s.ser_name))
            && (self.ser_categories.is_empty()
                || s.ser_category
                    .as_ref()
                    .is_some_and(|c| self.ser_categories.iter().any(|f| f.id == c.id)))
            && (self.states.is_empty() || self.states.contains(&s.state))
            && self.is_local != Some(false)
    }
}

/// `SerAvailabilityNotificationSubscription`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SerAvailabilitySubscription {
    subscription_type: String,
    callback_reference: String,
    /// Answered by the platform; ignored in requests.
    #[serde(rename = "_links", default, skip_serializing)]
    _links: Option<serde::de::IgnoredAny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filtering_criteria: Option<FilteringCriteria>,
}

impl Wrapped for SerAvailabilitySubscription {
    const WRAPPER: &'static str = "SerAvailabilityNotificationSubscription";
}

impl Mp1Subscription for SerAvailabilitySubscription {
    const FAMILY: &'static str = SER_AVAILABILITY;
    const ROOT: &'static str = SERVICE_MGMT_ROOT;
    const SCOPE: &'static str = scopes::MEC_SERVICE_MGMT;
    fn callback(&self) -> &str {
        &self.callback_reference
    }
    fn subscription_type(&self) -> &str {
        &self.subscription_type
    }
    fn check(&mut self, _: &InstanceId) -> Result<(), ApiError> {
        check_common(self)?;
        if let Some(f) = &self.filtering_criteria {
            let given = usize::from(!f.ser_instance_ids.is_empty())
                + usize::from(!f.ser_names.is_empty())
                + usize::from(!f.ser_categories.is_empty());
            if given > 1 {
                return Err(ApiError::BadRequest(
                    "invalid filteringCriteria: serInstanceIds, serNames and serCategories \
                     exclude each other"
                        .into(),
                ));
            }
            for (i, s) in f.states.iter().enumerate() {
                if !["ACTIVE", "INACTIVE", "SUSPENDED"].contains(&s.as_str()) {
                    return Err(ApiError::BadRequest(format!(
                        "invalid filteringCriteria.states[{i}]: must be ACTIVE, INACTIVE or \
                         SUSPENDED"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn collection<T: Mp1Subscription>(instance: &InstanceId) -> String {
    format!("{}/applications/{instance}/subscriptions", T::ROOT)
}

/// The subscription `id` of `instance` in family `T`, or 404.
async fn own<T: Mp1Subscription, S: Store>(
    st: &ApiState<S>,
    instance: &InstanceId,
    id: &str,
) -> Result<Subscription, ApiError> {
    st.store
        .get::<Subscription>(id)
        .await?
        .map(|v| v.value)
        .filter(|s| s.family == T::FAMILY && s.instance.as_ref() == Some(instance))
        .ok_or_else(|| ApiError::NotFound(format!("subscription {id} not found")))
}

pub(crate) async fn list<T: Mp1Subscription, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(T::SCOPE)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    let subs: Vec<serde_json::Value> = notify::of_family(&st.store, T::FAMILY)
        .await?
        .into_iter()
        .filter(|s| s.instance.as_ref() == Some(&inst.id))
        .map(|s| s.link(&headers))
        .collect();
    Ok(Json(
        serde_json::json!({"SubscriptionLinkList": {"_links": {
            "self": {"href": crate::util::location(&headers, &collection::<T>(&inst.id))},
            "subscriptions": subs,
        }}}),
    ))
}

pub(crate) async fn create<T: Mp1Subscription, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    MecBody(mut body): MecBody<T>,
) -> Result<Response, ApiError> {
    p.require(T::SCOPE)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    body.check(&inst.id)?;
    let developer: Option<DeveloperId> = tenant_of(&st, &inst).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let href = format!("{}/{id}", collection::<T>(&inst.id));
    let sub = notify::create(
        &st.store,
        Subscription {
            id,
            family: T::FAMILY.into(),
            subscription_type: T::WRAPPER.into(),
            developer,
            instance: Some(inst.id.clone()),
            callback: body.callback().to_string(),
            href: href.clone(),
            body: serde_json::to_value(&body).map_err(|e| ApiError::Internal(Box::new(e)))?,
            expiry_deadline: None,
            expiry_notification: None,
            next_seq: 0,
            created_at: now_unix(),
            delivery: notify::Delivery::default(),
        },
        None,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, crate::util::location(&headers, &href))],
        Json(sub.answer(T::WRAPPER, &headers)),
    )
        .into_response())
}

/// The tenant of an instance's app (`None` if the app is gone).
async fn tenant_of<S: Store>(
    st: &ApiState<S>,
    inst: &mecfed_core::Instance,
) -> Result<Option<DeveloperId>, ApiError> {
    Ok(st
        .store
        .get::<mecfed_core::App>(inst.app.as_str())
        .await?
        .map(|a| a.value.developer))
}

pub(crate) async fn get<T: Mp1Subscription, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    p.require(T::SCOPE)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    let sub = own::<T, S>(&st, &inst.id, &id).await?;
    Ok(Json(sub.answer(T::WRAPPER, &headers)))
}

pub(crate) async fn delete<T: Mp1Subscription, S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path((raw, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.require(T::SCOPE)?;
    let inst = instance_for(&st.store, &p, &raw).await?.value;
    own::<T, S>(&st, &inst.id, &id).await?;
    notify::remove(&st.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// === events ===

/// The `AppTerminationNotification` of subscription `sub` when its instance `instance` is
/// terminating, stopped within `grace_seconds`.
pub(crate) fn termination_notification(
    sub: &Subscription,
    instance: &InstanceId,
    grace_seconds: u32,
) -> serde_json::Value {
    let confirm = format!("{APP_SUPPORT_ROOT}/applications/{instance}/confirm_termination");
    serde_json::json!({"subscriptionNotification": {
        "notificationType": "AppTerminationNotification",
        "operationAction": "TERMINATING",
        "maxGracefulTimeout": grace_seconds,
        "_links": {
            "subscription": {"href": sub.href},
            "confirmTermination": {"href": confirm},
        },
    }})
}

/// How a service changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceChange {
    Added,
    Removed,
    StateChanged,
    AttributesChanged,
}

impl ServiceChange {
    fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Removed => "REMOVED",
            Self::StateChanged => "STATE_CHANGED",
            Self::AttributesChanged => "ATTRIBUTES_CHANGED",
        }
    }

    /// The change from `before` to `after` of a replaced service (IO-free).
    pub(crate) fn of_update(before: &ServiceInfo, after: &ServiceInfo) -> Option<Self> {
        let mut b = before.clone();
        b.state.clone_from(&after.state);
        if &b != after {
            Some(Self::AttributesChanged)
        } else if before.state != after.state {
            Some(Self::StateChanged)
        } else {
            None
        }
    }
}

/// Queues a `ServiceAvailabilityNotification` about `service` (as answered after the change)
/// for every subscription of its tenant whose filter it passes.
pub(crate) async fn service_changed<S: Store>(
    store: &mecfed_store::typed::Typed<S>,
    developer: &DeveloperId,
    service: &ServiceInfo,
    change: ServiceChange,
) -> Result<(), ApiError> {
    let subs: Vec<Subscription> = notify::of_family(store, SER_AVAILABILITY)
        .await?
        .into_iter()
        .filter(|s| s.developer.as_ref() == Some(developer))
        .filter(|s| {
            let f: Option<FilteringCriteria> = s
                .body
                .get("filteringCriteria")
                .and_then(|f| serde_json::from_value(f.clone()).ok());
            f.is_none_or(|f| f.matches(service))
        })
        .collect();
    let id = service.ser_instance_id.clone().unwrap_or_default();
    let mut reference = serde_json::json!({
        "serName": service.ser_name,
        "serInstanceId": id,
        "state": service.state,
        "changeType": change.as_str(),
    });
    if change != ServiceChange::Removed {
        reference["link"] =
            serde_json::json!({"href": format!("{SERVICE_MGMT_ROOT}/services/{id}")});
    }
    notify::fan_out(store, &subs, |s| {
        serde_json::json!({"subscriptionNotification": {
            "notificationType": "SerAvailabilityNotification",
            "serviceReferences": [reference],
            "_links": {"subscription": {"href": s.href}},
        }})
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(state: &str) -> ServiceInfo {
        ServiceInfo {
            ser_instance_id: Some("s1".into()),
            ser_name: "game-state".into(),
            ser_category: Some(CategoryRef {
                href: "catalogue".into(),
                id: "cat-1".into(),
                name: "games".into(),
                version: "1".into(),
            }),
            version: "1".into(),
            state: state.into(),
            transport_id: Some("rest-http".into()),
            transport_info: None,
            serializer: "JSON".into(),
            scope_of_locality: None,
            consumed_local_only: None,
            is_local: None,
            liveness_interval: None,
            links: None,
        }
    }

    #[test]
    fn filters_match_by_id_name_category_state_and_locality() {
        let s = svc("ACTIVE");
        assert!(FilteringCriteria::default().matches(&s));
        let f = |f: FilteringCriteria| f.matches(&s);
        assert!(f(FilteringCriteria {
            ser_names: vec!["game-state".into()],
            ..Default::default()
        }));
        assert!(!f(FilteringCriteria {
            ser_names: vec!["other".into()],
            ..Default::default()
        }));
        assert!(f(FilteringCriteria {
            ser_instance_ids: vec!["s1".into()],
            ..Default::default()
        }));
        assert!(!f(FilteringCriteria {
            ser_instance_ids: vec!["s2".into()],
            ..Default::default()
        }));
        let mut cat = s.ser_category.clone().unwrap();
        assert!(f(FilteringCriteria {
            ser_categories: vec![cat.clone()],
            ..Default::default()
        }));
        cat.id = "cat-2".into();
        assert!(!f(FilteringCriteria {
            ser_categories: vec![cat],
            ..Default::default()
        }));
        assert!(!f(FilteringCriteria {
            states: vec!["INACTIVE".into()],
            ..Default::default()
        }));
        assert!(f(FilteringCriteria {
            is_local: Some(true),
            ..Default::default()
        }));
        assert!(!f(FilteringCriteria {
            is_local: Some(false),
            ..Default::default()
        }));
    }

    #[test]
    fn updates_are_state_or_attribute_changes() {
        let a = svc("ACTIVE");
        assert_eq!(ServiceChange::of_update(&a, &a), None);
        assert_eq!(
            ServiceChange::of_update(&a, &svc("INACTIVE")),
            Some(ServiceChange::StateChanged)
        );
        let mut b = svc("INACTIVE");
        b.version = "2".into();
        assert_eq!(
            ServiceChange::of_update(&a, &b),
            Some(ServiceChange::AttributesChanged)
        );
    }
}
