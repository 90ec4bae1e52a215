//! ListAndWatch: the device list with health and NUMA topology, and its updates.

use std::time::{Duration, Instant};

use device_plugin::v1beta1::{Empty, ListAndWatchResponse};
use serde_json::json;
use tonic::Streaming;

use crate::harness::{Kubelet, Node, Plugin, device};

async fn next(
    stream: &mut Streaming<ListAndWatchResponse>,
    within: Duration,
) -> ListAndWatchResponse {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no ListAndWatch update within {within:?}"))
        .unwrap()
        .unwrap()
}

fn health(list: &ListAndWatchResponse) -> Vec<(String, String)> {
    list.devices
        .iter()
        .map(|d| (d.id.clone(), d.health.clone()))
        .collect()
}

#[tokio::test]
async fn list_and_watch_sends_devices_with_health_and_numa() {
    let node = Node::new();
    let n0 = node.mknod("gpu0", 1, 3);
    let n1 = node.mknod("gpu1", 1, 5);
    node.write_devices(&json!({"devices": [
        device("gpu0", &n0, 0, "Healthy"),
        device("gpu1", &n1, 1, "Unhealthy"),
    ]}));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &[]);
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = next(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        health(&list),
        [
            ("gpu0".to_string(), "Healthy".to_string()),
            ("gpu1".to_string(), "Unhealthy".to_string())
        ]
    );
    let numa: Vec<i64> = list
        .devices
        .iter()
        .map(|d| d.topology.as_ref().unwrap().nodes[0].id)
        .collect();
    assert_eq!(numa, [0, 1]);
}

#[tokio::test]
async fn health_changes_reach_the_client_within_a_second_and_recover() {
    let node = Node::new();
    let n0 = node.mknod("gpu0", 1, 3);
    let n1 = node.mknod("gpu1", 1, 5);
    let file = |h1: &str| json!({"devices": [device("gpu0", &n0, 0, "Healthy"), device("gpu1", &n1, 0, h1)]});
    node.write_devices(&file("Healthy"));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &[]);
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = next(&mut stream, Duration::from_secs(2)).await;
    assert!(first.devices.iter().all(|d| d.health == "Healthy"));

    // gpu1 goes bad: the file is edited in place.
    let t = Instant::now();
    node.edit_devices(&file("Unhealthy"));
    let list = next(&mut stream, Duration::from_secs(1)).await;
    let took = t.elapsed();
    assert_eq!(list.devices[1].health, "Unhealthy", "{list:?}");
    assert_eq!(list.devices[0].health, "Healthy");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // ... and recovers: the file is replaced by rename.
    let t = Instant::now();
    node.write_devices(&file("Healthy"));
    let list = next(&mut stream, Duration::from_secs(1)).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        list.devices.iter().all(|d| d.health == "Healthy"),
        "{list:?}"
    );

    // A second watcher starts from the current state.
    let mut again = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let list = next(&mut again, Duration::from_secs(2)).await;
    assert!(list.devices.iter().all(|d| d.health == "Healthy"));

    // A broken file changes nothing (the last good list stays), a device added appears.
    std::fs::write(&node.devices_file, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n2 = node.mknod("gpu2", 1, 7);
    node.write_devices(&json!({"devices": [
        device("gpu0", &n0, 0, "Healthy"),
        device("gpu1", &n1, 0, "Healthy"),
        device("gpu2", &n2, 1, "Healthy"),
    ]}));
    let list = next(&mut stream, Duration::from_secs(1)).await;
    let ids: Vec<&str> = list.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["gpu0", "gpu1", "gpu2"]);
}
