use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// An amount of compute: what a site has, what an instance needs, what is in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Concurrent game/AR sessions.
    #[serde(default)]
    pub session_slots: u32,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Self = Self {
        cpu_millicores: 0,
        memory_bytes: 0,
        gpus: 0,
        session_slots: 0,
    };

    /// Whether `need` fits into `self` in every dimension.
    pub fn fits(&self, need: &Self) -> bool {
        need.cpu_millicores <= self.cpu_millicores
            && need.memory_bytes <= self.memory_bytes
            && need.gpus <= self.gpus
            && need.session_slots <= self.session_slots
    }

    /// `self - other`, or `None` when any dimension would go negative.
    pub fn checked_sub(&self, other: &Self) -> Option<Self> {
        Some(Self {
            cpu_millicores: self.cpu_millicores.checked_sub(other.cpu_millicores)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
            gpus: self.gpus.checked_sub(other.gpus)?,
            session_slots: self.session_slots.checked_sub(other.session_slots)?,
        })
    }

    /// `self - other`, clamped at zero in each dimension.
    pub fn saturating_sub(&self, other: &Self) -> Self {
        Self {
            cpu_millicores: self.cpu_millicores.saturating_sub(other.cpu_millicores),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
            session_slots: self.session_slots.saturating_sub(other.session_slots),
        }
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        Some(Self {
            cpu_millicores: self.cpu_millicores.checked_add(other.cpu_millicores)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
            gpus: self.gpus.checked_add(other.gpus)?,
            session_slots: self.session_slots.checked_add(other.session_slots)?,
        })
    }

    /// `self * n`, or `None` on overflow.
    pub fn checked_mul(&self, n: u32) -> Option<Self> {
        Some(Self {
            cpu_millicores: self.cpu_millicores.checked_mul(u64::from(n))?,
            memory_bytes: self.memory_bytes.checked_mul(u64::from(n))?,
            gpus: self.gpus.checked_mul(n)?,
            session_slots: self.session_slots.checked_mul(n)?,
        })
    }

    /// Parses the CLI form `cpu=8000m,memory=16Gi,gpus=1,sessions=500`.
    ///
    /// CPU takes millicores with `m` (`500m`) or cores (`8`, `0.5`); memory takes a byte count
    /// with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix.
    /// Keys not given are zero.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let mut r = Self::ZERO;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                ValidationError::new("capacity", format!("{part:?} is not key=value"))
            })?;
            match key.trim() {
                "cpu" => r.cpu_millicores = parse_cpu(value.trim())?,
                "memory" | "mem" => r.memory_bytes = parse_bytes(value.trim())?,
                "gpus" | "gpu" => {
                    r.gpus = value.trim().parse().map_err(|_| {
                        ValidationError::new("capacity.gpus", format!("{value:?} is not a count"))
                    })?
                }
                "sessions" => {
                    r.session_slots = value.trim().parse().map_err(|_| {
                        ValidationError::new(
                            "capacity.sessions",
                            format!("{value:?} is not a count"),
                        )
                    })?
                }
                other => {
                    return Err(ValidationError::new(
                        "capacity",
                        format!("unknown resource {other:?}; use cpu, memory, gpus or sessions"),
                    ));
                }
            }
        }
        Ok(r)
    }
}

fn parse_cpu(v: &str) -> Result<u64, ValidationError> {
    let bad = || {
        ValidationError::new(
            "capacity.cpu",
            format!("{v:?} is not a CPU amount like 500m or 2"),
        )
    };
    if let Some(m) = v.strip_suffix('m') {
        return m.parse().map_err(|_| bad());
    }
    let cores: f64 = v.parse().map_err(|_| bad())?;
    if !(cores.is_finite() && (0.0..1e12).contains(&cores)) {
        return Err(bad());
    }
    Ok((cores * 1000.0).round() as u64)
}

fn parse_bytes(v: &str) -> Result<u64, ValidationError> {
    let bad = || {
        ValidationError::new(
            "capacity.memory",
            format!("{v:?} is not a size like 512Mi or 16Gi"),
        )
    };
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = v.strip_suffix(suffix) {
            let n: u64 = n.parse().map_err(|_| bad())?;
            return n.checked_mul(mult).ok_or_else(bad);
        }
    }
    v.parse().map_err(|_| bad())
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={}m,memory={}Mi,gpus={},sessions={}",
            self.cpu_millicores,
            self.memory_bytes >> 20,
            self.gpus,
            self.session_slots
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_cli_form() {
        let r = Resources::parse("cpu=8000m,memory=16Gi,sessions=500").unwrap();
        assert_eq!(r.cpu_millicores, 8000);
        assert_eq!(r.memory_bytes, 16 << 30);
        assert_eq!(r.session_slots, 500);
        assert_eq!(r.gpus, 0);
        assert_eq!(
            Resources::parse("cpu=1.5,gpus=2").unwrap().cpu_millicores,
            1500
        );
        assert_eq!(
            Resources::parse("memory=1000k").unwrap().memory_bytes,
            1_000_000
        );
    }

    #[test]
    fn rejects_bad_cli_form_naming_the_part() {
        assert_eq!(
            Resources::parse("cpu=lots").unwrap_err().field,
            "capacity.cpu"
        );
        assert_eq!(
            Resources::parse("memory=1Xi").unwrap_err().field,
            "capacity.memory"
        );
        assert!(
            Resources::parse("disk=1")
                .unwrap_err()
                .reason
                .contains("disk")
        );
        assert!(Resources::parse("cpu").is_err());
        assert!(Resources::parse("cpu=-1").is_err());
    }

    fn any_resources() -> impl Strategy<Value = Resources> {
        (0u64..1 << 40, 0u64..1 << 50, 0u32..64, 0u32..100_000).prop_map(|(c, m, g, s)| Resources {
            cpu_millicores: c,
            memory_bytes: m,
            gpus: g,
            session_slots: s,
        })
    }

    proptest! {
        #[test]
        fn sub_then_add_round_trips(a in any_resources(), b in any_resources()) {
            match a.checked_sub(&b) {
                Some(d) => {
                    prop_assert!(a.fits(&b));
                    prop_assert_eq!(d.checked_add(&b), Some(a));
                }
                None => prop_assert!(!a.fits(&b)),
            }
        }
    }
}
