//! CAMARA Simple Edge Discovery 2.0.1: `POST /retrieve-closest-edge-cloud-zone`.
//!
//! "Closest" is the shortest predicted network path from the UE's current attachment (its
//! cell or Wi-Fi access point, from the UE network context the gateway feeds) to a zone
//! hosting a Ready instance of the caller's app, on the latency model the scheduler uses
//! ([`mecfed_core::latency`]): the access technology's round trip, fibre propagation and hops
//! from the access point to the site, and queueing at the site's load; a path that leaves the
//! UE's operator crosses an interconnect. Not the GPS distance from the handset.
//!
//! Which app: an app instance's token asks for its own app; a developer's token for any of
//! its apps (the spec has no app parameter).

use std::{collections::HashMap, net::Ipv4Addr};

use axum::{Extension, Json, extract::State};
use mecfed_core::{
    Attachment, Instance, InstanceState, OperatorId, SiteStatus, Ue, ValidationError, ZoneId,
    latency,
};
use mecfed_store::Store;
use serde::{Deserialize, Serialize};

use super::{CamaraError, eam::CamaraJson, ids};
use crate::{
    ApiError, ApiState,
    auth::{Principal, scopes},
};

/// Extra round trip of a path leaving the UE's operator through an interconnect (peering)
/// point: two more router hops (the border routers of both networks), as
/// [`latency::HOP_MS`] counts them.
pub const INTERCONNECT_MS: f64 = 2.0 * latency::HOP_MS;

/// `DeviceIpv4Addr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceIpv4Addr {
    /// Public (observed) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<Ipv4Addr>,
    /// Private (local) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_address: Option<Ipv4Addr>,
    /// Public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u32>,
}

/// `Device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// E.164 with `+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// `user@realm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_identifier: Option<String>,
    /// IPv4 address (and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<DeviceIpv4Addr>,
    /// IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// `RequestBody`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBody {
    /// The device; required with two-legged tokens, which are all mecfed issues.
    #[serde(default)]
    pub device: Option<Device>,
}

/// The answer: the zone and the identifier used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosestZone {
    /// UUID of the zone.
    pub edge_cloud_zone_id: String,
    /// Zone name (its mecfed id).
    pub edge_cloud_zone_name: String,
    /// Operator running it.
    pub edge_cloud_provider: String,
    /// The one identifier the answer is for, when the request gave several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

impl Device {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.phone_number.is_none()
            && self.network_access_identifier.is_none()
            && self.ipv4_address.is_none()
            && self.ipv6_address.is_none()
        {
            return Err(ValidationError::new(
                "device",
                "needs at least one of phoneNumber, networkAccessIdentifier, ipv4Address, \
                 ipv6Address",
            ));
        }
        if let Some(p) = &self.phone_number {
            mecfed_core::validate_phone_number(p, "device.phoneNumber")?;
        }
        if let Some(v4) = &self.ipv4_address {
            if v4.public_address.is_none()
                || (v4.private_address.is_none() && v4.public_port.is_none())
            {
                return Err(ValidationError::new(
                    "device.ipv4Address",
                    "needs publicAddress and one of privateAddress or publicPort",
                ));
            }
            if v4
                .public_port
                .is_some_and(|p| !(1024..=65_535).contains(&p))
            {
                return Err(ValidationError::new(
                    "device.ipv4Address.publicPort",
                    "must be between 1024 and 65535",
                ));
            }
        }
        if let Some(v6) = &self.ipv6_address
            && v6.parse::<std::net::Ipv6Addr>().is_err()
        {
            return Err(ValidationError::new(
                "device.ipv6Address",
                "must be an IPv6 address",
            ));
        }
        Ok(())
    }

    /// The UE one of the identifiers names, with that identifier alone; identifiers are
    /// tried in the order phone number, NAI, IPv4.
    fn resolve<'a>(&self, ues: &'a [Ue]) -> Option<(&'a Ue, Device)> {
        if let Some(p) = &self.phone_number
            && let Some(ue) = ues
                .iter()
                .find(|u| u.identity.phone_number.as_ref() == Some(p))
        {
            return Some((
                ue,
                Self {
                    phone_number: Some(p.clone()),
                    ..Self::default()
                },
            ));
        }
        if let Some(n) = &self.network_access_identifier
            && let Some(ue) = ues
                .iter()
                .find(|u| u.identity.network_access_identifier.as_ref() == Some(n))
        {
            return Some((
                ue,
                Self {
                    network_access_identifier: Some(n.clone()),
                    ..Self::default()
                },
            ));
        }
        if let Some(v4) = &self.ipv4_address
            && let Some(ue) = ues.iter().find(|u| {
                let ip = u.identity.ipv4_address;
                ip.is_some() && (ip == v4.public_address || ip == v4.private_address)
            })
        {
            return Some((
                ue,
                Self {
                    ipv4_address: Some(v4.clone()),
                    ..Self::default()
                },
            ));
        }
        None
    }

    /// Whether the request carries an identifier mecfed can resolve at all.
    fn has_supported(&self) -> bool {
        self.phone_number.is_some()
            || self.network_access_identifier.is_some()
            || self.ipv4_address.is_some()
    }
}

