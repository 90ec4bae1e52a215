//! The daemon's configuration: a TOML file with documented defaults.
//!
//! `cri-server config default` prints [`DEFAULT_CONFIG`]; a unit test keeps that text and
//! [`Config::default`] equal, so the printed file is always the truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the daemon looks for its config when `--config` is not given. A missing file there is
/// not an error (defaults apply); a missing file named by `--config` is.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cri-server/config.toml";

/// The full default configuration, commented, as `cri-server config default` prints it.
pub const DEFAULT_CONFIG: &str = r#"# cri-server configuration.
# Every key is optional: the values below are the defaults. Unknown keys are errors.

# Unix socket the kubelet connects to: --container-runtime-endpoint=unix://<listen>.
# The socket is created with mode 0660.
listen = "/run/cri-server/cri-server.sock"

# Persistent data: image content, unpacked layers, image records.
root = "/var/lib/cri-server"

# Volatile runtime state (does not need to survive a reboot).
state_dir = "/run/cri-server"

[log]
# "text" or "json".
format = "text"
# A tracing filter: "info", "debug", "cri_server=debug,info", ...
level = "info"

[image]
# Layers downloaded (and unpacked) at the same time, over all pulls.
max_concurrent_downloads = 6
# A docker config.json whose "auths" are used when a PullImage request carries no auth.
# A missing file is not an error.
docker_config = "/root/.docker/config.json"

[registry]
# A directory in containerd's certs.d layout: <config_path>/<host>/hosts.toml (and
# <config_path>/_default/hosts.toml for every other host). Mirrors, TLS and capabilities come
# from there, so an existing containerd registry setup works unchanged.
config_path = "/etc/cri-server/certs.d"
# Registries (host or host:port) that may be reached over plain HTTP when no hosts.toml says
# otherwise. Everything else is HTTPS only.
insecure_registries = []

[cni]
# Where the network configuration (.conflist, .conf, .json; the first by name wins) is read.
conf_dir = "/etc/cni/net.d"
# Where plugin binaries are looked up, in order.
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]

[cdi]
# Where CDI spec files (JSON or YAML) are read when a container asks for CDI devices; a later
# dir overrides an earlier one.
spec_dirs = ["/etc/cdi", "/var/run/cdi"]

[stats]
# How often container and pod stats are collected (the stats RPCs answer from that cache).
collect_period_ms = 10000

[streaming]
# Where the exec/attach/port-forward server listens (host:port; port 0 picks a free one). The
# kubelet connects to the URLs the Exec, Attach and PortForward RPCs return. Keep it on
# loopback unless the node's network is trusted: the one-time token is the only credential.
address = "127.0.0.1:0"
# How long a URL returned by Exec/Attach/PortForward stays usable (it is single-use).
token_ttl_secs = 60

[metrics]
# Prometheus metrics of the daemon itself on GET /metrics (host:port; port 0 picks a free one
# and writes it to <state_dir>/metrics.addr). Empty turns the endpoint off.
address = "127.0.0.1:9338"

[runtime]
# The OCI runtime handler used when a pod names none.
default_handler = "runc"
# Run each handler's binary from one sealed in-memory copy (a memfd made at start, and again
# when the file changes) instead of the file. runc then skips the self-protection it does in
# every `runc init` (CVE-2019-5736: a bind mount or a copy of itself, and a re-exec), which
# makes exec and create cheaper; the copy is as read-only to a container as runc's own. Off:
# the file is run as it is. Falls back to the file when no sealed copy can be made.
sealed_copy = true

# ExecSync through cri-exec (joins the container's namespaces and cgroups and takes on its
# user, capabilities, seccomp filter and limits itself) instead of `<runtime> exec`: the same
# process in a fraction of the time. Containers with settings it does not reproduce
# (AppArmor, SELinux) still go through the OCI runtime. false: always the OCI runtime.
direct_exec = true

# One table per runtime handler (the pod's runtime_handler / RuntimeClass handler).
# path: the OCI runtime binary (a bare name is looked up in PATH).
[runtime.handlers.runc]
path = "runc"

