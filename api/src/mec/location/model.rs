//! What the location service knows and decides, without IO: zones and access points from the
//! sites, where each UE is, the six MEC 013 subscription types with their checks, and which
//! notifications a UE's move causes for a subscription.
//!
//! A MEC 013 zone is a mecfed zone (the sites of one zone); its access points are the cells
//! and Wi-Fi APs its sites list. A UE is located at its serving access point: the platform
//! knows the access point's position, not the UE's own, and says so with shape 2 (a point)
//! and no accuracy.

use std::collections::BTreeMap;

// The hot-path tables hash with foldhash (seeded per process), several times faster than
// SipHash on short string keys.
use foldhash::HashMap;

use mecfed_core::{AccessKind, GeoPoint, Site, SiteStatus, Ue, UeId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::LOCATION_ROOT;
use crate::ApiError;

// === the directory ===

/// An access point in scope of the location service.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPoint {
    /// Its id (cell id or BSSID).
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Where it is (its site's position).
    pub location: GeoPoint,
    /// Whether its site is Ready.
    pub serviceable: bool,
    /// The radio kinds of its site.
    pub kinds: Vec<AccessKind>,
}

/// Zones and access points, from the sites.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    aps: HashMap<String, AccessPoint>,
    zones: BTreeMap<String, Vec<String>>,
}

/// Where a UE is.
#[derive(Debug, Clone, PartialEq)]
pub struct Place<'a> {
    /// Zone.
    pub zone: &'a str,
    /// Serving access point.
    pub access_point: &'a str,
    /// Position (the access point's).
    pub location: GeoPoint,
}

impl Directory {
    /// The directory of `sites` (an access point listed by two sites belongs to the first).
    pub fn new(sites: &[Site]) -> Self {
        let mut d = Self::default();
        for s in sites {
            let zone = s.zone.to_string();
            d.zones.entry(zone.clone()).or_default();
            for ap in &s.access_points {
                if d.aps.contains_key(ap) {
                    continue;
                }
                d.aps.insert(
                    ap.clone(),
                    AccessPoint {
                        id: ap.clone(),
                        zone: zone.clone(),
                        location: s.location,
                        serviceable: s.status == SiteStatus::Ready,
                        kinds: s.access_kinds.clone(),
                    },
                );
                d.zones.get_mut(&zone).expect("inserted").push(ap.clone());
            }
        }
        d
    }

    /// Where `ue` is, if attached to an access point in scope.
    pub fn place(&self, ue: &Ue) -> Option<Place<'_>> {
        let ap = self.aps.get(&ue.attachment.as_ref()?.access_point)?;
        Some(Place {
            zone: &ap.zone,
            access_point: &ap.id,
            location: ap.location,
        })
    }

    /// Zone ids, in order.
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.zones.keys().map(String::as_str)
    }

    /// Whether `zone` exists.
    pub fn has_zone(&self, zone: &str) -> bool {
        self.zones.contains_key(zone)
    }

    /// The access points of `zone`.
    pub fn access_points(&self, zone: &str) -> Vec<&AccessPoint> {
        self.zones
            .get(zone)
            .map(|ids| ids.iter().filter_map(|i| self.aps.get(i)).collect())
            .unwrap_or_default()
    }
}

/// Users per zone and per access point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// By zone.
    pub zone: BTreeMap<String, u32>,
    /// By access point.
    pub ap: BTreeMap<String, u32>,
}

impl Counts {
    /// Counts of `ues` located in `dir`.
    pub fn of<'a>(dir: &Directory, ues: impl IntoIterator<Item = &'a Ue>) -> Self {
        let mut c = Self::default();
        for p in ues.into_iter().filter_map(|u| dir.place(u)) {
            *c.zone.entry(p.zone.to_string()).or_default() += 1;
            *c.ap.entry(p.access_point.to_string()).or_default() += 1;
        }
        c
    }
}

// === addresses and answers ===

/// A UE's address: `acr:<IPv4>` (as the spec's examples), else `tel:<E.164>`, else
/// `sip:<NAI>`.
pub fn address(ue: &Ue) -> String {
    let id = &ue.identity;
    if let Some(ip) = id.ipv4_address {
        format!("acr:{ip}")
    } else if let Some(p) = &id.phone_number {
        format!("tel:{p}")
    } else {
        format!(
            "sip:{}",
            id.network_access_identifier.as_deref().unwrap_or_default()
        )
    }
}

/// Whether `addr` names `ue` by any of its identities (`acr:`, `tel:`, `sip:`).
pub fn names(addr: &str, ue: &Ue) -> bool {
    let id = &ue.identity;
    match addr.split_once(':') {
        Some(("acr", ip)) => id.ipv4_address.is_some_and(|v| v.to_string() == ip),
        Some(("tel", p)) => id.phone_number.as_deref() == Some(p),
        Some(("sip", n)) => id.network_access_identifier.as_deref() == Some(n),
        _ => false,
    }
}

/// Checks that `addr` is one of the address forms the service resolves.
pub fn check_address(addr: &str, field: &str) -> Result<(), ApiError> {
    match addr.split_once(':') {
        Some(("acr" | "tel" | "sip", rest)) if !rest.is_empty() => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "invalid {field}: an address is acr:<IPv4>, tel:<E.164> or sip:<user@realm>"
        ))),
    }
}

/// A `TimeStamp`.
pub fn timestamp(now: (u64, u32)) -> Value {
    json!({"seconds": now.0, "nanoSeconds": now.1})
}

/// A `LocationInfo` for a point.
pub fn location_info(p: &GeoPoint) -> Value {
    json!({"latitude": [p.latitude()], "longitude": [p.longitude()], "shape": 2})
}

fn encode(v: &str) -> String {
    serde_urlencoded::to_string([("address", v)]).unwrap_or_default()
}

/// A `UserInfo`.
pub fn user_info(ue: &Ue, place: &Place, now: (u64, u32)) -> Value {
    let addr = address(ue);
    json!({
        "address": addr,
        "accessPointId": place.access_point,
        "zoneId": place.zone,
        "resourceURL": format!("{LOCATION_ROOT}/queries/users?{}", encode(&addr)),
        "timestamp": timestamp(now),
        "locationInfo": location_info(&place.location),
    })
}

/// The MEC 013 `ConnectionType` of an access point: its site's one radio kind, else the kind
/// its users attach with, else `UNKNOWN`.
pub fn connection_type(ap: &AccessPoint, users: &[&Ue]) -> &'static str {
    let name = |k: &AccessKind| match k {
        AccessKind::Nr5g => "5G NR",
        AccessKind::Lte => "LTE",
        AccessKind::Wifi => "Wifi",
        AccessKind::Fixed => "UNKNOWN",
    };
    let radios: Vec<&AccessKind> = ap
        .kinds
        .iter()
        .filter(|k| **k != AccessKind::Fixed)
        .collect();
    if let [one] = radios.as_slice() {
        return name(one);
    }
    users
        .iter()
        .filter_map(|u| u.attachment.as_ref())
        .find(|a| a.access_point == ap.id)
        .map_or("UNKNOWN", |a| name(&a.access))
}

/// An `AccessPointInfo`.
pub fn access_point_info(ap: &AccessPoint, users: &[&Ue], count: u32) -> Value {
    json!({
        "accessPointId": ap.id,
        "connectionType": connection_type(ap, users),
        "operationStatus": if ap.serviceable { "Serviceable" } else { "Unserviceable" },
        "numberOfUsers": count,
        "locationInfo": location_info(&ap.location),
        "resourceURL": format!("{LOCATION_ROOT}/queries/zones/{}/accessPoints/{}", ap.zone, ap.id),
    })
}

