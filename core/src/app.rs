use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    AppId, DeveloperId, GeoPoint, InstanceId, Resources, SiteId, ValidationError, ZoneId,
    error::ensure,
};

/// What to run for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Artefact {
    /// A local process (edge-node agent).
    #[serde(rename_all = "camelCase")]
    Process {
        /// Executable path or name.
        command: String,
        /// Arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A container image (Kubernetes sites).
    #[serde(rename_all = "camelCase")]
    Container {
        /// Image reference, e.g. `registry/arena:1.2`.
        image: String,
    },
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A port the app listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port name (e.g. `game`, `control`).
    pub name: String,
    /// Container or process port; 0 asks the agent to allocate one.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// How an agent checks that an instance is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum Probe {
    /// A TCP connect to the named port succeeds.
    Tcp {
        /// Port name.
        port: String,
    },
    /// An HTTP GET of `path` on the named port answers 2xx.
    Http {
        /// Port name.
        port: String,
        /// Path, starting with `/`.
        path: String,
    },
    /// A UDP datagram to the named port is answered.
    UdpEcho {
        /// Port name.
        port: String,
    },
    /// The instance itself confirms it is ready, with ETSI MEC 011 `confirm_ready`
    /// (`POST /mec_app_support/v1/applications/{appInstanceId}/confirm_ready`): its agent
    /// reports it running, the platform counts it Ready once confirmed (again after each
    /// restart).
    MecConfirmReady,
}

impl Probe {
    /// The port the probe uses; none for [`Probe::MecConfirmReady`].
    pub fn port(&self) -> Option<&str> {
        match self {
            Self::Tcp { port } | Self::Http { port, .. } | Self::UdpEcho { port } => Some(port),
            Self::MecConfirmReady => None,
        }
    }
}

/// Most demand areas one app may have.
pub const MAX_DEMAND_AREAS: usize = 64;

/// How an agent reads an instance's session load: an HTTP GET of `path` on the named port,
/// answered with JSON that is either an array (one element per session, as `arena`'s
/// `GET /sessions`) or an object with a numeric `sessions` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadProbe {
    /// Port name.
    pub port: String,
    /// Path, starting with `/`.
    pub path: String,
}

impl LoadProbe {
    /// The session count in a load probe's answer, if it has one.
    pub fn sessions_in(body: &[u8]) -> Option<u32> {
        match serde_json::from_slice::<serde_json::Value>(body).ok()? {
            serde_json::Value::Array(a) => u32::try_from(a.len()).ok(),
            serde_json::Value::Object(o) => u32::try_from(o.get("sessions")?.as_u64()?).ok(),
            _ => None,
        }
    }
}

/// Where users of an app are expected, and how many at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemandArea {
    /// Name for explanations.
    pub name: String,
    /// Centre of a circular area (with `radiusM`); for a polygon, leave both out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<GeoPoint>,
    /// Radius of a circular area in metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius_m: Option<f64>,
    /// Corners of a polygonal area, in order (at least 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polygon: Vec<GeoPoint>,
    /// Expected concurrent sessions.
    pub expected_sessions: u32,
}

impl DemandArea {
    /// A circle of `radius_m` metres around `center`.
    pub fn circle(
        name: impl Into<String>,
        center: GeoPoint,
        radius_m: f64,
        expected_sessions: u32,
    ) -> Self {
        Self {
            name: name.into(),
            center: Some(center),
            radius_m: Some(radius_m),
            polygon: Vec::new(),
            expected_sessions,
        }
    }

    /// The area's representative point: a circle's centre, or the mean of a polygon's
    /// corners.
    pub fn centroid(&self) -> GeoPoint {
        if let Some(c) = self.center {
            return c;
        }
        let n = self.polygon.len().max(1) as f64;
        let (lat, lon) = self.polygon.iter().fold((0.0, 0.0), |(a, o), p| {
            (a + p.latitude() / n, o + p.longitude() / n)
        });
        GeoPoint::new(lat, lon).expect("a mean of valid points is valid")
    }

    /// The greatest distance from `to` to any point of the area, in metres: for a circle the
    /// centre's distance plus the radius, for a polygon its farthest corner (a distance is
    /// greatest at a corner).
    pub fn farthest_m(&self, to: &GeoPoint) -> f64 {
        match (self.center, self.radius_m) {
            (Some(c), Some(r)) => c.distance_m(to) + r,
            _ => self
                .polygon
                .iter()
                .map(|p| p.distance_m(to))
                .fold(0.0, f64::max),
        }
    }
}

/// Quality-of-service needs of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppQos {
    /// Round-trip latency budget, UE to instance, in milliseconds.
    pub latency_budget_ms: u32,
    /// Optional 5G QoS identifier (3GPP TS 23.501 table 5.7.4-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub five_qi: Option<u8>,
    /// Most sessions one instance holds.
    pub max_sessions_per_instance: u32,
    /// Where demand comes from.
    #[serde(default)]
    pub demand_areas: Vec<DemandArea>,
}

