//! Pod sandboxes: pinned namespaces (no pause image), the pod's etc files and /dev/shm, CNI
//! networking, and a per-pod monitor process for the containers.

pub mod files;
pub mod monitor;
pub mod namespaces;
mod run;
mod status;
mod stop;
pub mod userns;

use std::path::PathBuf;

use k8s_cri::v1::PodSandboxConfig;
use serde::{Deserialize, Serialize};

use crate::network::NetworkStatus;
use crate::runtime::Phase;

pub use status::SandboxFilter;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub phase: Phase,
    pub created_at: i64,
    pub pins: namespaces::Pins,
    /// The pod's IPs (primary first), from CNI.
    pub network: Option<NetworkStatus>,
    /// Volatile per-pod dir: etc files, shm, monitor socket.
    pub dir: PathBuf,
    /// cgroupfs path (below each controller's root) the pod's containers go under.
    pub cgroup_parent: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// The PID 1 holding a pod-wide PID namespace, when the pod shares one.
    #[serde(default)]
    pub infra_pid: Option<i32>,
    /// The pod's user namespace mappings (`hostUsers: false`); its pin is `pins.user`.
    #[serde(default)]
    pub userns: Option<userns::Userns>,
}

impl SandboxRecord {
    /// The pod-wide PID namespace containers join, while its PID 1 lives.
    pub fn pid_namespace(&self) -> Option<PathBuf> {
        self.infra_pid
            .filter(|p| monitor::is_pause(*p))
            .map(|p| PathBuf::from(format!("/proc/{p}/ns/pid")))
    }

    pub fn monitor_socket(&self) -> PathBuf {
        self.dir.join("monitor.sock")
    }
    pub fn name(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }
}

/// Turns the kubelet's cgroup parent into a cgroupfs path. The systemd form
/// (`kubepods-burstable-pod1.slice`) is expanded the way runc's systemd driver names it
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`), so both kubelet
/// drivers' names land in the same tree.
pub fn cgroupfs_parent(parent: &str) -> String {
    let parent = parent.trim();
    if parent.is_empty() {
        return "/cri-server".into();
    }
    if let Some(unit) = parent.strip_suffix(".slice")
        && !parent.contains('/')
    {
        let mut path = String::new();
        let mut prefix = String::new();
        for part in unit.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            path.push('/');
            path.push_str(&prefix);
            path.push_str(".slice");
        }
        return path;
    }
    if parent.starts_with('/') {
        parent.to_string()
    } else {
        format!("/{parent}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_slice_names_expand_like_runc() {
        assert_eq!(
            cgroupfs_parent("kubepods-burstable-pod1.slice"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
        );
        assert_eq!(
            cgroupfs_parent("/kubepods/burstable/pod1"),
            "/kubepods/burstable/pod1"
        );
        assert_eq!(cgroupfs_parent(""), "/cri-server");
    }
}
