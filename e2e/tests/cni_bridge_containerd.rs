//! Interop: containerd 1.6 (Debian's `/usr/bin/containerd`, its CRI plugin) runs our
//! `cni-bridge` binary, unchanged, as its CNI plugin, chained with Debian's `portmap`.
//!
//! Everything runs in a node network namespace made by the test (registry, containerd, its
//! pods and the bridge), on 10.233.7.0/24. containerd 1.6 takes one CNI `bin_dir`, not a
//! list, so the test makes one: links to the built `cni-bridge` and to every plugin of
//! `/usr/lib/cni` (containerd also runs `loopback` from there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri::Clients;
use e2e::images::{self, Pusher};
use e2e::netns::NodeNetns;
use e2e::registry::Registry;
use k8s_cri::v1::*;

const NETWORK: &str = "e2e-cni-bridge";
const BRIDGE: &str = "e2ecbr7";
const SUBNET: &str = "10.233.7.0/24";
const SUBNET_PREFIX: &str = "10.233.7.";
const HOST_PORT: i32 = 18087;
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// The whole test, setup and teardown included; a hang fails it (and cleans up) instead.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn containerd_runs_cni_bridge_unchanged_pods_talk_and_del_releases_ips() {
    let plugin = e2e::daemon::bin_path("cni-bridge");
    assert!(
        plugin.is_file(),
        "{} missing: build it first (cargo build -p cni-bridge)",
        plugin.display()
    );
    assert!(
        e2e::containerd::containerd_bin().exists(),
        "containerd missing (apt-get install containerd)"
    );
    // Dropped last: the namespace goes with every link, address and rule made in it.
    let node = NodeNetns::new().expect("node netns");
    // The registry, containerd, its shims and the CNI plugins it runs all start from this
    // thread (or threads it starts), so they all live in the node namespace.
    node.enter().expect("enter node netns");
    let out = node
        .run(
            "iptables",
            &[
                "-A", "FORWARD", "-s", SUBNET, "!", "-o", BRIDGE, "-j", "DROP",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "iptables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, body(&node, &plugin))
            .await
            .expect("the test timed out");
    });
}

