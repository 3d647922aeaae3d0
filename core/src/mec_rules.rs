//! ETSI MEC 011 traffic rules and DNS rules (clauses 7.1.2.2 and 7.1.2.3): what an app
//! declares for its instances, what each instance reads and switches on or off through
//! `mec_app_support`, and what the multi-access gateway enforces.
//!
//! The vendored OpenAPI file of MEC 011 3.1.1 lists `SEE_DESCRIPTION` as the only value of
//! several enumerations; the values here are the ones its descriptions name.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{ValidationError, ensure};

/// `TrafficRule.filterType` values.
pub const FILTER_TYPES: &[&str] = &["FLOW", "PACKET"];
/// `TrafficRule.action` values.
pub const ACTIONS: &[&str] = &[
    "DROP",
    "FORWARD_DECAPSULATED",
    "FORWARD_ENCAPSULATED",
    "PASSTHROUGH",
    "DUPLICATE_DECAPSULATED",
    "DUPLICATE_ENCAPSULATED",
];
/// `TrafficRule.state` and `DnsRule.state` values.
pub const RULE_STATES: &[&str] = &["ACTIVE", "INACTIVE"];
/// `DestinationInterface.interfaceType` values.
pub const INTERFACE_TYPES: &[&str] = &["TUNNEL", "MAC", "IP"];
/// `TunnelInfo.tunnelType` values.
pub const TUNNEL_TYPES: &[&str] = &["GTP_U", "GRE"];
/// `DnsRule.ipAddressType` values.
pub const IP_ADDRESS_TYPES: &[&str] = &["IP_V4", "IP_V6"];

/// `TrafficRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRule {
    /// Identifies the rule within the app.
    pub traffic_rule_id: String,
    /// `FLOW` or `PACKET`.
    pub filter_type: String,
    /// 0 to 255; the higher wins a conflict.
    pub priority: u8,
    /// Which packets (at least one filter).
    pub traffic_filter: Vec<TrafficFilter>,
    /// What the data plane does with them.
    pub action: String,
    /// Where they go (forwarding and duplicating actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_interface: Option<DestinationInterface>,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
}

/// `TrafficFilter`: every attribute given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficFilter {
    /// Source addresses or prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_address: Option<Vec<String>>,
    /// Destination addresses or prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_address: Option<Vec<String>>,
    /// Source ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<Vec<String>>,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<Vec<String>>,
    /// IP protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Vec<String>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Vec<String>>,
    /// Tunnel source addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tunnel_address: Option<Vec<String>>,
    /// Tunnel target addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgt_tunnel_address: Option<Vec<String>>,
    /// Tunnel source ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tunnel_port: Option<Vec<String>>,
    /// Tunnel destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_tunnel_port: Option<Vec<String>>,
    /// QoS class identifier.
    #[serde(rename = "qCI", default, skip_serializing_if = "Option::is_none")]
    pub qci: Option<u32>,
    /// DSCP.
    #[serde(rename = "dSCP", default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u32>,
    /// Traffic class.
    #[serde(rename = "tC", default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<u32>,
}

/// `DestinationInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationInterface {
    /// `TUNNEL`, `MAC` or `IP`.
    pub interface_type: String,
    /// The tunnel, for `TUNNEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_info: Option<TunnelInfo>,
    /// Source MAC, for `MAC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac_address: Option<String>,
    /// Destination MAC, for `MAC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_mac_address: Option<String>,
    /// Destination IP, for `IP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip_address: Option<String>,
}

/// `TunnelInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelInfo {
    /// `GTP_U` or `GRE`.
    pub tunnel_type: String,
    /// Tunnel destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_dst_address: Option<String>,
    /// Tunnel source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_src_address: Option<String>,
}

/// `DnsRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsRule {
    /// Identifies the rule within the app.
    pub dns_rule_id: String,
    /// The FQDN it resolves.
    pub domain_name: String,
    /// `IP_V4` or `IP_V6`.
    pub ip_address_type: String,
    /// What it resolves to.
    pub ip_address: String,
    /// Time to live, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
}

