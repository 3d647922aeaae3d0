//! Who is calling: OAuth 2.0 client credentials (`POST /oauth2/token`), EdDSA-signed JWT
//! access tokens, the principals they carry and the scopes each API family requires.
//!
//! Three kinds of client hold credentials:
//! - the **operator** (`operator` or `operator.<name>`): every operator endpoint, every tenant;
//! - a **developer** (tenant, `dev.<developerId>`), created by the operator: its own apps,
//!   instances, deployments and subscriptions, through the CAMARA, ETSI MEC and mecfed APIs;
//! - an **app instance** (`inst.<instanceId>`), whose secret is derived from the instance id
//!   with a platform key (HMAC-SHA-256), so that the platform hands it to the instance at
//!   start without storing one secret per instance: the ETSI MEC calls of running instances.
//!
//! Tokens are verified without a store read: the signature, the expiry and the claims decide.
//! A deleted developer's tokens therefore keep working until they expire ([`TOKEN_TTL`]).

mod clients;
mod keys;
mod ratelimit;
mod token;

use std::time::Duration;

use mecfed_core::{AppId, DeveloperId, InstanceId};
use serde::{Deserialize, Serialize};

pub use clients::{
    CreateDeveloper, Developer, DeveloperCreated, DeveloperView, OperatorClient,
    ensure_operator_secret,
};
pub(crate) use clients::{
    create_developer, delete_developer, get_developer, list_developers, rotate_secret,
    validate_app_provider,
};
pub use keys::{Auth, AuthError, SigningKeyDoc};
pub use ratelimit::{RateLimit, RateLimiter};
pub(crate) use token::{issue_token, jwks, openid_configuration};

/// Lifetime of an access token.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Scopes, one per API family and operation class. CAMARA scopes are the ones its OpenAPI
/// files name; ETSI MEC defines none, so mecfed names one per API.
pub mod scopes {
    /// Every operator endpoint.
    pub const ADMIN: &str = "mecfed:admin";
    /// The mecfed app extension (`/mecfed/v1/apps/{appId}/...`) for one's own apps.
    pub const APPS: &str = "mecfed:apps";
    /// CAMARA Edge Application Management.
    pub const EAM_APPS_WRITE: &str = "edge-application-management:apps:write";
    /// CAMARA Edge Application Management.
    pub const EAM_APPS_READ: &str = "edge-application-management:apps:read";
    /// CAMARA Edge Application Management.
    pub const EAM_APPS_DELETE: &str = "edge-application-management:apps:delete";
    /// CAMARA Edge Application Management.
    pub const EAM_INSTANCES_WRITE: &str = "edge-application-management:instances:write";
    /// CAMARA Edge Application Management.
    pub const EAM_INSTANCES_READ: &str = "edge-application-management:instances:read";
    /// CAMARA Edge Application Management.
    pub const EAM_INSTANCES_DELETE: &str = "edge-application-management:instances:delete";
    /// CAMARA Edge Application Management.
    pub const EAM_DEPLOYMENTS_WRITE: &str = "edge-application-management:deployments:write";
    /// CAMARA Edge Application Management.
    pub const EAM_DEPLOYMENTS_READ: &str = "edge-application-management:deployments:read";
    /// CAMARA Edge Application Management.
    pub const EAM_DEPLOYMENTS_DELETE: &str = "edge-application-management:deployments:delete";
    /// CAMARA Edge Application Management.
    pub const EAM_DEPLOYMENTS_UPDATE: &str = "edge-application-management:deployments:update";
    /// CAMARA Edge Application Management.
    pub const EAM_CLUSTERS_READ: &str = "edge-application-management:clusters:read";
    /// CAMARA Edge Application Management.
    pub const EAM_ZONES_READ: &str = "edge-application-management:edge-cloud-zones:read";
    /// CAMARA Simple Edge Discovery.
    pub const SED_READ: &str = "simple-edge-discovery:read";
    /// ETSI MEC 011 service management.
    pub const MEC_SERVICE_MGMT: &str = "mec_service_mgmt";
    /// ETSI MEC 011 application support.
    pub const MEC_APP_SUPPORT: &str = "mec_app_support";
    /// ETSI MEC 013 location.
    pub const MEC_LOCATION: &str = "mec_location";
    /// ETSI MEC 012 radio network information.
    pub const MEC_RNI: &str = "mec_rni";
    /// ETSI MEC 021 application mobility.
    pub const MEC_AMS: &str = "mec_ams";

