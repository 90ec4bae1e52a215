//! ADD/DEL latency of cni-bridge against the reference `bridge` + `host-local` plugins
//! (Debian's containernetworking-plugins), each run exactly as a runtime runs them: one exec
//! per command, inside a host network namespace made for the run (10.x only, nothing leaves
//! it). Prints medians and our/reference ratios; asserts nothing.
//!
//!     cargo bench -p cni-bridge --bench add_del
//!
//! Env: CNI_BENCH_PODS (default 50), CNI_BENCH_ROUNDS (concurrent rounds, default 3).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni_bridge::netlink::{Netlink, link};
use cni_bridge::netns::PinnedNetns;
use serde_json::{Value, json};

const OURS: &str = env!("CARGO_BIN_EXE_cni-bridge");
const REFERENCE: &str = "/usr/lib/cni/bridge";
const PIN_DIR: &str = "/run/cni-bridge-bench";

struct Plugin {
    label: &'static str,
    bin: &'static str,
    type_name: &'static str,
}

struct Node {
    host: PinnedNetns,
    data: tempfile::TempDir,
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Node {
    fn new(tag: &str) -> Node {
        let host = PinnedNetns::create(
            Path::new(PIN_DIR),
            &format!("host-{tag}-{}", std::process::id()),
        )
        .expect("create host netns (run as root)");
        Node {
            host,
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn conf(&self, p: &Plugin, ip_masq: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": "benchnet",
            "type": p.type_name,
            "bridge": "cnibench0",
            "isGateway": true,
            "ipMasq": ip_masq,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]], "dataDir": self.data.path()},
        }))
        .unwrap()
    }

    fn exec(&self, p: &Plugin, cmd: &str, pod: &PinnedNetns, id: &str, conf: &[u8]) -> Duration {
        self.exec_out(p, cmd, pod, id, conf).0
    }

    /// Waits until the bridge has at most `n` ports: our DEL finishes the veth teardown in
    /// a background child, which must not spill into the next timed call.
    fn wait_quiet(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ports() > n {
            assert!(Instant::now() < deadline, "ports never went away");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn ports(&self) -> usize {
        self.host
            .run(|| {
                let mut nl = Netlink::open().unwrap();
                let links = link::list(&mut nl).unwrap();
                let Some(br) = links.iter().find(|l| l.name == "cnibench0") else {
                    return 0;
                };
                links.iter().filter(|l| l.master == Some(br.index)).count()
            })
            .unwrap()
    }

    /// Time from the start of DEL until the host veth is gone from the kernel.
    fn del_until_gone(
        &self,
        p: &Plugin,
        pod: &PinnedNetns,
        id: &str,
        conf: &[u8],
        veth: &str,
    ) -> Duration {
        let start = Instant::now();
        self.exec(p, "DEL", pod, id, conf);
        self.host
            .run(|| {
                let mut nl = Netlink::open().unwrap();
                while link::by_name(&mut nl, veth).unwrap().is_some() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
            .unwrap();
        start.elapsed()
    }

    fn exec_out(
        &self,
        p: &Plugin,
        cmd: &str,
        pod: &PinnedNetns,
        id: &str,
        conf: &[u8],
    ) -> (Duration, String) {
        let ns = self.host.open().unwrap();
        let mut c = Command::new(p.bin);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; `ns` is kept open by the closure.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = c.spawn().expect("spawn plugin");
        child.stdin.take().unwrap().write_all(conf).unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{} {cmd} failed: {}{}",
            p.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (took, String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Numbers {
    add: Duration,
    del: Duration,
    del_until_gone: Duration,
    concurrent: Duration,
}

fn measure(p: &Plugin, pods: usize, rounds: usize, ip_masq: bool) -> Numbers {
    let node = Node::new(p.label);
    let conf = node.conf(p, ip_masq);
    let netns: Vec<PinnedNetns> = (0..pods)
        .map(|i| {
            PinnedNetns::create(
                Path::new(PIN_DIR),
                &format!("pod-{}-{}-{i}", p.label, std::process::id()),
            )
            .unwrap()
        })
        .collect();
    let ids: Vec<String> = (0..pods).map(|i| format!("bench{i:04}")).collect();

    // Warm-up: the first ADD creates the bridge; page cache, etc.
    node.exec(p, "ADD", &netns[0], "warmup", &conf);
    node.exec(p, "DEL", &netns[0], "warmup", &conf);

    node.wait_quiet(0);
    let mut adds = Vec::new();
    let mut host_veths = Vec::new();
    for (ns, id) in netns.iter().zip(&ids) {
        let (took, out) = node.exec_out(p, "ADD", ns, id, &conf);
        adds.push(took);
        let v: Value = serde_json::from_str(&out).unwrap();
        host_veths.push(v["interfaces"][1]["name"].as_str().unwrap().to_string());
    }
    // DEL as the runtime sees it (until the plugin exits), each on a quiet kernel.
    let half = pods / 2;
    let mut dels = Vec::new();
    for (i, (ns, id)) in netns.iter().zip(&ids).enumerate().take(half) {
        node.wait_quiet(pods - i);
        dels.push(node.exec(p, "DEL", ns, id, &conf));
    }
    // DEL until the veth pair is really gone from the kernel.
    node.wait_quiet(pods - half);
    let mut gone = Vec::new();
    for ((ns, id), veth) in netns.iter().zip(&ids).zip(&host_veths).skip(half) {
        gone.push(node.del_until_gone(p, ns, id, &conf, veth));
    }

    let mut walls = Vec::new();
    for _ in 0..rounds {
        node.wait_quiet(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for (ns, id) in netns.iter().zip(&ids) {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.exec(p, "ADD", ns, id, conf));
            }
        });
        walls.push(start.elapsed());
        std::thread::scope(|s| {
            for (ns, id) in netns.iter().zip(&ids) {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.exec(p, "DEL", ns, id, conf));
            }
        });
    }
    node.wait_quiet(0);
    Numbers {
        add: median(adds),
        del: median(dels),
        del_until_gone: median(gone),
        concurrent: median(walls),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the benchmark needs root (network namespaces)");
        std::process::exit(1);
    }
    if !PathBuf::from(REFERENCE).exists() {
        eprintln!("{REFERENCE} missing: apt-get install containernetworking-plugins");
        std::process::exit(1);
    }
    let pods = env_usize("CNI_BENCH_PODS", 50);
    let rounds = env_usize("CNI_BENCH_ROUNDS", 3);
    let ours = Plugin {
        label: "ours",
        bin: OURS,
        type_name: "cni-bridge",
    };
    let reference = Plugin {
        label: "ref",
        bin: REFERENCE,
        type_name: "bridge",
    };

    println!(
        "cni-bridge benchmark: {pods} pods, sequential ADD then DEL (median per call), then {pods} concurrent ADDs (median wall time of {rounds} rounds)"
    );
    report("without ipMasq", &ours, &reference, pods, rounds, false);
    if Path::new("/usr/sbin/nft").exists() && Path::new("/usr/sbin/iptables").exists() {
        // Ours masquerades through nftables, the reference through iptables.
        report("with ipMasq", &ours, &reference, pods, rounds, true);
    } else {
        println!("(ipMasq comparison skipped: needs both nftables and iptables installed)");
    }
}

fn report(title: &str, ours: &Plugin, reference: &Plugin, pods: usize, rounds: usize, masq: bool) {
    let o = measure(ours, pods, rounds, masq);
    let r = measure(reference, pods, rounds, masq);
    println!();
    println!(
        "{:<30} {:>12} {:>12} {:>8}",
        title, "cni-bridge", "reference", "ratio"
    );
    for (name, a, b) in [
        ("ADD (median)", o.add, r.add),
        ("DEL (median)", o.del, r.del),
        (
            "DEL until veth gone (median)",
            o.del_until_gone,
            r.del_until_gone,
        ),
        (
            &*format!("{pods} concurrent ADDs (wall)"),
            o.concurrent,
            r.concurrent,
        ),
    ] {
        println!(
            "{name:<30} {:>12} {:>12} {:>7.2}x",
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
