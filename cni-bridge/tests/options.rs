//! Every bridge option, checked against the kernel.

mod common;

use common::*;
use serde_json::json;

#[test]
fn hairpin_and_promisc_mode_are_set_on_port_and_bridge() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf(
        "10.250.10.0/24",
        json!({"hairpinMode": true, "promiscMode": true}),
    );
    let r = node.add(&pod, &conf);
    let port = node
        .link(r["interfaces"][1]["name"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        port["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{port}"
    );
    let br = node.link("cnibr0").unwrap();
    assert!(
        br["flags"].as_array().unwrap().contains(&json!("PROMISC")),
        "{br}"
    );

    let pod2 = node.pod();
    let plain = node.conf("10.250.10.0/24", json!({"bridge": "cnibr1"}));
    let r = node.add(&pod2, &plain);
    let port = node
        .link(r["interfaces"][1]["name"].as_str().unwrap())
        .unwrap();
    assert_eq!(port["linkinfo"]["info_slave_data"]["hairpin"], false);
    assert!(
        !node.link("cnibr1").unwrap()["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("PROMISC"))
    );
}

#[test]
fn mtu_applies_to_bridge_and_both_veth_ends() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.11.0/24", json!({"mtu": 1400}));
    let r = node.add(&pod, &conf);
    assert_eq!(node.link("cnibr0").unwrap()["mtu"], 1400);
    assert_eq!(
        node.link(r["interfaces"][1]["name"].as_str().unwrap())
            .unwrap()["mtu"],
        1400
    );
    assert_eq!(link_in(pod.path(), "eth0").unwrap()["mtu"], 1400);
    assert_eq!(r["interfaces"][2]["mtu"], 1400);
}

#[test]
fn mac_comes_from_runtime_config_over_cni_args() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.12.0/24", json!({}));
    let r = node
        .run_bin(
            PLUGIN,
            "ADD",
            Some(&pod),
            "eth0",
            &conf,
            &[("CNI_ARGS", "IgnoreUnknown=1;MAC=0a:58:0a:fa:0c:07")],
        )
        .expect_ok()
        .json();
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:fa:0c:07");
    assert_eq!(
        link_in(pod.path(), "eth0").unwrap()["address"],
        "0a:58:0a:fa:0c:07"
    );

    let pod2 = node.pod();
    let conf = node.conf(
        "10.250.12.0/24",
        json!({"runtimeConfig": {"mac": "0a:58:0a:fa:0c:08"}}),
    );
    let r = node
        .run_bin(
            PLUGIN,
            "ADD",
            Some(&pod2),
            "eth0",
            &conf,
            &[("CNI_ARGS", "MAC=0a:58:0a:fa:0c:09")],
        )
        .expect_ok()
        .json();
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:fa:0c:08");
    assert_eq!(
        link_in(pod2.path(), "eth0").unwrap()["address"],
        "0a:58:0a:fa:0c:08"
    );
}

#[test]
fn vlan_makes_the_port_an_access_port_of_that_vlan() {
    let node = Node::new();
    if !vlan_filtering_supported(&node) {
        eprintln!("SKIP: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)");
        return;
    }
    let pod = node.pod();
    let conf = node.conf("10.250.13.0/24", json!({"vlan": 100}));
    let r = node.add(&pod, &conf);
    let br = node.link("cnibr0").unwrap();
    assert_eq!(br["linkinfo"]["info_data"]["vlan_filtering"], 1, "{br}");
    let port = r["interfaces"][1]["name"].as_str().unwrap();
    let vlans: serde_json::Value =
        serde_json::from_str(&node.exec("bridge", &["-j", "vlan", "show", "dev", port])).unwrap();
    let entries = vlans[0]["vlans"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{vlans}");
    assert_eq!(entries[0]["vlan"], 100);
    let flags = entries[0]["flags"].as_array().unwrap();
    assert!(
        flags.contains(&json!("PVID")) && flags.contains(&json!("Egress Untagged")),
        "{vlans}"
    );
}

/// Some kernels are built without CONFIG_BRIDGE_VLAN_FILTERING; probe with a throwaway bridge.
fn vlan_filtering_supported(node: &Node) -> bool {
    try_exec_in(
        node.host.path(),
        "ip",
        &[
            "link",
            "add",
            "vlanprobe",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ],
    )
}

#[test]
fn vlan_on_a_kernel_without_vlan_filtering_fails_cleanly() {
    let node = Node::new();
    if vlan_filtering_supported(&node) {
        return;
    }
    let pod = node.pod();
    let conf = node.conf("10.250.19.0/24", json!({"vlan": 100}));
    let run = node.run("ADD", &pod, &conf);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("VLAN filtering"),
        "{run:?}"
    );
    assert!(node.allocations("testnet").is_empty());
    assert!(node.link("cnibr0").is_none());
}

