//! ETSI MEC 012 2.2.1 Radio Network Information (`/rni/v2`, the vendored file's server
//! path), for what mecfed models: which UE is on which cell of which PLMN, its default
//! bearer, and cell changes.
//!
//! - A cell is an access point of a site that has a PLMN (`--plmn`), reached over NR or LTE.
//!   Its ECGI is the site's PLMN and a 28-bit cell identity: the access point id itself when
//!   it is 7 hex digits, otherwise the first 28 bits of its SHA-256 (stable, not an operator
//!   assignment). NR cells are reported as ECGIs too: the 2.2.1 cell-change notification has
//!   no NR form.
//! - Each UE has its default EPS bearer: E-RAB 5 with QCI 9 (best effort), as attached.
//! - `layer2_meas` reports the number of active UEs per cell, and per UE its association;
//!   PRB usage, delays, throughput and data volumes are not measured (absent, and filters on
//!   them match nothing).
//! - `CellChangeSubscription` reports completed hand-overs (`hoStatus` 3) seen in the UE
//!   table; preparation, rejection and cancellation come with the gateway's hand-over events.
//!
//! A developer sees a UE only when it consented (`sharedWith`), as in the location API;
//! `app_ins_id` (and `filterCriteriaAssocHo.appInstanceId`) selects the cells of that
//! instance's site. Notifications go out as `{"subscriptionNotification": {...}}`, the
//! vendored file's callback form.

use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use mecfed_core::{AccessKind, Plmn, Site, Ue};
use mecfed_store::{Store, typed::Typed};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::instance_for;
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
    notify::{self, Subscription},
    util::now_unix,
};

/// Path prefix of MEC 012.
pub const RNI_ROOT: &str = "/rni/v2";
/// Family of cell-change subscriptions.
pub const CELL_CHANGE: &str = "mec012.cellChange";
/// E-RAB id of the default EPS bearer.
pub const DEFAULT_ERAB_ID: u32 = 5;
/// QCI of the default bearer (best effort).
pub const DEFAULT_QCI: u32 = 9;

// === the radio view (IO-free) ===

/// The 28-bit E-UTRAN cell identity of access point `ap`, as 7 hex digits.
pub fn cell_identity(ap: &str) -> String {
    if ap.len() == 7 && ap.bytes().all(|b| b.is_ascii_hexdigit()) {
        return ap.to_ascii_uppercase();
    }
    hex::encode_upper(Sha256::digest(ap.as_bytes()))[..7].to_string()
}

/// An `Ecgi`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ecgi {
    /// PLMN.
    pub plmn: PlmnJson,
    /// 28-bit cell identity, hex.
    pub cell_id: String,
}

/// `Plmn` as MEC 012 writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlmnJson {
    /// MCC.
    pub mcc: String,
    /// MNC.
    pub mnc: String,
}

impl From<&Plmn> for PlmnJson {
    fn from(p: &Plmn) -> Self {
        Self {
            mcc: p.mcc.clone(),
            mnc: p.mnc.clone(),
        }
    }
}

/// The cells known: access point id to ECGI and site.
#[derive(Debug, Clone, Default)]
pub struct Cells {
    by_ap: BTreeMap<String, (Ecgi, String)>,
}

impl Cells {
    /// Cells of the sites that have a PLMN.
    pub fn new(sites: &[Site]) -> Self {
        let mut by_ap = BTreeMap::new();
        for s in sites {
            let Some(plmn) = &s.plmn else { continue };
            for ap in &s.access_points {
                by_ap.entry(ap.clone()).or_insert_with(|| {
                    (
                        Ecgi {
                            plmn: plmn.into(),
                            cell_id: cell_identity(ap),
                        },
                        s.id.to_string(),
                    )
                });
            }
        }
        Self { by_ap }
    }

    /// The cell `ue` is on, if it is attached over NR or LTE to a known cell.
    pub fn of(&self, ue: &Ue) -> Option<&Ecgi> {
        let a = ue.attachment.as_ref()?;
        if !matches!(a.access, AccessKind::Nr5g | AccessKind::Lte) {
            return None;
        }
        self.by_ap.get(&a.access_point).map(|(e, _)| e)
    }

    /// The cells of site `site`.
    pub fn of_site(&self, site: &str) -> Vec<&Ecgi> {
        self.by_ap
            .values()
            .filter(|(_, s)| s == site)
            .map(|(e, _)| e)
            .collect()
    }
}

