//! The same ADD/CHECK/DEL through Debian's reference `bridge` + `host-local` plugins and
//! through ours, each in its own host namespace: equivalent results and kernel state.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";

/// What an ADD leaves in the kernel, in a form comparable across plugins.
#[derive(Debug, PartialEq)]
struct State {
    bridge_addrs: Vec<String>,
    bridge_up: bool,
    bridge_mtu: Value,
    ports: usize,
    port_hairpin: Value,
    port_mtu: Value,
    pod_addrs: Vec<String>,
    pod_routes: BTreeSet<String>,
    pod_mtu: Value,
    pod_up: bool,
    ip_forward: String,
    allocations: Vec<(String, String)>,
}

fn state(node: &Node, pod: &Path, result: &Value) -> State {
    let br = node.link("cnibr0").unwrap();
    let port_name = result["interfaces"][1]["name"].as_str().unwrap();
    let port = node.link(port_name).unwrap();
    let eth0 = link_in(pod, "eth0").unwrap();
    let dir = node.data.path().join("testnet");
    let allocations = node
        .allocations("testnet")
        .into_iter()
        .map(|ip| {
            let owner = std::fs::read_to_string(dir.join(&ip)).unwrap();
            (ip, owner.replace(|c: char| c.is_ascii_digit(), "#"))
        })
        .collect();
    State {
        bridge_addrs: addrs_in(node.host.path(), "cnibr0"),
        bridge_up: br["flags"].as_array().unwrap().contains(&json!("UP")),
        bridge_mtu: br["mtu"].clone(),
        ports: node.ports("cnibr0").len(),
        port_hairpin: port["linkinfo"]["info_slave_data"]["hairpin"].clone(),
        port_mtu: port["mtu"].clone(),
        pod_addrs: addrs_in(pod, "eth0"),
        pod_routes: routes_in(pod, false).into_iter().collect(),
        pod_mtu: eth0["mtu"].clone(),
        pod_up: eth0["flags"].as_array().unwrap().contains(&json!("UP")),
        ip_forward: node
            .exec("cat", &["/proc/sys/net/ipv4/ip_forward"])
            .trim()
            .to_string(),
        allocations,
    }
}

/// The result without what is random per run (MACs, host veth names, netns paths).
fn normalized(r: &Value) -> Value {
    let mut r = r.clone();
    for i in r["interfaces"].as_array_mut().unwrap() {
        let o = i.as_object_mut().unwrap();
        o.remove("mac");
        o.remove("mtu");
        if o.contains_key("sandbox") {
            o.insert("sandbox".into(), json!("<netns>"));
        }
    }
    r["interfaces"][1]["name"] = json!("<host veth>");
    if r.get("dns") == Some(&json!({})) {
        r.as_object_mut().unwrap().remove("dns");
    }
    r
}

#[test]
fn reference_bridge_and_ours_give_equivalent_results_and_kernel_state() {
    assert!(
        Path::new(REFERENCE_BRIDGE).exists(),
        "Debian containernetworking-plugins is needed"
    );
    let extra = json!({
        "cniVersion": "1.0.0",
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": 1400,
        // (An explicit gw: the reference CHECK cannot match gatewayless routes.)
        "ipam": {"routes": [{"dst": "10.96.0.0/16", "gw": "10.250.50.1"}]},
    });
    let theirs_node = Node::new();
    let ours_node = Node::new();
    let theirs_pod = theirs_node.pod();
    let ours_pod = Pod {
        ns: ours_node.pod().ns,
        id: theirs_pod.id.clone(),
    };
    let mut theirs_conf = theirs_node.conf("10.250.50.0/24", extra.clone());
    theirs_conf["type"] = json!("bridge");
    let mut ours_conf = ours_node.conf("10.250.50.0/24", extra);

    let theirs = theirs_node
        .run_bin(
            REFERENCE_BRIDGE,
            "ADD",
            Some(&theirs_pod),
            "eth0",
            &theirs_conf,
            &[],
        )
        .expect_ok()
        .json();
    let ours = ours_node.add(&ours_pod, &ours_conf);
    assert_eq!(normalized(&ours), normalized(&theirs));

    let theirs_state = state(&theirs_node, theirs_pod.path(), &theirs);
    let ours_state = state(&ours_node, ours_pod.path(), &ours);
    assert_eq!(ours_state, theirs_state);

    // Each plugin's CHECK accepts its own result.
    theirs_conf["prevResult"] = theirs.clone();
    ours_conf["prevResult"] = ours.clone();
    theirs_node
        .run_bin(
            REFERENCE_BRIDGE,
            "CHECK",
            Some(&theirs_pod),
            "eth0",
            &theirs_conf,
            &[],
        )
        .expect_ok();
    ours_node.run("CHECK", &ours_pod, &ours_conf).expect_ok();

    // DEL leaves the same: the bridge with its address, no port, no allocation.
    theirs_node
        .run_bin(
            REFERENCE_BRIDGE,
            "DEL",
            Some(&theirs_pod),
            "eth0",
            &theirs_conf,
            &[],
        )
        .expect_ok();
    ours_node.run("DEL", &ours_pod, &ours_conf).expect_ok();
    for node in [&theirs_node, &ours_node] {
        eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
        assert!(node.allocations("testnet").is_empty());
        assert_eq!(addrs_in(node.host.path(), "cnibr0"), vec!["10.250.50.1/24"]);
    }
    assert!(link_in(theirs_pod.path(), "eth0").is_none());
    eventually("the pod's eth0 is gone", || {
        link_in(ours_pod.path(), "eth0").is_none()
    });
}

#[test]
fn our_store_is_readable_by_reference_host_local() {
    // An address we allocated is seen as taken by host-local, and host-local continues after
    // it: operators can swap plugins without losing track of addresses.
    let node = Node::new();
    let conf = node.conf("10.250.51.0/24", json!({"cniVersion": "1.0.0"}));
    let pod = node.pod();
    node.add(&pod, &conf);
    let other = node.pod();
    let mut theirs = conf.clone();
    theirs["type"] = json!("bridge");
    let r = node
        .run_bin(REFERENCE_BRIDGE, "ADD", Some(&other), "eth0", &theirs, &[])
        .expect_ok()
        .json();
    assert_eq!(r["ips"][0]["address"], "10.250.51.3/24");
    node.run_bin(REFERENCE_BRIDGE, "DEL", Some(&other), "eth0", &theirs, &[])
        .expect_ok();
    assert_eq!(node.allocations("testnet"), vec!["10.250.51.2"]);
}