#[test]
fn force_address_replaces_a_foreign_bridge_address_and_its_absence_refuses() {
    let node = Node::new();
    node.exec("ip", &["link", "add", "cnibr0", "type", "bridge"]);
    node.exec("ip", &["addr", "add", "10.250.99.1/24", "dev", "cnibr0"]);

    let pod = node.pod();
    let conf = node.conf("10.250.14.0/24", json!({}));
    let run = node.run("ADD", &pod, &conf);
    assert!(!run.ok);
    assert!(
        run.json()["msg"]
            .as_str()
            .unwrap()
            .contains("already has an IP address"),
        "{run:?}"
    );
    assert!(
        node.allocations("testnet").is_empty(),
        "failed ADD released its address"
    );
    assert!(node.ports("cnibr0").is_empty());

    let conf = node.conf("10.250.14.0/24", json!({"forceAddress": true}));
    node.add(&pod, &conf);
    assert_eq!(addrs_in(node.host.path(), "cnibr0"), vec!["10.250.14.1/24"]);
}

#[test]
fn without_is_gateway_the_bridge_gets_no_address_and_pod_no_default_route() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.15.0/24", json!({"isGateway": false}));
    let r = node.add(&pod, &conf);
    assert!(addrs_in(node.host.path(), "cnibr0").is_empty());
    assert!(r.get("routes").is_none());
    assert_eq!(routes_in(pod.path(), false), vec!["10.250.15.0/24"]);
}

#[test]
fn ipam_routes_and_resolv_conf_reach_the_pod_and_the_result() {
    let node = Node::new();
    let resolv = node.data.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.250.16.53\nsearch svc.test\noptions ndots:5\n",
    )
    .unwrap();
    let pod = node.pod();
    let conf = node.conf(
        "10.250.16.0/24",
        json!({"ipam": {
            "routes": [{"dst": "10.99.0.0/16"}, {"dst": "10.98.0.0/16", "gw": "10.250.16.254"}],
            "resolvConf": resolv,
        }}),
    );
    let r = node.add(&pod, &conf);
    let routes = routes_in(pod.path(), false);
    assert!(
        routes.contains(&"10.99.0.0/16 via 10.250.16.1".to_string()),
        "{routes:?}"
    );
    assert!(
        routes.contains(&"10.98.0.0/16 via 10.250.16.254".to_string()),
        "{routes:?}"
    );
    assert_eq!(r["routes"].as_array().unwrap().len(), 2);
    assert_eq!(r["dns"]["nameservers"][0], "10.250.16.53");
    assert_eq!(r["dns"]["search"][0], "svc.test");

    // The config's dns wins over IPAM's.
    let pod2 = node.pod();
    let mut conf2 = conf.clone();
    conf2["dns"] = json!({"nameservers": ["10.250.16.10"]});
    let r = node.add(&pod2, &conf2);
    assert_eq!(r["dns"], json!({"nameservers": ["10.250.16.10"]}));
}

#[test]
fn dual_stack_gets_one_address_per_family() {
    // IPv6 uses a ULA prefix, confined to the test's namespaces like the 10.x subnets.
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf(
        "10.250.17.0/24",
        json!({"isDefaultGateway": true, "ipam": {"ranges": [[{"subnet": "10.250.17.0/24"}], [{"subnet": "fd10:250:17::/64"}]]}}),
    );
    let r = node.add(&pod, &conf);
    assert_eq!(r["ips"][0]["address"], "10.250.17.2/24");
    assert_eq!(r["ips"][1]["address"], "fd10:250:17::2/64");
    assert_eq!(r["ips"][1]["gateway"], "fd10:250:17::1");
    let addrs = addrs_in(pod.path(), "eth0");
    assert!(
        addrs.contains(&"fd10:250:17::2/64".to_string()),
        "{addrs:?}"
    );
    let br = addrs_in(node.host.path(), "cnibr0");
    assert!(
        br.contains(&"fd10:250:17::1/64".to_string()) && br.contains(&"10.250.17.1/24".to_string()),
        "{br:?}"
    );
    let routes6 = routes_in(pod.path(), true);
    assert!(
        routes6.contains(&"default via fd10:250:17::1".to_string()),
        "{routes6:?}"
    );
    assert_eq!(
        node.exec("cat", &["/proc/sys/net/ipv6/conf/all/forwarding"])
            .trim(),
        "1"
    );
    node.run("DEL", &pod, &conf).expect_ok();
    assert!(node.allocations("testnet").is_empty());
}

#[test]
fn other_ipam_types_are_delegated_to_that_plugin() {
    // Debian's `static` IPAM plugin, run from CNI_PATH.
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf(
        "10.250.18.0/24",
        json!({"cniVersion": "1.0.0", "ipam": {"type": "static", "addresses": [{"address": "10.250.18.77/24", "gateway": "10.250.18.1"}]}}),
    );
    let r = node.add(&pod, &conf);
    assert_eq!(r["ips"][0]["address"], "10.250.18.77/24");
    assert_eq!(addrs_in(pod.path(), "eth0"), vec!["10.250.18.77/24"]);
    assert_eq!(addrs_in(node.host.path(), "cnibr0"), vec!["10.250.18.1/24"]);
    node.run("DEL", &pod, &conf).expect_ok();
    eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
}
