//! Built-in IPAM under concurrency, exhaustion, crashes, GC and STATUS.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

#[test]
fn fifty_concurrent_adds_get_fifty_distinct_ips_and_dels_leave_nothing() {
    let node = Node::new();
    let conf = node.conf("10.250.20.0/24", json!({}));
    let pods: Vec<Pod> = (0..50).map(|_| node.pod()).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| node.add(p, &conf)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 50, "duplicate addresses handed out");
    for (pod, r) in pods.iter().zip(&results) {
        assert_eq!(
            addrs_in(pod.path(), "eth0"),
            vec![r["ips"][0]["address"].as_str().unwrap()]
        );
    }
    assert_eq!(node.allocations("testnet").len(), 50);
    assert_eq!(node.ports("cnibr0").len(), 50);

    std::thread::scope(|s| {
        for p in &pods {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.run("DEL", p, conf).expect_ok());
        }
    });
    assert!(node.allocations("testnet").is_empty());
    eventually("the bridge has no port", || node.ports("cnibr0").is_empty());
}

#[test]
fn requested_ip_in_cni_args_is_allocated_and_a_taken_one_refused() {
    let node = Node::new();
    let conf = node.conf("10.250.21.0/24", json!({}));
    let pod = node.pod();
    let r = node
        .run_bin(
            PLUGIN,
            "ADD",
            Some(&pod),
            "eth0",
            &conf,
            &[("CNI_ARGS", "IP=10.250.21.40")],
        )
        .expect_ok()
        .json();
    assert_eq!(r["ips"][0]["address"], "10.250.21.40/24");
    let pod2 = node.pod();
    let run = node.run_bin(
        PLUGIN,
        "ADD",
        Some(&pod2),
        "eth0",
        &conf,
        &[("CNI_ARGS", "IP=10.250.21.40")],
    );
    assert_eq!(run.code(), 104, "{run:?}");
    assert!(link_in(pod2.path(), "eth0").is_none());

    let pod3 = node.pod();
    let conf3 = node.conf(
        "10.250.21.0/24",
        json!({"runtimeConfig": {"ips": ["10.250.21.41/24"]}}),
    );
    let r = node.add(&pod3, &conf3);
    assert_eq!(r["ips"][0]["address"], "10.250.21.41/24");
}

#[test]
fn exhausted_range_fails_add_and_status_reports_it() {
    let node = Node::new();
    let conf = node.conf(
        "10.250.22.0/24",
        json!({"ipam": {"ranges": [[{"subnet": "10.250.22.0/24", "rangeStart": "10.250.22.10", "rangeEnd": "10.250.22.11"}]]}}),
    );
    let status = node.run_bin(PLUGIN, "STATUS", None, "", &conf, &[]);
    assert!(status.ok && status.stdout.is_empty(), "{status:?}");
    let pods: Vec<Pod> = (0..3).map(|_| node.pod()).collect();
    node.add(&pods[0], &conf);
    node.add(&pods[1], &conf);
    let run = node.run("ADD", &pods[2], &conf);
    assert_eq!(run.code(), 101, "{run:?}");
    assert!(link_in(pods[2].path(), "eth0").is_none());
    assert_eq!(node.ports("cnibr0").len(), 2);

    let status = node.run_bin(PLUGIN, "STATUS", None, "", &conf, &[]);
    assert_eq!(status.code(), 50, "{status:?}");
    assert!(status.json()["msg"].as_str().unwrap().contains("exhausted"));
}

#[test]
fn status_reports_bad_config() {
    let node = Node::new();
    let conf = node.conf("10.250.23.0/33", json!({}));
    assert_eq!(
        node.run_bin(PLUGIN, "STATUS", None, "", &conf, &[]).code(),
        7
    );
}

#[test]
fn gc_releases_everything_not_in_valid_attachments() {
    let node = Node::new();
    let conf = node.conf("10.250.24.0/24", json!({}));
    let pods: Vec<Pod> = (0..3).map(|_| node.pod()).collect();
    let results: Vec<_> = pods.iter().map(|p| node.add(p, &conf)).collect();

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pods[1].id, "ifname": "eth0"}]);
    let run = node.run_bin(PLUGIN, "GC", None, "", &gc, &[]);
    assert!(run.ok && run.stdout.is_empty(), "{run:?}");

    let kept = results[1]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(node.allocations("testnet"), vec![kept]);
    assert_eq!(
        node.ports("cnibr0"),
        vec![
            results[1]["interfaces"][1]["name"]
                .as_str()
                .unwrap()
                .to_string()
        ]
    );
    assert!(link_in(pods[0].path(), "eth0").is_none());
    assert!(link_in(pods[1].path(), "eth0").is_some());
}

#[test]
fn crashed_add_leaks_nothing_after_del_or_gc() {
    let node = Node::new();
    let conf = node.conf("10.250.25.0/24", json!({}));
    // A crash after the reservation and before any netlink work leaves the file only; a crash
    // after the veth leaves both. Simulate both states by hand.
    let dir = node.data.path().join("testnet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10.250.25.7"), "crashed1\r\neth0").unwrap();
    std::fs::write(dir.join("10.250.25.8"), "").unwrap(); // crashed before writing the owner
    let pod = node.pod();
    node.add(&pod, &conf);
    node.exec(
        "ip",
        &[
            "link",
            "add",
            "vethcrash",
            "type",
            "veth",
            "peer",
            "name",
            "vethcrashp",
        ],
    );
    node.exec(
        "ip",
        &[
            "link",
            "set",
            "vethcrash",
            "master",
            "cnibr0",
            "alias",
            "cni-bridge/testnet/crashed2/eth0",
        ],
    );

    let crashed1 = Pod {
        ns: cni_bridge::netns::PinnedNetns::create(&pin_dir(), &unique("c1")).unwrap(),
        id: "crashed1".into(),
    };
    node.run("DEL", &crashed1, &conf).expect_ok();
    assert!(!dir.join("10.250.25.7").exists());

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pod.id, "ifname": "eth0"}]);
    node.run_bin(PLUGIN, "GC", None, "", &gc, &[]).expect_ok();
    assert_eq!(node.allocations("testnet"), vec!["10.250.25.2"]);
    assert!(
        node.link("vethcrash").is_none(),
        "stale veth of ours left behind"
    );
    assert_eq!(node.ports("cnibr0").len(), 1);
}

#[test]
fn gc_leaves_links_of_other_networks_alone() {
    let node = Node::new();
    let conf = node.conf("10.250.26.0/24", json!({}));
    let pod = node.pod();
    let r = node.add(&pod, &conf);
    let mut other = node.conf("10.250.26.0/24", json!({"name": "othernet"}));
    other["cni.dev/valid-attachments"] = json!([]);
    node.run_bin(PLUGIN, "GC", None, "", &other, &[])
        .expect_ok();
    assert!(
        node.link(r["interfaces"][1]["name"].as_str().unwrap())
            .is_some()
    );
    assert_eq!(node.allocations("testnet").len(), 1);
}
