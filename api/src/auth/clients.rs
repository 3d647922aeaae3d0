//! Stored OAuth clients: developers (tenants) with their credentials, created by the operator
//! (`/mecfed/v1/developers`), and the operator's own clients.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use mecfed_core::{App, DeveloperId, ValidationError};
use mecfed_store::{
    Store,
    typed::{Resource, Typed, TypedError},
};
use serde::{Deserialize, Serialize};

use super::{Principal, RateLimit, scopes};
use crate::{ApiError, ApiState, sites::JsonBody, util};

/// A developer account (tenant) as stored: the client secret only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Developer {
    /// Developer id.
    pub id: DeveloperId,
    /// The CAMARA `AppProvider` name its apps carry.
    pub app_provider: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Hex SHA-256 of the client secret.
    pub secret_sha256: String,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Request rate allowed.
    pub rate_limit: RateLimit,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl Resource for Developer {
    const KIND: &'static str = "developers";
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Developer {
    /// The OAuth client id of developer `id`.
    pub fn client_id_of(id: &DeveloperId) -> String {
        format!("dev.{id}")
    }
}

/// An operator client as stored (`operator` is `operatorclients/admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorClient {
    /// Name; the client id is `operator` for `admin`, else `operator.<name>`.
    pub name: String,
    /// Hex SHA-256 of the client secret.
    pub secret_sha256: String,
}

impl Resource for OperatorClient {
    const KIND: &'static str = "operatorclients";
    fn id(&self) -> String {
        self.name.clone()
    }
}

/// Registers `secret` as the operator's (`operator` client), replacing any earlier one.
pub async fn ensure_operator_secret<S: Store>(
    store: &Typed<S>,
    secret: &str,
) -> Result<(), TypedError> {
    let doc = OperatorClient {
        name: "admin".into(),
        secret_sha256: util::sha256_hex(secret),
    };
    match store.get::<OperatorClient>("admin").await? {
        Some(v) if v.value == doc => Ok(()),
        _ => store.put(&doc).await.map(|_| ()),
    }
}

/// `POST /mecfed/v1/developers` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDeveloper {
    /// Developer id.
    pub id: DeveloperId,
    /// CAMARA `AppProvider` name (`^[A-Za-z][A-Za-z0-9_]{7,63}$`).
    pub app_provider: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Scopes to allow; all developer scopes when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Request rate; 50/s with bursts of 100 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A developer as the API shows it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperView {
    /// Developer id.
    pub id: DeveloperId,
    /// OAuth client id.
    pub client_id: String,
    /// CAMARA `AppProvider` name.
    pub app_provider: String,
    /// Free text.
    pub description: String,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// Request rate allowed.
    pub rate_limit: RateLimit,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl From<&Developer> for DeveloperView {
    fn from(d: &Developer) -> Self {
        Self {
            id: d.id.clone(),
            client_id: Developer::client_id_of(&d.id),
            app_provider: d.app_provider.clone(),
            description: d.description.clone(),
            scopes: d.scopes.clone(),
            rate_limit: d.rate_limit,
            created_at: d.created_at,
        }
    }
}

/// Answer to creating a developer or rotating its secret: the secret is shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeveloperCreated {
    /// The developer.
    pub developer: DeveloperView,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
}

/// Checks a CAMARA `AppProvider` name: `^[A-Za-z][A-Za-z0-9_]{7,63}$`.
pub(crate) fn validate_app_provider(s: &str, field: &str) -> Result<(), ValidationError> {
    let ok = (8..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "must be 8 to 64 letters, digits or '_', starting with a letter",
        ))
    }
}