/// A site hosting a Ready instance of the app, as discovery ranks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The site's zone.
    pub zone: ZoneId,
    /// The site's operator.
    pub operator: OperatorId,
    /// Where the site is.
    pub location: mecfed_core::GeoPoint,
    /// Busier of CPU and session use, 0 to 1.
    pub utilisation: f64,
}

/// Predicted round trip from `at` to a candidate.
pub fn path_rtt_ms(at: &Attachment, c: &Candidate) -> f64 {
    let cross = if at.operator == c.operator {
        0.0
    } else {
        INTERCONNECT_MS
    };
    latency::predicted_between_ms(at.access, &at.location, &c.location, c.utilisation) + cross
}

/// The candidate with the shortest predicted path from `at` (ties: zone id order).
pub fn closest<'a>(at: &Attachment, candidates: &'a [Candidate]) -> Option<(&'a Candidate, f64)> {
    candidates
        .iter()
        .map(|c| (c, path_rtt_ms(at, c)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.zone.cmp(&b.0.zone)))
}

pub(crate) async fn retrieve_closest<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    CamaraJson(body): CamaraJson<RequestBody>,
) -> Result<Json<ClosestZone>, CamaraError> {
    p.require(scopes::SED_READ)?;
    let device = body.device.ok_or_else(|| {
        CamaraError::coded(
            ApiError::Unprocessable(
                "the device cannot be identified: give device (two-legged access token)".into(),
            ),
            "MISSING_IDENTIFIER",
        )
    })?;
    device.validate()?;
    if !device.has_supported() {
        return Err(CamaraError::coded(
            ApiError::Unprocessable(
                "ipv6Address is not supported; identify the device by phoneNumber, \
                 networkAccessIdentifier or ipv4Address"
                    .into(),
            ),
            "UNSUPPORTED_IDENTIFIER",
        ));
    }
    let (ues, _) = st.store.list::<Ue>().await?;
    let ues: Vec<Ue> = ues.into_iter().map(|v| v.value).collect();
    let (ue, used) = device.resolve(&ues).ok_or_else(|| {
        CamaraError::coded(
            ApiError::NotFound("device identifier not found".into()),
            "IDENTIFIER_NOT_FOUND",
        )
    })?;
    let at = ue.attachment.as_ref().ok_or_else(|| {
        CamaraError::coded(
            ApiError::Unprocessable("the device is not attached to the network now".into()),
            "SERVICE_NOT_APPLICABLE",
        )
    })?;
    // Ready instances of the caller's apps, on Ready sites.
    let (apps, _) = st.store.list::<mecfed_core::App>().await?;
    let mine: Vec<_> = apps
        .into_iter()
        .map(|a| a.value)
        .filter(|a| p.owns(&a.developer, &a.id))
        .map(|a| a.id)
        .collect();
    let (instances, _) = st.store.list::<Instance>().await?;
    let sites: HashMap<_, _> = crate::sites::sites_with_status(&st.store)
        .await?
        .into_iter()
        .filter(|s| s.status == SiteStatus::Ready)
        .map(|s| (s.id.clone(), s))
        .collect();
    let candidates: Vec<Candidate> = instances
        .iter()
        .map(|i| &i.value)
        .filter(|i| i.state == InstanceState::Ready && mine.contains(&i.app))
        .filter_map(|i| sites.get(&i.site))
        .map(|s| Candidate {
            zone: s.zone.clone(),
            operator: s.operator.clone(),
            location: s.location,
            utilisation: mecfed_scheduler::snapshot::utilisation(s),
        })
        .collect();
    let (best, rtt) = closest(at, &candidates).ok_or_else(|| {
        CamaraError::from(ApiError::NotFound(
            "no edge cloud zone hosts a ready instance of your application".into(),
        ))
    })?;
    tracing::debug!(ue = %ue.id, zone = %best.zone, rtt_ms = rtt, "closest edge cloud zone");
    let several = [
        device.phone_number.is_some(),
        device.network_access_identifier.is_some(),
        device.ipv4_address.is_some(),
        device.ipv6_address.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
        > 1;
    Ok(Json(ClosestZone {
        edge_cloud_zone_id: ids::zone_uuid(&best.zone).to_string(),
        edge_cloud_zone_name: best.zone.to_string(),
        edge_cloud_provider: best.operator.to_string(),
        device: several.then_some(used),
    }))
}

#[cfg(test)]
mod tests {
    use mecfed_core::{AccessKind, GeoPoint};

    use super::*;

    fn at(op: &str, lat: f64, lon: f64, access: AccessKind) -> Attachment {
        Attachment {
            access,
            access_point: "cell-1".into(),
            operator: OperatorId::new(op).unwrap(),
            location: GeoPoint::new(lat, lon).unwrap(),
        }
    }

    fn cand(zone: &str, op: &str, lat: f64, lon: f64, util: f64) -> Candidate {
        Candidate {
            zone: ZoneId::new(zone).unwrap(),
            operator: OperatorId::new(op).unwrap(),
            location: GeoPoint::new(lat, lon).unwrap(),
            utilisation: util,
        }
    }

    #[test]
    fn the_nearest_idle_site_of_the_ues_operator_wins() {
        let cork = at("op-a", 51.8985, -8.4756, AccessKind::Nr5g);
        let c = [
            cand("dublin", "op-a", 53.3498, -6.2603, 0.0),
            cand("cork", "op-a", 51.90, -8.47, 0.0),
        ];
        let (best, rtt) = closest(&cork, &c).unwrap();
        assert_eq!(best.zone.as_str(), "cork");
        assert!((8.0..9.0).contains(&rtt), "{rtt}");
    }

    #[test]
    fn load_and_operator_boundaries_lengthen_the_path() {
        let cork = at("op-a", 51.8985, -8.4756, AccessKind::Nr5g);
        // Same place: the other operator's site costs the interconnect.
        let c = [
            cand("b-cork", "op-b", 51.90, -8.47, 0.0),
            cand("a-cork", "op-a", 51.90, -8.47, 0.0),
        ];
        assert_eq!(closest(&cork, &c).unwrap().0.zone.as_str(), "a-cork");
        // A site at 95 % load queues 9.5 ms: the next city's idle site is closer.
        let c = [
            cand("cork", "op-a", 51.90, -8.47, 0.95),
            cand("dublin", "op-a", 53.3498, -6.2603, 0.0),
        ];
        assert_eq!(closest(&cork, &c).unwrap().0.zone.as_str(), "dublin");
        assert!(closest(&cork, &[]).is_none());
    }

    #[test]
    fn devices_resolve_by_the_first_identifier_that_names_a_ue() {
        let mut ue = Ue::new(
            mecfed_core::UeId::new("ue-1").unwrap(),
            mecfed_core::UeIdentity {
                ipv4_address: Some("10.0.0.7".parse().unwrap()),
                phone_number: Some("+353871234567".into()),
                network_access_identifier: None,
            },
        )
        .unwrap();
        ue.attachment = None;
        let ues = [ue];
        let d = Device {
            phone_number: Some("+353870000000".into()),
            ipv4_address: Some(DeviceIpv4Addr {
                public_address: Some("84.125.93.10".parse().unwrap()),
                private_address: Some("10.0.0.7".parse().unwrap()),
                public_port: None,
            }),
            ..Device::default()
        };
        d.validate().unwrap();
        let (found, used) = d.resolve(&ues).unwrap();
        assert_eq!(found.id.as_str(), "ue-1");
        assert!(used.phone_number.is_none() && used.ipv4_address.is_some());
        let unknown = Device {
            phone_number: Some("+353870000000".into()),
            ..Device::default()
        };
        assert!(unknown.resolve(&ues).is_none());
        let bad = Device {
            ipv4_address: Some(DeviceIpv4Addr {
                public_address: Some("84.125.93.10".parse().unwrap()),
                private_address: None,
                public_port: None,
            }),
            ..Device::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "device.ipv4Address");
    }
}
