//! Placement policies: where an app may run and how its instances are spread, modelled on
//! Karmada's `PropagationPolicy` (cluster affinities tried in order, spread constraints,
//! replica scheduling, tolerations, failover and failback) with what Karmada lacks: app
//! (anti-)affinity and the QoS of the app ([`crate::AppQos`]: latency budget, demand areas).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    AppId, OperatorId, Site, SiteId, Taint, TaintEffect, ValidationError, ZoneId, error::ensure,
};

/// A set of sites, by any of their attributes. Every non-empty list must match (an empty list
/// matches everything); `exclude` removes sites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSelector {
    /// Name for explanations.
    #[serde(default)]
    pub name: String,
    /// Operators.
    #[serde(default)]
    pub operators: Vec<OperatorId>,
    /// Regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Zones.
    #[serde(default)]
    pub zones: Vec<ZoneId>,
    /// Sites by id.
    #[serde(default)]
    pub sites: Vec<SiteId>,
    /// Labels the site must carry with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Sites never chosen.
    #[serde(default)]
    pub exclude: Vec<SiteId>,
}

impl SiteSelector {
    /// Whether `site` is in the set.
    pub fn matches(&self, site: &Site) -> bool {
        (self.operators.is_empty() || self.operators.contains(&site.operator))
            && (self.regions.is_empty() || self.regions.contains(&site.region))
            && (self.zones.is_empty() || self.zones.contains(&site.zone))
            && (self.sites.is_empty() || self.sites.contains(&site.id))
            && self
                .match_labels
                .iter()
                .all(|(k, v)| site.labels.get(k) == Some(v))
            && !self.exclude.contains(&site.id)
    }
}

/// What a spread constraint counts groups of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum SpreadBy {
    /// Operators.
    Operator,
    /// Regions.
    Region,
    /// Zones.
    Zone,
    /// Sites.
    Site,
    /// Values of a site label.
    Label {
        /// Label key.
        key: String,
    },
}

impl SpreadBy {
    /// The group `site` belongs to; `None` for a label the site does not carry.
    pub fn group_of(&self, site: &Site) -> Option<String> {
        Some(match self {
            Self::Operator => site.operator.to_string(),
            Self::Region => site.region.clone(),
            Self::Zone => site.zone.to_string(),
            Self::Site => site.id.to_string(),
            Self::Label { key } => site.labels.get(key)?.clone(),
        })
    }
}

/// Instances must cover at least `min_groups` and at most `max_groups` groups. (Flattened
/// `by`, so serde cannot refuse unknown fields here.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraint {
    /// What is counted.
    #[serde(flatten)]
    pub by: SpreadBy,
    /// Fewest groups.
    #[serde(default = "one")]
    pub min_groups: u32,
    /// Most groups; `None` means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_groups: Option<u32>,
}

fn one() -> u32 {
    1
}

/// A static weight for the sites a selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticWeight {
    /// Sites the weight applies to.
    pub sites: SiteSelector,
    /// Relative weight.
    pub weight: u32,
}

/// How the instances are divided among the chosen sites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum ReplicaScheduling {
    /// Every chosen site runs the full count.
    Duplicated,
    /// The count is divided among sites by their static weights.
    DividedStatic {
        /// Weights; sites matching none weigh 0.
        weights: Vec<StaticWeight>,
    },
    /// The count is divided in proportion to each site's available capacity.
    #[default]
    DividedDynamic,
    /// As few sites as hold the count.
    Aggregated,
}

/// A taint a policy tolerates: a missing `value` tolerates any value of `key`, a missing
/// `effect` any effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Taint effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration covers `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.key == taint.key
            && self
                .value
                .as_ref()
                .is_none_or(|v| taint.value.as_ref() == Some(v))
            && self.effect.is_none_or(|e| e == taint.effect)
    }
}

/// How an app relates to another app's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppRelation {
    /// Only on sites that run the other app.
    RequiredTogether,
    /// Rather on sites that run the other app.
    PreferredTogether,
    /// Never on a site that runs the other app.
    RequiredApart,
    /// Rather not on a site that runs the other app.
    PreferredApart,
}

/// An (anti-)affinity to another app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppAffinity {
    /// The other app.
    pub app: AppId,
    /// The relation.
    pub relation: AppRelation,
}

/// When the instances of a site that is not ready move elsewhere (default: after 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "when", deny_unknown_fields)]
pub enum Failover {
    /// They wait for the site.
    Never,
    /// As soon as the site is NotReady.
    Immediately,
    /// Once the site has been NotReady this long.
    #[serde(rename_all = "camelCase")]
    AfterNotReady {
        /// Seconds.
        #[serde(default = "default_failover_seconds")]
        seconds: u32,
    },
}

fn default_failover_seconds() -> u32 {
    30
}

impl Default for Failover {
    fn default() -> Self {
        Self::AfterNotReady {
            seconds: default_failover_seconds(),
        }
    }
}

