use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

use crate::error::{ValidationError, ensure};

/// A WGS84 position. Latitude in [-90, 90], longitude in [-180, 180], both finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawPoint", into = "RawPoint")]
pub struct GeoPoint {
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPoint {
    latitude: f64,
    longitude: f64,
}

impl GeoPoint {
    /// A validated point.
    pub fn new(latitude: f64, longitude: f64) -> Result<Self, ValidationError> {
        ensure(
            latitude.is_finite() && (-90.0..=90.0).contains(&latitude),
            "latitude",
            "must be a number between -90 and 90",
        )?;
        ensure(
            longitude.is_finite() && (-180.0..=180.0).contains(&longitude),
            "longitude",
            "must be a number between -180 and 180",
        )?;
        Ok(Self {
            latitude,
            longitude,
        })
    }

    /// Degrees north.
    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    /// Degrees east.
    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Great-circle distance in metres (haversine on the mean Earth radius).
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        Haversine.distance(self.to_geo(), other.to_geo())
    }

    /// As a `geo` point (x = longitude, y = latitude).
    pub fn to_geo(&self) -> Point<f64> {
        Point::new(self.longitude, self.latitude)
    }
}

impl TryFrom<RawPoint> for GeoPoint {
    type Error = ValidationError;
    fn try_from(r: RawPoint) -> Result<Self, Self::Error> {
        Self::new(r.latitude, r.longitude)
    }
}

impl From<GeoPoint> for RawPoint {
    fn from(p: GeoPoint) -> Self {
        Self {
            latitude: p.latitude,
            longitude: p.longitude,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matches_known_pair() {
        // Reference values from an independent haversine on the IUGG mean radius
        // (6,371,008.8 m): Melbourne CBD to Cork, and two points in Cork 755 m apart.
        let mel = GeoPoint::new(-37.8183, 144.9671).unwrap();
        let cork = GeoPoint::new(51.8985, -8.4756).unwrap();
        let d = mel.distance_m(&cork);
        assert!((d - 17_425_523.2).abs() < 1.0, "{d}");
        let cork2 = GeoPoint::new(51.8969, -8.4863).unwrap();
        let d = cork.distance_m(&cork2);
        assert!((d - 755.43).abs() < 0.1, "{d}");
        assert_eq!(mel.distance_m(&mel), 0.0);
    }

    #[test]
    fn rejects_out_of_range() {
        assert_eq!(GeoPoint::new(91.0, 0.0).unwrap_err().field, "latitude");
        assert_eq!(GeoPoint::new(0.0, f64::NAN).unwrap_err().field, "longitude");
        let bad: Result<GeoPoint, _> = serde_json::from_str(r#"{"latitude":100,"longitude":0}"#);
        assert!(bad.is_err());
    }
}
