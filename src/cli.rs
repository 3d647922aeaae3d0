//! Command-line interface.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mecfed_core::{AccessKind, Resources};
use mecfed_store::StoreUrl;

/// mecfed: control plane for a federated multi-access edge cloud.
#[derive(Debug, Parser)]
#[command(name = "mecfed", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one operator platform (API, controllers) on the embedded store or on etcd.
    Up(UpArgs),
    /// Run the agent of one edge site: join the platform and keep the site's lease alive.
    Agent(Box<AgentArgs>),
    /// Talk to a running platform.
    Ctl(CtlArgs),
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    Resources::parse(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// Flags of `mecfed agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Site id.
    #[arg(long, env = "MECFED_SITE_ID")]
    pub site_id: String,
    /// Operator running the site.
    #[arg(long, env = "MECFED_OPERATOR")]
    pub operator: String,
    /// Region (metro area).
    #[arg(long, env = "MECFED_REGION")]
    pub region: String,
    /// Edge cloud zone.
    #[arg(long, env = "MECFED_ZONE")]
    pub zone: String,
    /// Latitude of the site.
    #[arg(long, allow_hyphen_values = true)]
    pub lat: f64,
    /// Longitude of the site.
    #[arg(long, allow_hyphen_values = true)]
    pub lon: f64,
    /// Capacity, e.g. cpu=8000m,memory=16Gi,gpus=1,sessions=500.
    #[arg(long, value_parser = parse_resources)]
    pub capacity: Resources,
    /// How UEs reach the site (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub access_kinds: Vec<AccessKindArg>,
    /// Cell and Wi-Fi AP ids the site serves (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub access_points: Vec<String>,
    /// The PLMN the site's cells broadcast, MCC-MNC (e.g. 272-01); needed for the radio
    /// network information API (MEC 012).
    #[arg(long, value_parser = |s: &str| mecfed_core::Plmn::parse(s).map_err(|e| e.to_string()))]
    pub plmn: Option<mecfed_core::Plmn>,
    /// Labels, key=value (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Base URL of the platform's REST API.
    #[arg(
        long,
        env = "MECFED_CONTROLLER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub controller: String,
    /// Join token from `mecfed ctl join-token create`.
    #[arg(long, env = "MECFED_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: String,
    /// Admin listen address for /live, /ready and /metrics.
    #[arg(
        long,
        env = "MECFED_AGENT_ADMIN_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub admin_listen: SocketAddr,
    /// Directory for the desired state and instance logs.
    #[arg(
        long,
        env = "MECFED_AGENT_DATA_DIR",
        default_value = "./mecfed-agent-data"
    )]
    pub data_dir: PathBuf,
    /// Address instances are reached on (their endpoints).
    #[arg(long, env = "MECFED_ADVERTISE", default_value = "127.0.0.1")]
    pub advertise: std::net::Ipv4Addr,
    /// Size at which an instance's log file rotates, in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub log_cap: u64,
    /// What runs the instances: supervised processes on this node, or a Kubernetes cluster.
    #[arg(
        long,
        value_enum,
        env = "MECFED_SITE_KIND",
        default_value = "edge-node"
    )]
    pub kind: SiteKindArg,
    /// Kubeconfig of the cluster (kind kubernetes); default: `KUBECONFIG`, `~/.kube/config`
    /// or the in-cluster service account.
    #[arg(long, env = "MECFED_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Site kinds on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SiteKindArg {
    /// Supervised processes on this node.
    EdgeNode,
    /// A Kubernetes cluster, through its API server.
    Kubernetes,
}

/// Access kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessKindArg {
    /// 5G NR.
    Nr5g,
    /// LTE.
    Lte,
    /// Wi-Fi.
    Wifi,
    /// Fixed line.
    Fixed,
}

impl From<AccessKindArg> for AccessKind {
    fn from(a: AccessKindArg) -> Self {
        match a {
            AccessKindArg::Nr5g => AccessKind::Nr5g,
            AccessKindArg::Lte => AccessKind::Lte,
            AccessKindArg::Wifi => AccessKind::Wifi,
            AccessKindArg::Fixed => AccessKind::Fixed,
        }
    }
}

