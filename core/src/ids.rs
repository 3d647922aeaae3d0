use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Longest id accepted: fits DNS labels joined by dots and keeps store keys short.
pub const MAX_ID_LEN: usize = 128;

/// Checks the id alphabet shared by every id: 1..=128 characters of ASCII letters, digits,
/// `-`, `_`, `.` and `:`, starting with a letter or digit. No `/`, so an id is always one
/// segment of a store key.
fn validate_id(kind: &'static str, s: &str) -> Result<(), ValidationError> {
    let field = kind;
    if s.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} characters long, at most {MAX_ID_LEN} allowed",
                s.len()
            ),
        ));
    }
    let first = s.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(ValidationError::new(
            field,
            "must start with a letter or digit",
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(ValidationError::new(
            field,
            format!("contains {c:?}; only letters, digits, '-', '_', '.' and ':' are allowed"),
        ));
    }
    Ok(())
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                validate_id($field, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

typed_id!(/// A mobile operator (MNO) running an edge platform.
    OperatorId, "operatorId");
typed_id!(/// An edge cloud zone (CAMARA `edgeCloudZoneId`), a group of sites.
    ZoneId, "zoneId");
typed_id!(/// An edge site: a micro data centre, a Wi-Fi hot-spot box or a metro data centre.
    SiteId, "siteId");
typed_id!(/// A node inside a site.
    NodeId, "nodeId");
typed_id!(/// An application onboarded by a developer.
    AppId, "appId");
typed_id!(/// A running instance of an app on a site.
    InstanceId, "instanceId");
typed_id!(/// A developer account (tenant).
    DeveloperId, "developerId");
typed_id!(/// A user equipment (phone, headset) as mecfed knows it.
    UeId, "ueId");
typed_id!(/// A game or AR session of a UE with an app instance.
    SessionId, "sessionId");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["a", "site-1", "op.eu_west:3", "0abc"] {
            assert_eq!(SiteId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_ids_naming_the_field() {
        let e = SiteId::new("").unwrap_err();
        assert_eq!(e.field, "siteId");
        assert!(SiteId::new("a/b").unwrap_err().reason.contains("'/'"));
        assert!(AppId::new("-x").is_err());
        assert!(AppId::new("x".repeat(129)).is_err());
        assert!(AppId::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn serde_validates() {
        let id: Result<AppId, _> = serde_json::from_str("\"ok-1\"");
        assert_eq!(id.unwrap().as_str(), "ok-1");
        let bad: Result<AppId, _> = serde_json::from_str("\"not ok\"");
        assert!(bad.unwrap_err().to_string().contains("appId"));
    }
}