/// The `AssociateId`s of a UE: its IPv4 address.
pub fn associate_ids(ue: &Ue) -> Vec<Value> {
    ue.identity
        .ipv4_address
        .map(|ip| json!({"type": 1, "value": ip.to_string()}))
        .into_iter()
        .collect()
}

/// `FilterCriteriaAssocHo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterCriteriaAssocHo {
    /// An instance: the cells of its site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_instance_id: Option<String>,
    /// UEs by association.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associate_id: Option<Vec<AssociateId>>,
    /// Cells (source or target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecgi: Option<Vec<Ecgi>>,
    /// Hand-over statuses; 3 (COMPLETED) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ho_status: Option<Vec<u8>>,
}

/// `AssociateId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociateId {
    /// 1 IPv4, 2 IPv6, 3 NATed IP, 4 GTP TEID.
    #[serde(rename = "type")]
    pub kind: u8,
    /// The identifier.
    pub value: String,
}

/// `CellChangeSubscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CellChangeSubscription {
    /// `CellChangeSubscription`.
    pub subscription_type: String,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_reference: Option<String>,
    /// A test notification on creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_test_notification: Option<bool>,
    /// Refused when it asks for a websocket.
    #[serde(default, skip_serializing)]
    pub websock_notif_config: Option<Value>,
    /// Answered by the platform.
    #[serde(rename = "_links", default, skip_serializing)]
    pub links: Option<Value>,
    /// What to report.
    pub filter_criteria_assoc_ho: FilterCriteriaAssocHo,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deadline: Option<super::location::model::TimeStamp>,
}

impl CellChangeSubscription {
    fn check(&mut self, now: u64) -> Result<(), ApiError> {
        let bad = |f: &str, why: &str| Err(ApiError::BadRequest(format!("invalid {f}: {why}")));
        if self.subscription_type != "CellChangeSubscription" {
            return bad(
                "subscriptionType",
                "mecfed offers CellChangeSubscription only",
            );
        }
        match &self.callback_reference {
            Some(cb) => notify::validate_callback(cb, "callbackReference")?,
            None => {
                return bad(
                    "callbackReference",
                    "required (websocket delivery is not offered)",
                );
            }
        }
        self.websock_notif_config = None;
        if let Some(d) = self.expiry_deadline {
            d.check_deadline(now, "expiryDeadline")?;
        }
        let f = &mut self.filter_criteria_assoc_ho;
        for (i, s) in f.ho_status.iter().flatten().enumerate() {
            if !(1..=5).contains(s) {
                return bad(&format!("filterCriteriaAssocHo.hoStatus[{i}]"), "1 to 5");
            }
        }
        for (i, a) in f.associate_id.iter().flatten().enumerate() {
            if !(1..=4).contains(&a.kind) {
                return bad(
                    &format!("filterCriteriaAssocHo.associateId[{i}].type"),
                    "1 to 4",
                );
            }
        }
        for (i, e) in f.ecgi.iter().flatten().enumerate() {
            let plmn = Plmn {
                mcc: e.plmn.mcc.clone(),
                mnc: e.plmn.mnc.clone(),
            };
            if plmn.validate().is_err() {
                return bad(
                    &format!("filterCriteriaAssocHo.ecgi[{i}].plmn"),
                    "MCC 3 digits, MNC 2 or 3",
                );
            }
            if e.cell_id.len() != 7 || !e.cell_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(
                    &format!("filterCriteriaAssocHo.ecgi[{i}].cellId"),
                    "28 bits as 7 hex digits",
                );
            }
        }
        // The default the spec asks to answer.
        f.ho_status.get_or_insert_with(|| vec![3]);
        Ok(())
    }
}

/// Whether a completed hand-over of `ue` from `src` to `trg` passes `f`; `site_cells` are
/// the cells of `f.appInstanceId`'s site, when it names one (IO-free).
pub fn passes(
    f: &FilterCriteriaAssocHo,
    ue: &Ue,
    src: &Ecgi,
    trg: &Ecgi,
    site_cells: Option<&[&Ecgi]>,
) -> bool {
    let completed = f.ho_status.as_ref().is_none_or(|s| s.contains(&3));
    let ip = ue.identity.ipv4_address.map(|i| i.to_string());
    let associated = f.associate_id.as_ref().is_none_or(|ids| {
        ids.is_empty()
            || ids
                .iter()
                .any(|a| a.kind == 1 && Some(&a.value) == ip.as_ref())
    });
    let cells = f
        .ecgi
        .as_ref()
        .is_none_or(|c| c.is_empty() || c.contains(src) || c.contains(trg));
    let site = site_cells.is_none_or(|c| c.contains(&src) || c.contains(&trg));
    completed && associated && cells && site
}

