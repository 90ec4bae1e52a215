//! GetPreferredAllocation: must-include devices and NUMA locality.

use std::time::Duration;

use device_plugin::v1beta1::{ContainerPreferredAllocationRequest, PreferredAllocationRequest};
use serde_json::json;

use crate::harness::{Kubelet, Node, Plugin, device};

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn preferred_allocation_honours_must_include_and_numa() {
    let node = Node::new();
    let mut devices = Vec::new();
    for (i, numa) in [0, 0, 1, 1].into_iter().enumerate() {
        let id = format!("gpu{i}");
        let n = node.mknod(&id, 1, 3);
        devices.push(device(&id, &n, numa, "Healthy"));
    }
    node.write_devices(&json!({ "devices": devices }));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &[]);
    let reg = kubelet.next_registration(Duration::from_secs(10)).await;
    assert!(reg.options.unwrap().get_preferred_allocation_available);
    let mut client = plugin.client().await;
    let all = ids(&["gpu0", "gpu1", "gpu2", "gpu3"]);
    let container =
        |available: Vec<String>, must: &[&str], size| ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: ids(must),
            allocation_size: size,
        };
    let response = client
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![
                // gpu2 must be in: its NUMA node supplies the other one.
                container(all.clone(), &["gpu2"], 2),
                // Node 0 has only gpu1 free; node 1 has both that are needed.
                container(ids(&["gpu1", "gpu2", "gpu3"]), &[], 2),
                // Three do not fit one node: the must-include's node first.
                container(all.clone(), &["gpu3"], 3),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<Vec<String>> = response
        .container_responses
        .into_iter()
        .map(|c| c.device_i_ds)
        .collect();
    assert_eq!(
        got,
        [
            ids(&["gpu2", "gpu3"]),
            ids(&["gpu2", "gpu3"]),
            ids(&["gpu3", "gpu2", "gpu0"]),
        ]
    );
}
