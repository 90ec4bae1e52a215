//! The devices a discovery backend finds: physical devices with their health, NUMA node and
//! device nodes, plus the nodes every allocation needs (for GPUs `/dev/nvidiactl` and friends).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Device health as the kubelet spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Unhealthy => "Unhealthy",
        }
    }
}

/// A device node to expose in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: PathBuf,
    /// Cgroup permissions: some of `r`, `w`, `m`.
    pub permissions: String,
    /// Exposed only when it exists (e.g. `/dev/nvidia-uvm` before the module is loaded).
    pub optional: bool,
}

/// What `stat` says about a device node on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// `"c"` (char) or `"b"` (block); `None` for anything else (a regular file in tests).
    pub kind: Option<&'static str>,
    pub major: u64,
    pub minor: u64,
}

impl DeviceNode {
    /// Stats the node under `host_root` (the host's `/` as this process sees it).
    pub fn stat(&self, host_root: &Path) -> Option<NodeInfo> {
        let meta = std::fs::metadata(on_host(host_root, &self.host_path)).ok()?;
        let ft = meta.file_type();
        let kind = if ft.is_char_device() {
            Some("c")
        } else if ft.is_block_device() {
            Some("b")
        } else {
            None
        };
        let rdev = meta.rdev();
        Some(NodeInfo {
            kind,
            major: libc::major(rdev) as u64,
            minor: libc::minor(rdev) as u64,
        })
    }
}

/// `path` (absolute, on the host) as seen from a process whose view of the host's `/` is
/// `host_root`.
pub fn on_host(host_root: &Path, path: &Path) -> PathBuf {
    if host_root == Path::new("/") {
        return path.to_path_buf();
    }
    host_root.join(path.strip_prefix("/").unwrap_or(path))
}

/// One physical device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its ID: the UUID for a GPU, the name from the device file otherwise.
    pub id: String,
    pub health: Health,
    pub numa_node: Option<i64>,
    /// Nodes of this device only (for a GPU `/dev/nvidia<minor>`).
    pub nodes: Vec<DeviceNode>,
    /// Time-slicing replicas of this device; `None` takes the configured default.
    pub replicas: Option<u32>,
}

/// Everything a backend found, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub devices: Vec<Device>,
    /// Nodes added to every allocation (and to the CDI spec's top-level edits).
    pub common_nodes: Vec<DeviceNode>,
}

impl Inventory {
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Position of a device in discovery order (stable tie-breaker for preferences).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.id == id)
    }
}

/// Whether `id` is usable as a device ID, a CDI device name and an element of a
/// comma-separated list: ASCII letters and digits first and last, `-`, `_`, `.` between.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_cdi_names() {
        assert!(valid_id("GPU-8c6d4f1e-0000-1111-2222-333344445555"));
        assert!(valid_id("fake0"));
        assert!(valid_id("a.b_c-d"));
        assert!(!valid_id(""));
        assert!(!valid_id("-a"));
        assert!(!valid_id("a::1"));
        assert!(!valid_id("a,b"));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn host_paths_are_rooted_at_host_root() {
        assert_eq!(
            on_host(Path::new("/"), Path::new("/dev/nvidia0")),
            PathBuf::from("/dev/nvidia0")
        );
        assert_eq!(
            on_host(Path::new("/host"), Path::new("/dev/nvidia0")),
            PathBuf::from("/host/dev/nvidia0")
        );
    }

    #[test]
    fn stat_reports_char_devices() {
        let node = DeviceNode {
            host_path: "/dev/null".into(),
            container_path: "/dev/null".into(),
            permissions: "rw".into(),
            optional: false,
        };
        let info = node.stat(Path::new("/")).unwrap();
        assert_eq!((info.kind, info.major, info.minor), (Some("c"), 1, 3));
    }
}