/// Whether instances return to a site preferred by the policy once it recovers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failback {
    /// They stay where failover put them.
    Never,
    /// They return when the site is Ready again.
    #[default]
    WhenRecovered,
}

/// Instance counts that follow the sessions actually hosted, per demand area, in the manner
/// of the Kubernetes HorizontalPodAutoscaler: the recommendation is the instances needed to
/// hold the area's sessions at `targetUtilisationPercent` of the app's sessions per
/// instance; a scale-up takes effect only when every recommendation of the last
/// `scaleUpStabilisationSeconds` asked for it, a scale-down only when every recommendation
/// of the last `scaleDownStabilisationSeconds` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// Sessions per instance to aim at, as a share of the app's maximum, 1 to 100.
    #[serde(default = "default_target")]
    pub target_utilisation_percent: u32,
    /// How long a higher recommendation must persist.
    #[serde(default)]
    pub scale_up_stabilisation_seconds: u32,
    /// How long a lower recommendation must persist.
    #[serde(default = "default_down_window")]
    pub scale_down_stabilisation_seconds: u32,
    /// Fewest instances per demand area.
    #[serde(default = "one")]
    pub min_instances_per_area: u32,
    /// Most instances per demand area; `None` means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances_per_area: Option<u32>,
}

fn default_target() -> u32 {
    70
}

fn default_down_window() -> u32 {
    300
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            target_utilisation_percent: default_target(),
            scale_up_stabilisation_seconds: 0,
            scale_down_stabilisation_seconds: default_down_window(),
            min_instances_per_area: 1,
            max_instances_per_area: None,
        }
    }
}

/// Where an app may run and how its instances are spread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementPolicy {
    /// Site groups tried in order: the demand overflows to the next group only when the
    /// current one cannot hold it. Empty means one group of every site.
    #[serde(default)]
    pub affinity: Vec<SiteSelector>,
    /// Spread constraints; all must hold.
    #[serde(default)]
    pub spread: Vec<SpreadConstraint>,
    /// Division of instances among sites.
    #[serde(default)]
    pub replica_scheduling: ReplicaScheduling,
    /// Site taints tolerated.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Relations to other apps.
    #[serde(default)]
    pub app_affinity: Vec<AppAffinity>,
    /// Fewest instances overall.
    #[serde(default)]
    pub min_replicas: u32,
    /// Most instances overall; `None` means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Failover.
    #[serde(default)]
    pub failover: Failover,
    /// Failback.
    #[serde(default)]
    pub failback: Failback,
    /// How long an evicted instance keeps running once its replacement is ready, seconds.
    #[serde(default = "default_eviction_seconds")]
    pub graceful_eviction_seconds: u32,
    /// Higher priorities are scheduled first.
    #[serde(default)]
    pub priority: i32,
    /// Demand from observed sessions rather than the declared expectation; none: declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

fn default_eviction_seconds() -> u32 {
    60
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        Self {
            affinity: Vec::new(),
            spread: Vec::new(),
            replica_scheduling: ReplicaScheduling::default(),
            tolerations: Vec::new(),
            app_affinity: Vec::new(),
            min_replicas: 0,
            max_replicas: None,
            failover: Failover::default(),
            failback: Failback::default(),
            graceful_eviction_seconds: default_eviction_seconds(),
            priority: 0,
            autoscaling: None,
        }
    }
}

