//! The latency model: a predicted round trip from a user's position to an edge site, used by
//! the scheduler (latency budgets of demand areas) and by discovery (ranking endpoints).
//!
//! predicted RTT = access RTT of the radio or line the user is on
//!               + 2 x propagation (great-circle distance x route factor at 2/3 c)
//!               + per-hop processing x hops (a hop per [`KM_PER_HOP`] of route, plus
//!                 [`BASE_HOPS`])
//!               + queueing at the site, growing with its load as in an M/M/1 queue.
//!
//! A measured RTT (an EWMA of samples from UEs and gateways) replaces the prediction wherever
//! one exists: see [`Ewma`] and [`rtt_ms`].
//!
//! Constants, and where they come from:
//! - Access RTT ([`access_rtt_ms`]): 5G NR 8 ms, from the 4 ms one-way user-plane latency
//!   target for eMBB in 3GPP TR 38.913 §7.5, doubled; LTE 20 ms, twice the 10 ms one-way
//!   target of 3GPP TR 36.913 §8 (field LTE RTTs are often worse, so this is optimistic);
//!   Wi-Fi 5 ms, a typical uncongested WLAN first-hop RTT (802.11ac/ax, 2 to 10 ms);
//!   fixed line 2 ms, metro Ethernet or fibre access.
//! - Light in fibre travels at about c / 1.47 (refractive index of silica), close to 2/3 c:
//!   [`FIBRE_KM_PER_MS`] = 200 km per ms one way.
//! - [`ROUTE_FACTOR`] 1.5: terrestrial fibre paths are longer than the great circle; studies of
//!   US long-haul fibre (Durairajan et al., "InterTubes", SIGCOMM 2015) put typical path
//!   inflation between 1.3 and 2.
//! - [`HOP_MS`] 0.1 ms of round-trip processing per router hop (forwarding and serialisation
//!   at 10 Gb/s and up are tens of microseconds each way); [`BASE_HOPS`] 2 (the access
//!   gateway or UPF and the site's own gateway); one more hop per [`KM_PER_HOP`] = 100 km.
//! - Queueing: [`SERVICE_MS`] 0.5 ms mean service time of a game tick's request, times
//!   rho / (1 - rho) for a site at utilisation rho (M/M/1 waiting time), with rho capped at
//!   [`MAX_UTILISATION`] 0.95 so a full site costs a finite 9.5 ms.

use serde::{Deserialize, Serialize};

use crate::{AccessKind, GeoPoint};

/// One-way speed of light in fibre, km per ms.
pub const FIBRE_KM_PER_MS: f64 = 200.0;
/// Route length over great-circle distance.
pub const ROUTE_FACTOR: f64 = 1.5;
/// Round-trip processing per router hop, ms.
pub const HOP_MS: f64 = 0.1;
/// Hops on every path (access gateway, site gateway).
pub const BASE_HOPS: f64 = 2.0;
/// Route kilometres per additional hop.
pub const KM_PER_HOP: f64 = 100.0;
/// Mean service time at a site, ms.
pub const SERVICE_MS: f64 = 0.5;
/// Utilisation at which queueing stops growing.
pub const MAX_UTILISATION: f64 = 0.95;

/// Round trip of the access network itself, ms.
pub fn access_rtt_ms(kind: AccessKind) -> f64 {
    match kind {
        AccessKind::Nr5g => 8.0,
        AccessKind::Lte => 20.0,
        AccessKind::Wifi => 5.0,
        AccessKind::Fixed => 2.0,
    }
}

#[inline]
/// Round trip over `distance_m` of great-circle distance, without the access network or the
/// site's queue: propagation both ways plus hops.
pub fn transport_rtt_ms(distance_m: f64) -> f64 {
    // Multiplications by constant reciprocals: schedulers call this for every site.
    const ROUTE_KM_PER_M: f64 = ROUTE_FACTOR / 1000.0;
    const MS_PER_ROUTE_KM: f64 = 2.0 / FIBRE_KM_PER_MS;
    const HOPS_PER_ROUTE_KM: f64 = 1.0 / KM_PER_HOP;
    let route_km = distance_m.max(0.0) * ROUTE_KM_PER_M;
    let propagation = route_km * MS_PER_ROUTE_KM;
    // Truncation is floor for non-negative values, without a libm call.
    let hops = BASE_HOPS + ((route_km * HOPS_PER_ROUTE_KM) as i64) as f64;
    propagation + hops * HOP_MS
}

/// An upper bound on the great-circle distance (m) whose transport round trip
/// ([`transport_rtt_ms`]) fits in `budget_ms`: hops are counted one short of the floor, so any
/// distance beyond it certainly costs more. Schedulers prune sites with it before the exact
/// computation.
pub fn max_transport_distance_m(budget_ms: f64) -> f64 {
    // transport(d) >= 2 r / FIBRE + (BASE_HOPS + r / KM_PER_HOP - 1) * HOP_MS, r = route km.
    let per_route_km = 2.0 / FIBRE_KM_PER_MS + HOP_MS / KM_PER_HOP;
    let fixed = (BASE_HOPS - 1.0) * HOP_MS;
    let route_km = ((budget_ms - fixed) / per_route_km).max(0.0);
    route_km / ROUTE_FACTOR * 1000.0
}

#[inline]
/// Waiting time at a site at `utilisation` (0 idle, 1 full), ms.
pub fn queueing_ms(utilisation: f64) -> f64 {
    let rho = if utilisation.is_finite() {
        utilisation.clamp(0.0, MAX_UTILISATION)
    } else {
        MAX_UTILISATION
    };
    SERVICE_MS * rho / (1.0 - rho)
}

