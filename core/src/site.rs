use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{GeoPoint, OperatorId, Resources, SiteId, ValidationError, ZoneId, error::ensure};

/// How UEs reach a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessKind {
    /// 5G NR radio.
    Nr5g,
    /// 4G LTE radio.
    Lte,
    /// Wi-Fi hot spot.
    Wifi,
    /// Fixed line (metro data centre reached over the transport network).
    Fixed,
}

/// What a taint does to instances that do not tolerate it (Kubernetes semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// No new instances are placed here.
    NoSchedule,
    /// Existing instances are evicted too.
    NoExecute,
}

/// A site taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Optional value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect on non-tolerating instances.
    pub effect: TaintEffect,
}

/// Whether a site can take work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SiteStatus {
    /// The site's agent holds a live lease.
    Ready,
    /// The lease expired or the site never joined.
    #[default]
    NotReady,
}

/// What runs a site's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SiteKind {
    /// A bare edge node: the agent runs instances as supervised processes.
    #[default]
    EdgeNode,
    /// A Kubernetes cluster: the agent maps placements to Deployments and Services.
    Kubernetes,
}

/// How a site limits the CPU and memory of each instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitEnforcement {
    /// cgroup v2 `cpu.max` and `memory.max`.
    CgroupV2,
    /// Pod resource limits, enforced by the kubelet (Kubernetes sites).
    Kubernetes,
    /// cgroup v1 CFS quota and memory limit.
    CgroupV1,
    /// Limits are not enforced on this site (no usable cgroups).
    #[default]
    Unenforced,
}

/// An edge site of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Site {
    /// Unique site id.
    pub id: SiteId,
    /// Operator that runs the site.
    pub operator: OperatorId,
    /// Region (e.g. a metro area).
    pub region: String,
    /// Edge cloud zone the site belongs to.
    pub zone: ZoneId,
    /// Where it is.
    pub location: GeoPoint,
    /// How UEs reach it.
    #[serde(default)]
    pub access_kinds: Vec<AccessKind>,
    /// Cell and Wi-Fi AP ids it serves directly.
    #[serde(default)]
    pub access_points: Vec<String>,
    /// Total capacity.
    pub capacity: Resources,
    /// Capacity in use.
    #[serde(default)]
    pub usage: Resources,
    /// Labels for selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Readiness.
    #[serde(default)]
    pub status: SiteStatus,
    /// What runs the site's instances.
    #[serde(default)]
    pub kind: SiteKind,
    /// Whether per-instance limits are enforced, and how.
    #[serde(default)]
    pub limit_enforcement: LimitEnforcement,
    /// `host:port` of the site agent's admin listener (instance logs), as the platform reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    /// The PLMN its cells broadcast; cells of a site without one are outside the radio
    /// network information service (MEC 012).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plmn: Option<Plmn>,
}

/// A Public Land Mobile Network identity (3GPP TS 23.003): mobile country and network code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plmn {
    /// Mobile country code, 3 digits.
    pub mcc: String,
    /// Mobile network code, 2 or 3 digits.
    pub mnc: String,
}

impl Plmn {
    /// Parses `MCC-MNC`, e.g. `272-01`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let (mcc, mnc) = s
            .split_once('-')
            .ok_or_else(|| ValidationError::new("plmn", "must be MCC-MNC, e.g. 272-01"))?;
        let p = Self {
            mcc: mcc.into(),
            mnc: mnc.into(),
        };
        p.validate()?;
        Ok(p)
    }

    /// Three digits of MCC, two or three of MNC.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let digits = |v: &str| v.bytes().all(|b| b.is_ascii_digit());
        ensure(
            self.mcc.len() == 3 && digits(&self.mcc),
            "plmn.mcc",
            "must be 3 digits",
        )?;
        ensure(
            (2..=3).contains(&self.mnc.len()) && digits(&self.mnc),
            "plmn.mnc",
            "must be 2 or 3 digits",
        )
    }
}

impl Site {
    /// A validated site with no access points, labels, taints or usage, not ready.
    pub fn new(
        id: SiteId,
        operator: OperatorId,
        region: impl Into<String>,
        zone: ZoneId,
        location: GeoPoint,
        capacity: Resources,
    ) -> Result<Self, ValidationError> {
        let site = Self {
            id,
            operator,
            region: region.into(),
            zone,
            location,
            access_kinds: Vec::new(),
            access_points: Vec::new(),
            capacity,
            usage: Resources::ZERO,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            status: SiteStatus::NotReady,
            kind: SiteKind::EdgeNode,
            limit_enforcement: LimitEnforcement::Unenforced,
            agent_endpoint: None,
            plmn: None,
        };
        site.validate()?;
        Ok(site)
    }

    /// Checks the invariants serde cannot: a region, bounded labels, usage within capacity.
    pub fn validate(&self) -> Result<(), ValidationError> {
        ensure(
            !self.region.trim().is_empty(),
            "region",
            "must not be empty",
        )?;
        ensure(self.region.len() <= 128, "region", "at most 128 characters")?;
        for k in self.labels.keys() {
            ensure(
                !k.is_empty() && k.len() <= 63,
                "labels",
                "label keys must have 1 to 63 characters",
            )?;
        }
        for ap in &self.access_points {
            ensure(
                !ap.is_empty() && ap.len() <= 64,
                "accessPoints",
                "access point ids must have 1 to 64 characters",
            )?;
        }
        if let Some(p) = &self.plmn {
            p.validate()?;
        }
        Ok(())
    }

    /// Capacity not in use.
    pub fn available(&self) -> Resources {
        self.capacity.saturating_sub(&self.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plmns_parse_as_mcc_dash_mnc() {
        let p = Plmn::parse("272-01").unwrap();
        assert_eq!((p.mcc.as_str(), p.mnc.as_str()), ("272", "01"));
        assert!(Plmn::parse("310-410").is_ok());
        for bad in ["27201", "27-01", "272-1", "272-0001", "a72-01"] {
            assert!(
                Plmn::parse(bad).unwrap_err().field.starts_with("plmn"),
                "{bad}"
            );
        }
    }

    #[test]
    fn json_is_camel_case_and_round_trips() {
        let site = Site::new(
            SiteId::new("s1").unwrap(),
            OperatorId::new("op-a").unwrap(),
            "cork",
            ZoneId::new("z1").unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
        )
        .unwrap();
        let json = serde_json::to_value(&site).unwrap();
        assert_eq!(json["capacity"]["cpuMillicores"], 8000);
        assert_eq!(json["status"], "NotReady");
        assert_eq!(json["location"]["latitude"], 51.9);
        let back: Site = serde_json::from_value(json).unwrap();
        assert_eq!(back, site);
    }

    #[test]
    fn rejects_empty_region_and_unknown_fields() {
        let mut site = Site::new(
            SiteId::new("s1").unwrap(),
            OperatorId::new("op").unwrap(),
            "r",
            ZoneId::new("z").unwrap(),
            GeoPoint::new(0.0, 0.0).unwrap(),
            Resources::ZERO,
        )
        .unwrap();
        site.region = " ".into();
        assert_eq!(site.validate().unwrap_err().field, "region");
        let mut json = serde_json::to_value(&site).unwrap();
        json["colour"] = "red".into();
        assert!(
            serde_json::from_value::<Site>(json)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }
}