async fn body(node: &NodeNetns, plugin: &Path) {
    // Locals drop in reverse order: pods (through CRI), containerd (its shims, runc
    // containers and mounts), the cgroup parent, the registry, then the temp dirs.
    let dirs = tempfile::Builder::new()
        .prefix("e2e-cni-bridge-containerd-")
        .tempdir()
        .unwrap();
    let conf_dir = dirs.path().join("net.d");
    let ipam_dir = dirs.path().join("ipam");
    let bin_dir = dirs.path().join("bin");
    let logs = dirs.path().join("logs");
    write_conflist(&conf_dir, &ipam_dir);
    link_plugins(&bin_dir, plugin);

    let registry = Registry::start().expect("registry");
    let (busybox, pause) = push_images(&registry).await;

    let cgroup_parent = format!("/e2e-cni-bridge-ctrd-{}", std::process::id());
    let _cgroups = CgroupParent(cgroup_parent.clone());
    let containerd = Containerd::start(&ContainerdOptions {
        insecure_registries: vec![registry.addr().to_string()],
        sandbox_image: Some(pause.clone()),
        cni_bin_dir: Some(bin_dir.clone()),
        cni_conf_dir: Some(conf_dir.clone()),
        ..Default::default()
    })
    .await
    .expect("start containerd");
    let _reaper = PodReaper {
        socket: containerd.socket.clone(),
    };
    let mut c = containerd.clients().await.unwrap();
    for image in [&busybox, &pause] {
        c.image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull {image}: {e}"));
    }

    let ctx = PodCtx {
        busybox,
        logs,
        cgroup_parent,
    };
    let mut server_cfg = ctx.pod_config("cbr-server");
    server_cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let server = run_pod(&mut c, server_cfg).await;
    let client = run_pod(&mut c, ctx.pod_config("cbr-client")).await;
    let ip_server = pod_ip(&mut c, &server.0).await;
    let ip_client = pod_ip(&mut c, &client.0).await;
    assert!(
        ip_server.starts_with(SUBNET_PREFIX)
            && ip_client.starts_with(SUBNET_PREFIX)
            && ip_server != ip_client,
        "pod IPs {ip_server} {ip_client} not two addresses of {SUBNET}"
    );

    // Our plugin did it: its host-side veths carry its alias, and the addresses are in the
    // store in host-local's layout.
    let ours = our_veths(node);
    assert_eq!(ours.len(), 2, "host veths labelled by cni-bridge: {ours:?}");
    let mut held = e2e::node::allocated_ips(&ipam_dir);
    held.sort();
    let mut expected = vec![ip_server.clone(), ip_client.clone()];
    expected.sort();
    assert_eq!(held, expected, "IPAM store {}", ipam_dir.display());

    ctx.run_container(
        &mut c,
        &server,
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo via-cni-bridge-in-containerd > /tmp/www/index.html \
             && exec httpd -f -p 8080 -h /tmp/www",
        ],
    )
    .await;
    let wget = ctx
        .run_container(&mut c, &client, "wget", &["sleep", "3600"])
        .await;
    // The client pod reaches the server pod at its IP, across the bridge.
    let url = format!("http://{ip_server}:8080/");
    let mut got = (1, String::new(), String::new());
    for _ in 0..100 {
        // (No `-T`: Debian busybox 1.35's wget crashes with it.)
        got = exec(&mut c, &wget, &["wget", "-qO-", &url]).await;
        if got.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (got.0, got.1.as_str()),
        (0, "via-cni-bridge-in-containerd"),
        "wget {url} from the client pod: {got:?}"
    );
    // portmap, chained after us, got our result: the host port reaches the server pod.
    let body = get_via_host_port().await;
    assert!(
        body.contains("via-cni-bridge-in-containerd"),
        "GET 127.0.0.1:{HOST_PORT}: {body:?}"
    );

    for id in [&server.0, &client.0] {
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("StopPodSandbox");
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("RemovePodSandbox");
    }
    assert_eq!(
        e2e::node::allocated_ips(&ipam_dir),
        Vec::<String>::new(),
        "CNI DEL through cni-bridge released the addresses"
    );
    // DEL finishes the veth teardown in the background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !our_veths(node).is_empty() {
        assert!(
            Instant::now() < deadline,
            "host veths left after DEL: {:?}",
            our_veths(node)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "pods left: {left:?}");
    let nat = node.run("iptables-save", &["-t", "nat"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains(&HOST_PORT.to_string()),
        "portmap's rules removed with the pod"
    );
}

