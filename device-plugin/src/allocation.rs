//! What one container gets for its devices: device nodes, env, read-only driver mounts, CDI
//! device names and annotations, as the configured strategies say.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cdi::{BindMount, qualified_name};
use crate::config::{Config, Strategy};
use crate::device::{Device, DeviceNode, Inventory, on_host};
use crate::error::Error;
use crate::v1beta1::{CdiDevice, ContainerAllocateResponse, DeviceSpec, Mount};

/// The container directory the "volume-mounts" strategy lists devices in (what the NVIDIA
/// container toolkit reads).
pub const VOLUME_MOUNTS_ROOT: &str = "/var/run/nvidia-container-devices";

/// The driver directories mounted into containers: `<driver_root>/{lib64,bin}` at
/// `<driver_container_root>/{lib64,bin}`, each only if it exists.
pub fn driver_mounts(config: &Config) -> Vec<BindMount> {
    let Some(root) = config.driver_root() else {
        return Vec::new();
    };
    ["lib64", "bin"]
        .iter()
        .map(|sub| BindMount {
            host_path: root.join(sub),
            container_path: config.driver_container_root.join(sub),
        })
        .filter(|m| on_host(&config.host_root, &m.host_path).is_dir())
        .collect()
}

/// The CDI spec for `inventory` as configured (kind, host root, driver mounts).
pub fn cdi_spec(config: &Config, inventory: &Inventory) -> crate::cdi::Spec {
    crate::cdi::build_spec(
        config.cdi_kind(),
        inventory,
        &config.host_root,
        &driver_mounts(config),
    )
}

/// The annotation key of the "cdi-annotations" strategy: `<prefix><plugin>_<hash of ids>`,
/// unique per plugin and device set, at most 63 characters after the prefix (the CDI
/// annotation key rules).
pub fn annotation_key(prefix: &str, resource: &str, ids: &[&str]) -> String {
    let hash = ids
        .join(",")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let mut plugin: String = resource
        .chars()
        .map(|c| if c == '/' { '-' } else { c })
        .collect();
    plugin.truncate(63 - 17);
    let plugin = plugin.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}{plugin}_{hash:016x}")
}

fn device_specs(
    host_root: &Path,
    devices: &[&Device],
    common: &[DeviceNode],
) -> Result<Vec<DeviceSpec>, Error> {
    let mut specs: Vec<DeviceSpec> = Vec::new();
    let owned = devices
        .iter()
        .flat_map(|d| d.nodes.iter().map(move |n| (d.id.as_str(), n)));
    let shared = common.iter().map(|n| ("(common)", n));
    for (id, node) in owned.chain(shared) {
        if !on_host(host_root, &node.host_path).exists() {
            if node.optional {
                continue;
            }
            return Err(Error::MissingDeviceNode {
                id: id.to_string(),
                path: node.host_path.clone(),
            });
        }
        let container_path = node.container_path.display().to_string();
        if specs.iter().any(|s| s.container_path == container_path) {
            continue;
        }
        specs.push(DeviceSpec {
            container_path,
            host_path: node.host_path.display().to_string(),
            permissions: node.permissions.clone(),
        });
    }
    Ok(specs)
}

