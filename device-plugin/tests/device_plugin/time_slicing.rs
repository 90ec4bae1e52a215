//! Time-slicing: replicas advertised as <id>::<n>, allocated as their physical device.

use std::time::Duration;

use device_plugin::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use serde_json::json;
use tonic::Code;

use crate::harness::{Kubelet, Node, Plugin, device};

#[tokio::test]
async fn time_slicing_advertises_replicas_and_allocates_the_physical_device() {
    let node = Node::new();
    let n0 = node.mknod("gpu0", 1, 3);
    let n1 = node.mknod("gpu1", 1, 5);
    let mut d1 = device("gpu1", &n1, 1, "Healthy");
    d1["replicas"] = json!(3);
    node.write_devices(&json!({"devices": [device("gpu0", &n0, 0, "Healthy"), d1]}));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &["--replicas", "2"]);
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;

    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = stream.message().await.unwrap().unwrap();
    let advertised: Vec<(&str, i64)> = list
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.topology.as_ref().unwrap().nodes[0].id))
        .collect();
    assert_eq!(
        advertised,
        [
            ("gpu0::0", 0),
            ("gpu0::1", 0),
            ("gpu1::0", 1),
            ("gpu1::1", 1),
            ("gpu1::2", 1)
        ]
    );

    let allocate = |ids: &[&str]| AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    };
    let response = client
        .allocate(allocate(&["gpu0::1", "gpu1::2", "gpu0::0"]))
        .await
        .unwrap()
        .into_inner();
    let c = &response.container_responses[0];
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], "gpu0,gpu1");
    let paths: Vec<&str> = c
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths, ["/dev/gpu0", "/dev/gpu1"]);
    let names: Vec<&str> = c.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvidia.com/gpu=gpu0", "nvidia.com/gpu=gpu1"]);

    // Only advertised IDs are accepted.
    for bad in ["gpu0", "gpu0::2", "gpu1::x"] {
        let e = client.allocate(allocate(&[bad])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
    }
}
