//! Integration tests with real plugins (Debian's reference plugins in /usr/lib/cni, and small
//! shell-script plugins where a test needs a plugin to misbehave). Each test runs in its own
//! node network namespace (see `testing`), uses its own 10.199.<n>.0/24 subnet and bridge
//! `critest<n>`, and sends traffic only between its own pods.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::testing::{Fixture, addresses_of, attachment, interfaces, on_node, run_in};
use super::{Cni, CniError, PortMapping};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn port(host_port: i32, container_port: i32) -> PortMapping {
    PortMapping {
        host_port,
        container_port,
        protocol: "tcp".into(),
        host_ip: String::new(),
    }
}

#[test]
fn add_gives_the_pod_an_address_on_eth0_and_caches_it() {
    on_node(|node| async move {
        let f = Fixture::bridge(1);
        let pod = node.new_pod_netns("pod");
        let a = attachment("sb-add", &pod, vec![]);

        let status = f.cni.add(&a).await.expect("ADD");
        assert_eq!(status.interface, "eth0");
        assert_eq!(status.network_name, f.network_name());
        assert_eq!(status.ips.len(), 1, "{status:?}");
        let ip = status.ips[0];
        assert!(f.in_subnet(ip), "{ip} not in 10.199.1.0/24");
        assert_eq!(addresses_of(&pod, "eth0"), Some(vec![ip]));
        assert!(f.ip_file(ip).exists(), "host-local reserved {ip}");

        let rec = read_json(&f.cache_file("sb-add"));
        assert_eq!(rec["kind"], super::CACHE_KIND);
        assert_eq!(rec["networkName"], f.network_name());
        assert_eq!(rec["config"], f.bridge_conflist());
        assert_eq!(rec["netns"], pod.to_str().unwrap());
        assert!(rec["result"]["ips"].is_array(), "{rec}");
        assert_eq!(f.cni.cached_status("sb-add"), Some(status.clone()));

        f.cni.check(&a).await.expect("CHECK after ADD");

        match f.cni.add(&a).await {
            Err(CniError::AlreadyAttached { sandbox_id, .. }) => assert_eq!(sandbox_id, "sb-add"),
            other => panic!("second ADD: {other:?}"),
        }
        f.cni.del("sb-add", Some(&pod)).await.expect("DEL");
    });
}

#[test]
fn del_twice_releases_the_address_and_the_cache() {
    on_node(|node| async move {
        let f = Fixture::bridge(2);
        let pod = node.new_pod_netns("pod");
        let status = f
            .cni
            .add(&attachment("sb-del", &pod, vec![]))
            .await
            .expect("ADD");
        let ip = status.ips[0];

        f.cni.del("sb-del", Some(&pod)).await.expect("first DEL");
        assert!(!f.ip_file(ip).exists(), "host-local still holds {ip}");
        assert!(!f.cache_file("sb-del").exists());
        assert_eq!(addresses_of(&pod, "eth0"), None, "eth0 left in the pod");
        assert_eq!(f.cni.cached_status("sb-del"), None);

        f.cni.del("sb-del", Some(&pod)).await.expect("second DEL");
        f.cni
            .del("never-added", None)
            .await
            .expect("DEL of an unknown sandbox");
        assert!(matches!(
            f.cni.check(&attachment("sb-del", &pod, vec![])).await,
            Err(CniError::NotAttached { .. })
        ));
    });
}

#[test]
fn del_after_restart_and_config_removal_works_from_the_cache() {
    on_node(|node| async move {
        let f = Fixture::bridge(3);
        let pod = node.new_pod_netns("pod");
        let status = f
            .cni
            .add(&attachment("sb-restart", &pod, vec![]))
            .await
            .expect("ADD");
        let ip = status.ips[0];

        // The daemon restarts and meanwhile the network config is removed.
        std::fs::remove_dir_all(&f.conf_dir).unwrap();
        let restarted = Cni::new(f.conf_dir.clone(), f.bin_dirs.clone(), f.cache_dir.clone());
        assert!(restarted.ready().is_err());
        assert_eq!(restarted.cached_status("sb-restart"), Some(status));

        // No netns given: the cached path still exists and is used.
        restarted
            .del("sb-restart", None)
            .await
            .expect("DEL from the cache");
        assert!(!f.ip_file(ip).exists(), "host-local still holds {ip}");
        assert_eq!(addresses_of(&pod, "eth0"), None, "eth0 left in the pod");
        assert!(!f.cache_file("sb-restart").exists());
    });
}

