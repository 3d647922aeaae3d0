//! CAMARA Edge Application Management 0.1.0-alpha.1: apps (submit, list, get, delete), edge
//! cloud zones and clusters.
//!
//! A submitted `AppManifest` becomes a mecfed [`App`] owned by the caller's developer account,
//! with a random UUID as its id and no deployed zone yet (so the scheduler places nothing
//! until a deployment or instance asks for zones). The manifest itself is kept beside it
//! (`camaraapps/<appId>`) and answered back as submitted, less the repository credentials.
//!
//! mecfed sites run processes (edge nodes) and containers (Kubernetes): `packageType` must be
//! `CONTAINER`; an `appRepo.imagePath` of the `file` scheme (`file:///opt/arena/bin/arena`)
//! names an executable run as a process, any other is a container image. A process's ports are
//! allocated by its site's agent; a container's are the ones declared.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Extension, Json,
    extract::{FromRequest, Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
};
use mecfed_core::{
    App, AppId, AppQos, Artefact, Instance, Port, Protocol, Resources, Site, SiteKind, SiteStatus,
    ValidationError, ZoneId,
};
use mecfed_scheduler::AppPolicy;
use mecfed_store::{
    Compare, Store, Txn, TxnOp,
    typed::{self, Resource, Typed},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CamaraError, ids};
use crate::{
    ApiError, ApiState,
    auth::{Developer, Principal, scopes, validate_app_provider},
};

// === the manifest ===

/// `AppManifest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppManifest {
    /// Assigned by the platform; refused in a submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `^[A-Za-z][A-Za-z0-9_]{1,63}$`.
    pub name: String,
    /// The developer's `AppProvider` name.
    pub app_provider: String,
    /// Version, at most 64 characters.
    pub version: String,
    /// `QCOW2`, `OVA`, `CONTAINER`, `HELM` or `CSAR`.
    pub package_type: String,
    /// Operating system of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system: Option<OperatingSystem>,
    /// Where the image is.
    pub app_repo: AppRepo,
    /// What one instance needs.
    pub required_resources: RequiredResources,
    /// Components and their network interfaces.
    pub component_spec: Vec<ComponentSpec>,
}

/// `OperatingSystem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatingSystem {
    /// `x86_64` or `x86`.
    pub architecture: String,
    /// `RHEL`, `UBUNTU`, `COREOS`, `WINDOWS` or `OTHER`.
    pub family: String,
    /// e.g. `OS_VERSION_UBUNTU_2204_LTS`.
    pub version: String,
    /// e.g. `OS_LICENSE_TYPE_FREE`.
    pub license: String,
}

/// `AppManifest.appRepo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRepo {
    /// `PRIVATEREPO` or `PUBLICREPO`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Image URI.
    pub image_path: String,
    /// Repository user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Repository password or token (never answered back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// `DOCKER`, `HTTP_BASIC`, `HTTP_BEARER` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
    /// Image checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// `GpuInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuInfo {
    /// MB of GPU memory.
    pub gpu_memory: u32,
    /// GPUs.
    #[serde(rename = "numGPU")]
    pub num_gpu: u32,
}

/// `RequiredResources`: one of four infrastructure kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "infraKind")]
pub enum RequiredResources {
    /// `KubernetesResources`.
    #[serde(rename = "kubernetes", rename_all = "camelCase")]
    Kubernetes {
        /// CPU and GPU pools.
        application_resources: KubernetesPools,
        /// Whether the cluster is the app's alone.
        is_standalone: bool,
        /// Minimum Kubernetes version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// PVC size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        additional_storage: Option<String>,
        /// CNI needs (kept as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        networking: Option<serde_json::Value>,
        /// Add-ons (kept as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addons: Option<Vec<String>>,
    },
    /// `VmResources`.
    #[serde(rename = "virtualMachine", rename_all = "camelCase")]
    VirtualMachine {
        /// Whole vCPUs.
        #[serde(rename = "numCPU")]
        num_cpu: u32,
        /// MB.
        memory: u32,
        /// Extra volumes (kept as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        additional_storages: Option<serde_json::Value>,
        /// GPUs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu: Option<GpuInfo>,
    },
    /// `ContainerResources`.
    #[serde(rename = "container", rename_all = "camelCase")]
    Container {
        /// `Vcpu`: `1`, `0.500` or `500m`.
        #[serde(rename = "numCPU")]
        num_cpu: String,
        /// MB.
        memory: u32,
        /// Extra volumes (kept as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<serde_json::Value>,
        /// GPUs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu: Option<GpuInfo>,
    },
    /// `DockerComposeResources`.
    #[serde(rename = "dockerCompose", rename_all = "camelCase")]
    DockerCompose {
        /// Whole vCPUs.
        #[serde(rename = "numCPU")]
        num_cpu: u32,
        /// MB.
        memory: u32,
        /// Extra volumes (kept as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<serde_json::Value>,
        /// GPUs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu: Option<GpuInfo>,
    },
}