/// Predicted round trip from a user at `distance_m` from a site, on `access`, to a site at
/// `utilisation`, ms.
pub fn predicted_rtt_ms(access: AccessKind, distance_m: f64, utilisation: f64) -> f64 {
    access_rtt_ms(access) + transport_rtt_ms(distance_m) + queueing_ms(utilisation)
}

/// The round trip to use: the measured one where there is one, else the prediction.
pub fn rtt_ms(measured: Option<&Ewma>, predicted: f64) -> f64 {
    measured.and_then(Ewma::value).unwrap_or(predicted)
}

/// Predicted round trip from `from` to a site at `site`.
pub fn predicted_between_ms(
    access: AccessKind,
    from: &GeoPoint,
    site: &GeoPoint,
    utilisation: f64,
) -> f64 {
    predicted_rtt_ms(access, from.distance_m(site), utilisation)
}

/// An exponentially weighted moving average of RTT samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ewma {
    /// Weight of a new sample, in (0, 1].
    pub alpha: f64,
    /// Current average, once a sample arrived.
    pub mean: Option<f64>,
    /// Samples taken.
    pub samples: u64,
}

impl Ewma {
    /// Default weight of a new sample (about the last 8 samples dominate).
    pub const DEFAULT_ALPHA: f64 = 0.125;

    /// An empty average with weight `alpha` (clamped into (0, 1]).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_finite() {
            alpha.clamp(f64::MIN_POSITIVE, 1.0)
        } else {
            Self::DEFAULT_ALPHA
        };
        Self {
            alpha,
            mean: None,
            samples: 0,
        }
    }

    /// Adds a sample; non-finite or negative samples are ignored.
    pub fn add(&mut self, sample_ms: f64) {
        if !(sample_ms.is_finite() && sample_ms >= 0.0) {
            return;
        }
        self.mean = Some(match self.mean {
            None => sample_ms,
            Some(m) => m + self.alpha * (sample_ms - m),
        });
        self.samples += 1;
    }

    /// The average, if any sample arrived.
    pub fn value(&self) -> Option<f64> {
        self.mean
    }
}

impl Default for Ewma {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ALPHA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nearby_idle_5g_site_costs_the_access_and_two_hops() {
        let rtt = predicted_rtt_ms(AccessKind::Nr5g, 0.0, 0.0);
        assert!((rtt - (8.0 + 0.2)).abs() < 1e-9, "{rtt}");
    }

    #[test]
    fn distance_adds_propagation_and_hops() {
        // 1,000 km great circle = 1,500 km of fibre: 15 ms of propagation round trip and
        // 2 + 15 hops.
        let t = transport_rtt_ms(1_000_000.0);
        assert!((t - (15.0 + 17.0 * 0.1)).abs() < 1e-9, "{t}");
        // Cork to Dublin, about 220 km: a couple of ms.
        let cork = GeoPoint::new(51.8985, -8.4756).unwrap();
        let dublin = GeoPoint::new(53.3498, -6.2603).unwrap();
        let rtt = predicted_between_ms(AccessKind::Nr5g, &cork, &dublin, 0.0);
        assert!((11.0..13.0).contains(&rtt), "{rtt}");
    }

    #[test]
    fn the_distance_bound_is_an_upper_bound() {
        for budget in [0.0, 0.2, 1.0, 5.0, 12.5, 40.0, 300.0] {
            let d = max_transport_distance_m(budget);
            // Anything farther costs more than the budget ...
            assert!(transport_rtt_ms(d * 1.0001 + 1.0) > budget, "{budget}");
            // ... and the bound is not loose by more than a hop's worth of distance.
            let slack = KM_PER_HOP / ROUTE_FACTOR * 1000.0;
            assert!(
                transport_rtt_ms((d - slack).max(0.0)) <= budget.max(0.2),
                "{budget}"
            );
        }
    }

    #[test]
    fn queueing_grows_with_load_and_stays_finite() {
        assert_eq!(queueing_ms(0.0), 0.0);
        assert!((queueing_ms(0.5) - 0.5).abs() < 1e-9);
        assert!(queueing_ms(0.9) > queueing_ms(0.5));
        assert!((queueing_ms(1.0) - 9.5).abs() < 1e-9);
        assert_eq!(queueing_ms(f64::NAN), queueing_ms(1.0));
        assert_eq!(queueing_ms(-1.0), 0.0);
    }

    #[test]
    fn access_kinds_order_as_expected() {
        let rtt = |k| predicted_rtt_ms(k, 10_000.0, 0.2);
        assert!(rtt(AccessKind::Fixed) < rtt(AccessKind::Wifi));
        assert!(rtt(AccessKind::Wifi) < rtt(AccessKind::Nr5g));
        assert!(rtt(AccessKind::Nr5g) < rtt(AccessKind::Lte));
    }

    #[test]
    fn measurements_override_the_prediction() {
        let mut e = Ewma::default();
        assert_eq!(rtt_ms(Some(&e), 12.0), 12.0, "no sample yet");
        e.add(20.0);
        assert_eq!(rtt_ms(Some(&e), 12.0), 20.0);
        e.add(28.0);
        assert!((e.value().unwrap() - 21.0).abs() < 1e-9);
        e.add(f64::NAN);
        e.add(-3.0);
        assert_eq!(e.samples, 2);
        assert_eq!(rtt_ms(None, 12.0), 12.0);
    }
}