/// The conflist containerd loads: our plugin, with host-local-shaped IPAM, then portmap.
fn write_conflist(conf_dir: &Path, ipam_dir: &Path) {
    std::fs::create_dir_all(conf_dir).unwrap();
    let conf = serde_json::json!({
        // Debian's plugins (1.1.1) do not accept 1.1.0.
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "cni-bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": SUBNET }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    std::fs::write(
        conf_dir.join("10-cni-bridge.conflist"),
        serde_json::to_vec_pretty(&conf).unwrap(),
    )
    .unwrap();
}

/// containerd 1.6's single `bin_dir`: the built `cni-bridge` (a link to it: the binary runs
/// unchanged) and Debian's plugins.
fn link_plugins(bin_dir: &Path, plugin: &Path) {
    std::fs::create_dir_all(bin_dir).unwrap();
    std::os::unix::fs::symlink(plugin, bin_dir.join("cni-bridge")).unwrap();
    for e in std::fs::read_dir(REFERENCE_PLUGINS)
        .unwrap_or_else(|e| {
            panic!("{REFERENCE_PLUGINS}: {e} (apt-get install containernetworking-plugins)")
        })
        .flatten()
    {
        let to = bin_dir.join(e.file_name());
        if !to.exists() {
            std::os::unix::fs::symlink(e.path(), to).unwrap();
        }
    }
    for needed in ["portmap", "loopback"] {
        assert!(
            bin_dir.join(needed).exists(),
            "{needed} missing in {REFERENCE_PLUGINS}"
        );
    }
}

/// busybox, and the sandbox image containerd needs: the same layer, sleeping forever.
async fn push_images(registry: &Registry) -> (String, String) {
    let layer = images::build_layer(
        &images::busybox_base_entries().unwrap(),
        images::Compression::Gzip,
    )
    .unwrap();
    let pusher = Pusher::for_registry(registry).unwrap();
    let busybox = images::ImageSpec {
        cmd: Some(vec!["sh".into()]),
        ..images::ImageSpec::new(vec![layer.clone()])
    };
    pusher
        .push_image("test/busybox", Some("latest"), &busybox)
        .await
        .unwrap();
    let pause = images::ImageSpec {
        entrypoint: Some(vec!["/bin/sleep".into(), "2147483647".into()]),
        ..images::ImageSpec::new(vec![layer])
    };
    pusher
        .push_image("test/pause", Some("1"), &pause)
        .await
        .unwrap();
    (
        format!("{}/test/busybox:latest", registry.addr()),
        format!("{}/test/pause:1", registry.addr()),
    )
}

struct PodCtx {
    busybox: String,
    logs: PathBuf,
    cgroup_parent: String,
}

impl PodCtx {
    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.logs.join(name).display().to_string(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn run_container(
        &self,
        c: &mut Clients,
        pod: &(String, PodSandboxConfig),
        name: &str,
        cmd: &[&str],
    ) -> String {
        let id = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: self.busybox.clone(),
                        ..Default::default()
                    }),
                    command: cmd.iter().map(|s| s.to_string()).collect(),
                    log_path: format!("{name}/0.log"),
                    linux: Some(LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        c.runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }
}

async fn run_pod(c: &mut Clients, cfg: PodSandboxConfig) -> (String, PodSandboxConfig) {
    let id = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    (id, cfg)
}

async fn pod_ip(c: &mut Clients, id: &str) -> String {
    c.runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default()
}

/// ExecSync: exit code, trimmed stdout and stderr.
async fn exec(c: &mut Clients, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        String::from_utf8_lossy(&r.stderr).trim().to_string(),
    )
}

/// GET / on 127.0.0.1:HOST_PORT of the node (this thread is in the node namespace).
async fn get_via_host_port() -> String {
    let mut body = String::new();
    for _ in 0..50 {
        body = tokio::task::spawn_blocking(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", HOST_PORT as u16))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok::<_, std::io::Error>(body)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| e.to_string());
        if body.contains("200 OK") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    body
}

/// Host-side links of the node whose alias marks them as cni-bridge's, on our network.
fn our_veths(node: &NodeNetns) -> Vec<String> {
    let out = node.run("ip", &["-j", "link", "show"]).unwrap();
    assert!(out.status.success(), "ip -j link show failed");
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let prefix = format!("cni-bridge/{NETWORK}/");
    links
        .iter()
        .filter(|l| {
            l["ifalias"]
                .as_str()
                .is_some_and(|a| a.starts_with(&prefix))
        })
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Stops and removes, through CRI, every pod containerd still lists (CNI DEL runs for
/// each), before containerd itself is stopped; a no-op when the test removed them.
struct PodReaper {
    socket: PathBuf,
}

impl Drop for PodReaper {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        // A thread and runtime of their own: this may run while the test's runtime unwinds.
        let r = std::thread::spawn(move || -> anyhow::Result<usize> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), remove_all_pods(&socket)).await?
            })
        })
        .join();
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => eprintln!("removed {n} pods left behind"),
            Ok(Err(e)) => eprintln!("removing leftover pods: {e:#}"),
            Err(_) => eprintln!("removing leftover pods: thread panicked"),
        }
    }
}

async fn remove_all_pods(socket: &Path) -> anyhow::Result<usize> {
    let mut c = e2e::cri::connect(socket).await?;
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    for p in &pods {
        let _ = c
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await;
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await?;
    }
    Ok(pods.len())
}

/// The pods' cgroup parent in every hierarchy (v1 controllers and `unified`), removed
/// deepest first once containerd and its containers are gone.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for ctrl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = ctrl.path().join(self.0.trim_start_matches('/'));
            if dir.is_dir() {
                remove_cgroup_tree(&dir);
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("cgroup {}: {e}", dir.display());
    }
}