/// `KubernetesResources.applicationResources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesPools {
    /// The CPU pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pool: Option<CpuPool>,
    /// The GPU pool (kept as given; not supported for placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_pool: Option<serde_json::Value>,
}

/// `cpuPool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuPool {
    /// Whole vCPUs.
    #[serde(rename = "numCPU")]
    pub num_cpu: u32,
    /// MB.
    pub memory: u32,
    /// Node topology (kept as given).
    pub topology: serde_json::Value,
}

/// One entry of `componentSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSpec {
    /// Unique within the app.
    pub component_name: String,
    /// Its interfaces.
    pub network_interfaces: Vec<NetworkInterface>,
}

/// One entry of `networkInterfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkInterface {
    /// `InterfaceId`: `^[A-Za-z0-9][A-Za-z0-9_]{2,30}[A-Za-z0-9]$`.
    pub interface_id: String,
    /// `TCP`, `UDP` or `ANY`.
    pub protocol: String,
    /// 1 to 65535.
    pub port: u32,
    /// `VISIBILITY_EXTERNAL` or `VISIBILITY_INTERNAL`.
    pub visibility_type: String,
}

/// A submitted manifest as stored beside its app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CamaraApp {
    /// The app.
    pub app: AppId,
    /// The manifest as submitted (`appId` filled in).
    pub manifest: AppManifest,
}

impl Resource for CamaraApp {
    const KIND: &'static str = "camaraapps";
    fn id(&self) -> String {
        self.app.to_string()
    }
}

// === validation and translation ===

pub(super) fn ensure(cond: bool, field: &str, reason: &str) -> Result<(), ValidationError> {
    if cond {
        Ok(())
    } else {
        Err(ValidationError::new(field, reason))
    }
}

pub(super) fn one_of(value: &str, allowed: &[&str], field: &str) -> Result<(), ValidationError> {
    ensure(
        allowed.contains(&value),
        field,
        &format!("must be one of {}", allowed.join(", ")),
    )
}

