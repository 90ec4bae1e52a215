//! Pod networking through CNI: the executor that loads the network config list, runs its
//! plugins by the CNI spec (ADD / DEL / CHECK with `prevResult` chaining and capability
//! `runtimeConfig`), and caches each attachment on disk so DEL works after a restart.
//!
//! `conf` finds and validates the config, `invoke` runs one plugin, `result` reads a result,
//! `cache` keeps attachments; `add`, `del` and `check` are the three verbs on [`Cni`].

mod add;
mod cache;
mod check;
mod conf;
mod del;
mod error;
mod invoke;
mod result;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use cache::CACHE_KIND;
pub use conf::{CniVersion, SUPPORTED_VERSIONS};
pub use error::CniError;

/// How long one plugin call may take before it is killed.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI executor of one node: where configs are read, plugins found and attachments cached.
/// Operations on different sandboxes run concurrently; on one sandbox they are serialized.
#[derive(Debug)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    plugin_timeout: Duration,
    locks: SandboxLocks,
}

/// A CRI port mapping, passed to plugins that declare the `portMappings` capability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// "tcp", "udp" or "sctp" (any case; sent lower-case).
    pub protocol: String,
    /// Empty for every host address.
    pub host_ip: String,
}

/// One pod sandbox to attach to the network.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub sandbox_id: String,
    /// The pod's network namespace (a pinned bind mount, or /proc/<pid>/ns/net).
    pub netns: PathBuf,
    /// The interface to create inside the pod, normally "eth0".
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
    /// The pod's cgroup parent, passed as the `cgroupPath` capability when non-empty.
    pub cgroup_parent: String,
    /// The node's pod CIDRs (comma-separated, from UpdateRuntimeConfig), passed as the
    /// `ipRanges` capability (one range set each) when non-empty.
    pub pod_cidr: String,
}

/// What an ADD gave the pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkStatus {
    /// The pod's addresses, primary first: IPv4 first if any.
    pub ips: Vec<IpAddr>,
    pub interface: String,
    pub network_name: String,
}

