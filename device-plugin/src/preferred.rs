//! GetPreferredAllocation's policy: the must-include devices first, then the rest from one
//! NUMA node where possible, and replicas of time-sliced devices spread over the least used
//! physical devices.
//!
//! NUMA nodes are ranked by: most must-include devices on them, then whether they alone can
//! supply the rest, then most candidates, then node number (devices without a node last).
//! Candidates are taken from the best node first, then from the next.

use std::collections::BTreeMap;

use crate::device::{Health, Inventory};
use crate::sharing;

/// The preferred device IDs for one container.
pub fn preferred(
    inventory: &Inventory,
    default_replicas: u32,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::new();
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    if chosen.len() >= size {
        return chosen;
    }

    // Candidates: advertised, healthy, not already chosen, in a stable order.
    struct Candidate<'a> {
        id: &'a str,
        physical: &'a str,
        numa: Option<i64>,
        order: (usize, u32),
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for id in available {
        if chosen.contains(id) || candidates.iter().any(|c| c.id == id) {
            continue;
        }
        let Some(device) = sharing::resolve(inventory, default_replicas, id) else {
            continue;
        };
        if device.health != Health::Healthy {
            continue;
        }
        let replica = id
            .rsplit_once(sharing::REPLICA_SEPARATOR)
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        candidates.push(Candidate {
            id,
            physical: &device.id,
            numa: device.numa_node,
            order: (
                inventory.position(&device.id).unwrap_or(usize::MAX),
                replica,
            ),
        });
    }
    candidates.sort_by_key(|c| c.order);

    // Replicas in use per physical device: advertised minus available, plus chosen.
    let mut used: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &inventory.devices {
        let total = sharing::replicas_of(d, default_replicas) as usize;
        let free = available
            .iter()
            .filter(|id| {
                sharing::resolve(inventory, default_replicas, id).is_some_and(|x| x.id == d.id)
            })
            .count();
        used.insert(&d.id, total.saturating_sub(free));
    }
    let mut must_per_node: BTreeMap<Option<i64>, usize> = BTreeMap::new();
    for id in &chosen {
        if let Some(d) = sharing::resolve(inventory, default_replicas, id) {
            *used.entry(&d.id).or_default() += 1;
            *must_per_node.entry(d.numa_node).or_default() += 1;
        }
    }

    let needed = size - chosen.len();
    let mut per_node: BTreeMap<Option<i64>, usize> = BTreeMap::new();
    for c in &candidates {
        *per_node.entry(c.numa).or_default() += 1;
    }
    let mut nodes: Vec<Option<i64>> = per_node.keys().copied().collect();
    nodes.sort_by_key(|n| {
        let must = must_per_node.get(n).copied().unwrap_or(0);
        let avail = per_node[n];
        (
            std::cmp::Reverse(must),
            std::cmp::Reverse(avail >= needed),
            std::cmp::Reverse(avail),
            n.is_none(),
            *n,
        )
    });

    let mut taken = vec![false; candidates.len()];
    for node in nodes {
        while chosen.len() < size {
            // The least used physical device's first free replica on this node.
            let best = candidates
                .iter()
                .enumerate()
                .filter(|(i, c)| !taken[*i] && c.numa == node)
                .min_by_key(|(_, c)| (used.get(c.physical).copied().unwrap_or(0), c.order));
            let Some((i, c)) = best else { break };
            taken[i] = true;
            *used.entry(c.physical).or_default() += 1;
            chosen.push(c.id.to_string());
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    fn inventory(replicas: Option<u32>) -> Inventory {
        let dev = |id: &str, numa| Device {
            id: id.into(),
            health: Health::Healthy,
            numa_node: numa,
            nodes: vec![],
            replicas,
        };
        Inventory {
            devices: vec![
                dev("d0", Some(0)),
                dev("d1", Some(0)),
                dev("d2", Some(1)),
                dev("d3", Some(1)),
                dev("d4", Some(1)),
            ],
            common_nodes: vec![],
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn must_include_comes_first_and_pulls_its_numa_node() {
        let inv = inventory(None);
        let all = ids(&["d0", "d1", "d2", "d3", "d4"]);
        assert_eq!(
            preferred(&inv, 1, &all, &ids(&["d1"]), 2),
            ids(&["d1", "d0"])
        );
        assert_eq!(
            preferred(&inv, 1, &all, &ids(&["d4"]), 3),
            ids(&["d4", "d2", "d3"])
        );
    }

    #[test]
    fn one_node_that_fits_is_preferred() {
        let inv = inventory(None);
        // Node 0 has only d1 left; node 1 can supply both.
        let avail = ids(&["d1", "d2", "d4"]);
        assert_eq!(preferred(&inv, 1, &avail, &[], 2), ids(&["d2", "d4"]));
        // Nothing fits three on one node: the bigger node first, then the other.
        let avail = ids(&["d0", "d1", "d2", "d3"]);
        assert_eq!(preferred(&inv, 1, &avail, &[], 3), ids(&["d0", "d1", "d2"]));
    }

    #[test]
    fn unknown_and_unhealthy_devices_are_not_preferred() {
        let mut inv = inventory(None);
        inv.devices[0].health = Health::Unhealthy;
        let avail = ids(&["d0", "d1", "zz"]);
        assert_eq!(preferred(&inv, 1, &avail, &[], 2), ids(&["d1"]));
    }

    #[test]
    fn replicas_spread_over_the_least_used_devices() {
        let inv = inventory(Some(2));
        // d0 has one replica in use already (d0::0 is not available).
        let avail = ids(&["d0::1", "d1::0", "d1::1"]);
        assert_eq!(preferred(&inv, 2, &avail, &[], 2), ids(&["d1::0", "d0::1"]));
    }
}