/// `^[A-Za-z][A-Za-z0-9_]{1,63}$`.
pub(crate) fn valid_name(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `^[A-Za-z0-9][A-Za-z0-9_]{2,30}[A-Za-z0-9]$`.
fn valid_interface_id(s: &str) -> bool {
    let b = s.as_bytes();
    (4..=32).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Millicores of a `Vcpu` (`^\d+((\.\d{1,3})|(m))?$`).
fn vcpu_millis(s: &str) -> Option<u64> {
    if let Some(m) = s.strip_suffix('m') {
        return (!m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
            .then(|| m.parse().ok())
            .flatten();
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && !(1..=3).contains(&frac.len()))
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let w: u64 = whole.parse().ok()?;
    let f: u64 = format!("{frac:0<3}").parse().ok()?;
    w.checked_mul(1000)?.checked_add(f)
}

const MIB: u64 = 1 << 20;

/// Why a manifest cannot become an app: invalid (400) or valid but unsupported (501).
#[derive(Debug)]
pub(crate) enum Refusal {
    Invalid(ValidationError),
    Unsupported(String),
}

impl From<ValidationError> for Refusal {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

impl From<Refusal> for CamaraError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(e) => ApiError::from(e).into(),
            Refusal::Unsupported(m) => {
                CamaraError::coded(ApiError::NotImplemented(m), "NOT_IMPLEMENTED")
            }
        }
    }
}

impl AppManifest {
    /// Checks the manifest against the schema's constraints serde does not enforce.
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        ensure(
            valid_name(&self.name),
            "name",
            "must be 2 to 64 letters, digits or '_', starting with a letter",
        )?;
        validate_app_provider(&self.app_provider, "appProvider")?;
        ensure(
            !self.version.is_empty() && self.version.len() <= 64,
            "version",
            "must have 1 to 64 characters",
        )?;
        one_of(
            &self.package_type,
            &["QCOW2", "OVA", "CONTAINER", "HELM", "CSAR"],
            "packageType",
        )?;
        if let Some(os) = &self.operating_system {
            one_of(
                &os.architecture,
                &["x86_64", "x86"],
                "operatingSystem.architecture",
            )?;
            one_of(
                &os.family,
                &["RHEL", "UBUNTU", "COREOS", "WINDOWS", "OTHER"],
                "operatingSystem.family",
            )?;
            one_of(
                &os.version,
                &[
                    "OS_VERSION_UBUNTU_2204_LTS",
                    "OS_VERSION_RHEL_8",
                    "OS_MS_WINDOWS_2022",
                    "OTHER",
                ],
                "operatingSystem.version",
            )?;
            one_of(
                &os.license,
                &["OS_LICENSE_TYPE_FREE", "OS_LICENSE_TYPE_ON_DEMAND", "OTHER"],
                "operatingSystem.license",
            )?;
        }
        let r = &self.app_repo;
        one_of(&r.kind, &["PRIVATEREPO", "PUBLICREPO"], "appRepo.type")?;
        ensure(
            !r.image_path.trim().is_empty() && r.image_path.len() <= 2048,
            "appRepo.imagePath",
            "must have 1 to 2048 characters",
        )?;
        ensure(
            r.user_name.as_ref().is_none_or(|u| u.len() <= 64),
            "appRepo.userName",
            "at most 64 characters",
        )?;
        ensure(
            r.credentials.as_ref().is_none_or(|c| c.len() <= 2048),
            "appRepo.credentials",
            "at most 2048 characters",
        )?;
        if let Some(a) = &r.auth_type {
            one_of(
                a,
                &["DOCKER", "HTTP_BASIC", "HTTP_BEARER", "NONE"],
                "appRepo.authType",
            )?;
        }
        ensure(
            r.checksum.as_ref().is_none_or(|c| c.len() <= 128),
            "appRepo.checksum",
            "at most 128 characters",
        )?;
        ensure(
            self.component_spec.len() <= 100,
            "componentSpec",
            "at most 100 components",
        )?;
        let mut components = BTreeSet::new();
        let mut interfaces = BTreeSet::new();
        for c in &self.component_spec {
            ensure(
                !c.component_name.is_empty() && c.component_name.len() <= 64,
                "componentSpec.componentName",
                "must have 1 to 64 characters",
            )?;
            ensure(
                components.insert(&c.component_name),
                "componentSpec.componentName",
                "must be unique within the app",
            )?;
            ensure(
                (1..=100).contains(&c.network_interfaces.len()),
                "componentSpec.networkInterfaces",
                "needs 1 to 100 interfaces",
            )?;
            for n in &c.network_interfaces {
                ensure(
                    valid_interface_id(&n.interface_id),
                    "componentSpec.networkInterfaces.interfaceId",
                    "must be 4 to 32 letters, digits or '_', starting and ending with a letter or digit",
                )?;
                ensure(
                    interfaces.insert(&n.interface_id),
                    "componentSpec.networkInterfaces.interfaceId",
                    "must be unique within the app",
                )?;
                one_of(
                    &n.protocol,
                    &["TCP", "UDP", "ANY"],
                    "componentSpec.networkInterfaces.protocol",
                )?;
                ensure(
                    (1..=65_535).contains(&n.port),
                    "componentSpec.networkInterfaces.port",
                    "must be between 1 and 65535",
                )?;
                one_of(
                    &n.visibility_type,
                    &["VISIBILITY_EXTERNAL", "VISIBILITY_INTERNAL"],
                    "componentSpec.networkInterfaces.visibilityType",
                )?;
            }
        }
        self.resources().map(|_| ()).or_else(|e| match e {
            Refusal::Invalid(e) => Err(e),
            Refusal::Unsupported(_) => Ok(()),
        })
    }

    /// What one instance needs.
    fn resources(&self) -> Result<Resources, Refusal> {
        let gpus = |g: &Option<GpuInfo>, field: &str| -> Result<u32, ValidationError> {
            match g {
                None => Ok(0),
                Some(g) => {
                    ensure(g.num_gpu <= 16, &format!("{field}.numGPU"), "at most 16")?;
                    ensure(
                        g.gpu_memory <= 16_384,
                        &format!("{field}.gpuMemory"),
                        "at most 16384",
                    )?;
                    Ok(g.num_gpu)
                }
            }
        };
        let mem = |mb: u32, max: u32, field: &str| -> Result<u64, ValidationError> {
            ensure(
                (1..=max).contains(&mb),
                field,
                &format!("must be between 1 and {max} (MB)"),
            )?;
            Ok(u64::from(mb) * MIB)
        };
        let cpus = |n: u32, field: &str| -> Result<u64, ValidationError> {
            ensure((1..=256).contains(&n), field, "must be between 1 and 256")?;
            Ok(u64::from(n) * 1000)
        };
        Ok(match &self.required_resources {
            RequiredResources::Container {
                num_cpu,
                memory,
                gpu,
                ..
            } => {
                let millis = vcpu_millis(num_cpu)
                    .filter(|m| *m > 0 && num_cpu.len() <= 16)
                    .ok_or_else(|| {
                        ValidationError::new(
                            "requiredResources.numCPU",
                            "must be whole (1), decimal (0.500) or milli (500m) vCPUs, above 0",
                        )
                    })?;
                Resources {
                    cpu_millicores: millis,
                    memory_bytes: mem(*memory, 16_384, "requiredResources.memory")?,
                    gpus: gpus(gpu, "requiredResources.gpu")?,
                    session_slots: 0,
                }
            }
            RequiredResources::VirtualMachine {
                num_cpu,
                memory,
                gpu,
                ..
            } => Resources {
                cpu_millicores: cpus(*num_cpu, "requiredResources.numCPU")?,
                memory_bytes: mem(*memory, 32_768, "requiredResources.memory")?,
                gpus: gpus(gpu, "requiredResources.gpu")?,
                session_slots: 0,
            },
            RequiredResources::DockerCompose {
                num_cpu,
                memory,
                gpu,
                ..
            } => Resources {
                cpu_millicores: cpus(*num_cpu, "requiredResources.numCPU")?,
                memory_bytes: mem(*memory, 16_384, "requiredResources.memory")?,
                gpus: gpus(gpu, "requiredResources.gpu")?,
                session_slots: 0,
            },
            RequiredResources::Kubernetes {
                application_resources,
                ..
            } => {
                if application_resources.gpu_pool.is_some() {
                    return Err(Refusal::Unsupported(
                        "Kubernetes GPU pools are not supported".into(),
                    ));
                }
                let pool = application_resources.cpu_pool.as_ref().ok_or_else(|| {
                    ValidationError::new(
                        "requiredResources.applicationResources.cpuPool",
                        "is required (GPU pools are not supported)",
                    )
                })?;
                Resources {
                    cpu_millicores: cpus(
                        pool.num_cpu,
                        "requiredResources.applicationResources.cpuPool.numCPU",
                    )?,
                    memory_bytes: mem(
                        pool.memory,
                        16_384,
                        "requiredResources.applicationResources.cpuPool.memory",
                    )?,
                    gpus: 0,
                    session_slots: 0,
                }
            }
        })
    }

    /// The mecfed app of this manifest, with id `id` and owner `developer`.
    pub(crate) fn to_app(
        &self,
        id: AppId,
        developer: mecfed_core::DeveloperId,
    ) -> Result<App, Refusal> {
        self.validate()?;
        if self.package_type != "CONTAINER" {
            return Err(Refusal::Unsupported(format!(
                "packageType {} is not supported: mecfed sites run processes and containers \
                 (packageType CONTAINER; a file:// imagePath runs as a process)",
                self.package_type
            )));
        }
        let process = self.app_repo.image_path.strip_prefix("file://");
        let artefact = match process {
            Some(path) => {
                if !path.starts_with('/') {
                    return Err(ValidationError::new(
                        "appRepo.imagePath",
                        "a file URI must name an absolute path (file:///...)",
                    )
                    .into());
                }
                Artefact::Process {
                    command: path.to_string(),
                    args: Vec::new(),
                    env: BTreeMap::new(),
                }
            }
            None => Artefact::Container {
                image: self.app_repo.image_path.clone(),
            },
        };
        let mut ports = Vec::new();
        for n in self
            .component_spec
            .iter()
            .flat_map(|c| &c.network_interfaces)
        {
            let protocol = match n.protocol.as_str() {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => {
                    return Err(Refusal::Unsupported(format!(
                        "interface {}: protocol ANY is not supported; declare a TCP and a UDP \
                         interface",
                        n.interface_id
                    )));
                }
            };
            ports.push(Port {
                name: n.interface_id.clone(),
                // A process's port is allocated by its agent; a container's is declared.
                port: if process.is_some() {
                    0
                } else {
                    u16::try_from(n.port).unwrap_or(0)
                },
                protocol,
            });
        }
        let app = App {
            id,
            developer,
            name: self.name.clone(),
            version: self.version.clone(),
            artefact,
            ports,
            resources: self.resources()?,
            readiness: None,
            load: None,
            qos: AppQos {
                latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
                five_qi: None,
                max_sessions_per_instance: DEFAULT_SESSIONS_PER_INSTANCE,
                demand_areas: Vec::new(),
            },
            stateful: false,
            zones: Some(Vec::new()),
            pins: Default::default(),
        };
        app.validate()?;
        Ok(app)
    }

    /// The manifest as answered: the platform's id, no repository credentials.
    fn public(mut self, id: Uuid) -> Self {
        self.app_id = Some(id.to_string());
        self.app_repo.credentials = None;
        self
    }
}