/// An app onboarded by a developer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// App id.
    pub id: AppId,
    /// Owning developer (tenant).
    pub developer: DeveloperId,
    /// Human name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// What to run.
    pub artefact: Artefact,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Resources per instance.
    pub resources: Resources,
    /// Readiness check; without one, a started instance counts as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// How to read an instance's session load (for autoscaling); none: not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadProbe>,
    /// QoS.
    pub qos: AppQos,
    /// Whether sessions carry state that must move on relocation.
    #[serde(default)]
    pub stateful: bool,
    /// The edge cloud zones the app is deployed to (CAMARA deployments and instances): the
    /// scheduler places it only there, and not at all while the list is empty. Left out, the
    /// scheduler places it wherever its QoS and policy allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<ZoneId>>,
    /// Zones where the app is pinned to given sites (CAMARA `kubernetesClusterRef`): in such
    /// a zone the scheduler places it on those sites only. Zones not named are unaffected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<ZoneId, Vec<SiteId>>,
}

impl App {
    /// Checks the invariants serde cannot.
    pub fn validate(&self) -> Result<(), ValidationError> {
        ensure(
            !self.name.trim().is_empty() && self.name.len() <= 128,
            "name",
            "must have 1 to 128 characters",
        )?;
        ensure(
            !self.version.trim().is_empty() && self.version.len() <= 64,
            "version",
            "must have 1 to 64 characters",
        )?;
        match &self.artefact {
            Artefact::Process { command, .. } => ensure(
                !command.trim().is_empty(),
                "artefact.command",
                "must not be empty",
            )?,
            Artefact::Container { image } => ensure(
                !image.trim().is_empty(),
                "artefact.image",
                "must not be empty",
            )?,
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.ports {
            ensure(!p.name.is_empty(), "ports.name", "must not be empty")?;
            ensure(
                names.insert(&p.name),
                "ports.name",
                "port names must be unique",
            )?;
        }
        if let Some(p) = &self.readiness
            && let Some(named) = p.port()
        {
            ensure(
                self.ports.iter().any(|port| port.name == named),
                "readiness.port",
                "must name one of the app's ports",
            )?;
            if let Probe::Http { path, .. } = p {
                ensure(
                    path.starts_with('/'),
                    "readiness.path",
                    "must start with '/'",
                )?;
            }
        }
        if let Some(l) = &self.load {
            ensure(
                self.ports.iter().any(|port| port.name == l.port),
                "load.port",
                "must name one of the app's ports",
            )?;
            ensure(l.path.starts_with('/'), "load.path", "must start with '/'")?;
        }
        let q = &self.qos;
        ensure(
            (1..=10_000).contains(&q.latency_budget_ms),
            "qos.latencyBudgetMs",
            "must be between 1 and 10000",
        )?;
        if let Some(f) = q.five_qi {
            ensure(
                (1..=255).contains(&f),
                "qos.fiveQi",
                "must be between 1 and 255",
            )?;
        }
        ensure(
            q.max_sessions_per_instance >= 1,
            "qos.maxSessionsPerInstance",
            "must be at least 1",
        )?;
        ensure(
            q.demand_areas.len() <= MAX_DEMAND_AREAS,
            "qos.demandAreas",
            "at most 64 demand areas",
        )?;
        let mut area_names = std::collections::BTreeSet::new();
        for a in &q.demand_areas {
            ensure(
                area_names.insert(a.name.as_str()),
                "qos.demandAreas.name",
                "demand area names must be unique",
            )?;
            match (a.center, a.radius_m, a.polygon.len()) {
                (Some(_), Some(r), 0) => ensure(
                    r.is_finite() && r > 0.0 && r <= 1_000_000.0,
                    "qos.demandAreas.radiusM",
                    "must be between 0 (exclusive) and 1000000 metres",
                )?,
                (None, None, n) => ensure(
                    (3..=1_000).contains(&n),
                    "qos.demandAreas.polygon",
                    "needs 3 to 1000 corners (or give center and radiusM instead)",
                )?,
                _ => {
                    return Err(ValidationError::new(
                        "qos.demandAreas",
                        "give either center and radiusM, or polygon",
                    ));
                }
            }
            ensure(
                !a.name.is_empty(),
                "qos.demandAreas.name",
                "must not be empty",
            )?;
        }
        Ok(())
    }
}

/// The scheduler's decision for one app on one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// App placed.
    pub app: AppId,
    /// Site chosen.
    pub site: SiteId,
    /// Instances on that site.
    pub replicas: u32,
    /// Set while these instances are being replaced elsewhere (graceful eviction): they keep
    /// running until the replacements are ready or until this time (seconds since the Unix
    /// epoch), whichever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicting_until: Option<u64>,
}

/// Lifecycle of an instance as its site reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Placed, not started yet.
    #[default]
    Pending,
    /// Process or pod started, not ready.
    Starting,
    /// Passing readiness.
    Ready,
    /// Exited or failing; being restarted.
    Failed,
    /// Stopping or stopped.
    Terminating,
}

