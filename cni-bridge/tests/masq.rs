//! ipMasq: nftables state in the test's host namespace.

mod common;

use common::*;
use serde_json::{Value, json};

/// The `inet cni_bridge` table as `nft -j` prints it (an empty list when absent).
fn table(node: &Node) -> Vec<Value> {
    if !try_exec_in(
        node.host.path(),
        "nft",
        &["list", "table", "inet", "cni_bridge"],
    ) {
        return vec![];
    }
    let out = node.exec("nft", &["-j", "list", "table", "inet", "cni_bridge"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["nftables"].as_array().unwrap().clone()
}

fn rules(t: &[Value]) -> Vec<&Value> {
    t.iter().filter_map(|o| o.get("rule")).collect()
}

fn set_elements(t: &[Value], family_set_prefix: &str) -> Vec<String> {
    t.iter()
        .filter_map(|o| o.get("set"))
        .filter(|s| s["name"].as_str().unwrap().starts_with(family_set_prefix))
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ip_masq_adds_one_rule_and_the_pod_address_and_del_removes_the_address() {
    assert!(nft_available(), "nft is needed (Debian package nftables)");
    let node = Node::new();
    let conf = node.conf("10.250.40.0/24", json!({"ipMasq": true}));
    let pods: Vec<Pod> = (0..2).map(|_| node.pod()).collect();
    for p in &pods {
        node.add(p, &conf);
    }
    let t = table(&node);
    let found = rules(&t);
    assert_eq!(
        found.len(),
        1,
        "one rule per network, however many pods: {t:?}"
    );
    let rule = serde_json::to_string(found[0]).unwrap();
    assert!(
        rule.contains("masquerade") && rule.contains("10.250.40.0"),
        "{rule}"
    );
    let chain = t.iter().find_map(|o| o.get("chain")).unwrap();
    assert_eq!(chain["hook"], "postrouting");
    assert_eq!(chain["type"], "nat");
    let mut elems = set_elements(&t, "pods4_");
    elems.sort();
    assert_eq!(elems, vec!["10.250.40.2", "10.250.40.3"]);

    node.run("DEL", &pods[0], &conf).expect_ok();
    eventually("the first pod's entry is gone", || {
        set_elements(&table(&node), "pods4_") == vec!["10.250.40.3"]
    });
    node.run("DEL", &pods[0], &conf).expect_ok();
    node.run("DEL", &pods[1], &conf).expect_ok();
    eventually("no entry is left", || {
        set_elements(&table(&node), "pods4_").is_empty()
    });
    // The rule stays for the network (one per network, not per pod).
    assert_eq!(rules(&table(&node)).len(), 1);
}

#[test]
fn sync_link_delete_removes_the_masquerade_entry_before_del_returns() {
    let node = Node::new();
    let conf = node.conf(
        "10.250.43.0/24",
        json!({"ipMasq": true, "syncLinkDelete": true}),
    );
    let pod = node.pod();
    node.add(&pod, &conf);
    assert_eq!(set_elements(&table(&node), "pods4_"), vec!["10.250.43.2"]);
    node.run("DEL", &pod, &conf).expect_ok();
    assert!(set_elements(&table(&node), "pods4_").is_empty());
}

#[test]
fn gc_removes_masquerade_entries_of_released_pods() {
    assert!(nft_available(), "nft is needed (Debian package nftables)");
    let node = Node::new();
    let conf = node.conf("10.250.41.0/24", json!({"ipMasq": true}));
    let pods: Vec<Pod> = (0..3).map(|_| node.pod()).collect();
    for p in &pods {
        node.add(p, &conf);
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pods[2].id, "ifname": "eth0"}]);
    node.run_bin(PLUGIN, "GC", None, "", &gc, &[]).expect_ok();
    assert_eq!(set_elements(&table(&node), "pods4_"), vec!["10.250.41.4"]);
}

#[test]
fn without_ip_masq_no_nftables_state_is_created() {
    let node = Node::new();
    let pod = node.pod();
    node.add(&pod, &node.conf("10.250.42.0/24", json!({})));
    assert!(table(&node).is_empty());
}
