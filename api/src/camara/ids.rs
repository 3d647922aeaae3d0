//! CAMARA's identifiers are UUIDs (versions 1 to 5); mecfed's are names. Apps submitted
//! through CAMARA get a random (v4) UUID as their mecfed id; every other mecfed id maps to a
//! name-based (v5) UUID, the same on every replica and after every restart.

use mecfed_core::{AppId, SiteId, ZoneId};
use uuid::Uuid;

fn namespace(kind: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("urn:mecfed:{kind}").as_bytes(),
    )
}

fn named(kind: &str, name: &str) -> Uuid {
    Uuid::new_v5(&namespace(kind), name.as_bytes())
}

/// The CAMARA `AppId` of an app: its own id when that is a UUID, else a v5 UUID of it.
pub(crate) fn app_uuid(id: &AppId) -> Uuid {
    Uuid::parse_str(id.as_str()).unwrap_or_else(|_| named("app", id.as_str()))
}

/// The CAMARA `EdgeCloudZoneId` of a zone.
pub(crate) fn zone_uuid(id: &ZoneId) -> Uuid {
    named("zone", id.as_str())
}

/// The CAMARA `KubernetesClusterRef` of a Kubernetes site.
pub(crate) fn cluster_uuid(id: &SiteId) -> Uuid {
    named("cluster", id.as_str())
}

/// Parses a CAMARA UUID path or query value, lower-case hyphenated as the schemas' pattern
/// `^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$` demands.
pub(crate) fn parse(field: &str, raw: &str) -> Result<Uuid, mecfed_core::ValidationError> {
    let bad = || {
        mecfed_core::ValidationError::new(
            field,
            "must be a lower-case hyphenated UUID of version 1 to 5",
        )
    };
    let u = Uuid::parse_str(raw).map_err(|_| bad())?;
    let canonical = u.hyphenated().to_string();
    let version_ok = (1..=5).contains(&u.get_version_num());
    let variant_ok = u.get_variant() == uuid::Variant::RFC4122;
    if canonical != raw || !version_ok || !variant_ok {
        return Err(bad());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ids_are_stable_distinct_and_valid() {
        let z = ZoneId::new("op-a-cork").unwrap();
        assert_eq!(zone_uuid(&z), zone_uuid(&z));
        let s = SiteId::new("op-a-cork").unwrap();
        assert_ne!(zone_uuid(&z), cluster_uuid(&s));
        let text = zone_uuid(&z).to_string();
        assert_eq!(parse("edgeCloudZoneId", &text).unwrap(), zone_uuid(&z));
        let named_app = AppId::new("arena").unwrap();
        assert_eq!(app_uuid(&named_app).get_version_num(), 5);
        let v4 = Uuid::new_v4();
        assert_eq!(app_uuid(&AppId::new(v4.to_string()).unwrap()), v4);
    }

    #[test]
    fn only_canonical_uuids_parse() {
        let u = Uuid::new_v4().to_string();
        assert!(parse("appId", &u).is_ok());
        assert!(parse("appId", &u.to_uppercase()).is_err());
        assert!(parse("appId", &u.replace('-', "")).is_err());
        assert!(parse("appId", "00000000-0000-0000-0000-000000000000").is_err());
        assert_eq!(parse("appId", "nope").unwrap_err().field, "appId");
    }
}