/// A running (or about to run) instance of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// Instance id.
    pub id: InstanceId,
    /// App.
    pub app: AppId,
    /// Site.
    pub site: SiteId,
    /// State.
    #[serde(default)]
    pub state: InstanceState,
    /// `host:port` UEs reach it on, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Process id on its node, while running (edge nodes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Sessions it hosts, where the app has a load probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App {
            id: AppId::new("arena").unwrap(),
            developer: DeveloperId::new("studio-1").unwrap(),
            name: "Arena".into(),
            version: "1.0".into(),
            artefact: Artefact::Process {
                command: "arena".into(),
                args: vec!["--tick".into(), "60".into()],
                env: BTreeMap::new(),
            },
            ports: vec![Port {
                name: "game".into(),
                port: 0,
                protocol: Protocol::Udp,
            }],
            resources: Resources::parse("cpu=500m,memory=256Mi,sessions=50").unwrap(),
            readiness: Some(Probe::UdpEcho {
                port: "game".into(),
            }),
            qos: AppQos {
                latency_budget_ms: 20,
                five_qi: Some(80),
                max_sessions_per_instance: 50,
                demand_areas: vec![DemandArea::circle(
                    "cbd",
                    GeoPoint::new(-37.81, 144.96).unwrap(),
                    1500.0,
                    400,
                )],
            },
            load: None,
            stateful: true,
            zones: None,
            pins: BTreeMap::new(),
        }
    }

    #[test]
    fn valid_app_round_trips_in_camel_case() {
        let a = app();
        a.validate().unwrap();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["qos"]["latencyBudgetMs"], 20);
        assert_eq!(json["artefact"]["kind"], "process");
        assert_eq!(json["ports"][0]["protocol"], "UDP");
        assert_eq!(serde_json::from_value::<App>(json).unwrap(), a);
    }

    #[test]
    fn validation_names_the_field() {
        let mut a = app();
        a.qos.latency_budget_ms = 0;
        assert_eq!(a.validate().unwrap_err().field, "qos.latencyBudgetMs");
        let mut a = app();
        a.qos.demand_areas[0].radius_m = Some(-1.0);
        assert_eq!(a.validate().unwrap_err().field, "qos.demandAreas.radiusM");
        let mut a = app();
        a.qos.demand_areas[0].polygon = vec![GeoPoint::new(-37.8, 144.9).unwrap(); 3];
        assert_eq!(a.validate().unwrap_err().field, "qos.demandAreas");
        let mut a = app();
        a.qos.demand_areas[0].center = None;
        a.qos.demand_areas[0].radius_m = None;
        assert_eq!(a.validate().unwrap_err().field, "qos.demandAreas.polygon");
        let mut a = app();
        a.ports.push(a.ports[0].clone());
        assert_eq!(a.validate().unwrap_err().field, "ports.name");
        let mut a = app();
        a.readiness = Some(Probe::Tcp {
            port: "nope".into(),
        });
        assert_eq!(a.validate().unwrap_err().field, "readiness.port");
        let mut a = app();
        a.artefact = Artefact::Container { image: "".into() };
        assert_eq!(a.validate().unwrap_err().field, "artefact.image");
    }

    #[test]
    fn load_answers_are_arrays_or_counts() {
        assert_eq!(LoadProbe::sessions_in(br#"[{"id":1},{"id":2}]"#), Some(2));
        assert_eq!(LoadProbe::sessions_in(br#"{"sessions": 7}"#), Some(7));
        assert_eq!(LoadProbe::sessions_in(br#"{"sessions": -1}"#), None);
        assert_eq!(LoadProbe::sessions_in(b"nope"), None);
        let mut a = app();
        a.load = Some(LoadProbe {
            port: "game".into(),
            path: "sessions".into(),
        });
        assert_eq!(a.validate().unwrap_err().field, "load.path");
    }

    #[test]
    fn polygon_areas_have_a_centroid_and_a_farthest_corner() {
        let area: DemandArea = serde_json::from_value(serde_json::json!({
            "name": "campus",
            "polygon": [
                {"latitude": 51.0, "longitude": -8.0},
                {"latitude": 51.0, "longitude": -7.98},
                {"latitude": 51.02, "longitude": -7.98},
                {"latitude": 51.02, "longitude": -8.0}
            ],
            "expectedSessions": 50
        }))
        .unwrap();
        let c = area.centroid();
        assert!((c.latitude() - 51.01).abs() < 1e-9 && (c.longitude() + 7.99).abs() < 1e-9);
        let west = GeoPoint::new(51.01, -8.5).unwrap();
        let far = area.farthest_m(&west);
        let corner = GeoPoint::new(51.0, -7.98).unwrap().distance_m(&west);
        assert!((far - corner).abs() < 1e-6 && far > c.distance_m(&west));
        let circle = DemandArea::circle("c", c, 1_000.0, 1);
        assert!((circle.farthest_m(&west) - (c.distance_m(&west) + 1_000.0)).abs() < 1e-6);
    }
}