/// A `ZoneInfo`.
pub fn zone_info(dir: &Directory, zone: &str, counts: &Counts) -> Value {
    let aps = dir.access_points(zone);
    json!({
        "zoneId": zone,
        "numberOfAccessPoints": aps.len(),
        "numberOfUnserviceableAccessPoints": aps.iter().filter(|a| !a.serviceable).count(),
        "numberOfUsers": counts.zone.get(zone).copied().unwrap_or(0),
        "resourceURL": format!("{LOCATION_ROOT}/queries/zones/{zone}"),
    })
}

// === subscriptions ===

/// The six subscription types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `UserLocationEventSubscription`.
    UserLocationEvent,
    /// `UserLocationPeriodicSubscription`.
    UserLocationPeriodic,
    /// `ZoneLocationEventSubscription`.
    ZoneLocationEvent,
    /// `ZoneStatusSubscription`.
    ZoneStatus,
    /// `UserAreaSubscription`.
    UserArea,
    /// `UserDistanceSubscription`.
    UserDistance,
}

/// Every kind.
pub const KINDS: [Kind; 6] = [
    Kind::UserLocationEvent,
    Kind::UserLocationPeriodic,
    Kind::ZoneLocationEvent,
    Kind::ZoneStatus,
    Kind::UserArea,
    Kind::UserDistance,
];

impl Kind {
    /// The `subscriptionType`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::UserLocationEvent => "UserLocationEventSubscription",
            Self::UserLocationPeriodic => "UserLocationPeriodicSubscription",
            Self::ZoneLocationEvent => "ZoneLocationEventSubscription",
            Self::ZoneStatus => "ZoneStatusSubscription",
            Self::UserArea => "UserAreaSubscription",
            Self::UserDistance => "UserDistanceSubscription",
        }
    }

    /// The body's wrapper, e.g. `userLocationEventSubscription`.
    pub fn wrapper(self) -> String {
        let t = self.type_name();
        t[..1].to_ascii_lowercase() + &t[1..]
    }

    /// The engine's family.
    pub fn family(self) -> String {
        format!(
            "mec013.{}",
            self.type_name().trim_end_matches("Subscription")
        )
    }

    /// The collection under `/subscriptions/`.
    pub fn collection(self) -> &'static str {
        match self {
            Self::UserLocationEvent | Self::UserLocationPeriodic => "users",
            Self::ZoneLocationEvent | Self::ZoneStatus => "zones",
            Self::UserArea => "area",
            Self::UserDistance => "distance",
        }
    }

    /// The `subscription_type` query value selecting it (`event`, `periodic`, `status`).
    pub fn query_name(self) -> &'static str {
        match self {
            Self::UserLocationPeriodic => "periodic",
            Self::ZoneStatus => "status",
            _ => "event",
        }
    }

    /// The kind named `subscriptionType`.
    pub fn of_type(t: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.type_name() == t)
    }

    /// The kind of a family.
    pub fn of_family(f: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.family() == f)
    }
}

/// `TimeStamp` in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeStamp {
    /// Seconds since the Unix epoch.
    pub seconds: u64,
    /// Nanoseconds.
    pub nano_seconds: u32,
}

/// The latest deadline accepted from a client: 9999-12-31T23:59:59Z, the end of RFC 3339's
/// range. Anything later is refused at the API rather than overflowing a timer later.
pub const MAX_DEADLINE: u64 = 253_402_300_799;

impl TimeStamp {
    /// Checks a client's deadline (`field`, e.g. `expiryDeadline`): in the future, no later
    /// than [`MAX_DEADLINE`], with nanoseconds below one second.
    pub fn check_deadline(&self, now: u64, field: &str) -> Result<(), ApiError> {
        if self.nano_seconds >= 1_000_000_000 {
            return bad(&format!("{field}.nanoSeconds"), "must be below 1000000000");
        }
        if self.seconds > MAX_DEADLINE {
            return bad(
                &format!("{field}.seconds"),
                "must be at most 253402300799 (9999-12-31T23:59:59Z)",
            );
        }
        if self.seconds <= now {
            return bad(field, "already passed");
        }
        Ok(())
    }
}

/// `UserEventPara`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserEventPara {
    /// Access points forming the monitored area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point_list: Option<Vec<String>>,
    /// `ONE_TIME_EVENT` or `CONTINUOUS_EVENTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_info: Option<String>,
    /// Whether each report carries the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_location_req: Option<bool>,
    /// The monitored zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

/// `PeriodicEventInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeriodicEventInfo {
    /// Number of reports.
    pub reporting_amount: f64,
    /// Seconds between reports.
    pub reporting_interval: f64,
}

/// `ReportingCtrl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportingCtrl {
    /// Most notifications; 0 or absent: no maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_count: Option<u32>,
    /// Maximum frequency (in seconds) of notifications per subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_frequency: Option<u32>,
    /// Least seconds between reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_interval: Option<u32>,
}

/// `Point`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Point {
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
}

/// `AreaInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AreaInfo {
    /// 1 circle, 2 polygon.
    pub shape: u8,
    /// One centre, or 3 to 15 corners.
    pub points: Vec<Point>,
    /// Metres, for a circle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius: Option<u32>,
}

impl AreaInfo {
    fn check(&self) -> Result<Vec<GeoPoint>, ApiError> {
        let bad = |why: &str| Err(ApiError::BadRequest(format!("invalid areaDefine: {why}")));
        let mut pts = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            pts.push(GeoPoint::new(p.latitude, p.longitude).map_err(|e| {
                ApiError::BadRequest(format!("invalid areaDefine.points[{i}]: {}", e.reason))
            })?);
        }
        match (self.shape, pts.len(), self.radius) {
            (1, 1, Some(r)) if r > 0 => Ok(pts),
            (1, _, _) => bad("a CIRCLE (shape 1) has one point and a radius above 0"),
            (2, 3..=15, None) => Ok(pts),
            (2, _, _) => bad("a POLYGON (shape 2) has 3 to 15 points and no radius"),
            _ => bad("shape is 1 (CIRCLE) or 2 (POLYGON)"),
        }
    }

    /// Whether `p` lies in the area.
    pub fn contains(&self, p: &GeoPoint) -> bool {
        use geo::Contains;
        let Ok(pts) = self.check() else { return false };
        match self.radius {
            Some(r) => pts[0].distance_m(p) <= f64::from(r),
            None => {
                let ring: Vec<geo::Coord<f64>> = pts
                    .iter()
                    .map(|q| geo::coord! { x: q.longitude(), y: q.latitude() })
                    .collect();
                geo::Polygon::new(geo::LineString::new(ring), vec![]).contains(&p.to_geo())
            }
        }
    }
}

const EVENTS: &[&str] = &["ENTERING_AREA_EVENT", "LEAVING_AREA_EVENT"];
const CRITERIA: &[&str] = &[
    "AllWithinDistance",
    "AnyWithinDistance",
    "AllBeyondDistance",
    "AnyBeyondDistance",
];
const OPERATION_STATUS: &[&str] = &["Serviceable", "Unserviceable", "Unknown"];

/// Any of the six subscription types: the union of their fields, checked per type by
/// [`LocationSubscription::check`] (a field of another type is refused, by name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LocationSubscription {
    pub subscription_type: String,
    /// Answered by the platform; ignored in requests.
    #[serde(rename = "_links", default, skip_serializing)]
    pub links: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_correlator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_deadline: Option<TimeStamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_test_notification: Option<bool>,
    /// Refused when it asks for a websocket: only HTTP callbacks are offered.
    #[serde(default, skip_serializing)]
    pub websock_notif_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_event_criteria: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_event_para: Option<UserEventPara>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic_event_info: Option<PeriodicEventInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_ctrl: Option<ReportingCtrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_status: Option<Vec<String>>,
    #[serde(
        rename = "upperNumberOfUsersZoneThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub upper_zone: Option<u32>,
    #[serde(
        rename = "lowerNumberOfUsersZoneThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lower_zone: Option<u32>,
    #[serde(
        rename = "upperNumberOfUsersAPThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub upper_ap: Option<u32>,
    #[serde(
        rename = "lowerNumberOfUsersAPThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lower_ap: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area_define: Option<AreaInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitored_address: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_address: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_immediate: Option<bool>,
}

