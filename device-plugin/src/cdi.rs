//! The CDI (Container Device Interface) spec file this plugin writes, so that a CDI-aware
//! runtime resolves `<kind>=<device id>` (e.g. `nvidia.com/gpu=GPU-…`): one CDI device per
//! physical device with its device nodes, and top-level edits (common nodes, driver mounts)
//! applied once whenever any of them is requested. Written atomically, and only when the
//! content changes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::device::{DeviceNode, Inventory};
use crate::error::Error;

/// The CDI spec version written (it has `hostPath` on device nodes).
pub const CDI_VERSION: &str = "0.6.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<CdiDevice>,
    #[serde(default, skip_serializing_if = "ContainerEdits::is_empty")]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    pub name: String,
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<CdiDeviceNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<CdiMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<CdiHook>,
}

impl ContainerEdits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.mounts.is_empty()
            && self.hooks.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDeviceNode {
    /// Path in the container.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiHook {
    pub hook_name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// `vendor.com/class=name`.
pub fn qualified_name(kind: &str, id: &str) -> String {
    format!("{kind}={id}")
}

/// `vendor.com/class` -> `vendor.com-class.json`.
pub fn spec_file_name(kind: &str) -> String {
    format!("{}.json", kind.replace('/', "-"))
}

/// A host directory mounted read-only into containers (the driver's lib64/ and bin/).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
}

fn node_edit(node: &DeviceNode, host_root: &Path) -> Option<CdiDeviceNode> {
    let info = node.stat(host_root);
    if info.is_none() && node.optional {
        return None;
    }
    let kind = info.and_then(|i| i.kind);
    Some(CdiDeviceNode {
        path: node.container_path.display().to_string(),
        host_path: Some(node.host_path.display().to_string()),
        kind: kind.map(str::to_string),
        major: kind.and(info.map(|i| i.major)),
        minor: kind.and(info.map(|i| i.minor)),
        permissions: Some(node.permissions.clone()),
    })
}

/// The spec for every device of `inventory` (healthy or not: the kubelet decides what is
/// allocated, the spec only says how to expose it).
pub fn build_spec(
    kind: &str,
    inventory: &Inventory,
    host_root: &Path,
    mounts: &[BindMount],
) -> Spec {
    let devices = inventory
        .devices
        .iter()
        .map(|d| CdiDevice {
            name: d.id.clone(),
            container_edits: ContainerEdits {
                device_nodes: d
                    .nodes
                    .iter()
                    .filter_map(|n| node_edit(n, host_root))
                    .collect(),
                ..ContainerEdits::default()
            },
        })
        .collect();
    let container_edits = ContainerEdits {
        device_nodes: inventory
            .common_nodes
            .iter()
            .filter_map(|n| node_edit(n, host_root))
            .collect(),
        mounts: mounts
            .iter()
            .map(|m| CdiMount {
                host_path: m.host_path.display().to_string(),
                container_path: m.container_path.display().to_string(),
                options: ["ro", "nosuid", "nodev", "bind"].map(String::from).into(),
            })
            .collect(),
        ..ContainerEdits::default()
    };
    Spec {
        cdi_version: CDI_VERSION.into(),
        kind: kind.into(),
        devices,
        container_edits,
    }
}

/// Writes one kind's spec file into a CDI spec dir.
#[derive(Debug)]
pub struct SpecWriter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl SpecWriter {
    pub fn new(dir: &Path, kind: &str) -> SpecWriter {
        SpecWriter {
            path: dir.join(spec_file_name(kind)),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `spec` unless the file already holds exactly it: to a hidden temp file (whose
    /// extension CDI readers ignore), fsynced, renamed over the spec file, dir fsynced.
    /// A spec without devices is not valid CDI: the file is removed instead. Returns whether
    /// the file changed.
    pub fn write(&self, spec: &Spec) -> Result<bool, Error> {
        let err = |source| Error::WriteCdiSpec {
            path: self.path.clone(),
            source,
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if spec.devices.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(err(e)),
            };
        }
        let mut text = serde_json::to_vec_pretty(spec).expect("a CDI spec serialises");
        text.push(b'\n');
        if std::fs::read(&self.path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(err)?;
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, Health};

    fn node(host: &str, container: &str, optional: bool) -> DeviceNode {
        DeviceNode {
            host_path: host.into(),
            container_path: container.into(),
            permissions: "rw".into(),
            optional,
        }
    }

    #[test]
    fn spec_has_nodes_with_numbers_and_driver_mounts() {
        let inv = Inventory {
            devices: vec![Device {
                id: "GPU-1".into(),
                health: Health::Healthy,
                numa_node: None,
                nodes: vec![node("/dev/null", "/dev/nvidia0", false)],
                replicas: None,
            }],
            common_nodes: vec![
                node("/dev/zero", "/dev/nvidiactl", true),
                node("/dev/does-not-exist", "/dev/nvidia-uvm", true),
            ],
        };
        let mounts = [BindMount {
            host_path: "/opt/nvidia/lib64".into(),
            container_path: "/usr/local/nvidia/lib64".into(),
        }];
        let spec = build_spec("nvidia.com/gpu", &inv, Path::new("/"), &mounts);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["cdiVersion"], "0.6.0");
        assert_eq!(json["kind"], "nvidia.com/gpu");
        assert_eq!(json["devices"][0]["name"], "GPU-1");
        let n = &json["devices"][0]["containerEdits"]["deviceNodes"][0];
        assert_eq!(n["path"], "/dev/nvidia0");
        assert_eq!(n["hostPath"], "/dev/null");
        assert_eq!(n["type"], "c");
        assert_eq!(
            (n["major"].as_u64(), n["minor"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(n["permissions"], "rw");
        let top = &json["containerEdits"];
        assert_eq!(top["deviceNodes"].as_array().unwrap().len(), 1);
        assert_eq!(top["deviceNodes"][0]["minor"], 5);
        assert_eq!(top["mounts"][0]["containerPath"], "/usr/local/nvidia/lib64");
        assert_eq!(
            top["mounts"][0]["options"],
            serde_json::json!(["ro", "nosuid", "nodev", "bind"])
        );
        assert!(top.get("hooks").is_none());
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SpecWriter::new(&dir.path().join("cdi"), "example.com/dev");
        assert_eq!(writer.path(), dir.path().join("cdi/example.com-dev.json"));
        let inv = Inventory {
            devices: vec![Device {
                id: "d0".into(),
                health: Health::Healthy,
                numa_node: None,
                nodes: vec![node("/dev/null", "/dev/d0", false)],
                replicas: None,
            }],
            common_nodes: vec![],
        };
        let spec = build_spec("example.com/dev", &inv, Path::new("/"), &[]);
        assert!(writer.write(&spec).unwrap());
        assert!(!writer.write(&spec).unwrap());
        let back: Spec = serde_json::from_slice(&std::fs::read(writer.path()).unwrap()).unwrap();
        assert_eq!(back, spec);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("cdi"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["example.com-dev.json"]);
        // No devices: not a valid spec, so no file.
        let empty = build_spec(
            "example.com/dev",
            &Inventory::default(),
            Path::new("/"),
            &[],
        );
        assert!(writer.write(&empty).unwrap());
        assert!(!writer.path().exists());
    }
}
