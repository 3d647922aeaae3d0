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
use mecfed_store::{Compare, Store, Txn, TxnOp, typed};

use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    mec::location::model::addresses_of,
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

/// The key reserving one identity (`acr:<IPv4>`, `tel:<E.164>` or `sip:<NAI>`) for the UE
/// whose id it holds: `/mecfed/v1/ueidentities/<address>`.
fn identity_key(address: &str) -> Vec<u8> {
    format!("{}ueidentities/{address}", mecfed_store::typed::KEY_ROOT).into_bytes()
}

/// Creates or replaces a UE's context. Identities are unique: a phone number, NAI or IPv4
/// address another UE holds is a conflict. The UE and its identity reservations are one
/// transaction guarded by what was read, so two racing writers cannot both take one
/// identity. The notifications the change implies come from the UE-event engine
/// ([`crate::engine::ue`]), never from here.
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
    let store = st.store.store();
    let key = typed::key::<Ue>(id.as_str());
    loop {
        let current = store.get(&key).await?;
        let previous: Option<Ue> = match &current {
            Some(kv) => Some(
                serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(Box::new(e)))?,
            ),
            None => None,
        };
        let mut txn = Txn::new().when([Compare::mod_revision(
            key.clone(),
            current.as_ref().map_or(0, |kv| kv.mod_revision),
        )]);
        let mut ops = vec![TxnOp::put(
            key.clone(),
            serde_json::to_vec(&ue).map_err(|e| ApiError::Internal(Box::new(e)))?,
        )];
        let mine = addresses_of(&ue);
        for a in &mine {
            let k = identity_key(a);
            match store.get(&k).await? {
                Some(kv) if kv.value != id.as_str().as_bytes() => {
                    return Err(ApiError::Conflict(format!(
                        "identity {a} of ue {id} is already ue {}'s",
                        String::from_utf8_lossy(&kv.value)
                    )));
                }
                Some(kv) => txn = txn.when([Compare::mod_revision(k, kv.mod_revision)]),
                None => {
                    txn = txn.when([Compare::absent(k.clone())]);
                    ops.push(TxnOp::put(k, id.as_str()));
                }
            }
        }
        let dropped = previous
            .iter()
            .flat_map(addresses_of)
            .filter(|a| !mine.contains(a));
        txn = release_identities(store, &id, dropped, txn, &mut ops).await?;
        if store.txn(txn.and_then(ops)).await?.succeeded {
            let status = if previous.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            return Ok((status, Json(ue)));
        }
        // The UE or an identity changed meanwhile: look again (a taken identity is a 409).
    }
}

/// Adds to `txn` the release of the `identities` UE `id` holds, each guarded by its
/// reservation as read.
async fn release_identities<S: Store>(
    store: &S,
    id: &UeId,
    identities: impl IntoIterator<Item = String>,
    mut txn: Txn,
    ops: &mut Vec<TxnOp>,
) -> Result<Txn, ApiError> {
    for a in identities {
        let k = identity_key(&a);
        if let Some(kv) = store.get(&k).await?
            && kv.value == id.as_str().as_bytes()
        {
            txn = txn.when([Compare::mod_revision(k.clone(), kv.mod_revision)]);
            ops.push(TxnOp::Delete(k));
        }
    }
    Ok(txn)
}

/// Forgets a UE and frees its identities. Idempotent.
pub(crate) async fn delete_ue<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::ADMIN)?;
    let id = ue_id(&raw)?;
    let store = st.store.store();
    let key = typed::key::<Ue>(id.as_str());
    loop {
        let Some(current) = store.get(&key).await? else {
            return Ok(StatusCode::NO_CONTENT);
        };
        let ue: Ue =
            serde_json::from_slice(&current.value).map_err(|e| ApiError::Internal(Box::new(e)))?;
        let txn = Txn::new().when([Compare::mod_revision(key.clone(), current.mod_revision)]);
        let mut ops = vec![TxnOp::Delete(key.clone())];
        let txn = release_identities(store, &id, addresses_of(&ue), txn, &mut ops).await?;
        if store.txn(txn.and_then(ops)).await?.succeeded {
            return Ok(StatusCode::NO_CONTENT);
        }
    }
}

/// Reserves the identities of UEs stored before identities were reserved (at start-up):
/// the first UE to hold an identity keeps it; a later duplicate is logged.
pub(crate) async fn reserve_identities<S: Store>(
    store: &mecfed_store::typed::Typed<S>,
) -> Result<(), ApiError> {
    let (all, _) = store.list::<Ue>().await?;
    for u in all {
        for a in addresses_of(&u.value) {
            let k = identity_key(&a);
            let txn = Txn::new()
                .when([Compare::absent(k.clone())])
                .and_then([TxnOp::put(k.clone(), u.value.id.as_str())]);
            if !store.store().txn(txn).await?.succeeded
                && store
                    .store()
                    .get(&k)
                    .await?
                    .is_some_and(|kv| kv.value != u.value.id.as_str().as_bytes())
            {
                tracing::warn!(ue = %u.value.id, identity = %a,
                    "identity held by two UEs stored before identities were reserved");
            }
        }
    }
    Ok(())
}