// === handlers ===

fn now() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn timestamp() -> Value {
    let (s, n) = now();
    json!({"seconds": s, "nanoSeconds": n})
}

fn sees(p: &Principal, ue: &Ue) -> bool {
    p.is_operator()
        || p.developer
            .as_ref()
            .is_some_and(|d| ue.shared_with.contains(d))
}

async fn view<S: Store>(store: &Typed<S>) -> Result<(Cells, Vec<Ue>), ApiError> {
    let cells = Cells::new(&crate::sites::sites_with_status(store).await?);
    let (ues, _) = store.list::<Ue>().await?;
    Ok((cells, ues.into_iter().map(|v| v.value).collect()))
}

/// The query's pairs (comma-separated lists split); unknown parameters are refused.
fn query(raw: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "invalid query: unknown parameter {k}"
            )));
        }
        out.entry(k)
            .or_default()
            .extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string));
    }
    Ok(out)
}

/// The cells of the instances named in `app_ins_id` (each must be the caller's), or `None`
/// when none is named.
async fn instance_cells<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    cells: &Cells,
    ids: Option<&Vec<String>>,
) -> Result<Option<Vec<Ecgi>>, ApiError> {
    let Some(ids) = ids.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for id in ids {
        let inst = instance_for(store, p, id).await?.value;
        out.extend(cells.of_site(inst.site.as_str()).into_iter().cloned());
    }
    Ok(Some(out))
}

/// Filters naming what is not modelled: nothing matches them.
const UNMEASURED: &[&str] = &[
    "ue_ipv6_address",
    "nated_ip_address",
    "gtp_teid",
    "erab_mbr_dl",
    "erab_mbr_ul",
    "erab_gbr_dl",
    "erab_gbr_ul",
];

pub(crate) async fn rab_info<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    let mut known = vec!["app_ins_id", "cell_id", "ue_ipv4_address", "erab_id", "qci"];
    known.extend(UNMEASURED);
    let q = query(raw.as_deref(), &known)?;
    let (cells, ues) = view(&st.store).await?;
    let scope = instance_cells(&st.store, &p, &cells, q.get("app_ins_id")).await?;
    let nothing = UNMEASURED.iter().any(|k| q.contains_key(*k));
    let wants = |key: &str, v: &str| q.get(key).is_none_or(|w| w.iter().any(|x| x == v));
    let mut by_cell: BTreeMap<Ecgi, Vec<Value>> = BTreeMap::new();
    for ue in ues.iter().filter(|u| sees(&p, u)) {
        let Some(cell) = cells.of(ue) else { continue };
        let ip = ue
            .identity
            .ipv4_address
            .map(|i| i.to_string())
            .unwrap_or_default();
        if nothing
            || scope.as_ref().is_some_and(|s| !s.contains(cell))
            || !wants("cell_id", &cell.cell_id)
            || !wants("ue_ipv4_address", &ip)
            || !wants("erab_id", &DEFAULT_ERAB_ID.to_string())
            || !wants("qci", &DEFAULT_QCI.to_string())
        {
            continue;
        }
        by_cell.entry(cell.clone()).or_default().push(json!({
            "associateId": associate_ids(ue),
            "erabInfo": [{"erabId": DEFAULT_ERAB_ID, "erabQosParameters": {"qci": DEFAULT_QCI}}],
        }));
    }
    let cell_user_info: Vec<Value> = by_cell
        .into_iter()
        .map(|(ecgi, ue_info)| json!({"ecgi": ecgi, "ueInfo": ue_info}))
        .collect();
    let app = q
        .get("app_ins_id")
        .map(|v| v.join(","))
        .or_else(|| p.instance.as_ref().map(ToString::to_string))
        .unwrap_or_default();
    Ok(Json(json!({"RabInfo": {
        "timeStamp": timestamp(),
        "appInstanceId": app,
        "requestId": uuid::Uuid::new_v4().to_string(),
        "cellUserInfo": cell_user_info,
    }})))
}