    /// What a developer may be granted.
    pub const DEVELOPER: &[&str] = &[
        APPS,
        EAM_APPS_WRITE,
        EAM_APPS_READ,
        EAM_APPS_DELETE,
        EAM_INSTANCES_WRITE,
        EAM_INSTANCES_READ,
        EAM_INSTANCES_DELETE,
        EAM_DEPLOYMENTS_WRITE,
        EAM_DEPLOYMENTS_READ,
        EAM_DEPLOYMENTS_DELETE,
        EAM_DEPLOYMENTS_UPDATE,
        EAM_CLUSTERS_READ,
        EAM_ZONES_READ,
        SED_READ,
        MEC_SERVICE_MGMT,
        MEC_APP_SUPPORT,
        MEC_LOCATION,
        MEC_RNI,
        MEC_AMS,
    ];

    /// What a running app instance may be granted.
    pub const INSTANCE: &[&str] = &[
        SED_READ,
        MEC_SERVICE_MGMT,
        MEC_APP_SUPPORT,
        MEC_LOCATION,
        MEC_RNI,
        MEC_AMS,
    ];
}

/// The kind of client a token was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The platform's operator.
    Operator,
    /// A developer (tenant).
    Developer,
    /// A running app instance, on behalf of its developer.
    Instance,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// OAuth client id.
    pub client_id: String,
    /// Kind of client.
    pub role: Role,
    /// The tenant, for developers and instances.
    pub developer: Option<DeveloperId>,
    /// The app, for instances.
    pub app: Option<AppId>,
    /// The instance, for instances.
    pub instance: Option<InstanceId>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Request rate allowed.
    pub rate: RateLimit,
}

impl Principal {
    /// The operator's admin principal.
    pub fn operator() -> Self {
        Self {
            client_id: "operator".into(),
            role: Role::Operator,
            developer: None,
            app: None,
            instance: None,
            scopes: vec![scopes::ADMIN.to_string()],
            rate: RateLimit::OPERATOR,
        }
    }

    /// A developer's principal with every developer scope.
    pub fn developer(id: DeveloperId) -> Self {
        Self {
            client_id: Developer::client_id_of(&id),
            role: Role::Developer,
            developer: Some(id),
            app: None,
            instance: None,
            scopes: scopes::DEVELOPER.iter().map(|s| (*s).to_string()).collect(),
            rate: RateLimit::DEVELOPER,
        }
    }

    /// Whether the token grants `scope` (the operator's admin scope grants every scope).
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == scopes::ADMIN)
    }

    /// `Forbidden` unless the token grants `scope`.
    pub fn require(&self, scope: &str) -> Result<(), crate::ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(crate::ApiError::Forbidden(format!(
                "the access token lacks the scope {scope:?}"
            )))
        }
    }

    /// Whether this is the operator.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether the caller may see and act on an app of `developer` with id `app`: the
    /// operator always, a developer for its own apps, an instance for its own app only.
    pub fn owns(&self, developer: &DeveloperId, app: &AppId) -> bool {
        match self.role {
            Role::Operator => true,
            Role::Developer => self.developer.as_ref() == Some(developer),
            Role::Instance => {
                self.developer.as_ref() == Some(developer) && self.app.as_ref() == Some(app)
            }
        }
    }

    /// Whether the caller may see data of tenant `developer` (not tied to one app).
    pub fn in_tenant(&self, developer: &DeveloperId) -> bool {
        self.is_operator() || self.developer.as_ref() == Some(developer)
    }
}
