//! The pod test node: a node network namespace of the test's own, with a local registry
//! holding a busybox image, the real cri-server inside it, Debian's reference CNI plugins (or
//! our cni-bridge) on a 10.x subnet of the test's own, and helpers to run pods and
//! containers through the CRI API. Everything is torn down when the test ends, also when it
//! fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::cri::Clients;
use crate::daemon::CriServer;
use crate::images::{self, Pusher};
use crate::netns::{NodeNetns, write_reference_conflist};
use crate::registry::Registry;

pub struct Node {
    // Field order is drop order: daemon before registry before the namespace.
    pub server: CriServer,
    pub _registry: Registry,
    pub c: Clients,
    pub busybox: String,
    pub logs: tempfile::TempDir,
    pub cgroup_parent: String,
    pub subnet_prefix: String,
    pub ipam_dir: PathBuf,
    pub cdi_dir: PathBuf,
    pub node: NodeNetns,
}

/// Runs `body` on a thread inside a fresh node netns with a tokio runtime of its own.
pub fn in_node<F, Fut>(subnet: u8, body: F)
where
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    in_node_with(subnet, false, body)
}

/// `ours`: the pod network comes from our `cni-bridge` instead of the reference `bridge`.
pub fn in_node_with<F, Fut>(subnet: u8, ours: bool, body: F)
where
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    in_node_opts(
        NodeOptions {
            subnet,
            ours,
            ..Default::default()
        },
        body,
    )
}

/// How a test node is set up.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The pod subnet is `10.<net>.<subnet>.0/24`; each test file has its own `net`.
    pub net: u8,
    pub subnet: u8,
    /// Our `cni-bridge` as the pod network instead of the reference `bridge`.
    pub ours: bool,
    /// TOML appended to the daemon's config.
    pub extra_config: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            net: 231,
            subnet: 1,
            ours: false,
            extra_config: String::new(),
        }
    }
}

/// Runs `body` on a thread inside a fresh node netns with a tokio runtime of its own.
pub fn in_node_opts<F, Fut>(opts: NodeOptions, body: F)
where
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let NodeOptions {
        net,
        subnet,
        ours,
        extra_config,
    } = opts;
    let node = NodeNetns::new().expect("node netns");
    node.enter().expect("enter node netns");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let registry = Registry::start().expect("registry");
        let pusher = Pusher::for_registry(&registry).unwrap();
        let layer = images::build_layer(
            &images::busybox_base_entries().unwrap(),
            images::Compression::Gzip,
        )
        .unwrap();
        let spec = images::ImageSpec {
            cmd: Some(vec!["sh".into()]),
            ..images::ImageSpec::new(vec![layer])
        };
        pusher
            .push_image("test/busybox", Some("latest"), &spec)
            .await
            .unwrap();
        let busybox = format!("{}/test/busybox:latest", registry.addr());

        let conf = tempfile::tempdir().unwrap().keep();
        let bridge = format!("e2ebr{net}x{subnet}");
        let subnet_cidr = format!("10.{net}.{subnet}.0/24");
        write_reference_conflist(
            &conf.join("net.d"),
            &bridge,
            &subnet_cidr,
            &conf.join("ipam"),
        )
        .unwrap();
        let mut bin_dirs = vec!["/usr/lib/cni".to_string()];
        if ours {
            let path = conf.join("net.d/10-e2e.conflist");
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\"type\": \"bridge\"", "\"type\": \"cni-bridge\"");
            assert!(text.contains("cni-bridge"));
            std::fs::write(&path, text).unwrap();
            bin_dirs.insert(
                0,
                crate::daemon::bin_path("cni-bridge")
                    .parent()
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
        // The bridge plugin turns on forwarding in the node netns: nothing from the pod subnet
        // may leave through anything but its bridge.
        let out = node
            .run(
                "iptables",
                &[
                    "-A",
                    "FORWARD",
                    "-s",
                    &subnet_cidr,
                    "!",
                    "-o",
                    &bridge,
                    "-j",
                    "DROP",
                ],
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = CriServer::start(&format!(
            "[registry]\ninsecure_registries = [{:?}]\n[cni]\nconf_dir = {:?}\nbin_dirs = {:?}\n[cdi]\nspec_dirs = [{:?}]\n[stats]\ncollect_period_ms = 300\n{extra_config}\n",
            registry.addr(),
            conf.join("net.d"),
            bin_dirs,
            conf.join("cdi")
        ))
        .expect("cri-server");
        let mut c = server.clients().await.unwrap();
        c.image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: busybox.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull busybox");
        let cgroup_parent = format!("/cri-e2e-{}", &e2e_id()[..10]);
        // Removed after the node (and its containers) are gone, even when the body panics.
        let _cgroups = CgroupParentGuard(cgroup_parent.clone());
        let n = Node {
            server,
            _registry: registry,
            c,
            busybox,
            logs: tempfile::tempdir().unwrap(),
            cgroup_parent: cgroup_parent.clone(),
            subnet_prefix: format!("10.{net}.{subnet}."),
            ipam_dir: conf.join("ipam"),
            cdi_dir: conf.join("cdi"),
            node,
        };
        let _conf = RemoveDir(conf);
        body(n).await;
    });
}

