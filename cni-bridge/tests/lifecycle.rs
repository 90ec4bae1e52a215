//! ADD / DEL / CHECK / VERSION against the kernel's real state.

mod common;

use common::*;
use serde_json::json;

#[test]
fn add_creates_bridge_veth_and_pod_addressing() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.0.0/24", json!({"isDefaultGateway": true}));
    let r = node.add(&pod, &conf);

    assert_eq!(r["cniVersion"], "1.1.0");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    assert_eq!(ifs[0]["name"], "cnibr0");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], pod.path().display().to_string());
    assert_eq!(r["ips"][0]["address"], "10.250.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.250.0.1");
    assert_eq!(r["ips"][0]["interface"], 2);
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.250.0.1"})
    );

    // Bridge: up, with the gateway address, and the host veth as its port.
    let br = node
        .link("cnibr0")
        .expect("bridge exists in the host netns");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert!(br["flags"].as_array().unwrap().contains(&json!("UP")));
    assert_eq!(addrs_in(node.host.path(), "cnibr0"), vec!["10.250.0.1/24"]);
    assert_eq!(br["address"], ifs[0]["mac"]);
    let host_veth = ifs[1]["name"].as_str().unwrap();
    assert_eq!(node.ports("cnibr0"), vec![host_veth.to_string()]);
    assert_eq!(node.link(host_veth).unwrap()["address"], ifs[1]["mac"]);
    assert_eq!(
        node.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );

    // Pod: eth0 up with its address, its MAC as reported, default route via the gateway.
    let eth0 = link_in(pod.path(), "eth0").expect("eth0 in the pod");
    assert_eq!(eth0["address"], ifs[2]["mac"]);
    assert!(eth0["flags"].as_array().unwrap().contains(&json!("UP")));
    assert_eq!(addrs_in(pod.path(), "eth0"), vec!["10.250.0.2/24"]);
    let routes = routes_in(pod.path(), false);
    assert!(
        routes.contains(&"default via 10.250.0.1".to_string()),
        "{routes:?}"
    );

    // The allocation is on disk in host-local's layout.
    assert_eq!(node.allocations("testnet"), vec!["10.250.0.2"]);
    let owner = std::fs::read_to_string(node.data.path().join("testnet/10.250.0.2")).unwrap();
    assert_eq!(owner, format!("{}\r\neth0", pod.id));
}

#[test]
fn del_removes_veth_and_address_and_can_be_repeated() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.1.0/24", json!({}));
    let r = node.add(&pod, &conf);
    let host_veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();

    node.run("DEL", &pod, &conf).expect_ok();
    // Addresses are released and the port is down before DEL returns ...
    assert!(node.allocations("testnet").is_empty());
    if let Some(l) = node.link(&host_veth) {
        assert!(
            !l["flags"].as_array().unwrap().contains(&json!("UP")),
            "{l}"
        );
    }
    // ... and the pair is gone right after.
    eventually("the host veth is deleted", || {
        node.link(&host_veth).is_none()
    });
    assert!(link_in(pod.path(), "eth0").is_none());
    assert!(node.ports("cnibr0").is_empty());

    let again = node.run("DEL", &pod, &conf).expect_ok();
    assert!(again.stdout.is_empty());
}

#[test]
fn del_succeeds_when_the_netns_is_gone() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.2.0/24", json!({}));
    node.add(&pod, &conf);
    let id = pod.id.clone();
    let path = pod.path().to_path_buf();
    drop(pod);
    assert!(!path.exists());
    let env = [
        ("CNI_COMMAND".to_string(), "DEL".to_string()),
        ("CNI_CONTAINERID".to_string(), id),
        ("CNI_NETNS".to_string(), path.display().to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        ("CNI_PATH".to_string(), REFERENCE_DIR.to_string()),
    ];
    let run = node.run_raw(PLUGIN, &env, &serde_json::to_vec(&conf).unwrap());
    assert!(run.ok, "{run:?}");
    assert!(node.allocations("testnet").is_empty());
    eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
}

#[test]
fn del_without_netns_still_cleans_the_host_side() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.3.0/24", json!({}));
    node.add(&pod, &conf);
    let run = node.run_bin(
        PLUGIN,
        "DEL",
        Some(&pod),
        "eth0",
        &conf,
        &[("CNI_NETNS", "")],
    );
    assert!(run.ok, "{run:?}");
    eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
    assert!(link_in(pod.path(), "eth0").is_none());
    assert!(node.allocations("testnet").is_empty());
}