/// Latency budget of a CAMARA app until its QoS extension sets one.
pub const DEFAULT_LATENCY_BUDGET_MS: u32 = 100;
/// Sessions per instance of a CAMARA app until its QoS extension sets them.
pub const DEFAULT_SESSIONS_PER_INSTANCE: u32 = 100;

// === handlers ===

/// The developer account the caller acts for when submitting `provider`'s app.
async fn acting_developer<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    provider: &str,
) -> Result<Developer, CamaraError> {
    let (all, _) = store.list::<Developer>().await?;
    let dev = all
        .into_iter()
        .map(|d| d.value)
        .find(|d| d.app_provider == provider);
    match (p.is_operator(), dev) {
        (_, Some(d)) if p.in_tenant(&d.id) => Ok(d),
        (true, None) => Err(ApiError::BadRequest(format!(
            "invalid appProvider: {provider:?} is no developer account of this platform"
        ))
        .into()),
        _ => Err(CamaraError::coded(
            ApiError::Forbidden("appProvider is not consistent with access token".into()),
            "INVALID_TOKEN_CONTEXT",
        )),
    }
}

/// A JSON body whose rejection is a CAMARA `ErrorInfo`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(CamaraError))]
pub(crate) struct CamaraJson<T>(pub(crate) T);

impl From<axum::extract::rejection::JsonRejection> for CamaraError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::from(e).into()
    }
}