impl Cni {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            conf_dir,
            bin_dirs,
            cache_dir,
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
            locks: SandboxLocks::default(),
        }
    }

    /// Replaces the per-plugin-call timeout ([`DEFAULT_PLUGIN_TIMEOUT`]).
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Cni {
        self.plugin_timeout = timeout;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// `Ok(network name)` when a valid config exists and all its plugins are found; `Err(why)`
    /// otherwise (the CRI NetworkReady condition's reason).
    pub fn ready(&self) -> Result<String, String> {
        let conf = conf::load_first(&self.conf_dir).map_err(|e| e.to_string())?;
        conf.find_plugins(&self.bin_dirs)
            .map_err(|e| format!("network {}: {e}", conf.name))?;
        Ok(conf.name)
    }

    /// The status an ADD returned for a sandbox, read from the cache (so after a restart too).
    pub fn cached_status(&self, sandbox_id: &str) -> Option<NetworkStatus> {
        if !conf::is_valid_id(sandbox_id) {
            return None;
        }
        match cache::read(&self.cache_dir, sandbox_id) {
            Ok(rec) => rec.and_then(|r| r.status),
            Err(err) => {
                tracing::warn!(sandbox = sandbox_id, error = %err, "unreadable CNI cache record");
                None
            }
        }
    }

    fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn validate_sandbox_id(id: &str) -> Result<(), CniError> {
    if conf::is_valid_id(id) {
        Ok(())
    } else {
        Err(CniError::InvalidArgument {
            what: "sandbox id",
            reason: format!(
                "{id:?} must start with a letter or digit and hold only letters, digits, \
                 '_', '.' and '-'"
            ),
        })
    }
}

/// Checks an attachment against the spec's parameter rules; returns its netns path as text.
fn validate_attachment(a: &Attachment) -> Result<&str, CniError> {
    validate_sandbox_id(&a.sandbox_id)?;
    conf::validate_ifname(&a.ifname).map_err(|reason| CniError::InvalidArgument {
        what: "interface name",
        reason,
    })?;
    let netns = a.netns.to_str().ok_or_else(|| CniError::InvalidArgument {
        what: "netns",
        reason: format!("{} is not UTF-8", a.netns.display()),
    })?;
    if netns.is_empty() {
        return Err(CniError::InvalidArgument {
            what: "netns",
            reason: "empty".into(),
        });
    }
    for (what, v) in [
        ("pod name", &a.pod_name),
        ("pod namespace", &a.pod_namespace),
        ("pod uid", &a.pod_uid),
    ] {
        if v.contains([';', '=']) || v.chars().any(char::is_control) {
            return Err(CniError::InvalidArgument {
                what,
                reason: format!("{v:?} cannot go into CNI_ARGS (';', '=' or a control character)"),
            });
        }
    }
    Ok(netns)
}

/// `CNI_ARGS` as key/value pairs, in the order the kubelet's dockershim and CRI-O use.
fn cni_args(a: &Attachment) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", a.pod_namespace.as_str()),
        ("K8S_POD_NAME", a.pod_name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", a.sandbox_id.as_str()),
        ("K8S_POD_UID", a.pod_uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn cni_args_env(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The capability arguments this runtime offers (CONVENTIONS.md): `portMappings` (those with
/// a host port; the kubelet also lists container ports that publish nothing) and
/// `cgroupPath`.
fn capability_args(a: &Attachment) -> Map<String, Value> {
    let mut caps = Map::new();
    let ports: Vec<Value> = a
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let mut m = Map::new();
            m.insert("hostPort".into(), p.host_port.into());
            m.insert("containerPort".into(), p.container_port.into());
            m.insert("protocol".into(), p.protocol.to_ascii_lowercase().into());
            if !p.host_ip.is_empty() {
                m.insert("hostIP".into(), p.host_ip.clone().into());
            }
            Value::Object(m)
        })
        .collect();
    caps.insert("portMappings".into(), Value::Array(ports));
    if !a.cgroup_parent.is_empty() {
        caps.insert("cgroupPath".into(), a.cgroup_parent.clone().into());
    }
    let ranges: Vec<Value> = a
        .pod_cidr
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| serde_json::json!([{ "subnet": c }]))
        .collect();
    if !ranges.is_empty() {
        caps.insert("ipRanges".into(), Value::Array(ranges));
    }
    caps
}

/// One async mutex per sandbox id, dropped from the map when nobody holds or waits for it.
#[derive(Debug, Default)]
struct SandboxLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

struct SandboxGuard<'a> {
    locks: &'a SandboxLocks,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SandboxLocks {
    async fn lock(&self, id: &str) -> SandboxGuard<'_> {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        SandboxGuard {
            locks: self,
            id: id.to_string(),
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for SandboxGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            sandbox_id: "abc123".into(),
            netns: "/run/pods/abc123/net".into(),
            ifname: "eth0".into(),
            pod_name: "web-0".into(),
            pod_namespace: "default".into(),
            pod_uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "TCP".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 9090,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into(),
                    host_ip: "127.0.0.1".into(),
                },
            ],
            cgroup_parent: "/kubepods/besteffort/pod1b4e".into(),
            pod_cidr: String::new(),
        }
    }

    #[test]
    fn cni_args_carry_the_pod_identity() {
        let a = attachment();
        assert_eq!(
            cni_args_env(&cni_args(&a)),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
    }

    #[test]
    fn capability_args_skip_ports_without_a_host_port() {
        let caps = capability_args(&attachment());
        assert_eq!(
            Value::Object(caps),
            serde_json::json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
                ],
                "cgroupPath": "/kubepods/besteffort/pod1b4e"
            })
        );
    }

    #[test]
    fn pod_cidrs_become_ip_ranges_one_set_each() {
        let mut a = attachment();
        a.pod_cidr = "10.244.1.0/24, fd00:1::/64".into();
        let caps = capability_args(&a);
        assert_eq!(
            caps["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]])
        );
        a.pod_cidr.clear();
        assert!(!capability_args(&a).contains_key("ipRanges"));
    }

    #[test]
    fn attachments_breaking_the_parameter_rules_are_refused() {
        let mut a = attachment();
        assert_eq!(validate_attachment(&a).unwrap(), "/run/pods/abc123/net");
        a.sandbox_id = "../x".into();
        assert!(matches!(
            validate_attachment(&a),
            Err(CniError::InvalidArgument {
                what: "sandbox id",
                ..
            })
        ));
        let mut a = attachment();
        a.ifname = "eth0:1".into();
        assert!(validate_attachment(&a).is_err());
        let mut a = attachment();
        a.pod_name = "a;b".into();
        assert!(validate_attachment(&a).is_err());
        let mut a = attachment();
        a.netns = PathBuf::new();
        assert!(validate_attachment(&a).is_err());
    }

    #[test]
    fn cached_status_of_an_unknown_sandbox_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let cni = Cni::new(dir.path().into(), vec![], dir.path().join("cache"));
        assert_eq!(cni.cached_status("nothing-here"), None);
        assert_eq!(cni.cached_status("../etc/passwd"), None);
    }

    #[test]
    fn cni_operations_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let cni = Cni::new(PathBuf::new(), vec![], PathBuf::new());
        let a = attachment();
        assert_send(&cni.add(&a));
        assert_send(&cni.del("x", None));
        assert_send(&cni.check(&a));
    }

    #[tokio::test]
    async fn one_sandbox_is_serialized_and_its_lock_is_forgotten_after() {
        let locks = SandboxLocks::default();
        let g = locks.lock("a").await;
        // Another sandbox is not blocked.
        let other = locks.lock("b").await;
        drop(other);
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(waiting.is_err(), "second lock on one sandbox must wait");
        drop(g);
        drop(locks.lock("a").await);
        assert!(locks.0.lock().unwrap().is_empty());
    }
}
