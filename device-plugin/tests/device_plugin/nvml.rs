//! The NVML backend on a machine without an NVIDIA driver (this one).

use std::time::Duration;

use device_plugin::discovery::Discovery;
use device_plugin::discovery::nvml::{NvmlDiscovery, XidFilter};

use crate::harness::{Kubelet, Node, Plugin};

#[test]
fn nvml_discovery_without_a_driver_is_a_no_driver_error() {
    let backend = Box::new(NvmlDiscovery::new(
        "libnvidia-ml.so.1".into(),
        XidFilter::parse("").unwrap(),
    ));
    match backend.start() {
        Err(e @ device_plugin::Error::NoDriver { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no NVIDIA driver on this node"), "{msg}");
            assert!(msg.contains("libnvidia-ml.so.1"), "{msg}");
        }
        Err(e) => panic!("expected NoDriver, got {e}"),
        Ok(_) => panic!("NVML initialised on a machine without a GPU"),
    }
}

#[tokio::test]
async fn nvml_backend_without_a_driver_says_so_and_exits() {
    let node = Node::new();
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let mut plugin = Plugin::spawn_raw(&node, &["--backend", "nvml"]);
    let status = plugin.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1));
    let log = plugin.log();
    assert!(log.contains("no NVIDIA driver on this node"), "{log}");
    assert!(!plugin.socket.exists());
    assert!(!kubelet.registered_within(Duration::from_millis(100)).await);
}

#[tokio::test]
async fn nvml_backend_without_a_driver_waits_when_configured() {
    let node = Node::new();
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let mut plugin =
        Plugin::spawn_raw(&node, &["--backend", "nvml", "--on-missing-driver", "wait"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(plugin.is_running(), "log:\n{}", plugin.log());
    let log = plugin.log();
    assert!(log.contains("waiting for the NVIDIA driver"), "{log}");
    assert!(log.contains("no NVIDIA driver on this node"), "{log}");
    assert!(!kubelet.registered_within(Duration::from_millis(100)).await);
    assert_eq!(plugin.terminate().await.code(), Some(0));
}
