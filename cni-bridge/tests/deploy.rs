//! The shipped conflist (`deploy/cni/10-cni-bridge.conflist`) runs as a runtime runs it: our
//! plugin, then Debian's `portmap` and `loopback` with the previous result, and DEL in reverse.

mod common;

use common::*;
use serde_json::{Value, json};

fn conflist() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/cni/10-cni-bridge.conflist"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the conflist"))
        .expect("the conflist is JSON")
}

/// Plugin `i` of the list as the runtime passes it: with the list's name and version.
fn plugin_conf(list: &Value, i: usize, node: &Node, prev: Option<&Value>) -> Value {
    let mut c = list["plugins"][i].clone();
    c["name"] = list["name"].clone();
    c["cniVersion"] = list["cniVersion"].clone();
    if c["type"] == "cni-bridge" {
        // Keep the test inside its namespace and temp dir: a 10.x subnet of its own.
        c["ipam"]["dataDir"] = json!(node.data.path());
        c["ipam"]["ranges"] = json!([[{"subnet": "10.250.70.0/24"}]]);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

fn bin(c: &Value) -> String {
    match c["type"].as_str().unwrap() {
        "cni-bridge" => PLUGIN.to_string(),
        other => format!("{REFERENCE_DIR}/{other}"),
    }
}

#[test]
fn deploy_conflist_chain_adds_and_deletes() {
    let list = conflist();
    assert_eq!(list["plugins"][0]["type"], "cni-bridge");
    let node = Node::new();
    let pod = node.pod();
    let mut prev: Option<Value> = None;
    for i in 0..list["plugins"].as_array().unwrap().len() {
        let c = plugin_conf(&list, i, &node, prev.as_ref());
        let r = node
            .run_bin(&bin(&c), "ADD", Some(&pod), "eth0", &c, &[])
            .expect_ok()
            .json();
        prev = Some(r);
    }
    let result = prev.unwrap();
    assert_eq!(result["ips"][0]["address"], "10.250.70.2/24");
    assert!(
        link_in(pod.path(), "lo").unwrap()["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("UP"))
    );
    assert_eq!(addrs_in(pod.path(), "eth0"), vec!["10.250.70.2/24"]);

    for i in (0..list["plugins"].as_array().unwrap().len()).rev() {
        let c = plugin_conf(&list, i, &node, Some(&result));
        node.run_bin(&bin(&c), "DEL", Some(&pod), "eth0", &c, &[])
            .expect_ok();
    }
    assert!(node.allocations("cni-bridge").is_empty());
    eventually("the bridge has no port", || node.ports("cni0").is_empty());
}
