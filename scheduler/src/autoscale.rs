//! The autoscaler: per app and demand area, the instances the observed sessions call for,
//! stabilised as the Kubernetes HorizontalPodAutoscaler does (a scale-up needs every
//! recommendation of the up window to agree, a scale-down every one of the down window).
//! The result becomes the demand the scheduler places ([`with_demand`]).
//!
//! Architecture Invariant: no IO, no clock reads; `now` is an argument.

use std::collections::VecDeque;

use mecfed_core::{App, Autoscaling};

use crate::snapshot::{SiteIdx, Snapshot};

/// Instances needed to hold `sessions` at the target utilisation, within the per-area bounds.
pub fn recommend(sessions: u32, per_instance: u32, cfg: &Autoscaling) -> u32 {
    let at_target =
        u64::from(per_instance.max(1)) * u64::from(cfg.target_utilisation_percent.max(1));
    let n = (u64::from(sessions) * 100).div_ceil(at_target);
    let n = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .max(cfg.min_instances_per_area);
    cfg.max_instances_per_area.map_or(n, |max| n.min(max))
}

/// The recommendation history of one demand area.
#[derive(Debug, Clone, Default)]
pub struct AreaScaler {
    history: VecDeque<(u64, u32)>,
}

impl AreaScaler {
    /// Records `recommendation` at `now` and returns the instances to run, given `current`.
    pub fn handle_recommendation(
        &mut self,
        now: u64,
        recommendation: u32,
        current: u32,
        cfg: &Autoscaling,
    ) -> u32 {
        self.history.push_back((now, recommendation));
        let up = u64::from(cfg.scale_up_stabilisation_seconds);
        let down = u64::from(cfg.scale_down_stabilisation_seconds);
        let horizon = now.saturating_sub(up.max(down));
        while self.history.front().is_some_and(|(t, _)| *t < horizon) {
            self.history.pop_front();
        }
        let within = |w: u64| {
            self.history
                .iter()
                .filter(move |(t, _)| *t >= now.saturating_sub(w))
                .map(|(_, r)| *r)
        };
        // Up only as far as every recent recommendation agrees; down likewise.
        let up_to = within(up).min().unwrap_or(recommendation);
        let down_to = within(down).max().unwrap_or(recommendation);
        if current < up_to {
            up_to
        } else if current > down_to {
            down_to
        } else {
            current
        }
    }
}

/// Demand areas a site reaches within the app's latency budget, one bit each (measured round
/// trips where there are some, else the model's prediction).
pub fn reach(snap: &Snapshot, app: &App, site: SiteIdx) -> u64 {
    let row = &snap.sites[site.get()];
    let info = snap.site(site);
    let budget = f64::from(app.qos.latency_budget_ms);
    let mut bits = 0u64;
    for (a, area) in app.qos.demand_areas.iter().enumerate() {
        let measured = snap.measured.get(&area.name).and_then(|m| m.get(&site));
        let rtt = measured
            .copied()
            .unwrap_or_else(|| row.predicted_rtt_ms(area.farthest_m(&info.location)));
        if rtt <= budget {
            bits |= 1 << a;
        }
    }
    bits
}

/// Sessions per demand area: each site's sessions go to the areas it reaches, in proportion
/// to their declared demand (at least 1 each); sessions on a site that reaches none count for
/// no area.
pub fn area_sessions(snap: &Snapshot, app: &App, per_site: &[(SiteIdx, u32)]) -> Vec<u32> {
    let areas = &app.qos.demand_areas;
    let mut out = vec![0u64; areas.len()];
    for &(site, sessions) in per_site {
        let bits = reach(snap, app, site);
        let weights: Vec<u64> = areas
            .iter()
            .enumerate()
            .map(|(a, d)| {
                if bits & (1 << a) != 0 {
                    u64::from(d.expected_sessions.max(1))
                } else {
                    0
                }
            })
            .collect();
        let total: u64 = weights.iter().sum();
        if total == 0 {
            continue;
        }
        // Largest remainder, so the parts add up to the site's sessions.
        let mut given = 0u64;
        let mut rems = Vec::new();
        for (a, w) in weights.iter().enumerate() {
            let exact = u64::from(sessions) * w;
            out[a] += exact / total;
            given += exact / total;
            if *w > 0 {
                rems.push((exact % total, a));
            }
        }
        rems.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        for (_, a) in rems
            .into_iter()
            .take((u64::from(sessions) - given) as usize)
        {
            out[a] += 1;
        }
    }
    out.into_iter()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect()
}