pub(crate) async fn plmn_info<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    let q = query(raw.as_deref(), &["app_ins_id"])?;
    let Some(ids) = q.get("app_ins_id").filter(|v| !v.is_empty()) else {
        return Err(ApiError::BadRequest("invalid app_ins_id: required".into()));
    };
    let sites = crate::sites::sites_with_status(&st.store).await?;
    let mut out = Vec::new();
    for id in ids {
        let inst = instance_for(&st.store, &p, id).await?.value;
        let plmn = sites
            .iter()
            .find(|s| s.id == inst.site)
            .and_then(|s| s.plmn.as_ref())
            .ok_or_else(|| {
                ApiError::NotFound(format!("the site of instance {id} announces no PLMN"))
            })?;
        out.push(json!({
            "timeStamp": timestamp(),
            "appInstanceId": id,
            "plmn": [PlmnJson::from(plmn)],
        }));
    }
    Ok(Json(Value::Array(out)))
}

pub(crate) async fn layer2_meas<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    // Every query parameter of the vendored file is accepted; the ones on measurements not
    // taken match nothing.
    let counted = [
        "number_of_active_ue_dl_nongbr_cell",
        "number_of_active_ue_ul_nongbr_cell",
    ];
    let unmeasured = [
        "dl_gbr_prb_usage_cell",
        "ul_gbr_prb_usage_cell",
        "dl_nongbr_prb_usage_cell",
        "ul_nongbr_prb_usage_cell",
        "dl_total_prb_usage_cell",
        "ul_total_prb_usage_cell",
        "received_dedicated_preambles_cell",
        "received_randomly_selected_preambles_low_range_cell",
        "received_randomly_selected_preambles_high_range_cell",
        "number_of_active_ue_dl_gbr_cell",
        "number_of_active_ue_ul_gbr_cell",
        "dl_gbr_pdr_cell",
        "ul_gbr_pdr_cell",
        "dl_nongbr_pdr_cell",
        "ul_nongbr_pdr_cell",
        "dl_gbr_delay_ue",
        "ul_gbr_delay_ue",
        "dl_nongbr_delay_ue",
        "ul_nongbr_delay_ue",
        "dl_gbr_pdr_ue",
        "ul_gbr_pdr_ue",
        "dl_nongbr_pdr_ue",
        "ul_nongbr_pdr_ue",
        "dl_gbr_throughput_ue",
        "ul_gbr_throughput_ue",
        "dl_nongbr_throughput_ue",
        "ul_nongbr_throughput_ue",
        "dl_gbr_data_volume_ue",
        "ul_gbr_data_volume_ue",
        "dl_nongbr_data_volume_ue",
        "ul_nongbr_data_volume_ue",
        "ue_ipv6_address",
        "nated_ip_address",
        "gtp_teid",
    ];
    let mut known = vec!["app_ins_id", "cell_id", "ue_ipv4_address"];
    known.extend(counted);
    known.extend(unmeasured);
    let q = query(raw.as_deref(), &known)?;
    let (cells, ues) = view(&st.store).await?;
    let scope = instance_cells(&st.store, &p, &cells, q.get("app_ins_id")).await?;
    let nothing = unmeasured.iter().any(|k| q.contains_key(*k));
    let wants = |key: &str, v: &str| q.get(key).is_none_or(|w| w.iter().any(|x| x == v));
    // Active UEs count every UE (an aggregate); per-UE rows only the visible ones.
    let mut active: BTreeMap<Ecgi, u32> = BTreeMap::new();
    for ue in &ues {
        if let Some(c) = cells.of(ue) {
            *active.entry(c.clone()).or_default() += 1;
        }
    }
    let in_scope =
        |c: &Ecgi| scope.as_ref().is_none_or(|s| s.contains(c)) && wants("cell_id", &c.cell_id);
    let cell_info: Vec<Value> = active
        .iter()
        .filter(|(c, n)| {
            in_scope(c) && counted.iter().all(|k| wants(k, &n.to_string())) && !nothing
        })
        .map(|(c, n)| {
            json!({"ecgi": c, "number_of_active_ue_dl_nongbr_cell": n,
                   "number_of_active_ue_ul_nongbr_cell": n})
        })
        .collect();
    let cell_ue_info: Vec<Value> = ues
        .iter()
        .filter(|u| sees(&p, u))
        .filter_map(|u| {
            let c = cells.of(u)?;
            let ip = u.identity.ipv4_address?.to_string();
            (in_scope(c) && wants("ue_ipv4_address", &ip) && !nothing)
                .then(|| json!({"ecgi": c, "associateId": {"type": 1, "value": ip}}))
        })
        .collect();
    Ok(Json(json!({"L2Meas": {
        "timeStamp": timestamp(),
        "cellInfo": cell_info,
        "cellUEInfo": cell_ue_info,
    }})))
}