/// The response for one container that gets `devices` (physical, deduplicated, checked).
pub fn container_response(
    config: &Config,
    inventory: &Inventory,
    devices: &[&Device],
) -> Result<ContainerAllocateResponse, Error> {
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let mut response = ContainerAllocateResponse::default();
    if config.pass_device_specs {
        response.devices = device_specs(&config.host_root, devices, &inventory.common_nodes)?;
    }
    let mut envs = HashMap::new();
    if config.has_strategy(Strategy::Envvar) {
        envs.insert(config.visible_devices_env.clone(), ids.join(","));
    }
    if config.has_strategy(Strategy::VolumeMounts) {
        envs.insert(
            config.visible_devices_env.clone(),
            VOLUME_MOUNTS_ROOT.to_string(),
        );
        for id in &ids {
            response.mounts.push(Mount {
                container_path: PathBuf::from(VOLUME_MOUNTS_ROOT)
                    .join(id)
                    .display()
                    .to_string(),
                host_path: "/dev/null".into(),
                read_only: true,
            });
        }
    }
    response.envs = envs;
    for m in driver_mounts(config) {
        response.mounts.push(Mount {
            container_path: m.container_path.display().to_string(),
            host_path: m.host_path.display().to_string(),
            read_only: true,
        });
    }
    let names: Vec<String> = ids
        .iter()
        .map(|id| qualified_name(config.cdi_kind(), id))
        .collect();
    if config.has_strategy(Strategy::CdiCri) {
        response.cdi_devices = names
            .iter()
            .map(|name| CdiDevice { name: name.clone() })
            .collect();
    }
    if config.has_strategy(Strategy::CdiAnnotations) && !names.is_empty() {
        response.annotations.insert(
            annotation_key(&config.cdi_annotation_prefix, &config.resource_name, &ids),
            names.join(","),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Health;

    fn node(host: &str, container: &str, optional: bool) -> DeviceNode {
        DeviceNode {
            host_path: host.into(),
            container_path: container.into(),
            permissions: "rw".into(),
            optional,
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            devices: vec![
                Device {
                    id: "g0".into(),
                    health: Health::Healthy,
                    numa_node: None,
                    nodes: vec![node("/dev/null", "/dev/nvidia0", false)],
                    replicas: None,
                },
                Device {
                    id: "g1".into(),
                    health: Health::Healthy,
                    numa_node: None,
                    nodes: vec![node("/dev/missing-node", "/dev/nvidia1", false)],
                    replicas: None,
                },
            ],
            common_nodes: vec![
                node("/dev/zero", "/dev/nvidiactl", true),
                node("/dev/absent-uvm", "/dev/nvidia-uvm", true),
            ],
        }
    }

    #[test]
    fn envvar_and_cdi_strategies() {
        let config = Config {
            device_list_strategy: vec![
                Strategy::Envvar,
                Strategy::CdiCri,
                Strategy::CdiAnnotations,
            ],
            ..Config::default()
        };
        let inv = inventory();
        let r = container_response(&config, &inv, &[&inv.devices[0]]).unwrap();
        let paths: Vec<&str> = r
            .devices
            .iter()
            .map(|d| d.container_path.as_str())
            .collect();
        assert_eq!(paths, ["/dev/nvidia0", "/dev/nvidiactl"]);
        assert_eq!(r.envs["NVIDIA_VISIBLE_DEVICES"], "g0");
        assert_eq!(r.cdi_devices[0].name, "nvidia.com/gpu=g0");
        let (key, value) = r.annotations.iter().next().unwrap();
        assert!(key.starts_with("cdi.k8s.io/nvidia.com-gpu_"), "{key}");
        assert_eq!(value, "nvidia.com/gpu=g0");
        assert!(r.mounts.is_empty());
    }

    #[test]
    fn volume_mounts_strategy() {
        let config = Config {
            device_list_strategy: vec![Strategy::VolumeMounts],
            ..Config::default()
        };
        let inv = inventory();
        let r = container_response(&config, &inv, &[&inv.devices[0]]).unwrap();
        assert_eq!(r.envs["NVIDIA_VISIBLE_DEVICES"], VOLUME_MOUNTS_ROOT);
        assert_eq!(
            r.mounts[0].container_path,
            "/var/run/nvidia-container-devices/g0"
        );
        assert!(r.cdi_devices.is_empty() && r.annotations.is_empty());
    }

    #[test]
    fn a_missing_required_node_is_refused() {
        let inv = inventory();
        let e = container_response(&Config::default(), &inv, &[&inv.devices[1]]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn annotation_keys_fit_the_cdi_rules() {
        let key = annotation_key("cdi.k8s.io/", &format!("{}/gpu", "a".repeat(80)), &["x"]);
        let name = key.strip_prefix("cdi.k8s.io/").unwrap();
        assert!(name.len() <= 63, "{name}");
        assert_ne!(
            annotation_key("p/", "r/x", &["a", "b"]),
            annotation_key("p/", "r/x", &["a"])
        );
    }
}
