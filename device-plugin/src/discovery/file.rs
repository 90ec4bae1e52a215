//! The file backend: devices and their device nodes described in a JSON file, re-read when
//! it changes (inotify wake-ups, and a poll of its inode/size/mtime every 500 ms). Used by
//! the tests and for device classes without a vendor library.
//!
//! ```json
//! {
//!   "commonDeviceNodes": [{"path": "/dev/fakectl", "optional": true}],
//!   "devices": [
//!     {"id": "fake0", "health": "Healthy", "numaNode": 0, "replicas": 2,
//!      "deviceNodes": [{"path": "/dev/fake0", "containerPath": "/dev/fake0",
//!                       "permissions": "rw"}]}
//!   ]
//! }
//! ```
//! A missing file means no devices (until it appears). A file that does not parse is an
//! error at start, and later keeps the last good inventory (logged).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::device::{Device, DeviceNode, Health, Inventory, valid_id};
use crate::discovery::Discovery;
use crate::error::Error;
use crate::fswatch;

const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeviceFile {
    #[serde(default)]
    devices: Vec<FileDevice>,
    #[serde(default)]
    common_device_nodes: Vec<FileNode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDevice {
    id: String,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    numa_node: Option<i64>,
    #[serde(default)]
    device_nodes: Vec<FileNode>,
    #[serde(default)]
    replicas: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
enum FileHealth {
    #[default]
    #[serde(alias = "healthy")]
    Healthy,
    #[serde(alias = "unhealthy")]
    Unhealthy,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileNode {
    path: PathBuf,
    #[serde(default)]
    container_path: Option<PathBuf>,
    #[serde(default = "default_permissions")]
    permissions: String,
    #[serde(default)]
    optional: bool,
}

fn default_permissions() -> String {
    "rw".into()
}

impl FileNode {
    fn into_node(self, path: &Path) -> Result<DeviceNode, Error> {
        let invalid = |reason: String| Error::InvalidDeviceFile {
            path: path.to_path_buf(),
            reason,
        };
        let container_path = self.container_path.unwrap_or_else(|| self.path.clone());
        if !self.path.is_absolute() || !container_path.is_absolute() {
            return Err(invalid(format!(
                "device node {} -> {}: paths must be absolute",
                self.path.display(),
                container_path.display()
            )));
        }
        let p = &self.permissions;
        if p.is_empty() || !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(format!(
                "device node {}: permissions {p:?} are not some of \"rwm\"",
                self.path.display()
            )));
        }
        Ok(DeviceNode {
            host_path: self.path,
            container_path,
            permissions: self.permissions,
            optional: self.optional,
        })
    }
}

/// Parses and checks a device file's text.
pub fn parse(text: &str, path: &Path) -> Result<Inventory, Error> {
    let file: DeviceFile = serde_json::from_str(text).map_err(|source| Error::ParseDeviceFile {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| Error::InvalidDeviceFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut inventory = Inventory::default();
    for n in file.common_device_nodes {
        inventory.common_nodes.push(n.into_node(path)?);
    }
    for d in file.devices {
        if !valid_id(&d.id) {
            return Err(invalid(format!(
                "device id {:?}: letters, digits, '-', '_' and '.' only, alphanumeric at \
                 both ends",
                d.id
            )));
        }
        if inventory.get(&d.id).is_some() {
            return Err(invalid(format!("device id {:?} appears twice", d.id)));
        }
        if d.replicas == Some(0) {
            return Err(invalid(format!("device {:?}: replicas must be >= 1", d.id)));
        }
        let nodes = d
            .device_nodes
            .into_iter()
            .map(|n| n.into_node(path))
            .collect::<Result<_, _>>()?;
        inventory.devices.push(Device {
            id: d.id,
            health: match d.health {
                FileHealth::Healthy => Health::Healthy,
                FileHealth::Unhealthy => Health::Unhealthy,
            },
            numa_node: d.numa_node.filter(|n| *n >= 0),
            nodes,
            replicas: d.replicas,
        });
    }
    Ok(inventory)
}

/// Reads the device file; `None` if it does not exist.
pub fn load(path: &Path) -> Result<Option<Inventory>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadDeviceFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What changes when the file is rewritten or replaced.
type Signature = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn signature(path: &Path) -> Signature {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

pub struct FileDiscovery {
    path: PathBuf,
}

impl FileDiscovery {
    pub fn new(path: PathBuf) -> FileDiscovery {
        FileDiscovery { path }
    }
}

impl Discovery for FileDiscovery {
    fn name(&self) -> &'static str {
        "file"
    }

    fn start(self: Box<Self>) -> Result<watch::Receiver<Inventory>, Error> {
        let path = self.path;
        let sig = signature(&path);
        let initial = match load(&path)? {
            Some(inv) => inv,
            None => {
                warn!(file = %path.display(), "device file does not exist: no devices until it does");
                Inventory::default()
            }
        };
        info!(file = %path.display(), devices = initial.devices.len(), "read device file");
        let (tx, rx) = watch::channel(initial);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let name: OsString = path.file_name().unwrap_or_default().to_owned();
        tokio::spawn(async move {
            let mut fs_watch = fswatch::watch_dir(&dir, vec![name.clone()]);
            let mut sig = sig;
            let mut last_error = String::new();
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = fswatch::changed(&mut fs_watch) => {
                        // Let a writer finish its burst of events.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ = tokio::time::sleep(POLL) => {
                        if fs_watch.is_none() {
                            fs_watch = fswatch::watch_dir(&dir, vec![name.clone()]);
                        }
                    }
                }
                let now = signature(&path);
                if now == sig {
                    continue;
                }
                sig = now;
                let next = match load(&path) {
                    Ok(Some(inv)) => inv,
                    Ok(None) => {
                        warn!(file = %path.display(), "device file removed: no devices");
                        Inventory::default()
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if msg != last_error {
                            warn!(error = %msg, "device file not usable; keeping the last good one");
                            last_error = msg;
                        }
                        continue;
                    }
                };
                last_error.clear();
                tx.send_if_modified(|cur| {
                    if *cur == next {
                        return false;
                    }
                    for d in &next.devices {
                        match cur.get(&d.id) {
                            Some(old) if old.health != d.health => {
                                info!(device = %d.id, health = d.health.as_str(), "device health changed")
                            }
                            None => info!(device = %d.id, "device added"),
                            _ => {}
                        }
                    }
                    for d in &cur.devices {
                        if next.get(&d.id).is_none() {
                            info!(device = %d.id, "device removed");
                        }
                    }
                    *cur = next;
                    true
                });
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_nodes_and_defaults() {
        let inv = parse(
            r#"{
              "commonDeviceNodes": [{"path": "/dev/ctl", "optional": true}],
              "devices": [
                {"id": "a", "numaNode": 1, "replicas": 2,
                 "deviceNodes": [{"path": "/tmp/x/a", "containerPath": "/dev/a", "permissions": "rwm"}]},
                {"id": "b", "health": "Unhealthy", "numaNode": -1}
              ]
            }"#,
            Path::new("t.json"),
        )
        .unwrap();
        assert_eq!(
            inv.common_nodes[0].container_path,
            PathBuf::from("/dev/ctl")
        );
        assert_eq!(inv.common_nodes[0].permissions, "rw");
        assert!(inv.common_nodes[0].optional);
        let a = inv.get("a").unwrap();
        assert_eq!(a.health, Health::Healthy);
        assert_eq!(a.numa_node, Some(1));
        assert_eq!(a.replicas, Some(2));
        assert_eq!(a.nodes[0].host_path, PathBuf::from("/tmp/x/a"));
        assert_eq!(a.nodes[0].container_path, PathBuf::from("/dev/a"));
        let b = inv.get("b").unwrap();
        assert_eq!((b.health, b.numa_node), (Health::Unhealthy, None));
    }

    #[test]
    fn the_deploy_example_parses() {
        let text = include_str!("../../../deploy/device-plugin/devices.example.json");
        let inv = parse(text, Path::new("devices.example.json")).unwrap();
        assert_eq!(inv.devices.len(), 2);
        assert_eq!(inv.devices[1].replicas, Some(2));
    }

    #[test]
    fn refuses_bad_files() {
        for text in [
            r#"{"devices": [{"id": "a::1"}]}"#,
            r#"{"devices": [{"id": "a"}, {"id": "a"}]}"#,
            r#"{"devices": [{"id": "a", "deviceNodes": [{"path": "rel"}]}]}"#,
            r#"{"devices": [{"id": "a", "deviceNodes": [{"path": "/d", "permissions": "x"}]}]}"#,
            r#"{"devices": [{"id": "a", "replicas": 0}]}"#,
            r#"{"devices": [{"id": "a", "colour": "red"}]}"#,
            r#"{"devices": "#,
        ] {
            assert!(parse(text, Path::new("t.json")).is_err(), "{text}");
        }
    }
}