// === subscriptions ===

fn owns(p: &Principal, sub: &Subscription) -> bool {
    sub.family == CELL_CHANGE
        && (p.is_operator()
            || (sub.developer.is_some()
                && sub.developer == p.developer
                && (p.instance.is_none() || sub.instance == p.instance)))
}

fn answer(sub: &Subscription, headers: &HeaderMap) -> Value {
    sub.answer("CellChangeSubscription", headers)
}

fn parse(v: Value) -> Result<CellChangeSubscription, ApiError> {
    super::unwrap_body(v, &["CellChangeSubscription"])
}

async fn owned<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    id: &str,
) -> Result<mecfed_store::typed::Versioned<Subscription>, ApiError> {
    st.store
        .get::<Subscription>(id)
        .await?
        .filter(|s| owns(p, &s.value))
        .ok_or_else(|| ApiError::NotFound(format!("subscription {id} not found")))
}

fn expiry(sub: &CellChangeSubscription, href: &str) -> Option<Value> {
    let d = sub.expiry_deadline?;
    Some(json!({"subscriptionNotification": {
        "notificationType": "ExpiryNotification",
        "timeStamp": {"seconds": d.seconds, "nanoSeconds": d.nano_seconds},
        "_links": {"subscription": {"href": href}},
        "expiryDeadline": {"seconds": d.seconds, "nanoSeconds": d.nano_seconds},
    }}))
}

/// Checks a filter's `appInstanceId` against the caller.
async fn check_instance<S: Store>(
    st: &ApiState<S>,
    p: &Principal,
    sub: &CellChangeSubscription,
) -> Result<(), ApiError> {
    if let Some(id) = &sub.filter_criteria_assoc_ho.app_instance_id {
        instance_for(&st.store, p, id).await.map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid filterCriteriaAssocHo.appInstanceId: no instance {id} of yours"
            ))
        })?;
    }
    Ok(())
}

pub(crate) async fn list_subscriptions<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    let q = query(raw.as_deref(), &["subscription_type"])?;
    let types = q.get("subscription_type").cloned().unwrap_or_default();
    let known = [
        "cell_change",
        "rab_est",
        "rab_mod",
        "rab_rel",
        "meas_rep_ue",
        "nr_meas_rep_ue",
        "meas_ta",
        "ca_reconf",
        "s1_bearer",
    ];
    if let Some(t) = types.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "invalid subscription_type: {t} is none of {}",
            known.join(", ")
        )));
    }
    let subs: Vec<Value> = if types.is_empty() || types.iter().any(|t| t == "cell_change") {
        notify::of_family(&st.store, CELL_CHANGE)
            .await?
            .into_iter()
            .filter(|s| owns(&p, s))
            .map(|s| s.link(&headers))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(json!({"SubscriptionLinkList": {"_links": {
        "self": {"href": crate::util::location(&headers, &format!("{RNI_ROOT}/subscriptions"))},
        "subscription": subs,
    }}})))
}

pub(crate) async fn create_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Response, ApiError> {
    p.require(scopes::MEC_RNI)?;
    let mut sub = parse(body)?;
    sub.check(now_unix())?;
    check_instance(&st, &p, &sub).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let href = format!("{RNI_ROOT}/subscriptions/{id}");
    let test = (sub.request_test_notification == Some(true)).then(|| {
        json!({"subscriptionNotification": {
            "notificationType": "TestNotification",
            "_links": {"subscription": {"href": href}},
        }})
    });
    let stored = notify::create(
        &st.store,
        Subscription {
            id,
            family: CELL_CHANGE.into(),
            subscription_type: "CellChangeSubscription".into(),
            developer: p.developer.clone(),
            instance: p.instance.clone(),
            callback: sub.callback_reference.clone().unwrap_or_default(),
            href: href.clone(),
            body: serde_json::to_value(&sub).map_err(|e| ApiError::Internal(Box::new(e)))?,
            expiry_deadline: sub.expiry_deadline.map(|d| d.seconds),
            expiry_notification: expiry(&sub, &href),
            next_seq: 0,
            created_at: now_unix(),
            delivery: notify::Delivery::default(),
        },
        test,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, crate::util::location(&headers, &href))],
        Json(answer(&stored, &headers)),
    )
        .into_response())
}