fn e2e_id() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
    )
}

struct CgroupParentGuard(String);

impl Drop for CgroupParentGuard {
    fn drop(&mut self) {
        remove_cgroup_parent(&self.0);
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove_cgroup_parent(parent: &str) {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for ctrl in rd.flatten() {
        let dir = ctrl.path().join(parent.trim_start_matches('/'));
        let _ = std::fs::remove_dir(&dir);
    }
}

impl Node {
    pub async fn run_pod_with(&mut self, cfg: PodSandboxConfig) -> (String, PodSandboxConfig) {
        let id = self
            .c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        (id, cfg)
    }

    pub async fn run_container_with(
        &mut self,
        pod: &(String, PodSandboxConfig),
        config: ContainerConfig,
    ) -> String {
        let id = self
            .c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.c
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
        id
    }

    pub async fn exec_url(
        &mut self,
        id: &str,
        cmd: &[&str],
        tty: bool,
        stdin: bool,
    ) -> Result<String, tonic::Status> {
        self.c
            .runtime
            .exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .map(|r| r.into_inner().url)
    }

    /// `ps` in the container (through ExecSync).
    pub async fn ps(&mut self, id: &str) -> String {
        let r = self
            .c
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["ps".into()],
                timeout: 5,
            })
            .await
            .expect("ExecSync ps")
            .into_inner();
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    pub async fn wait_ps(&mut self, id: &str, needle: &str, present: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ps = self.ps(id).await;
            if ps.contains(needle) == present {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} present={} expected {present}:\n{ps}",
                !present
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.logs.path().join(name).display().to_string(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            // As the kubelet sends it for a pod without shareProcessNamespace.
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn run_pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        let cfg = self.pod_config(name);
        let id = self
            .c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        (id, cfg)
    }

    pub fn container_config(&self, name: &str, cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
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
        }
    }

    pub async fn create(
        &mut self,
        pod: &(String, PodSandboxConfig),
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start(&mut self, id: &str) {
        self.c
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("StartContainer");
    }

    pub async fn run_container(
        &mut self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        cmd: &[&str],
    ) -> String {
        let cfg = self.container_config(name, cmd);
        let id = self.create(pod, cfg).await.expect("CreateContainer");
        self.start(&id).await;
        id
    }

    pub async fn status(&mut self, id: &str) -> ContainerStatus {
        self.c
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .unwrap()
    }

    pub async fn wait_exited(&mut self, id: &str, within: Duration) -> ContainerStatus {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status(id).await;
            if st.state == ContainerState::ContainerExited as i32 {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?}",
                st.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.c
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn pod_ip(&mut self, id: &str) -> String {
        let st = self
            .c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        st.status.unwrap().network.unwrap().ip
    }

    /// `sh -c` in the container: exit code, trimmed stdout and stderr.
    pub async fn sh(&mut self, id: &str, script: &str) -> (i32, String, String) {
        let r = self
            .exec(id, &["sh", "-c", script], 10)
            .await
            .expect("ExecSync");
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).trim().to_string(),
            String::from_utf8_lossy(&r.stderr).trim().to_string(),
        )
    }

    pub fn log_of(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(pod).join(container).join("0.log"))
            .unwrap_or_default()
    }

    pub async fn remove_pod(&mut self, id: &str) {
        self.c
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .expect("StopPodSandbox");
        self.c
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .expect("RemovePodSandbox");
    }
}

/// CRI log lines: `<RFC3339Nano> <stream> <P|F> <text>`.
pub fn parse_log(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap_or("");
            assert!(
                ts.ends_with('Z') && ts.contains('T'),
                "timestamp {ts:?} in {l:?}"
            );
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect()
}

/// IPs host-local still holds (its files named after addresses).
pub fn allocated_ips(ipam_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(ipam_dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push(name);
            }
        }
    }
    out
}

pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Host pids of the processes whose raw command line (NUL-separated) satisfies `matches`.
pub fn pids_where(matches: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            matches(&std::fs::read(e.path().join("cmdline")).ok()?).then_some(pid)
        })
        .collect()
}

pub fn processes_mentioning(needle: &str) -> usize {
    pids_where(|c| String::from_utf8_lossy(c).contains(needle)).len()
}
