use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{
    AccessKind, AppId, DeveloperId, GeoPoint, InstanceId, OperatorId, SessionId, UeId,
    ValidationError, error::ensure,
};

/// How the network identifies a UE (CAMARA `Device`): at least one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UeIdentity {
    /// Public IPv4 address as seen by the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// E.164 number with a leading `+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Network access identifier, `user@realm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_identifier: Option<String>,
}

impl UeIdentity {
    /// Checks that one identifier is present and each is well formed.
    pub fn validate(&self) -> Result<(), ValidationError> {
        ensure(
            self.ipv4_address.is_some()
                || self.phone_number.is_some()
                || self.network_access_identifier.is_some(),
            "device",
            "needs at least one of ipv4Address, phoneNumber, networkAccessIdentifier",
        )?;
        if let Some(p) = &self.phone_number {
            validate_phone_number(p, "phoneNumber")?;
        }
        if let Some(nai) = &self.network_access_identifier {
            let ok = nai
                .split_once('@')
                .is_some_and(|(u, r)| !u.is_empty() && !r.is_empty() && !r.contains('@'));
            ensure(ok, "networkAccessIdentifier", "must be user@realm")?;
        }
        Ok(())
    }
}

/// Where a UE is attached to the network: the cell or Wi-Fi access point serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    /// Radio or line the UE is on.
    pub access: AccessKind,
    /// Cell id (e.g. an NR cell identity) or Wi-Fi AP id (BSSID).
    pub access_point: String,
    /// Operator whose network the UE is on.
    pub operator: OperatorId,
    /// Where the access point is.
    pub location: GeoPoint,
}

/// Checks an E.164 phone number as CAMARA writes it, `^\+[1-9][0-9]{4,14}$`; `field` names
/// it in the error.
pub fn validate_phone_number(p: &str, field: &str) -> Result<(), ValidationError> {
    let digits = p.strip_prefix('+').unwrap_or("");
    ensure(
        (5..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0'),
        field,
        "must be E.164: '+' then 5 to 15 digits, not starting with 0",
    )
}

/// A UE known to the platform, with its current network context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ue {
    /// Platform id.
    pub id: UeId,
    /// Network identities.
    pub identity: UeIdentity,
    /// Current attachment, while attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// The tenants (developers) the subscriber consented to show its network data to, in
    /// the ETSI MEC location and radio APIs; the operator sees every UE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<DeveloperId>,
}

impl Ue {
    /// A validated UE, not attached.
    pub fn new(id: UeId, identity: UeIdentity) -> Result<Self, ValidationError> {
        identity.validate()?;
        Ok(Self {
            id,
            identity,
            attachment: None,
            shared_with: Vec::new(),
        })
    }

    /// Checks the invariants serde cannot.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.identity.validate()?;
        if let Some(a) = &self.attachment {
            ensure(
                !a.access_point.is_empty() && a.access_point.len() <= 128,
                "attachment.accessPoint",
                "must have 1 to 128 characters",
            )?;
        }
        Ok(())
    }
}

/// A UE's session with one instance of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Session {
    /// Session id.
    pub id: SessionId,
    /// The player.
    pub ue: UeId,
    /// The app.
    pub app: AppId,
    /// Instance currently serving it.
    pub instance: InstanceId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_needs_one_well_formed_id() {
        assert_eq!(
            UeIdentity::default().validate().unwrap_err().field,
            "device"
        );
        let ok = UeIdentity {
            phone_number: Some("+353871234567".into()),
            ..Default::default()
        };
        ok.validate().unwrap();
        let bad = UeIdentity {
            phone_number: Some("0871234567".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "phoneNumber");
        let bad = UeIdentity {
            network_access_identifier: Some("nobody".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "networkAccessIdentifier");
        let json: UeIdentity = serde_json::from_str(r#"{"ipv4Address":"203.0.113.7"}"#).unwrap();
        json.validate().unwrap();
    }
}