fn one_of(v: &str, allowed: &[&str], field: &str) -> Result<(), ValidationError> {
    ensure(
        allowed.contains(&v),
        field,
        &format!("must be one of {}", allowed.join(", ")),
    )
}

fn rule_id(id: &str, field: &str) -> Result<(), ValidationError> {
    ensure(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        field,
        "must be 1 to 64 of a-z A-Z 0-9 - _ .",
    )
}

fn mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` is a DNS name: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen, 253 characters at most.
pub fn valid_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl TrafficRule {
    /// Checks the enumerations, the filters and that forwarding and duplicating actions name
    /// a destination interface that a dropping one does not.
    pub fn validate(&self) -> Result<(), ValidationError> {
        rule_id(&self.traffic_rule_id, "trafficRuleId")?;
        one_of(&self.filter_type, FILTER_TYPES, "filterType")?;
        one_of(&self.action, ACTIONS, "action")?;
        one_of(&self.state, RULE_STATES, "state")?;
        ensure(
            !self.traffic_filter.is_empty(),
            "trafficFilter",
            "at least one filter",
        )?;
        for (i, f) in self.traffic_filter.iter().enumerate() {
            f.validate()
                .map_err(|e| e.within(&format!("trafficFilter[{i}]")))?;
        }
        match (&self.dst_interface, self.action.as_str()) {
            (Some(_), "DROP") => Err(ValidationError::new(
                "dstInterface",
                "must be absent for action DROP",
            )),
            (None, a) if a != "DROP" => Err(ValidationError::new(
                "dstInterface",
                "required for forwarding and duplicating actions",
            )),
            (Some(d), _) => d.validate().map_err(|e| e.within("dstInterface")),
            (None, _) => Ok(()),
        }
    }
}

impl TrafficFilter {
    fn validate(&self) -> Result<(), ValidationError> {
        for (field, ports) in [
            ("srcPort", &self.src_port),
            ("dstPort", &self.dst_port),
            ("srcTunnelPort", &self.src_tunnel_port),
            ("dstTunnelPort", &self.dst_tunnel_port),
        ] {
            for p in ports.iter().flatten() {
                ensure(
                    p.parse::<u16>().is_ok(),
                    field,
                    "ports are numbers from 0 to 65535",
                )?;
            }
        }
        for (field, addrs) in [
            ("srcAddress", &self.src_address),
            ("dstAddress", &self.dst_address),
            ("srcTunnelAddress", &self.src_tunnel_address),
            ("tgtTunnelAddress", &self.tgt_tunnel_address),
        ] {
            for a in addrs.iter().flatten() {
                ensure(
                    valid_prefix(a),
                    field,
                    "addresses are IP addresses or prefixes (10.0.0.0/8)",
                )?;
            }
        }
        if let Some(d) = self.dscp {
            ensure(d < 64, "dSCP", "0 to 63")?;
        }
        Ok(())
    }
}

/// An IPv4 or IPv6 address, optionally with a prefix length.
fn valid_prefix(s: &str) -> bool {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let max = if addr.parse::<Ipv4Addr>().is_ok() {
        32
    } else if addr.parse::<Ipv6Addr>().is_ok() {
        128
    } else {
        return false;
    };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
}

impl DestinationInterface {
    fn validate(&self) -> Result<(), ValidationError> {
        one_of(&self.interface_type, INTERFACE_TYPES, "interfaceType")?;
        match self.interface_type.as_str() {
            "TUNNEL" => {
                let t = self.tunnel_info.as_ref().ok_or_else(|| {
                    ValidationError::new("tunnelInfo", "required for interfaceType TUNNEL")
                })?;
                one_of(&t.tunnel_type, TUNNEL_TYPES, "tunnelInfo.tunnelType")
            }
            "MAC" => {
                for (field, v) in [
                    ("srcMacAddress", &self.src_mac_address),
                    ("dstMacAddress", &self.dst_mac_address),
                ] {
                    if let Some(v) = v {
                        ensure(mac(v), field, "must be a MAC address aa:bb:cc:dd:ee:ff")?;
                    }
                }
                ensure(
                    self.dst_mac_address.is_some(),
                    "dstMacAddress",
                    "required for interfaceType MAC",
                )
            }
            _ => {
                let ip = self.dst_ip_address.as_deref().ok_or_else(|| {
                    ValidationError::new("dstIpAddress", "required for interfaceType IP")
                })?;
                ensure(
                    ip.parse::<std::net::IpAddr>().is_ok(),
                    "dstIpAddress",
                    "must be an IP address",
                )
            }
        }
    }
}

impl DnsRule {
    /// Checks the name, the address against its type and the state.
    pub fn validate(&self) -> Result<(), ValidationError> {
        rule_id(&self.dns_rule_id, "dnsRuleId")?;
        ensure(
            valid_fqdn(&self.domain_name),
            "domainName",
            "must be a DNS name",
        )?;
        one_of(&self.ip_address_type, IP_ADDRESS_TYPES, "ipAddressType")?;
        let ok = if self.ip_address_type == "IP_V4" {
            self.ip_address.parse::<Ipv4Addr>().is_ok()
        } else {
            self.ip_address.parse::<Ipv6Addr>().is_ok()
        };
        ensure(ok, "ipAddress", "must be an address of ipAddressType")?;
        one_of(&self.state, RULE_STATES, "state")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> TrafficRule {
        TrafficRule {
            traffic_rule_id: "game-udp".into(),
            filter_type: "FLOW".into(),
            priority: 10,
            traffic_filter: vec![TrafficFilter {
                dst_address: Some(vec!["10.1.0.0/16".into()]),
                dst_port: Some(vec!["7777".into()]),
                protocol: Some(vec!["UDP".into()]),
                ..TrafficFilter::default()
            }],
            action: "FORWARD_DECAPSULATED".into(),
            dst_interface: Some(DestinationInterface {
                interface_type: "IP".into(),
                tunnel_info: None,
                src_mac_address: None,
                dst_mac_address: None,
                dst_ip_address: Some("10.1.0.5".into()),
            }),
            state: "ACTIVE".into(),
        }
    }

    #[test]
    fn traffic_rules_are_checked_field_by_field() {
        rule().validate().unwrap();
        let field = |f: fn(&mut TrafficRule)| {
            let mut r = rule();
            f(&mut r);
            r.validate().unwrap_err().field
        };
        assert_eq!(
            field(|r| r.filter_type = "SEE_DESCRIPTION".into()),
            "filterType"
        );
        assert_eq!(field(|r| r.action = "DROP".into()), "dstInterface");
        assert_eq!(field(|r| r.dst_interface = None), "dstInterface");
        assert_eq!(field(|r| r.traffic_filter.clear()), "trafficFilter");
        assert_eq!(
            field(|r| r.traffic_filter[0].dst_port = Some(vec!["http".into()])),
            "trafficFilter[0].dstPort"
        );
        assert_eq!(
            field(|r| r.traffic_filter[0].dst_address = Some(vec!["10.0.0.0/33".into()])),
            "trafficFilter[0].dstAddress"
        );
        assert_eq!(
            field(|r| r.dst_interface.as_mut().unwrap().dst_ip_address = Some("x".into())),
            "dstInterface.dstIpAddress"
        );
        assert_eq!(
            field(|r| r.traffic_rule_id = String::new()),
            "trafficRuleId"
        );
        let mut drop = rule();
        drop.action = "DROP".into();
        drop.dst_interface = None;
        drop.validate().unwrap();
    }

    #[test]
    fn dns_rules_match_their_address_type() {
        let mut d = DnsRule {
            dns_rule_id: "arena".into(),
            domain_name: "arena.edge.example".into(),
            ip_address_type: "IP_V4".into(),
            ip_address: "10.1.0.5".into(),
            ttl: Some(30),
            state: "ACTIVE".into(),
        };
        d.validate().unwrap();
        d.ip_address_type = "IP_V6".into();
        assert_eq!(d.validate().unwrap_err().field, "ipAddress");
        d.ip_address = "fd00::5".into();
        d.validate().unwrap();
        d.domain_name = "-bad.example".into();
        assert_eq!(d.validate().unwrap_err().field, "domainName");
        assert!(valid_fqdn("a.b-c.example.") && !valid_fqdn("a..b") && !valid_fqdn(""));
    }
}
