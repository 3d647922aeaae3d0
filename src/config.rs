//! Configuration of `mecfed up`: flags and environment (through clap) over an optional TOML
//! file over defaults.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use mecfed_store::StoreUrl;
use serde::Deserialize;
use thiserror::Error;

use crate::cli::UpArgs;

/// Default REST listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default data directory of the embedded store.
pub const DEFAULT_DATA_DIR: &str = "./mecfed-data";

/// Name of the operator's client secret file in the data directory.
pub const OPERATOR_SECRET_FILE: &str = "operator.secret";

/// The resolved configuration of `mecfed up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpConfig {
    /// Where the state lives.
    pub store: StoreUrl,
    /// REST listen address.
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin_listen: SocketAddr,
    /// The operator this platform belongs to.
    pub operator: Option<mecfed_core::OperatorId>,
    /// The operator's OAuth client secret (`<data-dir>/operator.secret`), created on first
    /// start; `mecfed ctl` reads it from there by default.
    pub operator_secret_file: PathBuf,
    /// PEM bundle that `https` callbacks are verified against; `None`: the system's.
    pub callback_ca: Option<PathBuf>,
}

/// Why the configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (the message names the key).
    #[error("configuration file {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
    /// A value is invalid.
    #[error("configuration field `{field}`: {reason}")]
    Invalid {
        /// Field name as written in the file.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The TOML file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    store: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    operator: Option<String>,
    callback_ca: Option<PathBuf>,
}

impl UpArgs {
    /// Reads the file named by `--config`, if any, and resolves.
    pub fn resolve(self) -> Result<UpConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let path = self.config.clone().unwrap_or_default();
        self.resolve_with(file.as_deref(), &path)
    }

    /// Resolves against the TOML text `file` (read from `path`, for messages).
    pub fn resolve_with(self, file: Option<&str>, path: &Path) -> Result<UpConfig, ConfigError> {
        let file: FileConfig = match file {
            Some(text) => toml::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?,
            None => FileConfig::default(),
        };
        let file_store = file
            .store
            .map(|s| {
                s.parse::<StoreUrl>().map_err(|e| ConfigError::Invalid {
                    field: "store",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let operator_secret_file = data_dir.join(OPERATOR_SECRET_FILE);
        let store = self
            .store
            .or(file_store)
            .unwrap_or(StoreUrl::Embedded(data_dir));
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let admin_listen = self
            .admin_listen
            .or(file.admin_listen)
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default"));
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::Invalid {
                field: "admin-listen",
                reason: format!("must differ from listen ({listen})"),
            });
        }
        let operator = self
            .operator
            .or(file.operator)
            .map(|o| {
                mecfed_core::OperatorId::new(o).map_err(|e| ConfigError::Invalid {
                    field: "operator",
                    reason: e.reason,
                })
            })
            .transpose()?;
        Ok(UpConfig {
            store,
            listen,
            admin_listen,
            operator,
            operator_secret_file,
            callback_ca: self.callback_ca.or(file.callback_ca),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(flags: &[&str]) -> UpArgs {
        let mut argv = vec!["mecfed", "up"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Up(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = args(&[]).resolve_with(None, Path::new("")).unwrap();
        assert_eq!(c.store, StoreUrl::Embedded(DEFAULT_DATA_DIR.into()));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    }

    #[test]
    fn the_home_operator_comes_from_flag_or_file_and_is_validated() {
        let c = args(&[])
            .resolve_with(Some("operator = \"op-a\"\n"), Path::new("m.toml"))
            .unwrap();
        assert_eq!(c.operator.unwrap().as_str(), "op-a");
        let c = args(&["--operator", "op-b"])
            .resolve_with(Some("operator = \"op-a\"\n"), Path::new("m.toml"))
            .unwrap();
        assert_eq!(c.operator.unwrap().as_str(), "op-b");
        let e = args(&["--operator", "op/a"])
            .resolve_with(None, Path::new(""))
            .unwrap_err();
        assert!(e.to_string().contains("`operator`"), "{e}");
    }

    #[test]
    fn flags_beat_file_beats_default() {
        let file =
            "listen = \"127.0.0.1:1000\"\nadmin-listen = \"127.0.0.1:1001\"\ndata-dir = \"/f\"\n";
        let c = args(&["--listen", "127.0.0.1:2000"])
            .resolve_with(Some(file), Path::new("m.toml"))
            .unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.admin_listen.port(), 1001);
        assert_eq!(c.store, StoreUrl::Embedded("/f".into()));
        let c = args(&["--store", "etcd://127.0.0.1:2379"])
            .resolve_with(Some(file), Path::new("m.toml"))
            .unwrap();
        assert_eq!(
            c.store,
            StoreUrl::Etcd(vec!["http://127.0.0.1:2379".into()])
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = args(&[])
            .resolve_with(Some("listen = \"nowhere\"\n"), Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("m.toml"), "{e}");
        let e = args(&[])
            .resolve_with(Some("colour = 1\n"), Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = args(&[])
            .resolve_with(Some("store = \"redis://x:1\"\n"), Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`store`"), "{e}");
        let e = args(&["--listen", "127.0.0.1:5", "--admin-listen", "127.0.0.1:5"])
            .resolve_with(None, Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin-listen"), "{e}");
        let e = Cli::try_parse_from(["mecfed", "up", "--store", "etcd://"]).unwrap_err();
        assert!(e.to_string().contains("--store"), "{e}");
    }
}
