//! The daemon's configuration: a TOML file with documented defaults, overridden by flags and
//! environment variables (see `src/main.rs`). `device-plugin config default` prints
//! [`DEFAULT_CONFIG`]; a unit test keeps that text and [`Config::default`] equal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Where the daemon looks for its config when none is named. A missing file there is not an
/// error (defaults apply); a missing file named by `--config` is.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/device-plugin/config.toml";

/// The full default configuration, commented, as `device-plugin config default` prints it.
pub const DEFAULT_CONFIG: &str = r#"# device-plugin configuration.
# Every key is optional: the values below are the defaults. Unknown keys are errors.

# The kubelet's device plugin directory: it serves Registration on <dir>/kubelet.sock, and
# this plugin serves DevicePlugin on <dir>/<socket_name>.
device_plugin_dir = "/var/lib/kubelet/device-plugins"

# The plugin's socket file name in device_plugin_dir (the Register endpoint). Empty: derived
# from resource_name ("nvidia.com/gpu" -> "nvidia.com-gpu.sock").
socket_name = ""

# The extended resource advertised to the kubelet (what pods request).
resource_name = "nvidia.com/gpu"

# Where devices come from: "nvml" (NVIDIA GPUs, through libnvidia-ml loaded at run time) or
# "file" (devices described in devices_file, re-read when it changes).
backend = "nvml"

# The device file of the "file" backend (JSON; see the README).
devices_file = "/etc/device-plugin/devices.json"

# What the "nvml" backend does on a node without an NVIDIA driver: "exit" (log it, exit 1)
# or "wait" (log it, retry every 30 s, register once the driver is there).
on_missing_driver = "exit"

# The NVML library, a file name (searched by the dynamic loader) or a path.
nvml_library = "libnvidia-ml.so.1"

# XIDs that do not make a GPU unhealthy, besides the application errors that never do
# (13, 31, 43, 45, 68, 109): a comma-separated list, or "all" to turn health checks off.
disable_health_checks = ""

# Where this process sees the host's "/": device nodes and the driver root are looked up
# under it (a DaemonSet mounts the host's /dev at /host/dev and sets "/host").
host_root = "/"

# DevicePluginOptions sent at registration.
pre_start_required = false
get_preferred_allocation_available = true

# What Allocate returns, any of:
#   "envvar"          <visible_devices_env>=<id>,<id>
#   "volume-mounts"   <visible_devices_env>=/var/run/nvidia-container-devices and one
#                     /dev/null mount per device under it (the NVIDIA container toolkit's form)
#   "cdi-annotations" a cdi.k8s.io/<plugin>_<hash> annotation naming the CDI devices
#   "cdi-cri"         the CDI device names in the CDI_devices field
# The CDI spec file is written to cdi_spec_dir when a "cdi-*" strategy is on.
device_list_strategy = ["envvar", "cdi-cri"]

# Return the device nodes (with "rw" permissions) in Allocate.
pass_device_specs = true

# The variable that lists the allocated device IDs.
visible_devices_env = "NVIDIA_VISIBLE_DEVICES"

# A host directory with the driver's lib64/ and bin/ (e.g. "/home/kubernetes/bin/nvidia").
# When set, each of them that exists is mounted read-only at <driver_container_root>/lib64
# and <driver_container_root>/bin. Empty: no driver mounts.
driver_root = ""
driver_container_root = "/usr/local/nvidia"

# Where the CDI spec file (<vendor>-<class>.json) is written, atomically.
cdi_spec_dir = "/var/run/cdi"
# The CDI kind (vendor.com/class). Empty: resource_name.
cdi_kind = ""
# The prefix of the annotation keys of the "cdi-annotations" strategy.
cdi_annotation_prefix = "cdi.k8s.io/"

# Time-slicing: advertise each device this many times, as <id>::0 .. <id>::<n-1>, all
# mapped back to the device in Allocate. 1: no sharing. The file backend can set "replicas"
# per device.
replicas = 1

[log]
# "text" or "json".
format = "text"
# A tracing filter: "info", "debug", "device_plugin=debug,info", ...
level = "info"
"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub device_plugin_dir: PathBuf,
    pub socket_name: String,
    pub resource_name: String,
    pub backend: Backend,
    pub devices_file: PathBuf,
    pub on_missing_driver: OnMissingDriver,
    pub nvml_library: String,
    pub disable_health_checks: String,
    pub host_root: PathBuf,
    pub pre_start_required: bool,
    pub get_preferred_allocation_available: bool,
    pub device_list_strategy: Vec<Strategy>,
    pub pass_device_specs: bool,
    pub visible_devices_env: String,
    pub driver_root: String,
    pub driver_container_root: PathBuf,
    pub cdi_spec_dir: PathBuf,
    pub cdi_kind: String,
    pub cdi_annotation_prefix: String,
    pub replicas: u32,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Nvml,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingDriver {
    Exit,
    Wait,
}

