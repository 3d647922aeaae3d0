//! Why each site was chosen or rejected, with the numbers behind it: what `mecfed ctl
//! explain` prints.

use mecfed_core::{App, AppId, Failover, PlacementPolicy, SiteId, TaintEffect};
use serde::{Deserialize, Serialize};

use crate::{
    decide::{Decision, Reason, Scheduler, Score},
    snapshot::{SiteHealth, SiteIdx, Snapshot},
};

/// The predicted (or measured) round trip from a demand area to a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaRtt {
    /// Demand area.
    pub area: String,
    /// Round trip to the area's farthest point, ms.
    pub rtt_ms: f64,
    /// Whether it is a measurement rather than the model's prediction.
    pub measured: bool,
    /// Whether it is within the app's budget.
    pub within_budget: bool,
}

/// One site in an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteExplanation {
    /// Site.
    pub site: SiteId,
    /// Its operator.
    pub operator: String,
    /// Its zone.
    pub zone: String,
    /// Instances the decision puts there (0: rejected).
    pub replicas: u32,
    /// Instances the app runs there now.
    pub current: u32,
    /// Score, for feasible sites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    /// Round trips to the demand areas.
    pub rtt: Vec<AreaRtt>,
    /// Why it was not chosen (empty when chosen).
    pub reasons: Vec<Reason>,
    /// The reasons with their numbers, one sentence each.
    pub details: Vec<String>,
}

/// A decision with a line per site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// App.
    pub app: AppId,
    /// Latency budget, ms.
    pub latency_budget_ms: u32,
    /// The decision.
    pub decision: Decision,
    /// Chosen sites first (most instances first), then feasible ones by score, then the
    /// rejected ones in id order.
    pub sites: Vec<SiteExplanation>,
}

fn millicores(m: u64) -> String {
    format!("{m}m")
}

fn mib(b: u64) -> String {
    format!("{}Mi", b >> 20)
}