pub(crate) async fn get_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    Ok(Json(answer(&owned(&st, &p, &id).await?.value, &headers)))
}

pub(crate) async fn put_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    crate::sites::JsonBody(body): crate::sites::JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    p.require(scopes::MEC_RNI)?;
    let current = owned(&st, &p, &id).await?;
    let mut sub = parse(body)?;
    sub.check(now_unix())?;
    check_instance(&st, &p, &sub).await?;
    let expiry = (
        sub.expiry_deadline.map(|d| d.seconds),
        expiry(&sub, &current.value.href),
    );
    let next = notify::replace(
        &st.store,
        current,
        sub.callback_reference.as_deref(),
        expiry,
        &sub,
    )
    .await?;
    Ok(Json(answer(&next, &headers)))
}

pub(crate) async fn delete_subscription<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(scopes::MEC_RNI)?;
    owned(&st, &p, &id).await?;
    notify::remove(&st.store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `CellChangeNotification` `sub` gets when `ue` handed over from `src` to `trg`
/// (completed: the UE table only learns of finished hand-overs).
pub(crate) fn cell_change_body(sub: &Subscription, ue: &Ue, src: &Ecgi, trg: &Ecgi) -> Value {
    json!({"subscriptionNotification": {
        "notificationType": "CellChangeNotification",
        "timeStamp": timestamp(),
        "associateId": associate_ids(ue),
        "srcEcgi": src,
        "trgEcgi": [trg],
        "hoStatus": 3,
        "_links": [{"self": {"href": sub.href}}],
        "subscription": [{"href": sub.href}],
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecfed_core::{Attachment, OperatorId, UeId, UeIdentity};

    fn ue(ip: &str) -> Ue {
        let mut u = Ue::new(
            UeId::new("u").unwrap(),
            UeIdentity {
                ipv4_address: Some(ip.parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        u.attachment = Some(Attachment {
            access: AccessKind::Lte,
            access_point: "cell-1".into(),
            operator: OperatorId::new("op-a").unwrap(),
            location: mecfed_core::GeoPoint::new(0.0, 0.0).unwrap(),
        });
        u
    }

    fn ecgi(cell: &str) -> Ecgi {
        Ecgi {
            plmn: PlmnJson {
                mcc: "272".into(),
                mnc: "01".into(),
            },
            cell_id: cell_identity(cell),
        }
    }

    #[test]
    fn cell_identities_are_28_bits() {
        assert_eq!(cell_identity("00a1b2c"), "00A1B2C");
        let derived = cell_identity("cork-cell-1");
        assert_eq!(derived.len(), 7);
        assert_eq!(derived, cell_identity("cork-cell-1"), "stable");
        assert_ne!(derived, cell_identity("cork-cell-2"));
    }

    #[test]
    fn hand_over_filters() {
        let u = ue("10.0.0.1");
        let (a, b, c) = (ecgi("a"), ecgi("b"), ecgi("c"));
        let f = FilterCriteriaAssocHo::default();
        assert!(passes(&f, &u, &a, &b, None));
        let only = |ho: Vec<u8>| FilterCriteriaAssocHo {
            ho_status: Some(ho),
            ..Default::default()
        };
        assert!(passes(&only(vec![3]), &u, &a, &b, None));
        assert!(
            !passes(&only(vec![1, 4]), &u, &a, &b, None),
            "only completed hand-overs are seen"
        );
        let cells = FilterCriteriaAssocHo {
            ecgi: Some(vec![c.clone()]),
            ..Default::default()
        };
        assert!(!passes(&cells, &u, &a, &b, None));
        assert!(passes(&cells, &u, &a, &c, None));
        let assoc = |ip: &str| FilterCriteriaAssocHo {
            associate_id: Some(vec![AssociateId {
                kind: 1,
                value: ip.into(),
            }]),
            ..Default::default()
        };
        assert!(passes(&assoc("10.0.0.1"), &u, &a, &b, None));
        assert!(!passes(&assoc("10.0.0.2"), &u, &a, &b, None));
        assert!(
            !passes(&f, &u, &a, &b, Some(&[&c])),
            "not the instance site's cells"
        );
        assert!(passes(&f, &u, &a, &b, Some(&[&b])));
    }
}