pub(crate) async fn submit_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    CamaraJson(manifest): CamaraJson<AppManifest>,
) -> Result<impl IntoResponse, CamaraError> {
    p.require(scopes::EAM_APPS_WRITE)?;
    if manifest.app_id.is_some() {
        return Err(ApiError::BadRequest(
            "invalid appId: assigned by the platform, leave it out".into(),
        )
        .into());
    }
    manifest.validate()?;
    let dev = acting_developer(&st.store, &p, &manifest.app_provider).await?;
    let uuid = Uuid::new_v4();
    let id = AppId::new(uuid.to_string())?;
    let app = manifest.to_app(id.clone(), dev.id.clone())?;
    // The app, its manifest and its name's reservation are one write: an interrupted submit
    // leaves nothing behind, and two racing submits of one name and version cannot both win.
    let name = name_key(&manifest.app_provider, &manifest.name, &manifest.version);
    let (app_name, app_version) = (manifest.name.clone(), manifest.version.clone());
    let camara = CamaraApp {
        app: id.clone(),
        manifest: manifest.public(uuid),
    };
    let keys = [
        typed::key::<CamaraApp>(id.as_str()),
        typed::key::<App>(id.as_str()),
        name.clone(),
    ];
    let txn = Txn::new()
        .when(keys.iter().cloned().map(Compare::absent))
        .and_then([
            TxnOp::put(keys[0].clone(), json(&camara)?),
            TxnOp::put(keys[1].clone(), json(&app)?),
            TxnOp::put(name, id.as_str()),
        ]);
    if !commit(&st.store, txn).await? {
        return Err(ApiError::Conflict(format!(
            "app {app_name} version {app_version} already exists"
        ))
        .into());
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "appId": uuid.to_string() })),
    ))
}