/// Instances per area the app declares: its expected sessions at its sessions per instance.
pub fn declared(app: &App) -> Vec<u32> {
    let per = app.qos.max_sessions_per_instance.max(1);
    app.qos
        .demand_areas
        .iter()
        .map(|a| a.expected_sessions.div_ceil(per))
        .collect()
}

/// The app with each area's demand set to `instances` full instances.
pub fn with_demand(app: &App, instances: &[u32]) -> App {
    let mut app = app.clone();
    let per = app.qos.max_sessions_per_instance.max(1);
    for (a, n) in app.qos.demand_areas.iter_mut().zip(instances) {
        a.expected_sessions = n.saturating_mul(per);
    }
    app
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(up: u32, down: u32) -> Autoscaling {
        Autoscaling {
            target_utilisation_percent: 50,
            scale_up_stabilisation_seconds: up,
            scale_down_stabilisation_seconds: down,
            min_instances_per_area: 1,
            max_instances_per_area: Some(10),
        }
    }

    #[test]
    fn recommendations_hold_the_load_at_the_target() {
        let c = cfg(0, 0);
        // 50 per instance at 50 %: 25 sessions each.
        assert_eq!(recommend(0, 50, &c), 1, "the minimum");
        assert_eq!(recommend(25, 50, &c), 1);
        assert_eq!(recommend(26, 50, &c), 2);
        assert_eq!(recommend(10_000, 50, &c), 10, "the maximum");
    }

    #[test]
    fn scale_down_waits_for_its_window_and_scale_up_for_its_own() {
        let c = cfg(30, 300);
        let mut s = AreaScaler::default();
        assert_eq!(s.handle_recommendation(0, 4, 4, &c), 4);
        // Load drops at t=10: not before every recommendation of 300 s says so.
        assert_eq!(s.handle_recommendation(10, 1, 4, &c), 4);
        assert_eq!(s.handle_recommendation(200, 1, 4, &c), 4);
        assert_eq!(s.handle_recommendation(301, 1, 4, &c), 1);
        // A burst at t=400 (low just before): up only once 30 s of recommendations agree.
        assert_eq!(s.handle_recommendation(399, 1, 1, &c), 1);
        assert_eq!(s.handle_recommendation(400, 6, 1, &c), 1);
        assert_eq!(s.handle_recommendation(420, 6, 1, &c), 1);
        assert_eq!(s.handle_recommendation(431, 6, 1, &c), 6);
        // Without windows it follows at once.
        let mut s = AreaScaler::default();
        assert_eq!(s.handle_recommendation(0, 3, 5, &cfg(0, 0)), 3);
    }

    #[test]
    fn demand_rounds_to_whole_instances() {
        let app: App = serde_json::from_value(serde_json::json!({
            "id": "a", "developer": "d", "name": "a", "version": "1",
            "artefact": {"kind": "process", "command": "x"},
            "resources": {"cpuMillicores": 500},
            "qos": {"latencyBudgetMs": 20, "maxSessionsPerInstance": 50, "demandAreas": [
                {"name": "c", "center": {"latitude": 51.9, "longitude": -8.47},
                 "radiusM": 1000.0, "expectedSessions": 120}
            ]}
        }))
        .unwrap();
        assert_eq!(declared(&app), vec![3]);
        assert_eq!(
            with_demand(&app, &[2]).qos.demand_areas[0].expected_sessions,
            100
        );
    }
}