impl PlacementPolicy {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(max) = self.max_replicas {
            ensure(
                max >= self.min_replicas,
                "maxReplicas",
                "must not be below minReplicas",
            )?;
        }
        ensure(self.affinity.len() <= 16, "affinity", "at most 16 groups")?;
        for s in &self.spread {
            ensure(s.min_groups >= 1, "spread.minGroups", "must be at least 1")?;
            if let Some(max) = s.max_groups {
                ensure(
                    max >= s.min_groups,
                    "spread.maxGroups",
                    "must not be below minGroups",
                )?;
            }
            if let SpreadBy::Label { key } = &s.by {
                ensure(!key.is_empty(), "spread.key", "must not be empty")?;
            }
        }
        if let ReplicaScheduling::DividedStatic { weights } = &self.replica_scheduling {
            ensure(
                weights.iter().any(|w| w.weight > 0),
                "replicaScheduling.weights",
                "at least one weight must be positive",
            )?;
        }
        for t in &self.tolerations {
            ensure(!t.key.is_empty(), "tolerations.key", "must not be empty")?;
        }
        if let Some(a) = &self.autoscaling {
            ensure(
                (1..=100).contains(&a.target_utilisation_percent),
                "autoscaling.targetUtilisationPercent",
                "must be between 1 and 100",
            )?;
            ensure(
                a.scale_up_stabilisation_seconds <= 3_600
                    && a.scale_down_stabilisation_seconds <= 3_600,
                "autoscaling.stabilisation",
                "windows are at most 3600 seconds",
            )?;
            if let Some(max) = a.max_instances_per_area {
                ensure(
                    max >= a.min_instances_per_area,
                    "autoscaling.maxInstancesPerArea",
                    "must not be below minInstancesPerArea",
                )?;
            }
        }
        ensure(
            self.graceful_eviction_seconds <= 86_400,
            "gracefulEvictionSeconds",
            "at most one day",
        )?;
        Ok(())
    }

    /// Whether every taint of `site` that keeps instances off it is tolerated.
    pub fn tolerates(&self, site: &Site) -> bool {
        site.taints
            .iter()
            .all(|t| self.tolerations.iter().any(|tol| tol.tolerates(t)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{GeoPoint, Resources};

    fn site(id: &str, op: &str, zone: &str, labels: &[(&str, &str)]) -> Site {
        let mut s = Site::new(
            SiteId::new(id).unwrap(),
            OperatorId::new(op).unwrap(),
            "cork",
            ZoneId::new(zone).unwrap(),
            GeoPoint::new(51.9, -8.47).unwrap(),
            Resources::ZERO,
        )
        .unwrap();
        s.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s
    }

    #[test]
    fn a_full_policy_reads_from_json() {
        let p: PlacementPolicy = serde_json::from_value(json!({
            "affinity": [
                {"name": "own cells", "operators": ["op-a"], "matchLabels": {"tier": "cell"}},
                {"name": "partners", "operators": ["op-b", "op-c"], "exclude": ["b-9"]}
            ],
            "spread": [
                {"by": "zone", "minGroups": 2},
                {"by": "label", "key": "rack", "minGroups": 1, "maxGroups": 3}
            ],
            "replicaScheduling": {"type": "dividedStatic", "weights": [
                {"sites": {"operators": ["op-a"]}, "weight": 3},
                {"sites": {"operators": ["op-b"]}, "weight": 1}
            ]},
            "tolerations": [{"key": "gpu-only", "effect": "NoSchedule"}],
            "appAffinity": [{"app": "matchmaker", "relation": "preferredTogether"}],
            "minReplicas": 2, "maxReplicas": 20,
            "failover": {"when": "afterNotReady", "seconds": 10},
            "failback": "whenRecovered",
            "gracefulEvictionSeconds": 30,
            "priority": 5
        }))
        .unwrap();
        p.validate().unwrap();
        assert_eq!(p.affinity.len(), 2);
        assert_eq!(p.spread[1].by, SpreadBy::Label { key: "rack".into() });
        assert_eq!(p.failover, Failover::AfterNotReady { seconds: 10 });
        let back: PlacementPolicy =
            serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn defaults_divide_dynamically_and_fail_over_after_30_s() {
        let p: PlacementPolicy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, PlacementPolicy::default());
        assert_eq!(p.replica_scheduling, ReplicaScheduling::DividedDynamic);
        assert_eq!(p.failover, Failover::AfterNotReady { seconds: 30 });
        assert_eq!(p.failback, Failback::WhenRecovered);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let bad = |v: serde_json::Value| {
            serde_json::from_value::<PlacementPolicy>(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad(json!({"minReplicas": 3, "maxReplicas": 2})),
            "maxReplicas"
        );
        assert_eq!(
            bad(json!({"spread": [{"by": "zone", "minGroups": 3, "maxGroups": 2}]})),
            "spread.maxGroups"
        );
        assert_eq!(
            bad(json!({"replicaScheduling": {"type": "dividedStatic", "weights": []}})),
            "replicaScheduling.weights"
        );
        assert!(serde_json::from_value::<PlacementPolicy>(json!({"affinty": []})).is_err());
    }

    #[test]
    fn selectors_and_tolerations_match_as_documented() {
        let a = site("a-1", "op-a", "z1", &[("tier", "cell")]);
        let b = site("b-9", "op-b", "z2", &[]);
        let own: SiteSelector =
            serde_json::from_value(json!({"operators": ["op-a"], "matchLabels": {"tier": "cell"}}))
                .unwrap();
        assert!(own.matches(&a) && !own.matches(&b));
        let partners: SiteSelector =
            serde_json::from_value(json!({"operators": ["op-b"], "exclude": ["b-9"]})).unwrap();
        assert!(!partners.matches(&b));
        assert!(SiteSelector::default().matches(&a));

        let mut tainted = a.clone();
        tainted.taints = vec![Taint {
            key: "gpu-only".into(),
            value: Some("yes".into()),
            effect: TaintEffect::NoSchedule,
        }];
        let mut p = PlacementPolicy::default();
        assert!(!p.tolerates(&tainted));
        p.tolerations = vec![Toleration {
            key: "gpu-only".into(),
            value: None,
            effect: Some(TaintEffect::NoExecute),
        }];
        assert!(!p.tolerates(&tainted), "wrong effect");
        p.tolerations[0].effect = None;
        assert!(p.tolerates(&tainted));
        assert_eq!(
            SpreadBy::Label { key: "tier".into() }
                .group_of(&a)
                .as_deref(),
            Some("cell")
        );
        assert_eq!(SpreadBy::Label { key: "tier".into() }.group_of(&b), None);
    }
}