/// `mecfed ctl`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// The platform's REST address.
    #[arg(
        long,
        global = true,
        env = "MECFED_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// OAuth client id to call as (`operator`, `dev.<developer>`).
    #[arg(
        long,
        global = true,
        env = "MECFED_CLIENT_ID",
        default_value = "operator"
    )]
    pub client_id: String,
    /// OAuth client secret [default: read from --client-secret-file].
    #[arg(
        long,
        global = true,
        env = "MECFED_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<String>,
    /// File holding the client secret (`mecfed up` writes the operator's there).
    #[arg(
        long,
        global = true,
        env = "MECFED_CLIENT_SECRET_FILE",
        default_value = "./mecfed-data/operator.secret"
    )]
    pub client_secret_file: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// How `mecfed ctl` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// `mecfed ctl` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// List sites with their readiness and capacity.
    Sites,
    /// List instances with their state and endpoint.
    Instances,
    /// Print the end of an instance's log (fetched from its site's agent).
    Logs {
        /// Instance id.
        instance: String,
        /// Bytes from the end of the log.
        #[arg(long, default_value_t = 65_536)]
        tail: u64,
    },
    /// Join tokens for agents.
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// Apps: list, apply from a JSON file, delete.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Attach a placement policy (JSON file) to an app.
    Policy {
        /// App id.
        app: String,
        /// Policy file (JSON).
        file: PathBuf,
    },
    /// List placements: instances per app and site, as the scheduler decided.
    Placements {
        /// Only this app's.
        app: Option<String>,
    },
    /// Why each site was chosen or rejected for an app, with the numbers.
    Explain {
        /// App id.
        app: String,
    },
    /// Developer accounts (tenants) and their credentials.
    #[command(subcommand)]
    Developers(DevelopersCommand),
    /// Edge cloud zones of the federation, with their status (CAMARA).
    Zones,
    /// UE network contexts: list, or create/replace one from a JSON file.
    #[command(subcommand)]
    Ues(UesCommand),
    /// Subscriptions of every ETSI MEC family (the caller's; the operator: all).
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// CAMARA app deployments (several zones each).
    Deployments,
}

/// `mecfed ctl subscriptions`.
#[derive(Debug, Clone, Subcommand)]
pub enum SubscriptionsCommand {
    /// List subscriptions with their callback and what waits for delivery.
    List,
    /// Delete a subscription; what is pending for it is not delivered.
    Delete {
        /// Subscription id.
        id: String,
    },
}

/// `mecfed ctl developers`.
#[derive(Debug, Clone, Subcommand)]
pub enum DevelopersCommand {
    /// List developer accounts.
    List,
    /// Create a developer account; its client secret is printed once.
    Create {
        /// Developer id.
        id: String,
        /// CAMARA AppProvider name (8 to 64 letters, digits or '_').
        #[arg(long)]
        app_provider: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Sustained requests per second allowed.
        #[arg(long)]
        rate: Option<u32>,
        /// Burst of requests allowed.
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Issue a new client secret (the old one stops working); printed once.
    RotateSecret {
        /// Developer id.
        id: String,
    },
    /// Delete a developer account that has no apps left.
    Delete {
        /// Developer id.
        id: String,
    },
}

/// `mecfed ctl ues`.
#[derive(Debug, Clone, Subcommand)]
pub enum UesCommand {
    /// List UEs with their attachment.
    List,
    /// Create or replace a UE from a JSON file.
    Apply {
        /// UE file (JSON).
        file: PathBuf,
    },
}

/// `mecfed ctl apps`.
#[derive(Debug, Clone, Subcommand)]
pub enum AppsCommand {
    /// List apps.
    List,
    /// Create or replace an app from a JSON file (the app document).
    Apply {
        /// App file (JSON).
        file: PathBuf,
        /// Placement policy file (JSON) set together with the app: a new app is held
        /// unplaced until its policy is in, so it is never placed under the default policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Delete an app; the scheduler removes its placements.
    Delete {
        /// App id.
        app: String,
    },
}

/// `mecfed ctl join-token`.
#[derive(Debug, Clone, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a join token (printed once).
    Create {
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_seconds: u64,
        /// What the token is for.
        #[arg(long)]
        description: Option<String>,
    },
}

/// Flags of `mecfed up`. Each also reads a `MECFED_*` variable and the TOML file given by
/// `--config`; precedence is flag, then environment, then file, then default.
#[derive(Debug, Default, Clone, Args)]
pub struct UpArgs {
    /// TOML configuration file (keys: store, data-dir, listen, admin-listen, operator,
    /// callback-ca).
    #[arg(long, env = "MECFED_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The operator this platform belongs to: the scheduler prefers its sites over
    /// partners' (cost).
    #[arg(long, env = "MECFED_OPERATOR", value_name = "ID")]
    pub operator: Option<String>,
    /// State store: etcd://host:port[,host:port...] or embedded://DIR (default: the embedded
    /// store in --data-dir).
    #[arg(long, env = "MECFED_STORE", value_name = "URL")]
    pub store: Option<StoreUrl>,
    /// Data directory of the embedded store [default: ./mecfed-data].
    #[arg(long, env = "MECFED_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "MECFED_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listen address for /live, /ready and /metrics [default: 127.0.0.1:9090].
    #[arg(long, env = "MECFED_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// PEM file of the certificate authorities `https` notification callbacks are verified
    /// against [default: the system's, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, env = "MECFED_CALLBACK_CA", value_name = "FILE")]
    pub callback_ca: Option<PathBuf>,
}
