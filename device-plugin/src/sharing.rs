//! Time-slicing: a device shared `n` ways is advertised as `n` devices `<id>::0 ..
//! <id>::<n-1>` (NVIDIA's replica IDs), and allocations of replicas map back to the physical
//! device.

use crate::device::{Device, Inventory};
use crate::error::Error;
use crate::v1beta1;

/// Separates a physical ID from the replica number.
pub const REPLICA_SEPARATOR: &str = "::";

/// How many ways `device` is shared, given the configured default.
pub fn replicas_of(device: &Device, default: u32) -> u32 {
    device.replicas.unwrap_or(default).max(1)
}

pub fn replica_id(id: &str, n: u32) -> String {
    format!("{id}{REPLICA_SEPARATOR}{n}")
}

/// The IDs the kubelet sees for one device.
pub fn advertised_ids(device: &Device, default: u32) -> Vec<String> {
    match replicas_of(device, default) {
        1 => vec![device.id.clone()],
        n => (0..n).map(|i| replica_id(&device.id, i)).collect(),
    }
}

/// The device list ListAndWatch sends: every advertised ID with its device's health and NUMA
/// node.
pub fn advertised(inventory: &Inventory, default: u32) -> Vec<v1beta1::Device> {
    let mut out = Vec::new();
    for d in &inventory.devices {
        let topology = d.numa_node.map(|id| v1beta1::TopologyInfo {
            nodes: vec![v1beta1::NumaNode { id }],
        });
        for id in advertised_ids(d, default) {
            out.push(v1beta1::Device {
                id,
                health: d.health.as_str().into(),
                topology: topology.clone(),
            });
        }
    }
    out
}

/// The physical device behind an advertised ID, or `None` if the ID was never advertised
/// (unknown device, replica number out of range, a replica ID for an unshared device, or a
/// bare ID for a shared one).
pub fn resolve<'a>(inventory: &'a Inventory, default: u32, api_id: &str) -> Option<&'a Device> {
    let (phys, replica) = match api_id.split_once(REPLICA_SEPARATOR) {
        Some((p, n)) => (p, Some(n.parse::<u32>().ok()?)),
        None => (api_id, None),
    };
    let device = inventory.get(phys)?;
    let n = replicas_of(device, default);
    match replica {
        None if n == 1 => Some(device),
        Some(r) if n > 1 && r < n && replica_id(phys, r) == api_id => Some(device),
        _ => None,
    }
}

/// Resolves a container's requested IDs to physical devices, deduplicated in request order.
/// An unknown ID is an [`Error::UnknownDevice`]; with `require_healthy`, an unhealthy device
/// is an [`Error::UnhealthyDevice`].
pub fn resolve_all<'a>(
    inventory: &'a Inventory,
    default: u32,
    resource: &str,
    ids: &[String],
    require_healthy: bool,
) -> Result<Vec<&'a Device>, Error> {
    let mut out: Vec<&Device> = Vec::new();
    for id in ids {
        let device = resolve(inventory, default, id).ok_or_else(|| Error::UnknownDevice {
            id: id.clone(),
            resource: resource.to_string(),
        })?;
        if require_healthy && device.health != crate::device::Health::Healthy {
            return Err(Error::UnhealthyDevice {
                id: id.clone(),
                resource: resource.to_string(),
            });
        }
        if !out.iter().any(|d| d.id == device.id) {
            out.push(device);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Health;

    fn inventory() -> Inventory {
        let dev = |id: &str, replicas| Device {
            id: id.into(),
            health: Health::Healthy,
            numa_node: Some(1),
            nodes: vec![],
            replicas,
        };
        Inventory {
            devices: vec![dev("a", None), dev("b", Some(1))],
            common_nodes: vec![],
        }
    }

    #[test]
    fn replicas_are_advertised_with_their_topology() {
        let list = advertised(&inventory(), 3);
        let ids: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a::0", "a::1", "a::2", "b"]);
        assert_eq!(list[0].topology.as_ref().unwrap().nodes[0].id, 1);
        assert_eq!(list[3].health, "Healthy");
    }

    #[test]
    fn only_advertised_ids_resolve() {
        let inv = inventory();
        assert_eq!(resolve(&inv, 3, "a::2").unwrap().id, "a");
        assert!(resolve(&inv, 3, "a::3").is_none());
        assert!(resolve(&inv, 3, "a").is_none());
        assert!(resolve(&inv, 3, "a::01").is_none());
        assert!(resolve(&inv, 3, "b::0").is_none());
        assert_eq!(resolve(&inv, 3, "b").unwrap().id, "b");
        assert!(resolve(&inv, 3, "c").is_none());
        assert_eq!(resolve(&inv, 1, "a").unwrap().id, "a");
    }

    #[test]
    fn replicas_of_one_device_deduplicate() {
        let inv = inventory();
        let ids: Vec<String> = ["a::0", "b", "a::2"].map(String::from).into();
        let devs = resolve_all(&inv, 3, "r/x", &ids, true).unwrap();
        let ids: Vec<&str> = devs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