/// The caller's CAMARA apps (the operator's: all).
pub(super) async fn visible_apps<S: Store>(
    store: &Typed<S>,
    p: &Principal,
) -> Result<Vec<(App, CamaraApp)>, CamaraError> {
    let (apps, _) = store.list::<App>().await?;
    let (manifests, _) = store.list::<CamaraApp>().await?;
    let mut by_id: BTreeMap<AppId, CamaraApp> = manifests
        .into_iter()
        .map(|c| (c.value.app.clone(), c.value))
        .collect();
    Ok(apps
        .into_iter()
        .map(|a| a.value)
        .filter(|a| p.owns(&a.developer, &a.id))
        .filter_map(|a| by_id.remove(&a.id).map(|c| (a, c)))
        .collect())
}

/// The caller's CAMARA app with CAMARA id `raw`; 404 for others' apps too.
pub(crate) async fn find_app<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<(App, CamaraApp), CamaraError> {
    let (app, camara, _) = find_app_versioned(store, p, raw).await?;
    Ok((app, camara))
}

/// [`find_app`] with the app document's revision; two reads, whatever the number of apps
/// (a CAMARA app's mecfed id is its UUID).
async fn find_app_versioned<S: Store>(
    store: &Typed<S>,
    p: &Principal,
    raw: &str,
) -> Result<(App, CamaraApp, mecfed_store::Revision), CamaraError> {
    let uuid = ids::parse("appId", raw)?;
    let id = uuid.to_string();
    let not_found = || CamaraError::from(ApiError::NotFound(format!("app {raw} not found")));
    let Some(app) = store.get::<App>(&id).await? else {
        return Err(not_found());
    };
    if !p.owns(&app.value.developer, &app.value.id) {
        return Err(not_found());
    }
    let Some(camara) = store.get::<CamaraApp>(&id).await? else {
        return Err(not_found());
    };
    Ok((app.value, camara.value, app.revision))
}

/// The key reserving a provider's app name and version for one app:
/// `/mecfed/v1/camaranames/<hex SHA-256 of provider, name and version>`.
fn name_key(provider: &str, name: &str, version: &str) -> Vec<u8> {
    let digest = crate::util::sha256_hex(&format!("{provider}\n{name}\n{version}"));
    format!("{}camaranames/{digest}", typed::KEY_ROOT).into_bytes()
}

/// Runs `txn`; whether its guards held.
async fn commit<S: Store>(store: &Typed<S>, txn: Txn) -> Result<bool, ApiError> {
    Ok(store.store().txn(txn).await?.succeeded)
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(Box::new(e)))
}

