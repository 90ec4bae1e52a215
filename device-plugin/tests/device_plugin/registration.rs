//! Registration with the kubelet, re-registration after a kubelet restart, shutdown.

use std::time::Duration;

use device_plugin::v1beta1::{DevicePluginOptions, Empty};
use serde_json::json;

use crate::harness::{Kubelet, Node, Plugin, device};

fn one_device(node: &Node) {
    let n = node.mknod("fake0", 1, 3);
    node.write_devices(&json!({"devices": [device("fake0", &n, 0, "Healthy")]}));
}

#[tokio::test]
async fn registers_with_version_endpoint_resource_and_options() {
    let node = Node::new();
    one_device(&node);
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(
        &node,
        &[
            "--resource-name",
            "example.com/fake",
            "--socket-name",
            "fake-plugin.sock",
            "--pre-start-required",
        ],
    );
    let req = kubelet.next_registration(Duration::from_secs(10)).await;
    assert_eq!(req.version, "v1beta1");
    assert_eq!(req.endpoint, "fake-plugin.sock");
    assert_eq!(req.resource_name, "example.com/fake");
    let want = DevicePluginOptions {
        pre_start_required: true,
        get_preferred_allocation_available: true,
    };
    assert_eq!(req.options, Some(want));
    // The endpoint is served before Register is sent, with the same options.
    assert!(node.plugin_dir.join("fake-plugin.sock").exists());
    let mut client = plugin.client().await;
    let options = client
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(options, want);
}

#[tokio::test]
async fn registration_waits_for_an_absent_kubelet() {
    let node = Node::new();
    one_device(&node);
    let plugin = Plugin::spawn(&node, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !plugin.socket.exists(),
        "the plugin serves only once the kubelet is there"
    );
    assert!(
        plugin.log().contains("waiting for the kubelet"),
        "{}",
        plugin.log()
    );
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let req = kubelet.next_registration(Duration::from_secs(5)).await;
    assert_eq!(req.resource_name, "nvidia.com/gpu");
    assert_eq!(req.endpoint, "nvidia.com-gpu.sock");
}

#[tokio::test]
async fn registers_again_after_the_kubelet_restarts() {
    let node = Node::new();
    one_device(&node);
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &[]);
    kubelet.next_registration(Duration::from_secs(10)).await;

    // The kubelet restarts: it deletes the plugin sockets and re-creates kubelet.sock.
    let mut kubelet = kubelet.restart().await;
    let req = kubelet.next_registration(Duration::from_secs(5)).await;
    assert_eq!(req.endpoint, "nvidia.com-gpu.sock");
    let mut client = plugin.client().await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = stream.message().await.unwrap().unwrap();
    assert_eq!(list.devices[0].id, "fake0");

    // And once more, without the plugin socket being touched: a new kubelet.sock alone.
    kubelet.stop().await;
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    kubelet.next_registration(Duration::from_secs(5)).await;
    // No registration storm afterwards.
    assert!(!kubelet.registered_within(Duration::from_millis(2500)).await);
}

#[tokio::test]
async fn sigterm_removes_the_socket_and_exits_zero() {
    let node = Node::new();
    one_device(&node);
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let mut plugin = Plugin::spawn(&node, &[]);
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();

    let status = plugin.terminate().await;
    assert_eq!(status.code(), Some(0), "log:\n{}", plugin.log());
    assert!(!plugin.socket.exists());
    // The open ListAndWatch stream ended rather than being cut mid-way.
    assert!(matches!(stream.message().await, Ok(None) | Err(_)));
    // The kubelet's socket is not the plugin's to remove; the CDI spec stays for the
    // containers that still reference it.
    assert!(kubelet.socket.exists());
    assert!(node.cdi_dir.join("nvidia.com-gpu.json").exists());
}