impl CreateDeveloper {
    fn validate(&self) -> Result<(), ValidationError> {
        validate_app_provider(&self.app_provider, "appProvider")?;
        if self.description.len() > 1024 {
            return Err(ValidationError::new(
                "description",
                "at most 1024 characters",
            ));
        }
        if let Some(s) = &self.scopes
            && let Some(bad) = s.iter().find(|s| !scopes::DEVELOPER.contains(&s.as_str()))
        {
            return Err(ValidationError::new(
                "scopes",
                format!("{bad:?} is not a developer scope"),
            ));
        }
        if let Some(r) = &self.rate_limit
            && (!(1..=100_000).contains(&r.per_second) || !(1..=1_000_000).contains(&r.burst))
        {
            return Err(ValidationError::new(
                "rateLimit",
                "perSecond must be 1 to 100000 and burst 1 to 1000000",
            ));
        }
        Ok(())
    }
}

fn created(d: &Developer, secret: String) -> DeveloperCreated {
    DeveloperCreated {
        developer: d.into(),
        client_id: Developer::client_id_of(&d.id),
        client_secret: secret,
    }
}

pub(crate) async fn create_developer<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateDeveloper>,
) -> Result<impl IntoResponse, ApiError> {
    p.require(scopes::ADMIN)?;
    req.validate()?;
    let (all, _) = st.store.list::<Developer>().await?;
    if let Some(other) = all
        .iter()
        .find(|d| d.value.app_provider == req.app_provider && d.value.id != req.id)
    {
        return Err(ApiError::Conflict(format!(
            "appProvider {:?} is already developer {}'s",
            req.app_provider, other.value.id
        )));
    }
    let secret = util::random_hex(32);
    let dev = Developer {
        id: req.id,
        app_provider: req.app_provider,
        description: req.description,
        secret_sha256: util::sha256_hex(&secret),
        scopes: req
            .scopes
            .unwrap_or_else(|| scopes::DEVELOPER.iter().map(|s| (*s).to_string()).collect()),
        rate_limit: req.rate_limit.unwrap_or(RateLimit::DEVELOPER),
        created_at: util::now_unix(),
    };
    st.store.create(&dev).await?;
    Ok((StatusCode::CREATED, Json(created(&dev, secret))))
}

pub(crate) async fn list_developers<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<DeveloperView>>, ApiError> {
    p.require(scopes::ADMIN)?;
    let (all, _) = st.store.list::<Developer>().await?;
    Ok(Json(all.iter().map(|d| (&d.value).into()).collect()))
}

fn developer_id(raw: &str) -> Result<DeveloperId, ApiError> {
    Ok(DeveloperId::new(raw)?)
}

pub(crate) async fn get_developer<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<DeveloperView>, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = developer_id(&raw)?;
    st.store
        .get::<Developer>(id.as_str())
        .await?
        .map(|d| Json((&d.value).into()))
        .ok_or_else(|| ApiError::NotFound(format!("developer {id} not found")))
}

/// `POST /mecfed/v1/developers/{id}/secret`: a new client secret; the old one stops working
/// for new tokens at once.
pub(crate) async fn rotate_secret<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<DeveloperCreated>, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = developer_id(&raw)?;
    let cur = st
        .store
        .get::<Developer>(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("developer {id} not found")))?;
    let secret = util::random_hex(32);
    let mut dev = cur.value;
    dev.secret_sha256 = util::sha256_hex(&secret);
    st.store.update(&dev, cur.revision).await?;
    Ok(Json(created(&dev, secret)))
}

/// Deletes a developer that has no apps left (409 otherwise: nothing is orphaned).
/// Idempotent.
pub(crate) async fn delete_developer<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = developer_id(&raw)?;
    let (apps, _) = st.store.list::<App>().await?;
    let owned = apps.iter().filter(|a| a.value.developer == id).count();
    if owned > 0 {
        return Err(ApiError::Conflict(format!(
            "developer {id} still has {owned} app(s); delete them first"
        )));
    }
    st.store.delete::<Developer>(id.as_str(), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_provider_names_follow_camara() {
        validate_app_provider("StudioOne", "appProvider").unwrap();
        validate_app_provider("studio_1_games", "appProvider").unwrap();
        for bad in ["short", "1Studio_x", "Studio-One", &"A".repeat(65)] {
            assert_eq!(
                validate_app_provider(bad, "appProvider").unwrap_err().field,
                "appProvider",
                "{bad}"
            );
        }
    }
}