fn bad<T>(field: &str, why: &str) -> Result<T, ApiError> {
    Err(ApiError::BadRequest(format!("invalid {field}: {why}")))
}

fn values_in(v: &Option<Vec<String>>, allowed: &[&str], field: &str) -> Result<(), ApiError> {
    for (i, x) in v.iter().flatten().enumerate() {
        if !allowed.contains(&x.as_str()) {
            return bad(
                &format!("{field}[{i}]"),
                &format!("one of {}", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

fn addresses(v: &Option<Vec<String>>, field: &str) -> Result<(), ApiError> {
    for (i, a) in v.iter().flatten().enumerate() {
        check_address(a, &format!("{field}[{i}]"))?;
    }
    Ok(())
}

impl LocationSubscription {
    /// Names of the fields given, by JSON name.
    fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut on = |present: bool, name: &'static str| {
            if present {
                out.push(name);
            }
        };
        on(self.address.is_some(), "address");
        on(
            self.location_event_criteria.is_some(),
            "locationEventCriteria",
        );
        on(self.user_event_para.is_some(), "userEventPara");
        on(self.periodic_event_info.is_some(), "periodicEventInfo");
        on(self.zone_id.is_some(), "zoneId");
        on(self.address_list.is_some(), "addressList");
        on(self.reporting_ctrl.is_some(), "reportingCtrl");
        on(self.operation_status.is_some(), "operationStatus");
        on(self.upper_zone.is_some(), "upperNumberOfUsersZoneThreshold");
        on(self.lower_zone.is_some(), "lowerNumberOfUsersZoneThreshold");
        on(self.upper_ap.is_some(), "upperNumberOfUsersAPThreshold");
        on(self.lower_ap.is_some(), "lowerNumberOfUsersAPThreshold");
        on(self.area_define.is_some(), "areaDefine");
        on(self.tracking_accuracy.is_some(), "trackingAccuracy");
        on(self.monitored_address.is_some(), "monitoredAddress");
        on(self.reference_address.is_some(), "referenceAddress");
        on(self.distance.is_some(), "distance");
        on(self.criteria.is_some(), "criteria");
        on(self.check_immediate.is_some(), "checkImmediate");
        out
    }

    /// Checks the subscription for collection `collection` at `now` (Unix seconds); answers
    /// its kind. Unknown zones are refused.
    pub fn check(&mut self, collection: &str, now: u64, dir: &Directory) -> Result<Kind, ApiError> {
        let Some(kind) = Kind::of_type(&self.subscription_type) else {
            return bad("subscriptionType", "not a MEC 013 subscription type");
        };
        if kind.collection() != collection {
            return bad(
                "subscriptionType",
                &format!(
                    "{} is not a subscription of /subscriptions/{collection}",
                    kind.type_name()
                ),
            );
        }
        let websocket = self
            .websock_notif_config
            .as_ref()
            .and_then(|w| w.get("requestWebsocketUri"))
            .and_then(Value::as_bool)
            == Some(true);
        match &self.callback_reference {
            Some(cb) => crate::notify::validate_callback(cb, "callbackReference")?,
            None if websocket => {
                return bad(
                    "websockNotifConfig",
                    "websocket delivery is not offered; give a callbackReference",
                );
            }
            None => return bad("callbackReference", "required"),
        }
        // Both given: the callback is the alternative chosen, and only it is answered.
        self.websock_notif_config = None;
        if let Some(d) = self.expiry_deadline {
            d.check_deadline(now, "expiryDeadline")?;
        }
        let (required, allowed): (&[&str], &[&str]) = match kind {
            Kind::UserLocationEvent => (
                &["address"],
                &["address", "locationEventCriteria", "userEventPara"],
            ),
            Kind::UserLocationPeriodic => (
                &["address", "periodicEventInfo"],
                &["address", "periodicEventInfo"],
            ),
            Kind::ZoneLocationEvent => (
                &["zoneId"],
                &[
                    "zoneId",
                    "addressList",
                    "locationEventCriteria",
                    "reportingCtrl",
                ],
            ),
            Kind::ZoneStatus => (
                &["zoneId"],
                &[
                    "zoneId",
                    "operationStatus",
                    "reportingCtrl",
                    "upperNumberOfUsersZoneThreshold",
                    "lowerNumberOfUsersZoneThreshold",
                    "upperNumberOfUsersAPThreshold",
                    "lowerNumberOfUsersAPThreshold",
                ],
            ),
            Kind::UserArea => (
                &["addressList", "areaDefine", "trackingAccuracy"],
                &[
                    "addressList",
                    "areaDefine",
                    "trackingAccuracy",
                    "locationEventCriteria",
                    "reportingCtrl",
                ],
            ),
            Kind::UserDistance => (
                &[
                    "monitoredAddress",
                    "distance",
                    "trackingAccuracy",
                    "criteria",
                    "checkImmediate",
                ],
                &[
                    "monitoredAddress",
                    "referenceAddress",
                    "distance",
                    "trackingAccuracy",
                    "criteria",
                    "checkImmediate",
                    "reportingCtrl",
                ],
            ),
        };
        let given = self.given();
        if let Some(f) = given.iter().find(|f| !allowed.contains(f)) {
            return bad(f, &format!("not a field of {}", kind.type_name()));
        }
        if let Some(f) = required.iter().find(|f| !given.contains(f)) {
            return bad(f, &format!("required in {}", kind.type_name()));
        }
        if let Some(a) = &self.address {
            check_address(a, "address")?;
        }
        addresses(&self.address_list, "addressList")?;
        addresses(&self.monitored_address, "monitoredAddress")?;
        addresses(&self.reference_address, "referenceAddress")?;
        values_in(
            &self.location_event_criteria,
            EVENTS,
            "locationEventCriteria",
        )?;
        values_in(&self.operation_status, OPERATION_STATUS, "operationStatus")?;
        if let Some(z) = &self.zone_id
            && !dir.has_zone(z)
        {
            return bad("zoneId", "no such zone (GET /queries/zones)");
        }
        if let Some(p) = &self.user_event_para {
            if p.access_point_list.is_some() && p.zone_id.is_some() {
                return bad(
                    "userEventPara",
                    "accessPointList and zoneId exclude each other",
                );
            }
            if let Some(z) = &p.zone_id
                && !dir.has_zone(z)
            {
                return bad("userEventPara.zoneId", "no such zone");
            }
            if let Some(o) = &p.occurrence_info
                && !["ONE_TIME_EVENT", "CONTINUOUS_EVENTS"].contains(&o.as_str())
            {
                return bad(
                    "userEventPara.occurrenceInfo",
                    "ONE_TIME_EVENT or CONTINUOUS_EVENTS",
                );
            }
        }
        if let Some(p) = &self.periodic_event_info {
            let whole = |v: f64| v >= 1.0 && v.fract() == 0.0;
            if !whole(p.reporting_amount) || !whole(p.reporting_interval) {
                return bad(
                    "periodicEventInfo",
                    "reportingAmount and reportingInterval are whole numbers from 1",
                );
            }
            if p.reporting_amount * p.reporting_interval > 8_639_999.0 {
                return bad(
                    "periodicEventInfo",
                    "reportingAmount x reportingInterval exceeds 8639999 seconds",
                );
            }
        }
        if let Some(a) = &self.area_define {
            a.check()?;
        }
        if let Some(l) = &self.address_list
            && kind == Kind::UserArea
            && l.is_empty()
        {
            return bad("addressList", "at least one address");
        }
        if let Some(c) = &self.criteria
            && !CRITERIA.contains(&c.as_str())
        {
            return bad("criteria", &format!("one of {}", CRITERIA.join(", ")));
        }
        if let Some(d) = self.distance
            && !(d.is_finite() && d > 0.0)
        {
            return bad("distance", "metres above 0");
        }
        if let Some(t) = self.tracking_accuracy
            && !(t.is_finite() && t >= 0.0)
        {
            return bad("trackingAccuracy", "metres, 0 or more");
        }
        if kind == Kind::UserDistance {
            let monitored = self.monitored_address.as_ref().map_or(0, Vec::len);
            let references = self.reference_address.as_ref().map_or(0, Vec::len);
            if monitored == 0 || (references == 0 && monitored < 2) {
                return bad(
                    "monitoredAddress",
                    "one address or more with referenceAddress, two or more without",
                );
            }
        }
        Ok(kind)
    }

    fn wants(&self, event: &str) -> bool {
        self.location_event_criteria
            .as_ref()
            .is_none_or(|c| c.is_empty() || c.iter().any(|e| e == event))
    }
}

// === events ===

/// A UE table as the event logic reads it: lookups by id and address, and user counts.
pub trait Ues {
    /// The UE with id `id`.
    fn get(&self, id: &UeId) -> Option<&Ue>;
    /// The UE `addr` names ([`names`]).
    fn by_address(&self, addr: &str) -> Option<&Ue>;
    /// UEs located in `zone` under `dir`.
    fn zone_users(&self, dir: &Directory, zone: &str) -> u32;
    /// UEs attached to access point `ap` under `dir`.
    fn ap_users(&self, dir: &Directory, ap: &str) -> u32;
}

/// A plain list of UEs: every lookup scans it (queries and tests).
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a>(pub &'a [Ue]);

impl Ues for Listed<'_> {
    fn get(&self, id: &UeId) -> Option<&Ue> {
        self.0.iter().find(|u| u.id == *id)
    }
    fn by_address(&self, addr: &str) -> Option<&Ue> {
        self.0.iter().find(|u| names(addr, u))
    }
    fn zone_users(&self, dir: &Directory, zone: &str) -> u32 {
        Counts::of(dir, self.0).zone.get(zone).copied().unwrap_or(0)
    }
    fn ap_users(&self, dir: &Directory, ap: &str) -> u32 {
        Counts::of(dir, self.0).ap.get(ap).copied().unwrap_or(0)
    }
}

/// Every address a UE answers to: `acr:<IPv4>`, `tel:<E.164>`, `sip:<NAI>`, as many as it has.
pub fn addresses_of(ue: &Ue) -> Vec<String> {
    let id = &ue.identity;
    let mut out = Vec::with_capacity(3);
    if let Some(ip) = id.ipv4_address {
        out.push(format!("acr:{ip}"));
    }
    if let Some(p) = &id.phone_number {
        out.push(format!("tel:{p}"));
    }
    if let Some(n) = &id.network_access_identifier {
        out.push(format!("sip:{n}"));
    }
    out
}

/// An indexed UE table: by id, by every address, and user counts per zone and access point
/// under one [`Directory`], kept up to date by [`UeTable::apply`] at the cost of the one UE
/// changed. One writer (the UE-event engine); the counts are right for the directory last
/// given to [`UeTable::new`] or [`UeTable::recount`].
#[derive(Debug, Clone, Default)]
pub struct UeTable {
    by_id: HashMap<UeId, Ue>,
    by_address: HashMap<String, UeId>,
    zones: HashMap<String, u32>,
    aps: HashMap<String, u32>,
}

impl UeTable {
    /// The table of `ues`, counted under `dir`.
    pub fn new(dir: &Directory, ues: impl IntoIterator<Item = Ue>) -> Self {
        let mut t = Self::default();
        for ue in ues {
            let id = ue.id.clone();
            t.apply(dir, &id, Some(ue));
        }
        t
    }

    /// Sets UE `id` to `now` (`None`: it is gone); returns what it was.
    pub fn apply(&mut self, dir: &Directory, id: &UeId, now: Option<Ue>) -> Option<Ue> {
        let old = self.by_id.remove(id);
        // A move keeps the UE's identities: its addresses stay indexed as they are.
        let same_identity = matches!((&old, &now), (Some(o), Some(n)) if o.identity == n.identity);
        if let Some(o) = &old {
            if !same_identity {
                for a in addresses_of(o) {
                    if self.by_address.get(&a) == Some(id) {
                        self.by_address.remove(&a);
                    }
                }
            }
            if let Some(p) = dir.place(o) {
                Self::count(&mut self.zones, p.zone, -1);
                Self::count(&mut self.aps, p.access_point, -1);
            }
        }
        if let Some(n) = now {
            if !same_identity {
                for a in addresses_of(&n) {
                    self.by_address.insert(a, id.clone());
                }
            }
            if let Some(p) = dir.place(&n) {
                Self::count(&mut self.zones, p.zone, 1);
                Self::count(&mut self.aps, p.access_point, 1);
            }
            self.by_id.insert(id.clone(), n);
        }
        old
    }

    fn count(m: &mut HashMap<String, u32>, k: &str, d: i32) {
        match m.get_mut(k) {
            Some(c) => *c = c.saturating_add_signed(d),
            None => {
                m.insert(k.to_string(), 0u32.saturating_add_signed(d));
            }
        }
    }

    /// Counts again under a changed directory.
    pub fn recount(&mut self, dir: &Directory) {
        self.zones.clear();
        self.aps.clear();
        for p in self.by_id.values().filter_map(|u| dir.place(u)) {
            Self::count(&mut self.zones, p.zone, 1);
            Self::count(&mut self.aps, p.access_point, 1);
        }
    }

    /// Number of UEs.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every UE, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Ue> {
        self.by_id.values()
    }
}

impl Ues for UeTable {
    fn get(&self, id: &UeId) -> Option<&Ue> {
        self.by_id.get(id)
    }
    fn by_address(&self, addr: &str) -> Option<&Ue> {
        self.by_id.get(self.by_address.get(addr)?)
    }
    fn zone_users(&self, _: &Directory, zone: &str) -> u32 {
        self.zones.get(zone).copied().unwrap_or(0)
    }
    fn ap_users(&self, _: &Directory, ap: &str) -> u32 {
        self.aps.get(ap).copied().unwrap_or(0)
    }
}

/// `base` with UE `id` changed from `was` to `now`, without copying the table: the world
/// after a change, while `base` is still the world before it.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Changed<'a> {
    base: &'a (dyn Ues + Sync),
    id: UeId,
    now: Option<&'a Ue>,
    /// Where `was` and `now` are under the directory of the counts.
    was_at: Option<Place<'a>>,
    now_at: Option<Place<'a>>,
}

impl<'a> Changed<'a> {
    /// `base` with UE `id` changed from `was` (as in `base`) to `now`, placed in `dir`.
    pub fn new(
        base: &'a (dyn Ues + Sync),
        dir: &'a Directory,
        id: UeId,
        was: Option<&'a Ue>,
        now: Option<&'a Ue>,
    ) -> Self {
        Self {
            base,
            id,
            now,
            was_at: was.and_then(|u| dir.place(u)),
            now_at: now.and_then(|u| dir.place(u)),
        }
    }

    fn delta(&self, hit: impl Fn(&Place<'_>) -> bool) -> i64 {
        let at = |p: &Option<Place<'_>>| i64::from(p.as_ref().is_some_and(&hit));
        at(&self.now_at) - at(&self.was_at)
    }
}

impl Ues for Changed<'_> {
    fn get(&self, id: &UeId) -> Option<&Ue> {
        if *id == self.id {
            self.now
        } else {
            self.base.get(id)
        }
    }
    fn by_address(&self, addr: &str) -> Option<&Ue> {
        if let Some(n) = self.now
            && names(addr, n)
        {
            return Some(n);
        }
        self.base.by_address(addr).filter(|u| u.id != self.id)
    }
    fn zone_users(&self, dir: &Directory, zone: &str) -> u32 {
        let n = i64::from(self.base.zone_users(dir, zone)) + self.delta(|p| p.zone == zone);
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }
    fn ap_users(&self, dir: &Directory, ap: &str) -> u32 {
        let n = i64::from(self.base.ap_users(dir, ap)) + self.delta(|p| p.access_point == ap);
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }
}

/// The world before or after a change: the directory and the UEs.
#[derive(Clone, Copy)]
pub struct World<'a> {
    /// Zones and access points.
    pub dir: &'a Directory,
    /// Every UE.
    pub ues: &'a (dyn Ues + Sync),
}

