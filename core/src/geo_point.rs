use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

use crate::error::{ValidationError, ensure};

/// Mean Earth radius in metres, the one [`GeoPoint::distance_m`] uses (IUGG mean radius, as
/// in `geo`'s haversine).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres for a chord of length `chord` between two unit vectors.
#[inline]
pub fn chord_to_m(chord: f64) -> f64 {
    let x = chord.clamp(0.0, 2.0) / 2.0;
    // Below x = 0.1 (about 1,270 km) the asin series to x^9 is exact to 1e-12 relative,
    // and several times cheaper than the libm call.
    let angle = if x < 0.1 {
        let x2 = x * x;
        x * (1.0
            + x2 * (1.0 / 6.0 + x2 * (3.0 / 40.0 + x2 * (15.0 / 336.0 + x2 * (105.0 / 3456.0)))))
    } else {
        x.asin()
    };
    2.0 * EARTH_RADIUS_M * angle
}

/// The chord between two unit vectors that are `metres` apart on the great circle.
pub fn m_to_chord(metres: f64) -> f64 {
    let half_angle = (metres.max(0.0) / EARTH_RADIUS_M / 2.0).min(std::f64::consts::FRAC_PI_2);
    2.0 * half_angle.sin()
}

/// Squared chord between two unit vectors.
#[inline]
pub fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

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

    /// The point on the unit sphere (x towards 0°N 0°E, z towards the north pole). The chord
    /// between two such vectors is monotonic in great-circle distance, so comparing squared
    /// chords ranks distances without a trigonometric call; [`chord_to_m`] converts back.
    pub fn unit_vector(&self) -> [f64; 3] {
        let (lat, lon) = (self.latitude.to_radians(), self.longitude.to_radians());
        let (sl, cl) = lat.sin_cos();
        let (so, co) = lon.sin_cos();
        [cl * co, cl * so, sl]
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
    fn chords_agree_with_haversine() {
        let pts = [
            (-37.8183, 144.9671),
            (51.8985, -8.4756),
            (51.8969, -8.4863),
            (0.0, 179.9),
            (0.0, -179.9),
            (51.0, -8.0),
            (60.0, 3.0),
            (40.0, 10.0),
            (89.9, 10.0),
        ];
        for a in pts {
            for b in pts {
                let (a, b) = (
                    GeoPoint::new(a.0, a.1).unwrap(),
                    GeoPoint::new(b.0, b.1).unwrap(),
                );
                let by_chord = chord_to_m(chord2(&a.unit_vector(), &b.unit_vector()).sqrt());
                let d = a.distance_m(&b);
                assert!(
                    (by_chord - d).abs() < 1e-6 * d.max(1.0),
                    "{by_chord} vs {d}"
                );
                assert!(
                    (m_to_chord(d) - chord2(&a.unit_vector(), &b.unit_vector()).sqrt()).abs()
                        < 1e-9
                );
            }
        }
    }

    #[test]
    fn rejects_out_of_range() {
        assert_eq!(GeoPoint::new(91.0, 0.0).unwrap_err().field, "latitude");
        assert_eq!(GeoPoint::new(0.0, f64::NAN).unwrap_err().field, "longitude");
        let bad: Result<GeoPoint, _> = serde_json::from_str(r#"{"latitude":100,"longitude":0}"#);
        assert!(bad.is_err());
    }
}
