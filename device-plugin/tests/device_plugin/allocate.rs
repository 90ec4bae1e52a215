//! Allocate: device nodes, env, driver mounts, CDI names and the CDI spec file; refusals.

use std::time::Duration;

use device_plugin::v1beta1::{AllocateRequest, ContainerAllocateRequest, PreStartContainerRequest};
use serde_json::json;
use tonic::Code;

use crate::harness::{Kubelet, Node, Plugin, device};

fn request(containers: &[&[&str]]) -> AllocateRequest {
    AllocateRequest {
        container_requests: containers
            .iter()
            .map(|ids| ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn allocate_returns_device_nodes_env_mounts_and_cdi_names() {
    let node = Node::new();
    let n0 = node.mknod("gpu0", 1, 3);
    let n1 = node.mknod("gpu1", 1, 5);
    let ctl = node.mknod("gpuctl", 1, 7);
    let driver = node.dir.path().join("driver");
    std::fs::create_dir_all(driver.join("lib64")).unwrap();
    std::fs::create_dir_all(driver.join("bin")).unwrap();
    node.write_devices(&json!({
        "commonDeviceNodes": [
            {"path": ctl, "containerPath": "/dev/gpuctl"},
            {"path": node.dev_dir.join("not-loaded"), "containerPath": "/dev/gpu-uvm", "optional": true}
        ],
        "devices": [
            device("gpu0", &n0, 0, "Healthy"),
            {"id": "gpu1", "numaNode": 0,
             "deviceNodes": [{"path": n1, "containerPath": "/dev/gpu1", "permissions": "rwm"}]}
        ]
    }));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(
        &node,
        &[
            "--device-list-strategy",
            "envvar,cdi-cri,cdi-annotations",
            "--driver-root",
            driver.to_str().unwrap(),
        ],
    );
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;
    let response = client
        .allocate(request(&[&["gpu0"], &["gpu1", "gpu0"]]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.container_responses.len(), 2);

    let c0 = &response.container_responses[0];
    let devices: Vec<(&str, &str, &str)> = c0
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.host_path.as_str(),
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            ("/dev/gpu0", n0.to_str().unwrap(), "rw"),
            ("/dev/gpuctl", ctl.to_str().unwrap(), "rw"),
        ]
    );
    assert_eq!(c0.envs["NVIDIA_VISIBLE_DEVICES"], "gpu0");
    let mounts: Vec<(String, String, bool)> = c0
        .mounts
        .iter()
        .map(|m| (m.container_path.clone(), m.host_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "/usr/local/nvidia/lib64".to_string(),
                driver.join("lib64").display().to_string(),
                true
            ),
            (
                "/usr/local/nvidia/bin".to_string(),
                driver.join("bin").display().to_string(),
                true
            ),
        ]
    );
    let names: Vec<&str> = c0.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvidia.com/gpu=gpu0"]);
    assert_eq!(c0.annotations.len(), 1);
    let (key, value) = c0.annotations.iter().next().unwrap();
    assert!(key.starts_with("cdi.k8s.io/nvidia.com-gpu_"), "{key}");
    assert_eq!(value, "nvidia.com/gpu=gpu0");

    let c1 = &response.container_responses[1];
    assert_eq!(c1.envs["NVIDIA_VISIBLE_DEVICES"], "gpu1,gpu0");
    assert_eq!(c1.devices[0].permissions, "rwm");
    assert_eq!(c1.devices.len(), 3);
    let names: Vec<&str> = c1.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvidia.com/gpu=gpu1", "nvidia.com/gpu=gpu0"]);
    assert_ne!(c1.annotations.keys().next(), c0.annotations.keys().next());

    // The CDI spec the names resolve against.
    let path = node.cdi_dir.join("nvidia.com-gpu.json");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(spec["cdiVersion"], "0.6.0");
    assert_eq!(spec["kind"], "nvidia.com/gpu");
    assert_eq!(
        spec["devices"][0],
        json!({"name": "gpu0", "containerEdits": {"deviceNodes": [
            {"path": "/dev/gpu0", "hostPath": n0, "type": "c", "major": 1, "minor": 3, "permissions": "rw"}
        ]}})
    );
    assert_eq!(spec["devices"][1]["name"], "gpu1");
    assert_eq!(
        spec["devices"][1]["containerEdits"]["deviceNodes"][0]["permissions"],
        "rwm"
    );
    assert_eq!(
        spec["containerEdits"],
        json!({
            "deviceNodes": [
                {"path": "/dev/gpuctl", "hostPath": ctl, "type": "c", "major": 1, "minor": 7, "permissions": "rw"}
            ],
            "mounts": [
                {"hostPath": driver.join("lib64"), "containerPath": "/usr/local/nvidia/lib64",
                 "options": ["ro", "nosuid", "nodev", "bind"]},
                {"hostPath": driver.join("bin"), "containerPath": "/usr/local/nvidia/bin",
                 "options": ["ro", "nosuid", "nodev", "bind"]}
            ]
        })
    );
    // Written atomically: no temp file left next to it.
    let files: Vec<String> = std::fs::read_dir(&node.cdi_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["nvidia.com-gpu.json"]);
}

#[tokio::test]
async fn allocate_refuses_unknown_and_unhealthy_devices() {
    let node = Node::new();
    let n0 = node.mknod("gpu0", 1, 3);
    let n1 = node.mknod("gpu1", 1, 5);
    node.write_devices(&json!({"devices": [
        device("gpu0", &n0, 0, "Healthy"),
        device("gpu1", &n1, 0, "Unhealthy"),
    ]}));
    let mut kubelet = Kubelet::start(&node.plugin_dir);
    let plugin = Plugin::spawn(&node, &["--pre-start-required"]);
    kubelet.next_registration(Duration::from_secs(10)).await;
    let mut client = plugin.client().await;

    let e = client
        .allocate(request(&[&["gpu0", "gpu7"]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("unknown device \"gpu7\""),
        "{}",
        e.message()
    );

    let e = client.allocate(request(&[&["gpu1"]])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("\"gpu1\"") && e.message().contains("unhealthy"));

    // A refused request allocates nothing: the healthy device alone still works.
    let ok = client.allocate(request(&[&["gpu0"]])).await.unwrap();
    assert_eq!(ok.into_inner().container_responses.len(), 1);

    // PreStartContainer (enabled) succeeds for known IDs and refuses others.
    let pre = |ids: &[&str]| PreStartContainerRequest {
        devices_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    client.pre_start_container(pre(&["gpu0"])).await.unwrap();
    let e = client
        .pre_start_container(pre(&["nope"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}