[runtime.handlers.crun]
path = "crun"
"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: PathBuf,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub image: ImageConfig,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub cdi: CdiConfig,
    pub stats: StatsConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    pub address: String,
    pub token_ttl_secs: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:0".into(),
            token_ttl_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub address: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9338".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub collect_period_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            collect_period_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        Self {
            spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub default_handler: String,
    pub sealed_copy: bool,
    pub direct_exec: bool,
    pub handlers: std::collections::BTreeMap<String, RuntimeHandler>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    pub path: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            default_handler: "runc".into(),
            sealed_copy: true,
            direct_exec: true,
            handlers: [
                (
                    "runc".to_string(),
                    RuntimeHandler {
                        path: "runc".into(),
                    },
                ),
                (
                    "crun".to_string(),
                    RuntimeHandler {
                        path: "crun".into(),
                    },
                ),
            ]
            .into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    pub max_concurrent_downloads: usize,
    pub docker_config: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub config_path: PathBuf,
    pub insecure_registries: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "/run/cri-server/cri-server.sock".into(),
            root: "/var/lib/cri-server".into(),
            state_dir: "/run/cri-server".into(),
            log: LogConfig::default(),
            image: ImageConfig::default(),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            cdi: CdiConfig::default(),
            stats: StatsConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: 6,
            docker_config: "/root/.docker/config.json".into(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            config_path: "/etc/cri-server/certs.d".into(),
            insecure_registries: Vec::new(),
        }
    }
}

/// A config file that cannot be used, with the file and the reason (toml's message names the
/// key, line and column).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl Config {
    /// Loads `path`; when `path` is `None` the default location is read if it exists.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text, &path)
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason: reason.to_string(),
        };
        for (key, value) in [
            ("listen", &self.listen),
            ("root", &self.root),
            ("state_dir", &self.state_dir),
        ] {
            if !value.is_absolute() {
                return Err(invalid(
                    key,
                    &format!("{} is not an absolute path", value.display()),
                ));
            }
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(invalid(
                "image.max_concurrent_downloads",
                "must be at least 1",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", &format!("not a tracing filter: {e}")));
        }
        for host in &self.registry.insecure_registries {
            if host.is_empty() || host.contains('/') {
                return Err(invalid(
                    "registry.insecure_registries",
                    &format!("{host:?} is not a host or host:port"),
                ));
            }
        }
        if self
            .streaming
            .address
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                "streaming.address",
                &format!("{:?} is not an ip:port", self.streaming.address),
            ));
        }
        if !self.metrics.address.is_empty()
            && self
                .metrics
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "metrics.address",
                &format!("{:?} is not an ip:port", self.metrics.address),
            ));
        }
        if self.streaming.token_ttl_secs == 0 {
            return Err(invalid("streaming.token_ttl_secs", "must be at least 1"));
        }
        if !self
            .runtime
            .handlers
            .contains_key(&self.runtime.default_handler)
        {
            return Err(invalid(
                "runtime.default_handler",
                &format!(
                    "no [runtime.handlers.{}] table",
                    self.runtime.default_handler
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_config_equals_builtin_defaults() {
        let parsed = Config::parse(DEFAULT_CONFIG, Path::new("default")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("[image]\nmax_downloads = 3\n", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/x.toml"), "{err}");
        assert!(err.contains("max_downloads"), "{err}");
    }

    #[test]
    fn wrong_type_is_a_parse_error_with_the_line() {
        let err = Config::parse("listen = 5\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn relative_root_is_refused_with_its_key() {
        let err = Config::parse("root = \"var/lib\"\n", Path::new("c.toml")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "root", .. }),
            "{err}"
        );
    }

    #[test]
    fn streaming_address_must_be_ip_and_port() {
        let err =
            Config::parse("[streaming]\naddress = \"localhost\"\n", Path::new("c")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "streaming.address",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_downloads_is_refused() {
        let err =
            Config::parse("[image]\nmax_concurrent_downloads = 0\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("image.max_concurrent_downloads"));
    }
}