/// How Allocate tells the runtime which devices a container gets (NVIDIA's
/// DEVICE_LIST_STRATEGY values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Envvar,
    VolumeMounts,
    CdiAnnotations,
    CdiCri,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_plugin_dir: PathBuf::from("/var/lib/kubelet/device-plugins"),
            socket_name: String::new(),
            resource_name: "nvidia.com/gpu".into(),
            backend: Backend::Nvml,
            devices_file: PathBuf::from("/etc/device-plugin/devices.json"),
            on_missing_driver: OnMissingDriver::Exit,
            nvml_library: "libnvidia-ml.so.1".into(),
            disable_health_checks: String::new(),
            host_root: PathBuf::from("/"),
            pre_start_required: false,
            get_preferred_allocation_available: true,
            device_list_strategy: vec![Strategy::Envvar, Strategy::CdiCri],
            pass_device_specs: true,
            visible_devices_env: "NVIDIA_VISIBLE_DEVICES".into(),
            driver_root: String::new(),
            driver_container_root: PathBuf::from("/usr/local/nvidia"),
            cdi_spec_dir: PathBuf::from("/var/run/cdi"),
            cdi_kind: String::new(),
            cdi_annotation_prefix: "cdi.k8s.io/".into(),
            replicas: 1,
            log: LogConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads `path`, or [`DEFAULT_CONFIG_PATH`] if it exists, or takes the defaults. Not yet
    /// validated: flags and environment may still override values; call [`Config::validate`].
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::Config(format!("read {}: {e}", path.display()))),
        }
    }

    /// Parses and validates a TOML config; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, Error> {
        let config = Config::from_toml(text, origin)?;
        config.validate()?;
        Ok(config)
    }

    fn from_toml(text: &str, origin: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::Config(format!("{}: {e}", origin.display())))
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !valid_qualified_name(&self.resource_name) {
            return bad(format!(
                "resource_name {:?} is not of the form domain/name",
                self.resource_name
            ));
        }
        if !valid_qualified_name(self.cdi_kind()) {
            return bad(format!(
                "cdi_kind {:?} is not of the form vendor.com/class",
                self.cdi_kind()
            ));
        }
        let socket = self.socket_name();
        if socket.is_empty() || socket.contains('/') || socket.starts_with('.') {
            return bad(format!(
                "socket_name {socket:?} must be a plain file name not starting with '.'"
            ));
        }
        if socket == "kubelet.sock" {
            return bad("socket_name must not be the kubelet's own kubelet.sock".into());
        }
        if self.replicas == 0 {
            return bad("replicas must be at least 1".into());
        }
        if self.device_list_strategy.is_empty() && !self.pass_device_specs {
            return bad(
                "device_list_strategy is empty and pass_device_specs is off: Allocate would \
                 give containers nothing"
                    .into(),
            );
        }
        if self.visible_devices_env.is_empty() || self.visible_devices_env.contains('=') {
            return bad(format!(
                "visible_devices_env {:?} is not a variable name",
                self.visible_devices_env
            ));
        }
        if !self.driver_root.is_empty() && !Path::new(&self.driver_root).is_absolute() {
            return bad(format!(
                "driver_root {:?} must be an absolute path",
                self.driver_root
            ));
        }
        if !self.host_root.is_absolute() || !self.driver_container_root.is_absolute() {
            return bad("host_root and driver_container_root must be absolute paths".into());
        }
        crate::discovery::nvml::XidFilter::parse(&self.disable_health_checks)
            .map_err(Error::Config)?;
        Ok(())
    }

    /// The socket file name in the device plugin dir.
    pub fn socket_name(&self) -> String {
        if self.socket_name.is_empty() {
            format!("{}.sock", self.resource_name.replace('/', "-"))
        } else {
            self.socket_name.clone()
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.device_plugin_dir.join(self.socket_name())
    }

    pub fn kubelet_socket(&self) -> PathBuf {
        self.device_plugin_dir.join("kubelet.sock")
    }

    pub fn cdi_kind(&self) -> &str {
        if self.cdi_kind.is_empty() {
            &self.resource_name
        } else {
            &self.cdi_kind
        }
    }

    /// Whether any strategy needs the CDI spec file.
    pub fn cdi_enabled(&self) -> bool {
        self.device_list_strategy
            .iter()
            .any(|s| matches!(s, Strategy::CdiAnnotations | Strategy::CdiCri))
    }

    pub fn has_strategy(&self, s: Strategy) -> bool {
        self.device_list_strategy.contains(&s)
    }

    pub fn driver_root(&self) -> Option<&Path> {
        (!self.driver_root.is_empty()).then(|| Path::new(&self.driver_root))
    }
}

/// `prefix/name`: a DNS-subdomain-like prefix and a name of letters, digits, `-`, `_`, `.`,
/// alphanumeric at both ends (the form of extended resource names and CDI kinds).
fn valid_qualified_name(s: &str) -> bool {
    let Some((prefix, name)) = s.split_once('/') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(label_ok)
        && name.len() <= 63
        && crate::device::valid_id(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_is_the_default_config() {
        let parsed = Config::parse(DEFAULT_CONFIG, Path::new("DEFAULT_CONFIG")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn derived_names() {
        let c = Config::default();
        assert_eq!(c.socket_name(), "nvidia.com-gpu.sock");
        assert_eq!(c.cdi_kind(), "nvidia.com/gpu");
        assert_eq!(
            c.kubelet_socket(),
            PathBuf::from("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
        assert!(c.cdi_enabled());
    }

    #[test]
    fn strategies_parse_by_their_nvidia_names() {
        let c = Config::parse(
            r#"device_list_strategy = ["volume-mounts", "cdi-annotations"]"#,
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(
            c.device_list_strategy,
            vec![Strategy::VolumeMounts, Strategy::CdiAnnotations]
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "resource_name = \"gpu\"",
            "replicas = 0",
            "socket_name = \"kubelet.sock\"",
            "socket_name = \"a/b.sock\"",
            "driver_root = \"relative\"",
            "disable_health_checks = \"13,abc\"",
            "unknown_key = 1",
        ] {
            assert!(Config::parse(text, Path::new("t")).is_err(), "{text}");
        }
    }
}