#[test]
fn check_passes_after_add_and_fails_once_the_address_is_gone() {
    let node = Node::new();
    let pod = node.pod();
    let mut conf = node.conf("10.250.4.0/24", json!({"isDefaultGateway": true}));
    let r = node.add(&pod, &conf);
    conf["prevResult"] = r;
    node.run("CHECK", &pod, &conf).expect_ok();

    exec_in(
        pod.path(),
        "ip",
        &["addr", "del", "10.250.4.2/24", "dev", "eth0"],
    );
    let failed = node.run("CHECK", &pod, &conf);
    assert_eq!(failed.code(), 102, "{failed:?}");
    assert!(
        failed.json()["msg"]
            .as_str()
            .unwrap()
            .contains("10.250.4.2")
    );
}

#[test]
fn check_fails_when_the_allocation_is_gone() {
    let node = Node::new();
    let pod = node.pod();
    let mut conf = node.conf("10.250.5.0/24", json!({}));
    conf["prevResult"] = node.add(&pod, &conf);
    std::fs::remove_file(node.data.path().join("testnet/10.250.5.2")).unwrap();
    assert_eq!(node.run("CHECK", &pod, &conf).code(), 102);
}

#[test]
fn version_lists_supported_versions() {
    let node = Node::new();
    let env = [("CNI_COMMAND".to_string(), "VERSION".to_string())];
    let run = node.run_raw(PLUGIN, &env, br#"{"cniVersion":"1.0.0"}"#);
    assert!(run.ok);
    let v = run.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    let supported: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.contains(&want), "{supported:?}");
    }
}

#[test]
fn result_shape_follows_the_config_version() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.6.0/24", json!({"cniVersion": "0.3.1"}));
    let r = node.add(&pod, &conf);
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4");

    let pod2 = node.pod();
    let conf = node.conf("10.250.6.0/24", json!({"cniVersion": "1.0.0"}));
    let r = node.add(&pod2, &conf);
    assert_eq!(r["cniVersion"], "1.0.0");
    assert!(r["ips"][0].get("version").is_none());
}

#[test]
fn layer2_only_network_gets_an_interface_and_no_address() {
    let node = Node::new();
    let pod = node.pod();
    let mut conf = node.conf("10.250.7.0/24", json!({"isGateway": false}));
    conf.as_object_mut().unwrap().remove("ipam");
    let r = node.add(&pod, &conf);
    assert!(r.get("ips").is_none());
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert!(addrs_in(pod.path(), "eth0").is_empty());
    assert_eq!(node.ports("cnibr0").len(), 1);
    node.run("DEL", &pod, &conf).expect_ok();
    eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
}

#[test]
fn second_add_for_the_same_attachment_replaces_the_stale_veth() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.8.0/24", json!({}));
    node.add(&pod, &conf);
    // The pod end is gone (e.g. the runtime recreated the netns), the host end remains.
    exec_in(pod.path(), "ip", &["link", "del", "eth0"]);
    let pod2 = Pod {
        ns: cni_bridge::netns::PinnedNetns::create(&pin_dir(), &unique("re")).unwrap(),
        id: pod.id.clone(),
    };
    let r = node.add(&pod2, &conf);
    assert_eq!(
        node.ports("cnibr0"),
        vec![r["interfaces"][1]["name"].as_str().unwrap().to_string()]
    );
    node.run("DEL", &pod2, &conf).expect_ok();
    assert!(node.allocations("testnet").is_empty());
}

#[test]
fn sync_link_delete_removes_the_pair_before_del_returns() {
    let node = Node::new();
    let pod = node.pod();
    let conf = node.conf("10.250.9.0/24", json!({"syncLinkDelete": true}));
    let r = node.add(&pod, &conf);
    node.run("DEL", &pod, &conf).expect_ok();
    assert!(
        node.link(r["interfaces"][1]["name"].as_str().unwrap())
            .is_none()
    );
    assert!(link_in(pod.path(), "eth0").is_none());
    assert!(node.ports("cnibr0").is_empty());
}