/// Schedules `app` and explains the result for every site.
pub fn explain(
    sched: &Scheduler,
    snap: &Snapshot,
    app: &App,
    policy: &PlacementPolicy,
) -> Explanation {
    let (decision, rejections) = sched.schedule(snap, app, policy);
    let evaluated = sched.evaluate(snap, app, policy);
    let budget = f64::from(app.qos.latency_budget_ms);
    let mut sites: Vec<SiteExplanation> = snap
        .indices()
        .map(|idx| {
            let row = &snap.sites[idx.get()];
            let site = snap.site(idx);
            let replicas = decision
                .targets
                .iter()
                .find(|t| t.site == site.id)
                .map_or(0, |t| t.replicas);
            // Every filter's reasons, with what placement added (not needed, spread, ...).
            let reasons: Vec<Reason> = rejections
                .iter()
                .find(|r| r.site == idx)
                .map(|r| r.reasons.union(evaluated[idx.get()].0).iter().collect())
                .unwrap_or_default();
            let rtt: Vec<AreaRtt> = app
                .qos
                .demand_areas
                .iter()
                .map(|a| {
                    let measured = snap.measured.get(&a.name).and_then(|m| m.get(&idx));
                    let rtt_ms = measured
                        .copied()
                        .unwrap_or_else(|| row.predicted_rtt_ms(a.farthest_m(&site.location)));
                    AreaRtt {
                        area: a.name.clone(),
                        rtt_ms: (rtt_ms * 100.0).round() / 100.0,
                        measured: measured.is_some(),
                        within_budget: rtt_ms <= budget,
                    }
                })
                .collect();
            let details = reasons
                .iter()
                .map(|r| detail(*r, snap, idx, app, policy, &rtt, budget))
                .collect();
            SiteExplanation {
                site: site.id.clone(),
                operator: site.operator.to_string(),
                zone: site.zone.to_string(),
                replicas,
                current: snap.current_replicas(&app.id, idx),
                score: evaluated[idx.get()].1,
                rtt,
                reasons,
                details,
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        let rank = |s: &SiteExplanation| {
            if s.replicas > 0 {
                0
            } else if s.score.is_some() {
                1
            } else {
                2
            }
        };
        rank(a)
            .cmp(&rank(b))
            .then(b.replicas.cmp(&a.replicas))
            .then_with(|| {
                let score = |s: &SiteExplanation| s.score.map_or(0.0, |x| x.total);
                score(b).total_cmp(&score(a))
            })
            .then_with(|| a.site.cmp(&b.site))
    });
    Explanation {
        app: app.id.clone(),
        latency_budget_ms: app.qos.latency_budget_ms,
        decision,
        sites,
    }
}

/// One reason with its numbers.
fn detail(
    r: Reason,
    snap: &Snapshot,
    idx: SiteIdx,
    app: &App,
    policy: &PlacementPolicy,
    rtt: &[AreaRtt],
    budget: f64,
) -> String {
    let row = &snap.sites[idx.get()];
    let site = snap.site(idx);
    let own = snap
        .apps
        .get(&app.id)
        .map(|rec| rec.reserved(idx))
        .unwrap_or_default();
    let free = site
        .capacity
        .saturating_sub(&row.allocated.saturating_sub(&own));
    let need = &app.resources;
    match r {
        Reason::NotReady => match row.health {
            SiteHealth::NotReady { since } => {
                let down = snap.now.saturating_sub(since);
                match policy.failover {
                    Failover::Never => format!("NotReady for {down} s (failover never)"),
                    Failover::Immediately => {
                        format!("NotReady for {down} s; failover immediately")
                    }
                    Failover::AfterNotReady { seconds } => {
                        format!("NotReady for {down} s; failover after {seconds} s")
                    }
                }
            }
            SiteHealth::Ready => "ready, yet rejected as not ready".into(),
        },
        Reason::Tainted => {
            let taints: Vec<String> = site
                .taints
                .iter()
                .filter(|t| !policy.tolerations.iter().any(|tol| tol.tolerates(t)))
                .map(|t| {
                    let effect = match t.effect {
                        TaintEffect::NoSchedule => "NoSchedule",
                        TaintEffect::NoExecute => "NoExecute",
                    };
                    match &t.value {
                        Some(v) => format!("{}={v}:{effect}", t.key),
                        None => format!("{}:{effect}", t.key),
                    }
                })
                .collect();
            format!("taints not tolerated: {}", taints.join(", "))
        }
        Reason::OutsideAffinity => {
            let names: Vec<&str> = policy
                .affinity
                .iter()
                .map(|g| {
                    if g.name.is_empty() {
                        "unnamed"
                    } else {
                        &g.name
                    }
                })
                .collect();
            format!("matches none of the affinity groups [{}]", names.join(", "))
        }
        Reason::OperatorNotAllowed => {
            format!("operator {} takes no placements from here", site.operator)
        }
        Reason::InsufficientCpu => format!(
            "cpu: an instance needs {}, {} free",
            millicores(need.cpu_millicores),
            millicores(free.cpu_millicores)
        ),
        Reason::InsufficientMemory => format!(
            "memory: an instance needs {}, {} free",
            mib(need.memory_bytes),
            mib(free.memory_bytes)
        ),
        Reason::InsufficientGpus => {
            format!("gpus: an instance needs {}, {} free", need.gpus, free.gpus)
        }
        Reason::InsufficientSessionSlots => format!(
            "session slots: an instance needs {}, {} free",
            need.session_slots, free.session_slots
        ),
        Reason::OutOfLatencyBudget => {
            let best = rtt.iter().min_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms));
            match best {
                Some(a) => format!(
                    "nearest demand area {:?} at {:.1} ms{}, budget {budget} ms",
                    a.area,
                    a.rtt_ms,
                    if a.measured { " (measured)" } else { "" }
                ),
                None => format!("no demand area within {budget} ms"),
            }
        }
        Reason::AppAntiAffinity | Reason::AppAffinityMissing => {
            let names: Vec<String> = policy
                .app_affinity
                .iter()
                .map(|a| a.app.to_string())
                .collect();
            format!("{r} ({})", names.join(", "))
        }
        Reason::CannotHoldDuplicate => {
            format!("{r}: room for fewer than the wanted instances")
        }
        _ => r.to_string(),
    }
}
