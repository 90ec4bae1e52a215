//! Test harness: every test that runs plugins gets its own "node" network namespace (a new
//! netns on a dedicated thread, with a current-thread tokio runtime on that thread, so the
//! plugins it starts create their bridge, veths and iptables rules there and nowhere else),
//! plus pod namespaces pinned in a private directory. Dropping the harness unpins everything,
//! and a netns that nothing references any more is deleted by the kernel with its interfaces.

use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use serde_json::{Value, json};

use super::{Attachment, Cni, PortMapping};

/// Where Debian's containernetworking-plugins are installed.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Runs `test` inside a fresh network namespace (the test's node) on its own thread, with a
/// current-thread tokio runtime on that thread. Panics in `test` propagate.
pub fn on_node<F, Fut>(test: F)
where
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    assert!(
        nix::unistd::geteuid().is_root(),
        "network tests need root (they create network namespaces)"
    );
    let thread = std::thread::Builder::new()
        .name("cni-test-node".into())
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for the test node");
            assert_ne!(
                ns_inode("/proc/thread-self/ns/net"),
                ns_inode("/proc/self/ns/net"),
                "the test node must not share the process's network namespace"
            );
            let pins = PinDir::new();
            let ns = pins.pin_current("node");
            run("ip", &["link", "set", "lo", "up"]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(test(Node { ns, pins }));
        })
        .expect("spawn the test node thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The test's node: its pinned netns and the directory where pod namespaces are pinned.
pub struct Node {
    pub ns: PathBuf,
    pub pins: PinDir,
}

impl Node {
    /// A new pod network namespace (with `lo` up), pinned.
    pub fn new_pod_netns(&self, name: &str) -> PathBuf {
        self.pins.new_netns(name)
    }
}

/// A private temp directory holding namespace pins (bind mounts of nsfs files). It is a bind
/// mount of itself made private, so the pins never propagate to other mount namespaces.
pub struct PinDir {
    dir: tempfile::TempDir,
    pins: Mutex<Vec<PathBuf>>,
}

impl PinDir {
    pub fn new() -> PinDir {
        let dir = tempfile::Builder::new()
            .prefix("cri-net-pins-")
            .tempdir()
            .expect("pin dir");
        mount(
            Some(dir.path()),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind-mount the pin dir onto itself");
        mount(
            None::<&str>,
            dir.path(),
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make the pin dir private");
        PinDir {
            dir,
            pins: Mutex::new(Vec::new()),
        }
    }

    /// Pins the calling thread's network namespace at `<dir>/<name>`.
    pub fn pin_current(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::File::create(&path).expect("create pin file");
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("pin the network namespace");
        self.pins.lock().unwrap().push(path.clone());
        path
    }

    /// Creates a network namespace on a short-lived thread, brings `lo` up and pins it.
    pub fn new_netns(&self, name: &str) -> PathBuf {
        std::thread::scope(|s| {
            s.spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for a pod");
                run("ip", &["link", "set", "lo", "up"]);
                self.pin_current(name)
            })
            .join()
            .expect("pod netns thread")
        })
    }

    /// Unpins a namespace (deleting it when nothing else holds it) and removes its pin file.
    pub fn unpin(&self, path: &Path) {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(path);
        self.pins.lock().unwrap().retain(|p| p != path);
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let pins = std::mem::take(&mut *self.pins.lock().unwrap_or_else(|e| e.into_inner()));
        for p in pins.iter().rev() {
            let _ = umount2(p, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(p);
        }
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

fn ns_inode(path: &str) -> u64 {
    std::fs::metadata(path).expect("stat a netns").ino()
}

/// Runs a command (in the calling thread's netns) and returns its stdout; panics on failure.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside the pinned netns `ns` (through nsenter); returns (success, output).
pub fn run_in(ns: &Path, prog: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg(prog)
        .args(args)
        .output()
        .expect("run nsenter");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The interfaces of netns `ns` with their addresses (link-local ones left out), from
/// `ip -j addr`.
pub fn interfaces(ns: &Path) -> Vec<(String, Vec<IpAddr>)> {
    let (ok, out) = run_in(ns, "ip", &["-j", "addr"]);
    assert!(ok, "ip -j addr: {out}");
    let v: Value = serde_json::from_str(&out).expect("ip -j output");
    v.as_array()
        .expect("ip -j array")
        .iter()
        .map(|i| {
            let name = i["ifname"].as_str().unwrap_or_default().to_string();
            let addrs = i["addr_info"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["scope"] != "link")
                        .filter_map(|x| x["local"].as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            (name, addrs)
        })
        .collect()
}

pub fn addresses_of(ns: &Path, ifname: &str) -> Option<Vec<IpAddr>> {
    interfaces(ns)
        .into_iter()
        .find(|(n, _)| n == ifname)
        .map(|(_, a)| a)
}

/// A test's CNI setup: config, cache and IPAM directories in one temp dir, and a [`Cni`]
/// reading them with the reference plugins.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub conf_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cni: Cni,
    /// The third octet of this test's subnet, 10.199.<n>.0/24.
    pub n: u8,
}

impl Fixture {
    /// A fixture whose conflist is the reference bridge + host-local, loopback and portmap on
    /// 10.199.<n>.0/24 with bridge `critest<n>`.
    pub fn bridge(n: u8) -> Fixture {
        let f = Fixture::empty(n);
        f.write_conf("10-test.conflist", &f.bridge_conflist());
        f
    }

    /// A fixture with no config yet; plugins are looked up in `<dir>/bin` (for script
    /// plugins), then in the reference plugin directory.
    pub fn empty(n: u8) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("cri-net-test-")
            .tempdir()
            .expect("fixture dir");
        let conf_dir = dir.path().join("net.d");
        let cache_dir = dir.path().join("cache");
        let ipam_dir = dir.path().join("ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let bin_dirs = vec![dir.path().join("bin"), PathBuf::from(REFERENCE_PLUGINS)];
        std::fs::create_dir_all(&bin_dirs[0]).unwrap();
        let cni = Cni::new(conf_dir.clone(), bin_dirs.clone(), cache_dir.clone());
        Fixture {
            dir,
            conf_dir,
            cache_dir,
            ipam_dir,
            bin_dirs,
            cni,
            n,
        }
    }

    pub fn network_name(&self) -> String {
        format!("crinet{}", self.n)
    }

    pub fn bridge_conflist(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.network_name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": format!("critest{}", self.n),
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.199.{}.0/24", self.n)}]],
                        "dataDir": self.ipam_dir,
                    }
                },
                {"type": "loopback"},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    pub fn write_conf(&self, name: &str, conf: &Value) -> PathBuf {
        let path = self.conf_dir.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(conf).unwrap()).unwrap();
        path
    }

    /// host-local's reservation file for `ip`.
    pub fn ip_file(&self, ip: IpAddr) -> PathBuf {
        self.ipam_dir.join(self.network_name()).join(ip.to_string())
    }

    pub fn cache_file(&self, sandbox_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{sandbox_id}.json"))
    }

    /// Whether `ip` is in this fixture's subnet (and not the bridge's gateway .1).
    pub fn in_subnet(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                o[0] == 10 && o[1] == 199 && o[2] == self.n && o[3] > 1
            }
            IpAddr::V6(_) => false,
        }
    }

    /// Writes an executable shell-script plugin into the fixture's first bin dir.
    pub fn script_plugin(&self, name: &str, body: &str) -> PathBuf {
        let path = self.bin_dirs[0].join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

pub fn attachment(sandbox_id: &str, netns: &Path, port_mappings: Vec<PortMapping>) -> Attachment {
    Attachment {
        sandbox_id: sandbox_id.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        pod_name: format!("pod-{sandbox_id}"),
        pod_namespace: "testns".into(),
        pod_uid: format!("uid-{sandbox_id}"),
        port_mappings,
        cgroup_parent: String::new(),
        pod_cidr: String::new(),
    }
}