#[test]
fn del_with_the_pod_netns_gone_still_releases_the_address() {
    on_node(|node| async move {
        let f = Fixture::bridge(4);
        let pod = node.new_pod_netns("pod");
        let status = f
            .cni
            .add(&attachment("sb-gone", &pod, vec![]))
            .await
            .expect("ADD");
        let ip = status.ips[0];

        node.pins.unpin(&pod);
        assert!(!pod.exists());
        f.cni
            .del("sb-gone", Some(&pod))
            .await
            .expect("DEL with the netns gone");
        assert!(!f.ip_file(ip).exists(), "host-local still holds {ip}");
        assert!(!f.cache_file("sb-gone").exists());
        // The host side of the veth goes with the pod's namespace (the kernel tears a
        // namespace down asynchronously).
        let mut names = Vec::new();
        for _ in 0..50 {
            names = interfaces(&node.ns)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>();
            if names.iter().all(|n| !n.starts_with("veth")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(names.iter().all(|n| !n.starts_with("veth")), "{names:?}");
    });
}

#[test]
fn missing_plugin_is_reported_before_anything_runs() {
    on_node(|node| async move {
        let f = Fixture::bridge(5);
        let mut conf = f.bridge_conflist();
        conf["plugins"][1] = json!({"type": "no-such-plugin"});
        f.write_conf("10-test.conflist", &conf);
        let pod = node.new_pod_netns("pod");

        match f.cni.add(&attachment("sb-missing", &pod, vec![])).await {
            Err(CniError::PluginNotFound { plugin, dirs }) => {
                assert_eq!(plugin, "no-such-plugin");
                assert_eq!(dirs, f.bin_dirs);
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.cache_file("sb-missing").exists());
        assert!(!f.ipam_dir.exists(), "the bridge plugin must not have run");
        let reason = f.cni.ready().unwrap_err();
        assert!(reason.contains("no-such-plugin"), "{reason}");
    });
}

#[test]
fn failing_plugin_mid_chain_undoes_the_earlier_ones() {
    on_node(|node| async move {
        let f = Fixture::bridge(6);
        let pod = node.new_pod_netns("pod");
        // portmap refuses container port 0, after bridge and loopback succeeded.
        let a = attachment("sb-fail", &pod, vec![port(18081, 0)]);

        match f.cni.add(&a).await {
            Err(CniError::Plugin {
                plugin,
                command,
                msg,
                ..
            }) => {
                assert_eq!(plugin, "portmap");
                assert_eq!(command, "ADD");
                assert!(msg.contains("container port"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.cache_file("sb-fail").exists());
        let held: Vec<_> = std::fs::read_dir(f.ipam_dir.join(f.network_name()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("10."))
            .collect();
        assert!(held.is_empty(), "addresses still reserved: {held:?}");
        assert_eq!(addresses_of(&pod, "eth0"), None, "eth0 left in the pod");
    });
}

#[test]
fn malformed_conflist_is_reported_with_its_file_name() {
    on_node(|node| async move {
        let f = Fixture::empty(7);
        let path = f.conf_dir.join("10-broken.conflist");
        std::fs::write(
            &path,
            r#"{"cniVersion": "1.0.0", "name": "x", "plugins": [{"bridge": "b"}]}"#,
        )
        .unwrap();
        let pod = node.new_pod_netns("pod");
        match f.cni.add(&attachment("sb-bad", &pod, vec![])).await {
            Err(CniError::BadConfig { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains("type"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let reason = f.cni.ready().unwrap_err();
        assert!(reason.contains("10-broken.conflist"), "{reason}");

        std::fs::write(
            &path,
            r#"{"cniVersion": "0.2.0", "name": "x", "plugins": [{"type": "bridge"}]}"#,
        )
        .unwrap();
        let reason = f.cni.ready().unwrap_err();
        assert!(
            reason.contains("0.2.0") && reason.contains("not supported"),
            "{reason}"
        );
        assert!(!f.cache_file("sb-bad").exists());
    });
}

#[test]
fn ready_needs_a_config_whose_plugins_exist() {
    let f = Fixture::empty(8);
    let reason = f.cni.ready().unwrap_err();
    assert!(reason.contains("no CNI network config"), "{reason}");
    f.write_conf("10-test.conflist", &f.bridge_conflist());
    assert_eq!(f.cni.ready(), Ok(f.network_name()));
}

#[test]
fn two_pods_on_one_bridge_reach_each_other() {
    on_node(|node| async move {
        let f = Fixture::bridge(9);
        let pod_a = node.new_pod_netns("pod-a");
        let pod_b = node.new_pod_netns("pod-b");
        let (a, b) = (
            attachment("sb-a", &pod_a, vec![]),
            attachment("sb-b", &pod_b, vec![]),
        );
        // Two sandboxes at once.
        let (sa, sb) = tokio::join!(f.cni.add(&a), f.cni.add(&b));
        let (ip_a, ip_b) = (sa.expect("ADD a").ips[0], sb.expect("ADD b").ips[0]);
        assert_ne!(ip_a, ip_b);
        assert!(f.in_subnet(ip_a) && f.in_subnet(ip_b));

        let target = ip_b.to_string();
        let mut last = String::new();
        let reached = (0..3).any(|_| {
            let (ok, out) = run_in(&pod_a, "busybox", &["ping", "-c1", "-W2", &target]);
            last = out;
            ok
        });
        assert!(reached, "pod a cannot reach {target}: {last}");

        let (da, db) = tokio::join!(
            f.cni.del("sb-a", Some(&pod_a)),
            f.cni.del("sb-b", Some(&pod_b))
        );
        da.expect("DEL a");
        db.expect("DEL b");
        assert!(!f.ip_file(ip_a).exists() && !f.ip_file(ip_b).exists());
    });
}

#[test]
fn host_port_rules_follow_add_and_del() {
    on_node(|node| async move {
        let f = Fixture::bridge(10);
        let pod = node.new_pod_netns("pod");
        let ports = vec![port(18080, 80), port(0, 9090)];
        let status = f
            .cni
            .add(&attachment("sb-ports", &pod, ports))
            .await
            .expect("ADD");
        let ip = status.ips[0];

        let nat = || {
            let (ok, out) = run_in(&node.ns, "iptables-save", &["-t", "nat"]);
            assert!(ok, "iptables-save: {out}");
            out
        };
        let rules = nat();
        let dnat = format!("--to-destination {ip}:80");
        assert!(
            rules
                .lines()
                .any(|l| l.contains("--dport 18080") && l.contains(&dnat)),
            "no DNAT 18080 -> {ip}:80 in:\n{rules}"
        );
        assert!(
            !rules.contains("9090"),
            "a port without hostPort was mapped:\n{rules}"
        );

        // (No CHECK here: Debian's portmap 1.1.1 fails CHECK on a node without IPv6 rules.)
        f.cni.del("sb-ports", Some(&pod)).await.expect("DEL");
        let rules = nat();
        assert!(
            !rules.contains("--dport 18080"),
            "rules left after DEL:\n{rules}"
        );
    });
}

#[test]
fn a_single_plugin_conf_file_runs_as_a_list_with_its_version() {
    on_node(|node| async move {
        let f = Fixture::empty(15);
        let mut bridge = f.bridge_conflist()["plugins"][0].clone();
        bridge["cniVersion"] = json!("0.3.1");
        bridge["name"] = json!(f.network_name());
        f.write_conf("20-single.conf", &bridge);
        let pod = node.new_pod_netns("pod");
        let a = attachment("sb-single", &pod, vec![]);

        let status = f.cni.add(&a).await.expect("ADD with a 0.3.1 .conf");
        assert!(f.in_subnet(status.ips[0]));
        assert_eq!(read_json(&f.cache_file("sb-single"))["cniVersion"], "0.3.1");
        assert!(matches!(
            f.cni.check(&a).await,
            Err(CniError::CheckUnsupported { .. })
        ));
        f.cni.del("sb-single", Some(&pod)).await.expect("DEL");
        assert!(!f.ip_file(status.ips[0]).exists());
    });
}

/// A plugin that records its stdin, environment and call order, and prints a result with the
/// given `ips` entries on ADD.
fn recorder(f: &Fixture, name: &str, ips: &str) {
    let log = f.dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    f.script_plugin(
        name,
        &format!(
            r#"log={log}
me=$(basename "$0")
cat > "$log/$me.$CNI_COMMAND.stdin"
env > "$log/$me.$CNI_COMMAND.env"
echo "$CNI_COMMAND $me" >> "$log/order"
if [ "$CNI_COMMAND" = ADD ]; then
  printf '%s' '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}}],"ips":[{ips}]}}'
fi
"#,
            log = log.display()
        ),
    );
}

#[test]
fn plugins_get_the_spec_environment_and_stdin() {
    on_node(|node| async move {
        let f = Fixture::empty(11);
        recorder(&f, "rec1", r#"{"address":"10.199.11.5/24","interface":0}"#);
        recorder(
            &f,
            "rec2",
            r#"{"address":"fd00::5/64","interface":0},{"address":"10.199.11.5/24","interface":0}"#,
        );
        f.write_conf(
            "10-rec.conflist",
            &json!({"cniVersion": "1.0.0", "name": "rec", "plugins": [
                {"type": "rec1", "custom": {"a": 1}, "capabilities": {"cgroupPath": false}},
                {"type": "rec2", "capabilities": {"portMappings": true, "cgroupPath": true}}
            ]}),
        );
        let pod = node.new_pod_netns("pod");
        let mut a = attachment("sb-rec", &pod, vec![port(8080, 80), port(0, 81)]);
        a.cgroup_parent = "/kubepods/pod-rec".into();
        let log = f.dir.path().join("log");

        let status = f.cni.add(&a).await.expect("ADD");
        assert_eq!(
            status.ips,
            vec![
                "10.199.11.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );

        let first = read_json(&log.join("rec1.ADD.stdin"));
        assert_eq!(
            first,
            json!({"type": "rec1", "custom": {"a": 1}, "name": "rec", "cniVersion": "1.0.0"})
        );
        let second = read_json(&log.join("rec2.ADD.stdin"));
        let rec1_result = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": pod.to_str().unwrap()}],
            "ips": [{"address": "10.199.11.5/24", "interface": 0}]});
        assert_eq!(second["prevResult"], rec1_result);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                "cgroupPath": "/kubepods/pod-rec"})
        );
        assert!(second.get("capabilities").is_none());

        let env = std::fs::read_to_string(log.join("rec1.ADD.env")).unwrap();
        let cni_path = format!("{}:/usr/lib/cni", f.bin_dirs[0].display());
        let want = [
            "CNI_COMMAND=ADD".to_string(),
            "CNI_CONTAINERID=sb-rec".into(),
            format!("CNI_NETNS={}", pod.display()),
            "CNI_IFNAME=eth0".into(),
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=testns;K8S_POD_NAME=pod-sb-rec;\
             K8S_POD_INFRA_CONTAINER_ID=sb-rec;K8S_POD_UID=uid-sb-rec"
                .into(),
            format!("CNI_PATH={cni_path}"),
        ];
        for w in &want {
            assert!(env.lines().any(|l| l == w), "{w} missing from:\n{env}");
        }
        for line in env.lines() {
            let key = line.split('=').next().unwrap_or_default();
            assert!(
                key.starts_with("CNI_") || ["PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&key),
                "plugin environment is not clean: {line}"
            );
        }

        f.cni.check(&a).await.expect("CHECK");
        let final_result = read_json(&f.cache_file("sb-rec"))["result"].clone();
        assert_eq!(
            read_json(&log.join("rec1.CHECK.stdin"))["prevResult"],
            final_result
        );

        f.cni.del("sb-rec", Some(&pod)).await.expect("DEL");
        let del1 = read_json(&log.join("rec1.DEL.stdin"));
        assert_eq!(del1["prevResult"], final_result);
        let env = std::fs::read_to_string(log.join("rec1.DEL.env")).unwrap();
        assert!(env.lines().any(|l| l == "CNI_COMMAND=DEL"), "{env}");

        let order = std::fs::read_to_string(log.join("order")).unwrap();
        assert_eq!(
            order.lines().collect::<Vec<_>>(),
            [
                "ADD rec1",
                "ADD rec2",
                "CHECK rec1",
                "CHECK rec2",
                "DEL rec2",
                "DEL rec1"
            ]
        );
    });
}

#[test]
fn plugin_errors_carry_code_message_and_stderr() {
    on_node(|node| async move {
        let f = Fixture::empty(12);
        recorder(&f, "first", r#"{"address":"10.199.12.5/24","interface":0}"#);
        f.script_plugin(
            "failer",
            r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo "failer: the subnet is exhausted" >&2
  echo '{"cniVersion":"1.0.0","code":7,"msg":"Invalid config","details":"subnet too small"}'
  exit 1
fi
"#,
        );
        f.script_plugin("garbler", "cat > /dev/null\necho 'not json'\nexit 2\n");
        let conf = |second: &str| {
            json!({"cniVersion": "1.0.0", "name": "errs",
                "plugins": [{"type": "first"}, {"type": second}]})
        };
        f.write_conf("10-errs.conflist", &conf("failer"));
        let pod = node.new_pod_netns("pod");

        let err = f
            .cni
            .add(&attachment("sb-err", &pod, vec![]))
            .await
            .unwrap_err();
        match &err {
            CniError::Plugin {
                plugin,
                command,
                code,
                msg,
                details,
                stderr,
            } => {
                assert_eq!(
                    (plugin.as_str(), command.as_str(), *code),
                    ("failer", "ADD", 7)
                );
                assert_eq!(msg, "Invalid config");
                assert_eq!(details, "subnet too small");
                assert_eq!(stderr, "failer: the subnet is exhausted");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("failer") && text.contains("subnet too small"),
            "{text}"
        );
        // The undo ran DEL for the failed plugin and the one before it; nothing is cached.
        let order = std::fs::read_to_string(f.dir.path().join("log/order")).unwrap();
        assert_eq!(
            order.lines().collect::<Vec<_>>(),
            ["ADD first", "DEL first"]
        );
        assert!(!f.cache_file("sb-err").exists());

        f.write_conf("10-errs.conflist", &conf("garbler"));
        match f.cni.add(&attachment("sb-err2", &pod, vec![])).await {
            Err(CniError::Plugin {
                plugin,
                code,
                msg,
                details,
                ..
            }) => {
                assert_eq!((plugin.as_str(), code), ("garbler", 0));
                assert!(msg.contains("exit status: 2"), "{msg}");
                assert_eq!(details, "not json");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn failed_undo_keeps_the_record_for_a_later_del() {
    on_node(|node| async move {
        let f = Fixture::empty(13);
        let mark = f.dir.path().join("block-del");
        std::fs::write(&mark, "").unwrap();
        // "steady" succeeds ADD but cannot DEL while the mark exists; "flaky" fails ADD.
        f.script_plugin(
            "steady",
            &format!(
                r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.199.13.5/24"}}]}}'; exit 0; fi
if [ -e {mark} ]; then echo '{{"code":5,"msg":"store locked"}}'; exit 1; fi
"#,
                mark = mark.display()
            ),
        );
        f.script_plugin(
            "flaky",
            r#"cat > /dev/null
if [ "$CNI_COMMAND" = ADD ]; then echo '{"code":11,"msg":"try again later"}'; exit 1; fi
"#,
        );
        f.write_conf(
            "10-flaky.conflist",
            &json!({"cniVersion": "1.0.0", "name": "flaky",
                "plugins": [{"type": "steady"}, {"type": "flaky"}]}),
        );
        let pod = node.new_pod_netns("pod");

        let err = f
            .cni
            .add(&attachment("sb-flaky", &pod, vec![]))
            .await
            .unwrap_err();
        assert!(matches!(err, CniError::Plugin { code: 11, .. }), "{err:?}");
        let rec = read_json(&f.cache_file("sb-flaky"));
        assert_eq!(rec["result"], Value::Null, "{rec}");
        assert_eq!(f.cni.cached_status("sb-flaky"), None);

        assert!(matches!(
            f.cni.del("sb-flaky", Some(&pod)).await,
            Err(CniError::Plugin { code: 5, .. })
        ));
        assert!(f.cache_file("sb-flaky").exists());
        std::fs::remove_file(&mark).unwrap();
        f.cni
            .del("sb-flaky", Some(&pod))
            .await
            .expect("DEL once the plugin recovers");
        assert!(!f.cache_file("sb-flaky").exists());
    });
}

#[test]
fn plugin_timeout_kills_the_plugin_and_its_children() {
    on_node(|node| async move {
        let f = Fixture::empty(14);
        let pid_file = f.dir.path().join("sleeper.pid");
        f.script_plugin(
            "sleeper",
            &format!(
                "cat > /dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then sleep 30 & echo $! > {}; wait; fi\n",
                pid_file.display()
            ),
        );
        f.write_conf(
            "10-slow.conflist",
            &json!({"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "sleeper"}]}),
        );
        let cni = Cni::new(f.conf_dir.clone(), f.bin_dirs.clone(), f.cache_dir.clone())
            .with_plugin_timeout(Duration::from_millis(500));
        let pod = node.new_pod_netns("pod");

        let started = Instant::now();
        match cni.add(&attachment("sb-slow", &pod, vec![])).await {
            Err(CniError::Timeout {
                plugin, command, ..
            }) => {
                assert_eq!((plugin.as_str(), command.as_str()), ("sleeper", "ADD"));
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!f.cache_file("sb-slow").exists());

        // The plugin's child (same process group) was killed too.
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let stat = format!("/proc/{pid}/stat");
        let dead = (0..40).any(|_| {
            let alive = std::fs::read_to_string(&stat)
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(dead, "the plugin's child {pid} survived the timeout");
    });
}