impl std::fmt::Debug for World<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

impl World<'_> {
    fn by_address(&self, addr: &str) -> Option<&Ue> {
        self.ues.by_address(addr)
    }

    fn place_of(&self, ue: &Ue) -> Option<Place<'_>> {
        self.dir.place(self.ues.get(&ue.id)?)
    }
}

/// One notification of a subscription: its body without `_links` and `timeStamp`, and the
/// wrapper it is sent in.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// e.g. `userLocationEventNotification`.
    pub wrapper: &'static str,
    /// The notification.
    pub body: Value,
}

/// Whether a one-time `UserLocationEventSubscription` ends with its first notification.
pub fn one_time(sub: &LocationSubscription) -> bool {
    sub.user_event_para
        .as_ref()
        .and_then(|p| p.occurrence_info.as_deref())
        == Some("ONE_TIME_EVENT")
}

fn distance_holds(
    sub: &LocationSubscription,
    w: &World<'_>,
    visible: &dyn Fn(&Ue) -> bool,
) -> Option<bool> {
    let limit = sub.distance?;
    let pos = |a: &String| {
        w.by_address(a)
            .filter(|u| visible(u))
            .and_then(|u| w.dir.place(u))
            .map(|p| p.location)
    };
    let monitored: Vec<GeoPoint> = sub
        .monitored_address
        .iter()
        .flatten()
        .filter_map(pos)
        .collect();
    let references: Vec<GeoPoint> = sub
        .reference_address
        .iter()
        .flatten()
        .filter_map(pos)
        .collect();
    let mut ds = Vec::new();
    if references.is_empty() {
        for (i, a) in monitored.iter().enumerate() {
            for b in &monitored[i + 1..] {
                ds.push(a.distance_m(b));
            }
        }
    } else {
        for a in &monitored {
            for r in &references {
                ds.push(a.distance_m(r));
            }
        }
    }
    if ds.is_empty() {
        return None;
    }
    let within = |d: &f64| *d <= limit;
    Some(match sub.criteria.as_deref()? {
        "AllWithinDistance" => ds.iter().all(within),
        "AnyWithinDistance" => ds.iter().any(within),
        "AllBeyondDistance" => ds.iter().all(|d| !within(d)),
        _ => ds.iter().any(|d| !within(d)),
    })
}

