//! Malformed environments and configurations get the spec's error codes, as error JSON on
//! stdout with a non-zero exit, and leave nothing behind.

mod common;

use common::*;
use serde_json::json;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn missing_or_unknown_command_is_code_4() {
    let node = Node::new();
    let conf = node.conf("10.250.30.0/24", json!({}));
    let stdin = serde_json::to_vec(&conf).unwrap();
    let run = node.run_raw(PLUGIN, &env(&[]), &stdin);
    assert_eq!(run.code(), 4);
    let run = node.run_raw(PLUGIN, &env(&[("CNI_COMMAND", "FROB")]), &stdin);
    assert_eq!(run.code(), 4);
}

#[test]
fn missing_or_invalid_attachment_variables_are_code_4() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.31.0/24", json!({}));
    for (var, value) in [
        ("CNI_CONTAINERID", ""),
        ("CNI_CONTAINERID", "bad/id"),
        ("CNI_NETNS", ""),
        ("CNI_IFNAME", ""),
        ("CNI_IFNAME", "much-too-long-ifname"),
        ("CNI_PATH", ""),
        ("CNI_ARGS", "novalue"),
    ] {
        let run = node.run_bin(PLUGIN, "ADD", Some(&pod), "eth0", &conf, &[(var, value)]);
        assert_eq!(run.code(), 4, "{var}={value:?}: {run:?}");
    }
    assert!(node.allocations("testnet").is_empty());
    assert!(node.link("cnibr0").is_none());
}

#[test]
fn malformed_json_is_code_6() {
    let node = Node::new();
    let pod = node.pod();
    let env = env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", &pod.id),
        ("CNI_NETNS", &pod.path().display().to_string()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REFERENCE_DIR),
    ]);
    let run = node.run_raw(PLUGIN, &env, b"{\"cniVersion\": \"1.0.0\", ");
    assert_eq!(run.code(), 6);
    assert!(!run.stderr.is_empty(), "logs go to stderr");
}

#[test]
fn invalid_configs_are_code_7() {
    let node = Node::new();
    let pod = node.pod();
    for extra in [
        json!({"name": "bad name"}),
        json!({"vlan": 5000}),
        json!({"mtu": "big"}),
        json!({"bridge": "a-bridge-name-too-long"}),
        json!({"ipam": {"ranges": [[{"subnet": "10.250.32.0/24", "rangeStart": "10.250.33.1"}]]}}),
        json!({"ipam": {"ranges": [[{"subnet": "not-a-subnet"}]]}}),
        json!({"ipam": {"type": "no-such-ipam"}}),
        json!({"runtimeConfig": {"mac": "zz:zz"}}),
    ] {
        let conf = node.conf("10.250.32.0/24", extra.clone());
        let run = node.run("ADD", &pod, &conf);
        assert_eq!(run.code(), 7, "{extra}: {run:?}");
    }
    assert!(node.allocations("testnet").is_empty());
    assert!(link_in(pod.path(), "eth0").is_none());
}

#[test]
fn unsupported_version_is_code_1() {
    let node = Node::new();
    let pod = node.pod();
    for v in ["0.1.0", "2.0.0"] {
        let conf = node.conf("10.250.34.0/24", json!({"cniVersion": v}));
        assert_eq!(node.run("ADD", &pod, &conf).code(), 1, "{v}");
    }
    let mut conf = node.conf("10.250.34.0/24", json!({}));
    conf.as_object_mut().unwrap().remove("cniVersion");
    assert_eq!(node.run("ADD", &pod, &conf).code(), 1);
}

#[test]
fn check_needs_a_prev_result_and_version_0_4_or_later() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.35.0/24", json!({}));
    assert_eq!(node.run("CHECK", &pod, &conf).code(), 7);
    let mut old = node.conf("10.250.35.0/24", json!({"cniVersion": "0.3.1"}));
    old["prevResult"] = json!({"cniVersion": "0.3.1"});
    assert_eq!(node.run("CHECK", &pod, &old).code(), 1);
}

#[test]
fn add_into_a_missing_netns_fails_and_keeps_no_address() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.36.0/24", json!({}));
    let run = node.run_bin(
        PLUGIN,
        "ADD",
        Some(&pod),
        "eth0",
        &conf,
        &[("CNI_NETNS", "/run/cni-bridge-test/does-not-exist")],
    );
    assert_eq!(run.code(), 5, "{run:?}");
    assert!(node.allocations("testnet").is_empty());
}

#[test]
fn add_when_the_pod_interface_exists_fails_and_rolls_back() {
    let node = Node::new();
    let pod = node.pod();
    exec_in(
        pod.path(),
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
        ],
    );
    let conf = node.conf("10.250.37.0/24", json!({}));
    let run = node.run("ADD", &pod, &conf);
    assert!(!run.ok);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{run:?}"
    );
    assert!(node.allocations("testnet").is_empty());
    assert!(node.ports("cnibr0").is_empty());
}

#[test]
fn error_output_is_the_spec_json_with_the_config_version() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf(
        "10.250.38.0/24",
        json!({"cniVersion": "0.4.0", "vlan": 9999}),
    );
    let run = node.run("ADD", &pod, &conf);
    let v = run.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["code"], 7);
    assert!(v["msg"].as_str().unwrap().contains("VLAN"));
    assert_eq!(run.stdout.lines().count(), 1);
}