/// Reserves what CAMARA records stored before reservations existed hold (at start-up): app
/// names and versions, app instances' zones, deployment names. The first holder keeps each.
pub(crate) async fn reserve_names<S: Store>(store: &Typed<S>) -> Result<(), ApiError> {
    let (all, _) = store.list::<CamaraApp>().await?;
    for c in all {
        let m = &c.value.manifest;
        let k = name_key(&m.app_provider, &m.name, &m.version);
        let txn = Txn::new()
            .when([Compare::absent(k.clone())])
            .and_then([TxnOp::put(k, c.value.app.as_str())]);
        store.store().txn(txn).await?;
    }
    let reserve = async |key: Vec<u8>, holder: &str| -> Result<(), ApiError> {
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::put(key, holder)]);
        store.store().txn(txn).await?;
        Ok(())
    };
    let (records, _) = store.list::<super::lifecycle::CamaraInstance>().await?;
    for r in records {
        let r = r.value;
        reserve(super::lifecycle::zone_key(&r.app, &r.zone), &r.id).await?;
    }
    let (deployments, _) = store.list::<super::lifecycle::CamaraDeployment>().await?;
    for d in deployments {
        let d = d.value;
        reserve(
            super::lifecycle::deployment_name_key(&d.app, &d.name),
            &d.id,
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn list_apps<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Vec<AppManifest>>, CamaraError> {
    p.require(scopes::EAM_APPS_READ)?;
    Ok(Json(
        visible_apps(&st.store, &p)
            .await?
            .into_iter()
            .map(|(_, c)| c.manifest)
            .collect(),
    ))
}

pub(crate) async fn get_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, CamaraError> {
    p.require(scopes::EAM_APPS_READ)?;
    let (_, c) = find_app(&st.store, &p, &raw).await?;
    Ok(Json(serde_json::json!({ "appManifest": c.manifest })))
}

pub(crate) async fn delete_app<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<StatusCode, CamaraError> {
    p.require(scopes::EAM_APPS_DELETE)?;
    let (app, camara, revision) = find_app_versioned(&st.store, &p, &raw).await?;
    let deployed = app.zones.as_ref().is_some_and(|z| !z.is_empty());
    let (instances, _) = st.store.list::<Instance>().await?;
    if deployed || instances.iter().any(|i| i.value.app == app.id) {
        return Err(CamaraError::coded(
            ApiError::Conflict(
                "app with a running application instance or deployment cannot be deleted".into(),
            ),
            "ABORTED",
        ));
    }
    // One write, guarded by the app as read: a deployment racing the delete makes it look
    // again (and answer 409), and nothing is left half deleted.
    let m = &camara.manifest;
    let txn = Txn::new()
        .when([Compare::mod_revision(
            typed::key::<App>(app.id.as_str()),
            revision,
        )])
        .and_then([
            TxnOp::Delete(typed::key::<AppPolicy>(app.id.as_str())),
            TxnOp::Delete(typed::key::<App>(app.id.as_str())),
            TxnOp::Delete(typed::key::<CamaraApp>(app.id.as_str())),
            TxnOp::Delete(name_key(&m.app_provider, &m.name, &m.version)),
        ]);
    if commit(&st.store, txn).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(CamaraError::coded(
        ApiError::Conflict("the app changed while it was being deleted; try again".into()),
        "ABORTED",
    ))
}

// === zones and clusters ===

/// `EdgeCloudZone` (Edge Application Management's, with status and region).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCloudZone {
    /// UUID of the zone.
    pub edge_cloud_zone_id: String,
    /// The zone's mecfed id.
    pub edge_cloud_zone_name: String,
    /// `active` (a site of it is Ready), `inactive` or `unknown`.
    pub edge_cloud_zone_status: String,
    /// The operator running it.
    pub edge_cloud_provider: String,
    /// Region.
    pub edge_cloud_region: String,
}

/// The zones of the federation's sites (with their status), in region then name order.
pub(crate) fn zones_of(sites: &[Site]) -> Vec<EdgeCloudZone> {
    let mut zones: BTreeMap<(String, ZoneId), EdgeCloudZone> = BTreeMap::new();
    for s in sites {
        let z = zones
            .entry((s.region.clone(), s.zone.clone()))
            .or_insert_with(|| EdgeCloudZone {
                edge_cloud_zone_id: ids::zone_uuid(&s.zone).to_string(),
                edge_cloud_zone_name: s.zone.to_string(),
                edge_cloud_zone_status: "inactive".into(),
                edge_cloud_provider: s.operator.to_string(),
                edge_cloud_region: s.region.clone(),
            });
        if s.status == SiteStatus::Ready {
            z.edge_cloud_zone_status = "active".into();
        }
    }
    zones.into_values().collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZoneQuery {
    region: Option<String>,
    status: Option<String>,
}

pub(crate) async fn list_zones<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    query: Result<Query<ZoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<EdgeCloudZone>>, CamaraError> {
    p.require(scopes::EAM_ZONES_READ)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(s) = &q.status {
        one_of(s, &["active", "inactive", "unknown"], "status")?;
    }
    if let Some(r) = &q.region {
        ensure(r.len() <= 64, "region", "at most 64 characters")?;
    }
    let sites = crate::sites::sites_with_status(&st.store).await?;
    Ok(Json(
        zones_of(&sites)
            .into_iter()
            .filter(|z| q.region.as_ref().is_none_or(|r| &z.edge_cloud_region == r))
            .filter(|z| {
                q.status
                    .as_ref()
                    .is_none_or(|s| &z.edge_cloud_zone_status == s)
            })
            .collect(),
    ))
}

/// `ClusterInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// The site id.
    pub name: String,
    /// The operator, as an `AppProvider`-shaped name.
    pub provider: String,
    /// UUID of the cluster.
    pub cluster_ref: String,
    /// UUID of its zone.
    pub edge_cloud_zone_id: String,
    /// Region.
    pub edge_cloud_region: String,
}

/// An operator id in the `AppProvider` shape `^[A-Za-z][A-Za-z0-9_]{7,63}$`.
fn provider_name(op: &str) -> String {
    let clean: String = op
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut name = format!("operator_{clean}");
    name.truncate(64);
    name
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClusterQuery {
    region: Option<String>,
    cluster_ref: Option<String>,
    edge_cloud_zone_id: Option<String>,
}

pub(crate) async fn list_clusters<S: Store>(
    State(st): State<ApiState<S>>,
    Extension(p): Extension<Principal>,
    query: Result<Query<ClusterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ClusterInfo>>, CamaraError> {
    p.require(scopes::EAM_CLUSTERS_READ)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let cluster = q
        .cluster_ref
        .as_deref()
        .map(|c| ids::parse("clusterRef", c))
        .transpose()?;
    let zone = q
        .edge_cloud_zone_id
        .as_deref()
        .map(|z| ids::parse("edgeCloudZoneId", z))
        .transpose()?;
    let sites = crate::sites::sites_with_status(&st.store).await?;
    Ok(Json(
        sites
            .iter()
            .filter(|s| s.kind == SiteKind::Kubernetes)
            .filter(|s| q.region.as_ref().is_none_or(|r| &s.region == r))
            .filter(|s| cluster.is_none_or(|c| ids::cluster_uuid(&s.id) == c))
            .filter(|s| zone.is_none_or(|z| ids::zone_uuid(&s.zone) == z))
            .map(|s| ClusterInfo {
                name: s.id.to_string(),
                provider: provider_name(s.operator.as_str()),
                cluster_ref: ids::cluster_uuid(&s.id).to_string(),
                edge_cloud_zone_id: ids::zone_uuid(&s.zone).to_string(),
                edge_cloud_region: s.region.clone(),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_parse_in_all_three_forms() {
        assert_eq!(vcpu_millis("1"), Some(1000));
        assert_eq!(vcpu_millis("0.5"), Some(500));
        assert_eq!(vcpu_millis("0.500"), Some(500));
        assert_eq!(vcpu_millis("2.25"), Some(2250));
        assert_eq!(vcpu_millis("500m"), Some(500));
        for bad in ["", "m", ".5", "1.", "1.2345", "-1", "1e3", "5 m"] {
            assert_eq!(vcpu_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_interfaces_follow_the_patterns() {
        assert!(valid_name("arena") && valid_name("Arena_2"));
        assert!(!valid_name("a") && !valid_name("2arena") && !valid_name("are-na"));
        assert!(valid_interface_id("game") && valid_interface_id("ctl_1"));
        assert!(!valid_interface_id("abc") && !valid_interface_id("game_"));
    }

    #[test]
    fn provider_names_fit_the_app_provider_pattern() {
        let n = provider_name("op-a");
        assert_eq!(n, "operator_op_a");
        validate_app_provider(&n, "provider").unwrap();
    }
}