/// A `UserDistanceNotification` body when the criteria hold in `w`.
pub fn distance_event(
    sub: &LocationSubscription,
    w: &World<'_>,
    visible: &dyn Fn(&Ue) -> bool,
    now: (u64, u32),
) -> Option<Event> {
    if distance_holds(sub, w, visible) != Some(true) {
        return None;
    }
    let users: Vec<Value> = sub
        .monitored_address
        .iter()
        .flatten()
        .filter_map(|a| w.by_address(a))
        .filter(|u| visible(u))
        .filter_map(|u| Some(user_info(u, &w.dir.place(u)?, now)))
        .collect();
    Some(Event {
        wrapper: "userDistanceNotification",
        body: json!({
            "notificationType": "UserDistanceNotification",
            "distanceEvent": sub.criteria,
            "monitoredUsers": {"resourceURL": format!("{LOCATION_ROOT}/queries/users"), "user": users},
        }),
    })
}

/// The notifications `sub` (of `kind`) gets when UE `ue` changed from `before` to `after`.
/// `visible` says which UEs the subscription's tenant may hear of.
pub fn events(
    sub: &LocationSubscription,
    kind: Kind,
    ue: &Ue,
    before: &World<'_>,
    after: &World<'_>,
    visible: &dyn Fn(&Ue) -> bool,
    now: (u64, u32),
) -> Vec<Event> {
    let was = before.place_of(ue);
    let is = after.place_of(ue);
    if was == is {
        return Vec::new();
    }
    // Only the notifications made name the UE: its address is formatted for them alone.
    let addr = || address(ue);
    let mut out = Vec::new();
    match kind {
        Kind::UserLocationEvent => {
            if !visible(ue) || !sub.address.as_deref().is_some_and(|a| names(a, ue)) {
                return out;
            }
            let para = sub.user_event_para.clone().unwrap_or_default();
            // The monitored area: the zone, the access points, or else each zone.
            let area = |p: &Option<Place>| -> Option<String> {
                let p = p.as_ref()?;
                if let Some(z) = &para.zone_id {
                    (p.zone == *z).then(|| z.clone())
                } else if let Some(aps) = &para.access_point_list {
                    aps.iter()
                        .any(|a| a == p.access_point)
                        .then(|| "aps".to_string())
                } else {
                    Some(p.zone.to_string())
                }
            };
            let (from, to) = (area(&was), area(&is));
            if from == to {
                return out;
            }
            let with_location = para.reporting_location_req == Some(true);
            let mut note = |event: &str, p: &Place| {
                if !sub.wants(event) {
                    return;
                }
                let mut body = json!({
                    "notificationType": "UserLocationEventNotification",
                    "address": addr(),
                    "userLocationEvent": event,
                    "zoneId": p.zone,
                    "accessPointId": p.access_point,
                });
                if with_location {
                    body["locationInfo"] = location_info(&p.location);
                }
                out.push(Event {
                    wrapper: "userLocationEventNotification",
                    body,
                });
            };
            if let (Some(_), Some(p)) = (&from, &was) {
                note("LEAVING_AREA_EVENT", p);
            }
            if let (Some(_), Some(p)) = (&to, &is) {
                note("ENTERING_AREA_EVENT", p);
            }
        }
        Kind::ZoneLocationEvent => {
            let Some(zone) = sub.zone_id.as_deref() else {
                return out;
            };
            let listed = sub
                .address_list
                .as_ref()
                .is_none_or(|l| l.is_empty() || l.iter().any(|a| names(a, ue)));
            if !visible(ue) || !listed {
                return out;
            }
            let in_before = was.as_ref().is_some_and(|p| p.zone == zone);
            let in_after = is.as_ref().is_some_and(|p| p.zone == zone);
            let event = match (in_before, in_after) {
                (false, true) => "ENTERING_AREA_EVENT",
                (true, false) => "LEAVING_AREA_EVENT",
                _ => return out,
            };
            if sub.wants(event) {
                out.push(Event {
                    wrapper: "zoneLocationEventNotification",
                    body: json!({
                        "notificationType": "ZoneLocationEventNotification",
                        "address": addr(),
                        "userLocationEvent": event,
                        "zoneId": zone,
                    }),
                });
            }
        }
        Kind::ZoneStatus => {
            let Some(zone) = sub.zone_id.as_deref() else {
                return out;
            };
            let mut note = |num: u8, ap: Option<&str>| {
                let mut body = json!({
                    "notificationType": "ZoneStatusNotification",
                    "zoneId": zone,
                    "userNumEvent": num,
                });
                if let Some(ap) = ap {
                    body["accessPointId"] = json!(ap);
                }
                out.push(Event {
                    wrapper: "zoneStatusNotification",
                    body,
                });
            };
            let (zb, za) = (
                before.ues.zone_users(before.dir, zone),
                after.ues.zone_users(after.dir, zone),
            );
            if sub.upper_zone.is_some_and(|t| zb <= t && za > t) {
                note(1, None);
            }
            if sub.lower_zone.is_some_and(|t| zb >= t && za < t) {
                note(2, None);
            }
            let mut aps: Vec<&str> = [&was, &is]
                .into_iter()
                .flatten()
                .filter(|p| p.zone == zone)
                .map(|p| p.access_point)
                .collect();
            aps.dedup();
            for ap in aps {
                let (b, a) = (
                    before.ues.ap_users(before.dir, ap),
                    after.ues.ap_users(after.dir, ap),
                );
                if sub.upper_ap.is_some_and(|t| b <= t && a > t) {
                    note(3, Some(ap));
                }
                if sub.lower_ap.is_some_and(|t| b >= t && a < t) {
                    note(4, Some(ap));
                }
            }
        }
        Kind::UserArea => {
            let (Some(area), Some(list)) = (&sub.area_define, &sub.address_list) else {
                return out;
            };
            if !visible(ue) || !list.iter().any(|a| names(a, ue)) {
                return out;
            }
            let inside = |p: &Option<Place>| p.as_ref().is_some_and(|p| area.contains(&p.location));
            let (event, p) = match (inside(&was), inside(&is)) {
                (false, true) => ("ENTERING_AREA_EVENT", is.as_ref()),
                (true, false) => ("LEAVING_AREA_EVENT", was.as_ref()),
                _ => return out,
            };
            if sub.wants(event) {
                let mut body = json!({
                    "notificationType": "UserAreaNotification",
                    "address": addr(),
                    "userLocationEvent": event,
                });
                if let Some(p) = p {
                    body["locationInfo"] = location_info(&p.location);
                }
                out.push(Event {
                    wrapper: "userAreaNotification",
                    body,
                });
            }
        }
        Kind::UserDistance => {
            let involved = sub
                .monitored_address
                .iter()
                .chain(sub.reference_address.iter())
                .flatten()
                .any(|a| names(a, ue));
            if involved
                && distance_holds(sub, before, visible) != Some(true)
                && let Some(e) = distance_event(sub, after, visible, now)
            {
                out.push(e);
            }
        }
        // Periodic reports follow time, not moves.
        Kind::UserLocationPeriodic => {}
    }
    out
}

