//! Command-line interface.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
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
}

/// Flags of `mecfed up`. Each also reads a `MECFED_*` variable and the TOML file given by
/// `--config`; precedence is flag, then environment, then file, then default.
#[derive(Debug, Default, Clone, Args)]
pub struct UpArgs {
    /// TOML configuration file (keys: store, data-dir, listen, admin-listen).
    #[arg(long, env = "MECFED_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
}
