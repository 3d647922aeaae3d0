//! ETSI MEC APIs of the Mp1 reference point: MEC 011 application support
//! ([`app_support`], `/mec_app_support/v1`) and service management ([`service_mgmt`],
//! `/mec_service_mgmt/v1`).
//!
//! An `appInstanceId` here is a mecfed instance id. A running instance calls with its own
//! credentials (client `inst.<instanceId>`) and reaches only its own resources; its developer
//! reaches those of all its apps' instances, the operator everyone's; anyone else gets 404.
//!
//! The vendored OpenAPI files of MEC 011 3.1.1 wrap most bodies in an object named after
//! their type (`{"AppInfo": {...}}`); mecfed answers in that form and accepts requests with
//! or without the wrapper. Errors are RFC 7807 `ProblemDetails`.

pub mod ams;
pub mod app_support;
pub mod location;
pub mod rni;
pub mod service_mgmt;
pub mod subscriptions;

use axum::{
    Json,
    extract::{FromRequest, Request},
    http::{HeaderMap, HeaderValue, header},
};
use mecfed_core::{App, Instance, InstanceId};
use mecfed_store::{
    Store,
    typed::{Typed, Versioned},
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{ApiError, Principal};

/// Path prefix of MEC 011 application support.
pub const APP_SUPPORT_ROOT: &str = "/mec_app_support/v1";

/// A body type and the name the vendored OpenAPI files wrap it in.
pub(crate) trait Wrapped {
    /// e.g. `AppInfo`.
    const WRAPPER: &'static str;
}

/// A JSON body of `T`, with or without its wrapper object; a refusal names the offending
/// field.
pub(crate) struct MecBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Wrapped> FromRequest<S> for MecBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<serde_json::Value>::from_request(req, state).await?;
        unwrap_body(v, &[T::WRAPPER]).map(MecBody)
    }
}

/// A JSON body as `T`, unwrapped first when it is an object whose one key is one of
/// `wrappers` (the vendored files' form); a refusal names the offending field.
pub(crate) fn unwrap_body<T: DeserializeOwned>(
    mut v: serde_json::Value,
    wrappers: &[&str],
) -> Result<T, ApiError> {
    // A refusal of the whole body names the type it should have been.
    let mut at = wrappers
        .first()
        .map_or_else(|| "body".to_string(), |w| (*w).to_string());
    if let serde_json::Value::Object(m) = &mut v
        && m.len() == 1
        && let Some(key) = m.keys().next().cloned()
        && wrappers.contains(&key.as_str())
    {
        v = m.remove(&key).expect("present");
        at = key;
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { at } else { path };
        ApiError::BadRequest(format!("invalid {field}: {}", e.into_inner()))
    })
}

/// The instance `raw` if the caller may act for it; 404 otherwise (and for instances that do
/// not exist), so that others' instances stay unseen.
pub(crate) async fn instance_for<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<Versioned<Instance>, ApiError> {
    let not_found = || ApiError::NotFound(format!("application instance {raw} not found"));
    let id = InstanceId::new(raw).map_err(|_| not_found())?;
    if p.instance.as_ref().is_some_and(|own| own != &id) {
        return Err(not_found());
    }
    let inst = store
        .get::<Instance>(id.as_str())
        .await?
        .ok_or_else(not_found)?;
    if !p.is_operator() {
        let app = store
            .get::<App>(inst.value.app.as_str())
            .await?
            .ok_or_else(not_found)?;
        if !p.owns(&app.value.developer, &app.value.id) {
            return Err(not_found());
        }
    }
    Ok(inst)
}

/// A strong entity tag of a JSON value: the SHA-256 of its serialisation, quoted.
pub(crate) fn etag_of<T: serde::Serialize>(v: &T) -> String {
    let json = serde_json::to_vec(v).expect("serializable");
    format!("\"{}\"", &hex::encode(Sha256::digest(json))[..32])
}

/// Refuses with 412 when an `If-Match` header names none of `current`'s tags.
pub(crate) fn check_if_match(headers: &HeaderMap, current: &str) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let v = v.to_str().unwrap_or_default();
    let matches = v.trim() == "*"
        || v.split(',').any(|t| {
            let t = t.trim();
            t.strip_prefix("W/").unwrap_or(t) == current
        });
    if matches {
        Ok(())
    } else {
        Err(ApiError::PreconditionFailed(format!(
            "If-Match {v} does not match the current entity tag {current}"
        )))
    }
}

/// An `ETag` header value.
pub(crate) fn etag_header(tag: &str) -> HeaderValue {
    HeaderValue::from_str(tag).expect("hex in quotes is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_the_current_tag_a_list_or_a_star() {
        let tag = etag_of(&serde_json::json!({"a": 1}));
        assert_eq!(tag.len(), 34);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            check_if_match(&h, &tag)
        };
        assert!(check_if_match(&HeaderMap::new(), &tag).is_ok());
        assert!(with(&tag).is_ok());
        assert!(with("*").is_ok());
        assert!(with(&format!("\"x\", {tag}")).is_ok());
        assert!(matches!(
            with("\"stale\""),
            Err(ApiError::PreconditionFailed(_))
        ));
    }
}