// === periodic reports ===

/// Whether a periodic subscription created at `created_at` (Unix seconds) that has sent
/// `sent` reports owes one at `now`: `Some(final)` when it does (`final` for the last of
/// `amount`). Report k (from 1) is due `k × interval` seconds after creation; a report
/// missed while no platform ran is sent once, not in a burst.
pub fn periodic_due(
    info: &PeriodicEventInfo,
    created_at: u64,
    sent: u64,
    now: u64,
) -> Option<bool> {
    let amount = info.reporting_amount as u64;
    let interval = info.reporting_interval as u64;
    if sent >= amount {
        return None;
    }
    (now >= created_at + (sent + 1) * interval).then_some(sent + 1 == amount)
}

/// A `UserLocationPeriodicNotification` for `ue` (absent or not located: `ABNORMAL`).
pub fn periodic_report(addr: &str, ue: Option<&Ue>, dir: &Directory, last: bool) -> Event {
    let place = ue.and_then(|u| dir.place(u));
    let mut body = json!({
        "notificationType": "UserLocationPeriodicNotification",
        "address": addr,
        "result": if place.is_some() { "SUCCESS" } else { "ABNORMAL" },
        "isFinalNotification": last,
    });
    if let Some(p) = place {
        body["zoneId"] = json!(p.zone);
        body["accessPointId"] = json!(p.access_point);
        body["locationInfo"] = location_info(&p.location);
    }
    Event {
        wrapper: "userLocationPeriodicNotification",
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mecfed_core::{
        Attachment, DeveloperId, OperatorId, Resources, SiteId, UeId, UeIdentity, ZoneId,
    };

    fn site(id: &str, zone: &str, lat: f64, aps: &[&str], ready: bool) -> Site {
        let mut s = Site::new(
            SiteId::new(id).unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new(zone).unwrap(),
            GeoPoint::new(lat, -8.47).unwrap(),
            Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
        )
        .unwrap();
        s.access_points = aps.iter().map(|a| a.to_string()).collect();
        s.access_kinds = vec![AccessKind::Nr5g];
        s.status = if ready {
            SiteStatus::Ready
        } else {
            SiteStatus::NotReady
        };
        s
    }

    /// Two zones 11 km apart (north at 52.0, south at 51.9), one AP each, plus a second AP
    /// in the south zone.
    fn dir() -> Directory {
        Directory::new(&[
            site("north-1", "north", 52.0, &["cell-n"], true),
            site("south-1", "south", 51.9, &["cell-s", "cell-s2"], false),
        ])
    }

    fn ue(id: &str, ip: &str, at: Option<&str>) -> Ue {
        let mut u = Ue::new(
            UeId::new(id).unwrap(),
            UeIdentity {
                ipv4_address: Some(ip.parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        u.attachment = at.map(|ap| Attachment {
            access: AccessKind::Nr5g,
            access_point: ap.into(),
            operator: OperatorId::new("op-a").unwrap(),
            location: GeoPoint::new(0.0, 0.0).unwrap(),
        });
        u.shared_with = vec![DeveloperId::new("alpha").unwrap()];
        u
    }

    fn sub(v: Value) -> LocationSubscription {
        serde_json::from_value(v).unwrap()
    }

    fn moved(
        s: &LocationSubscription,
        kind: Kind,
        from: Option<&str>,
        to: Option<&str>,
        others: &[Ue],
    ) -> Vec<Event> {
        let d = dir();
        let mut before = others.to_vec();
        before.push(ue("u1", "10.0.0.1", from));
        let mut after = others.to_vec();
        after.push(ue("u1", "10.0.0.1", to));
        let u = after.last().unwrap().clone();
        events(
            s,
            kind,
            &u,
            &World {
                dir: &d,
                ues: &Listed(&before),
            },
            &World {
                dir: &d,
                ues: &Listed(&after),
            },
            &|_| true,
            (1, 0),
        )
    }

    fn kinds(ev: &[Event]) -> Vec<String> {
        ev.iter()
            .map(|e| {
                let b = &e.body;
                b.get("userLocationEvent")
                    .or(b.get("userNumEvent"))
                    .or(b.get("distanceEvent"))
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn the_directory_places_ues_at_their_access_point() {
        let d = dir();
        assert_eq!(d.zones().collect::<Vec<_>>(), ["north", "south"]);
        let p = d.place(&ue("u", "10.0.0.1", Some("cell-s2"))).unwrap();
        assert_eq!((p.zone, p.access_point), ("south", "cell-s2"));
        assert!(d.place(&ue("u", "10.0.0.1", Some("elsewhere"))).is_none());
        assert!(d.place(&ue("u", "10.0.0.1", None)).is_none());
        let c = Counts::of(
            &d,
            &[
                ue("a", "10.0.0.1", Some("cell-s")),
                ue("b", "10.0.0.2", Some("cell-s2")),
            ],
        );
        assert_eq!(c.zone["south"], 2);
        assert_eq!(c.ap["cell-s"], 1);
        let aps = d.access_points("south");
        assert!(!aps[0].serviceable);
        let info = zone_info(&d, "south", &c);
        assert_eq!(info["numberOfUnserviceableAccessPoints"], 2);
        assert_eq!(info["numberOfUsers"], 2);
    }

    #[test]
    fn addresses_name_ues_by_any_identity() {
        let mut u = ue("u", "10.0.0.1", None);
        u.identity.phone_number = Some("+353871234567".into());
        assert_eq!(address(&u), "acr:10.0.0.1");
        assert!(names("acr:10.0.0.1", &u));
        assert!(names("tel:+353871234567", &u));
        assert!(!names("tel:+353870000000", &u));
        assert!(!names("10.0.0.1", &u));
        assert!(check_address("sip:a@b", "address").is_ok());
        assert!(check_address("mailto:x", "address").is_err());
    }

    #[test]
    fn checks_name_the_offending_field() {
        let d = dir();
        let err = |v: Value, coll: &str| sub(v).check(coll, 100, &d).unwrap_err().to_string();
        let cb = "http://127.0.0.1:9/cb";
        assert!(
            err(
                json!({"subscriptionType": "Nope", "callbackReference": cb}),
                "users"
            )
            .contains("subscriptionType")
        );
        assert!(err(json!({"subscriptionType": "ZoneStatusSubscription", "callbackReference": cb, "zoneId": "north"}), "users").contains("/subscriptions/users"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "callbackReference": cb}), "users").contains("address: required"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "address": "acr:10.0.0.1"}), "users").contains("callbackReference"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "address": "acr:10.0.0.1", "websockNotifConfig": {"requestWebsocketUri": true}}), "users").contains("websockNotifConfig"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "callbackReference": cb, "address": "acr:10.0.0.1", "zoneId": "north"}), "users").contains("zoneId: not a field"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "callbackReference": cb, "address": "acr:10.0.0.1", "expiryDeadline": {"seconds": 50, "nanoSeconds": 0}}), "users").contains("expiryDeadline"));
        assert!(err(json!({"subscriptionType": "UserLocationEventSubscription", "callbackReference": cb, "address": "acr:10.0.0.1", "locationEventCriteria": ["SOMEWHERE"]}), "users").contains("locationEventCriteria[0]"));
        assert!(err(json!({"subscriptionType": "ZoneLocationEventSubscription", "callbackReference": cb, "zoneId": "atlantis"}), "zones").contains("zoneId"));
        assert!(err(json!({"subscriptionType": "UserAreaSubscription", "callbackReference": cb, "addressList": ["acr:10.0.0.1"], "trackingAccuracy": 10, "areaDefine": {"shape": 1, "points": [{"latitude": 52.0, "longitude": -8.4}]}}), "area").contains("areaDefine"));
        assert!(err(json!({"subscriptionType": "UserLocationPeriodicSubscription", "callbackReference": cb, "address": "acr:10.0.0.1", "periodicEventInfo": {"reportingAmount": 100000, "reportingInterval": 100}}), "users").contains("8639999"));
        assert!(err(json!({"subscriptionType": "UserDistanceSubscription", "callbackReference": cb, "monitoredAddress": ["acr:10.0.0.1"], "distance": 100, "trackingAccuracy": 1, "criteria": "AnyWithinDistance", "checkImmediate": false}), "distance").contains("monitoredAddress"));
        let mut ok = sub(
            json!({"subscriptionType": "UserAreaSubscription", "callbackReference": cb,
            "addressList": ["acr:10.0.0.1"], "trackingAccuracy": 10,
            "areaDefine": {"shape": 2, "points": [{"latitude": 51.95, "longitude": -8.6}, {"latitude": 52.1, "longitude": -8.6}, {"latitude": 52.1, "longitude": -8.3}, {"latitude": 51.95, "longitude": -8.3}]}}),
        );
        assert_eq!(ok.check("area", 100, &d).unwrap(), Kind::UserArea);
    }

    #[test]
    fn a_user_changing_zone_leaves_one_and_enters_the_other() {
        let s = sub(
            json!({"subscriptionType": "UserLocationEventSubscription", "address": "acr:10.0.0.1"}),
        );
        let ev = moved(
            &s,
            Kind::UserLocationEvent,
            Some("cell-n"),
            Some("cell-s"),
            &[],
        );
        assert_eq!(
            kinds(&ev),
            ["\"LEAVING_AREA_EVENT\"", "\"ENTERING_AREA_EVENT\""]
        );
        assert_eq!(ev[0].body["zoneId"], "north");
        assert_eq!(ev[1].body["zoneId"], "south");
        // A move within the zone is no event; another user's address is none either.
        assert!(
            moved(
                &s,
                Kind::UserLocationEvent,
                Some("cell-s"),
                Some("cell-s2"),
                &[]
            )
            .is_empty()
        );
        let other = sub(
            json!({"subscriptionType": "UserLocationEventSubscription", "address": "acr:10.9.9.9"}),
        );
        assert!(
            moved(
                &other,
                Kind::UserLocationEvent,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )
            .is_empty()
        );
        // Watching one zone, entering only.
        let s = sub(
            json!({"subscriptionType": "UserLocationEventSubscription", "address": "acr:10.0.0.1",
            "locationEventCriteria": ["ENTERING_AREA_EVENT"], "userEventPara": {"zoneId": "north", "occurrenceInfo": "ONE_TIME_EVENT", "reportingLocationReq": true}}),
        );
        assert!(
            moved(
                &s,
                Kind::UserLocationEvent,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )
            .is_empty()
        );
        let ev = moved(&s, Kind::UserLocationEvent, None, Some("cell-n"), &[]);
        assert_eq!(kinds(&ev), ["\"ENTERING_AREA_EVENT\""]);
        assert_eq!(ev[0].body["locationInfo"]["latitude"], json!([52.0]));
        assert!(one_time(&s));
    }

    #[test]
    fn zone_events_follow_the_address_list_and_visibility() {
        let s = sub(
            json!({"subscriptionType": "ZoneLocationEventSubscription", "zoneId": "south", "addressList": ["acr:10.0.0.1"]}),
        );
        assert_eq!(
            kinds(&moved(
                &s,
                Kind::ZoneLocationEvent,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )),
            ["\"ENTERING_AREA_EVENT\""]
        );
        assert_eq!(
            kinds(&moved(
                &s,
                Kind::ZoneLocationEvent,
                Some("cell-s"),
                None,
                &[]
            )),
            ["\"LEAVING_AREA_EVENT\""]
        );
        let others = sub(
            json!({"subscriptionType": "ZoneLocationEventSubscription", "zoneId": "south", "addressList": ["acr:10.0.0.2"]}),
        );
        assert!(
            moved(
                &others,
                Kind::ZoneLocationEvent,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )
            .is_empty()
        );
        // A tenant without the UE's consent hears nothing.
        let d = dir();
        let (b, a) = (
            [ue("u1", "10.0.0.1", Some("cell-n"))],
            [ue("u1", "10.0.0.1", Some("cell-s"))],
        );
        let none = events(
            &s,
            Kind::ZoneLocationEvent,
            &a[0],
            &World {
                dir: &d,
                ues: &Listed(&b),
            },
            &World {
                dir: &d,
                ues: &Listed(&a),
            },
            &|_| false,
            (1, 0),
        );
        assert!(none.is_empty());
    }

    #[test]
    fn zone_status_reports_thresholds_crossed() {
        let s = sub(
            json!({"subscriptionType": "ZoneStatusSubscription", "zoneId": "south",
            "upperNumberOfUsersZoneThreshold": 1, "lowerNumberOfUsersAPThreshold": 1}),
        );
        let one = [ue("u2", "10.0.0.2", Some("cell-s"))];
        // A second user arrives in the south zone: over the zone's upper threshold.
        assert_eq!(
            kinds(&moved(
                &s,
                Kind::ZoneStatus,
                Some("cell-n"),
                Some("cell-s2"),
                &one
            )),
            ["1"]
        );
        // The user leaves cell-s (1 -> 0 users): under the AP's lower threshold.
        let ev = moved(&s, Kind::ZoneStatus, Some("cell-s"), Some("cell-n"), &[]);
        assert_eq!(kinds(&ev), ["4"]);
        assert_eq!(ev[0].body["accessPointId"], "cell-s");
    }

    #[test]
    fn area_entry_and_exit_by_circle_and_polygon() {
        let circle = sub(
            json!({"subscriptionType": "UserAreaSubscription", "addressList": ["acr:10.0.0.1"], "trackingAccuracy": 10,
            "areaDefine": {"shape": 1, "points": [{"latitude": 52.0, "longitude": -8.47}], "radius": 2000}}),
        );
        assert_eq!(
            kinds(&moved(
                &circle,
                Kind::UserArea,
                Some("cell-s"),
                Some("cell-n"),
                &[]
            )),
            ["\"ENTERING_AREA_EVENT\""]
        );
        assert_eq!(
            kinds(&moved(
                &circle,
                Kind::UserArea,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )),
            ["\"LEAVING_AREA_EVENT\""]
        );
        let polygon = sub(
            json!({"subscriptionType": "UserAreaSubscription", "addressList": ["acr:10.0.0.1"], "trackingAccuracy": 10,
            "areaDefine": {"shape": 2, "points": [{"latitude": 51.85, "longitude": -8.6}, {"latitude": 51.95, "longitude": -8.6}, {"latitude": 51.95, "longitude": -8.3}, {"latitude": 51.85, "longitude": -8.3}]}}),
        );
        assert_eq!(
            kinds(&moved(
                &polygon,
                Kind::UserArea,
                Some("cell-n"),
                Some("cell-s"),
                &[]
            )),
            ["\"ENTERING_AREA_EVENT\""]
        );
        assert!(
            moved(
                &polygon,
                Kind::UserArea,
                Some("cell-s"),
                Some("cell-s2"),
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn distance_reports_when_the_criteria_come_to_hold() {
        let s = sub(
            json!({"subscriptionType": "UserDistanceSubscription", "monitoredAddress": ["acr:10.0.0.1"],
            "referenceAddress": ["acr:10.0.0.2"], "distance": 1000, "trackingAccuracy": 10,
            "criteria": "AllWithinDistance", "checkImmediate": false}),
        );
        let friend = [ue("u2", "10.0.0.2", Some("cell-s"))];
        let ev = moved(
            &s,
            Kind::UserDistance,
            Some("cell-n"),
            Some("cell-s2"),
            &friend,
        );
        assert_eq!(kinds(&ev), ["\"AllWithinDistance\""]);
        assert_eq!(
            ev[0].body["monitoredUsers"]["user"][0]["address"],
            "acr:10.0.0.1"
        );
        // Already within before: no new report; moving apart does not hold the criteria.
        assert!(
            moved(
                &s,
                Kind::UserDistance,
                Some("cell-s"),
                Some("cell-s2"),
                &friend
            )
            .is_empty()
        );
        assert!(
            moved(
                &s,
                Kind::UserDistance,
                Some("cell-s"),
                Some("cell-n"),
                &friend
            )
            .is_empty()
        );
    }

    #[test]
    fn periodic_reports_fall_due_one_interval_apart() {
        let info = PeriodicEventInfo {
            reporting_amount: 3.0,
            reporting_interval: 10.0,
        };
        assert_eq!(periodic_due(&info, 100, 0, 109), None);
        assert_eq!(periodic_due(&info, 100, 0, 110), Some(false));
        assert_eq!(periodic_due(&info, 100, 1, 115), None);
        assert_eq!(periodic_due(&info, 100, 2, 130), Some(true));
        assert_eq!(periodic_due(&info, 100, 3, 1000), None);
        let d = dir();
        let r = periodic_report("acr:10.0.0.1", None, &d, false);
        assert_eq!(r.body["result"], "ABNORMAL");
        let u = ue("u1", "10.0.0.1", Some("cell-n"));
        let r = periodic_report("acr:10.0.0.1", Some(&u), &d, true);
        assert_eq!(
            (r.body["result"].as_str(), r.body["zoneId"].as_str()),
            (Some("SUCCESS"), Some("north"))
        );
        assert_eq!(r.body["isFinalNotification"], true);
    }

    // The indexed table with a change laid over it decides exactly what the plain lists
    // before and after the change decide, for every subscription type.
    proptest::proptest! {
        #[test]
        fn the_indexed_table_decides_as_the_lists_do(
            places in proptest::collection::vec(0usize..5, 1..10),
            mover in 0usize..10,
            to in 0usize..6,
            phone_swap in proptest::bool::ANY,
        ) {
            const APS: [Option<&str>; 5] =
                [None, Some("cell-n"), Some("cell-s"), Some("cell-s2"), Some("elsewhere")];
            let d = dir();
            let before: Vec<Ue> = places
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut u = ue(&format!("u{i}"), &format!("10.0.0.{i}"), APS[*p]);
                    u.identity.phone_number = Some(format!("+35380000{i}"));
                    u
                })
                .collect();
            let mover = mover % before.len();
            let id = before[mover].id.clone();
            // The change: a move (to 5 is "forgotten"), maybe with the phone number changed.
            let now = (to < 5).then(|| {
                let mut u = before[mover].clone();
                u.attachment = ue("x", "10.9.9.9", APS[to]).attachment;
                if phone_swap {
                    u.identity.phone_number = Some("+353809999".into());
                }
                u
            });
            let after: Vec<Ue> = before
                .iter()
                .filter(|u| u.id != id)
                .cloned()
                .chain(now.clone())
                .collect();
            let table = UeTable::new(&d, before.clone());
            let changed = Changed::new(&table, &d, id.clone(), table.get(&id), now.as_ref());
            let subject = now.clone().unwrap_or_else(|| before[mover].clone());
            let subs = [
                (Kind::UserLocationEvent, json!({"subscriptionType": "UserLocationEventSubscription", "address": format!("acr:10.0.0.{mover}")})),
                (Kind::UserLocationEvent, json!({"subscriptionType": "UserLocationEventSubscription", "address": "tel:+353809999"})),
                (Kind::ZoneLocationEvent, json!({"subscriptionType": "ZoneLocationEventSubscription", "zoneId": "south"})),
                (Kind::ZoneStatus, json!({"subscriptionType": "ZoneStatusSubscription", "zoneId": "south",
                    "upperNumberOfUsersZoneThreshold": 2, "lowerNumberOfUsersZoneThreshold": 2,
                    "upperNumberOfUsersAPThreshold": 1, "lowerNumberOfUsersAPThreshold": 1})),
                (Kind::UserArea, json!({"subscriptionType": "UserAreaSubscription", "addressList": [format!("acr:10.0.0.{mover}")], "trackingAccuracy": 10,
                    "areaDefine": {"shape": 1, "points": [{"latitude": 52.0, "longitude": -8.47}], "radius": 2000}})),
                (Kind::UserDistance, json!({"subscriptionType": "UserDistanceSubscription", "monitoredAddress": ["acr:10.0.0.0", "tel:+353809999"],
                    "distance": 5000, "trackingAccuracy": 1, "criteria": "AnyBeyondDistance"})),
                (Kind::UserDistance, json!({"subscriptionType": "UserDistanceSubscription", "monitoredAddress": [format!("tel:+35380000{mover}")],
                    "referenceAddress": ["acr:10.0.0.0"], "distance": 5000, "trackingAccuracy": 1, "criteria": "AllWithinDistance"})),
                (Kind::UserDistance, json!({"subscriptionType": "UserDistanceSubscription", "monitoredAddress": [format!("tel:+35380000{mover}")],
                    "referenceAddress": ["acr:10.0.0.0"], "distance": 5000, "trackingAccuracy": 1, "criteria": "AnyBeyondDistance"})),
            ];
            for (kind, v) in subs {
                let s = sub(v);
                let listed = events(&s, kind, &subject,
                    &World { dir: &d, ues: &Listed(&before) },
                    &World { dir: &d, ues: &Listed(&after) }, &|_| true, (1, 0));
                let indexed = events(&s, kind, &subject,
                    &World { dir: &d, ues: &table },
                    &World { dir: &d, ues: &changed }, &|_| true, (1, 0));
                proptest::prop_assert_eq!(listed, indexed, "{:?}", kind);
            }
            let mut applied = table.clone();
            applied.apply(&d, &id, now.clone());
            for z in ["north", "south"] {
                proptest::prop_assert_eq!(applied.zone_users(&d, z), Listed(&after).zone_users(&d, z));
                proptest::prop_assert_eq!(changed.zone_users(&d, z), Listed(&after).zone_users(&d, z));
            }
            for a in ["cell-n", "cell-s", "cell-s2"] {
                proptest::prop_assert_eq!(applied.ap_users(&d, a), Listed(&after).ap_users(&d, a));
            }
        }
    }
}
