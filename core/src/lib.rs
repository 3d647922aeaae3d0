//! Domain types of mecfed: typed ids, resources, geography, sites, apps, placement policies,
//! placements, instances, UEs and sessions.
//!
//! Architecture Invariant: this crate does no IO. It knows nothing of tokio, the store, HTTP,
//! gRPC, Kubernetes or etcd. Constructors validate their input and return a typed
//! [`ValidationError`]; a value of these types that exists is a valid one.
//!
//! Serde names are camelCase to match the ETSI MEC and CAMARA JSON contracts.

mod app;
mod error;
mod geo_point;
mod ids;
pub mod latency;
pub mod mec_rules;
mod policy;
mod resources;
mod site;
mod ue;

pub use app::{
    App, AppQos, Artefact, DemandArea, Instance, InstanceState, LoadProbe, MAX_DEMAND_AREAS,
    Placement, Port, Probe, Protocol,
};
pub use error::ValidationError;
pub use geo_point::{EARTH_RADIUS_M, GeoPoint, chord_to_m, chord2, m_to_chord};
pub use ids::{
    AppId, DeveloperId, InstanceId, MAX_ID_LEN, NodeId, OperatorId, SessionId, SiteId, UeId, ZoneId,
};
pub use policy::{
    AppAffinity, AppRelation, Autoscaling, Failback, Failover, PlacementPolicy, ReplicaScheduling,
    SiteSelector, SpreadBy, SpreadConstraint, StaticWeight, Toleration,
};
pub use resources::Resources;
pub use site::{
    AccessKind, LimitEnforcement, Plmn, Site, SiteKind, SiteStatus, Taint, TaintEffect,
};
pub use ue::{Attachment, Session, Ue, UeIdentity, validate_phone_number};
