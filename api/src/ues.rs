//! The UE network context table (`/mecfed/v1/ues`): identities and current attachment of
//! the UEs, written by the operator's network side (the gateway, or tests until it lands) and
//! read by discovery and the ETSI MEC location and radio APIs. Operator only: a developer
//! sees UE data only through those APIs, for its own purposes.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use mecfed_core::{Ue, UeId};
use mecfed_store::Store;

use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    sites::JsonBody,
};

fn ue_id(raw: &str) -> Result<UeId, ApiError> {
    Ok(UeId::new(raw)?)
}

pub(crate) async fn list_ues<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<Ue>>, ApiError> {
    p.require(scopes::ADMIN)?;
    let (all, _) = st.store.list::<Ue>().await?;
    Ok(Json(all.into_iter().map(|v| v.value).collect()))
}

pub(crate) async fn get_ue<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<Ue>, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = ue_id(&raw)?;
    st.store
        .get::<Ue>(id.as_str())
        .await?
        .map(|v| Json(v.value))
        .ok_or_else(|| ApiError::NotFound(format!("ue {id} not found")))
}

/// Creates or replaces a UE's context. Identities are unique: a phone number, NAI or IPv4
/// address another UE holds is a conflict.
pub(crate) async fn put_ue<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
    JsonBody(ue): JsonBody<Ue>,
) -> Result<impl IntoResponse, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = ue_id(&raw)?;
    if ue.id != id {
        return Err(ApiError::BadRequest(format!(
            "invalid id: body says {:?}, path says {:?}",
            ue.id.as_str(),
            id.as_str()
        )));
    }
    ue.validate()?;
    let (all, _) = st.store.list::<Ue>().await?;
    let mine = &ue.identity;
    for other in all.iter().map(|v| &v.value).filter(|o| o.id != id) {
        let o = &other.identity;
        let clash = (mine.phone_number.is_some() && mine.phone_number == o.phone_number)
            || (mine.network_access_identifier.is_some()
                && mine.network_access_identifier == o.network_access_identifier)
            || (mine.ipv4_address.is_some() && mine.ipv4_address == o.ipv4_address);
        if clash {
            return Err(ApiError::Conflict(format!(
                "an identity of ue {id} is already ue {}'s",
                other.id
            )));
        }
    }
    let before: Vec<Ue> = all.into_iter().map(|v| v.value).collect();
    let existed = before.iter().any(|u| u.id == id);
    st.store.put(&ue).await?;
    let mut after: Vec<Ue> = before.iter().filter(|u| u.id != id).cloned().collect();
    after.push(ue.clone());
    crate::mec::location::ue_changed(&st.store, &ue, &before, &after).await?;
    let previous = before.iter().find(|u| u.id == id);
    crate::mec::rni::ue_changed(&st.store, previous, Some(&ue)).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ue)))
}

/// Forgets a UE. Idempotent.
pub(crate) async fn delete_ue<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = ue_id(&raw)?;
    let (before, _) = st.store.list::<Ue>().await?;
    let before: Vec<Ue> = before.into_iter().map(|v| v.value).collect();
    if let Some(gone) = before.iter().find(|u| u.id == id).cloned()
        && st.store.delete::<Ue>(id.as_str(), None).await?
    {
        let after: Vec<Ue> = before.iter().filter(|u| u.id != id).cloned().collect();
        crate::mec::location::ue_changed(&st.store, &gone, &before, &after).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
