//! Test harness: every test gets its own "host" network namespace (the bridge lives there,
//! never in the machine's root namespace) and pod namespaces, pinned under a private mount
//! dir and destroyed on drop, with everything in them. IPAM state goes to a temp dir.
//! Only 10.x subnets (and, for the dual-stack test, a ULA) are used, inside those namespaces.
#![allow(dead_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cni_bridge::netns::PinnedNetns;
use serde_json::{Value, json};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_cni-bridge");
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn pin_dir() -> PathBuf {
    PathBuf::from("/run/cni-bridge-test")
}

pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A test node: a host namespace, an IPAM data dir, and pods.
pub struct Node {
    pub host: PinnedNetns,
    pub data: tempfile::TempDir,
}

pub struct Pod {
    pub ns: PinnedNetns,
    pub id: String,
}

impl Pod {
    pub fn path(&self) -> &Path {
        self.ns.path()
    }
}

/// What one plugin run printed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The error code of a failed run (panics when the run succeeded).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.stdout);
        self.json()["code"].as_u64().expect("error JSON has a code")
    }

    pub fn expect_ok(self) -> Self {
        assert!(
            self.ok,
            "plugin failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Node {
    pub fn new() -> Node {
        let host = PinnedNetns::create(&pin_dir(), &unique("host")).expect("create host netns");
        // Loopback up, as on a real host (the reference plugins expect it for nothing, but
        // nft and ip do not care either way).
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node { host, data };
        node.exec("ip", &["link", "set", "lo", "up"]);
        node
    }

    pub fn pod(&self) -> Pod {
        let id = unique("pod");
        let ns = PinnedNetns::create(&pin_dir(), &id).expect("create pod netns");
        Pod {
            ns,
            id: id.replace('-', ""),
        }
    }

    /// A bridge-plugin config with host-local IPAM on `subnet`, merged with `extra`.
    pub fn conf(&self, subnet: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": "testnet",
            "type": "cni-bridge",
            "bridge": "cnibr0",
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": self.data.path(),
            },
        });
        merge(&mut c, extra);
        c
    }

    /// Runs `bin` as a CNI plugin inside the host namespace.
    pub fn run_bin(
        &self,
        bin: &str,
        cmd: &str,
        pod: Option<&Pod>,
        ifname: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> Run {
        let mut env: Vec<(String, String)> = vec![
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_IFNAME".into(), ifname.into()),
            ("CNI_PATH".into(), REFERENCE_DIR.into()),
        ];
        if let Some(p) = pod {
            env.push(("CNI_CONTAINERID".into(), p.id.clone()));
            env.push(("CNI_NETNS".into(), p.path().display().to_string()));
        }
        for (k, v) in extra_env {
            env.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                env.push((k.to_string(), v.to_string()));
            }
        }
        let stdin = serde_json::to_vec(conf).unwrap();
        self.run_raw(bin, &env, &stdin)
    }

    pub fn run_raw(&self, bin: &str, env: &[(String, String)], stdin: &[u8]) -> Run {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        enter_before_exec(&mut cmd, self.host.open().expect("open host netns"));
        let mut child = cmd.spawn().expect("spawn plugin");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs our plugin.
    pub fn run(&self, cmd: &str, pod: &Pod, conf: &Value) -> Run {
        self.run_bin(PLUGIN, cmd, Some(pod), "eth0", conf, &[])
    }

    pub fn add(&self, pod: &Pod, conf: &Value) -> Value {
        self.run("ADD", pod, conf).expect_ok().json()
    }

    /// Runs a program inside the host namespace and returns its stdout.
    pub fn exec(&self, prog: &str, args: &[&str]) -> String {
        exec_in(self.host.path(), prog, args)
    }

    /// `ip -j -d <args>` in the host namespace.
    pub fn ip(&self, args: &[&str]) -> Value {
        ip_json(self.host.path(), args)
    }

    /// The IP files in the IPAM store of network `net`.
    pub fn allocations(&self, net: &str) -> Vec<String> {
        let dir = self.data.path().join(net);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Names of the links attached to `bridge`.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        let links = self.ip(&["link", "show"]);
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["master"] == bridge)
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        link_in(self.host.path(), name)
    }
}

pub fn exec_in(ns: &Path, prog: &str, args: &[&str]) -> String {
    let out = command_in(ns, prog, args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a program inside `ns`; whether it succeeded.
pub fn try_exec_in(ns: &Path, prog: &str, args: &[&str]) -> bool {
    command_in(ns, prog, args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn command_in(ns: &Path, prog: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    enter_before_exec(&mut cmd, std::fs::File::open(ns).expect("open netns"));
    cmd
}

/// Makes the child enter the namespace `ns` (which the closure keeps open) before exec.
fn enter_before_exec(cmd: &mut Command, ns: std::fs::File) {
    // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn ip_json(ns: &Path, args: &[&str]) -> Value {
    let mut full = vec!["-j", "-d"];
    full.extend_from_slice(args);
    let out = exec_in(ns, "ip", &full);
    if out.trim().is_empty() {
        json!([])
    } else {
        serde_json::from_str(&out).unwrap()
    }
}

pub fn link_in(ns: &Path, name: &str) -> Option<Value> {
    let links = ip_json(ns, &["link", "show"]);
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == name)
        .cloned()
}

/// Global addresses (`addr/prefix`) of a link.
pub fn addrs_in(ns: &Path, name: &str) -> Vec<String> {
    let v = ip_json(ns, &["addr", "show", "dev", name]);
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Routes of one family as `dst via gw` strings (`default` for the default route).
pub fn routes_in(ns: &Path, v6: bool) -> Vec<String> {
    let fam = if v6 { "-6" } else { "-4" };
    let v = ip_json(ns, &[fam, "route", "show"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| match r["gateway"].as_str() {
            Some(gw) => format!("{} via {gw}", r["dst"].as_str().unwrap()),
            None => r["dst"].as_str().unwrap().to_string(),
        })
        .collect()
}

pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

pub fn nft_available() -> bool {
    Path::new("/usr/sbin/nft").exists() || Path::new("/sbin/nft").exists()
}

/// Polls `cond` for up to 5 s: DEL deletes the veth pair in a background child (the kernel's
/// device teardown takes 10-20 ms), so "gone" is checked as "gone shortly after DEL".
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
