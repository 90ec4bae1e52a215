//! Pod lifecycle benchmark: cri-server against containerd 1.6 (Debian's), both driven through
//! the same tonic CRI client, with the same busybox image from a local registry and the same
//! CNI configuration (Debian's reference bridge + host-local + portmap plugins).
//!
//! ```text
//! cargo run --release -p e2e --bin bench_pods -- [--pods N] [--parallel P] [--rounds R]
//!     [--warmup W] [--keep-logs DIR] [--no-build] [--config-extra FILE]
//! ```
//!
//! Per pod, "start" is RunPodSandbox + CreateContainer + StartContainer (busybox `sleep 3600`,
//! running when StartContainer returns) and "teardown" is StopContainer (timeout 0) +
//! RemoveContainer + StopPodSandbox + RemovePodSandbox. Both daemons run side by side for the
//! whole benchmark. The sequential batch starts N pods per runtime one at a time, alternating
//! between the runtimes pod by pod (so that both see the same background load on a shared
//! machine), then tears them all down the same way; the parallel batch then runs N pods with P
//! at a time, one runtime after the other. Images are pulled through CRI before anything is
//! timed. Memory (VmRSS, and PSS beside it) of the daemon is read just started, idle (images
//! pulled, no pod yet) and with N pods running, and of the per-pod helper processes (our
//! monitors, containerd's shims) with N pods running.
//!
//! Everything runs inside a node network namespace the benchmark makes (registry, daemons, CNI
//! bridges); each runtime gets its own 10.232.x.0/24 subnet and bridge, and its own cgroup
//! parent, removed at the end. Drop guards delete pods, processes, mounts, cgroups and temp
//! dirs on errors and on Ctrl-C too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri::Clients;
use e2e::daemon::CriServer;
use e2e::images::{self, ImageSpec as PushSpec, Pusher};
use e2e::netns::{NodeNetns, write_reference_conflist};
use e2e::registry::Registry;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStateValue,
    CreateContainerRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

const DEFAULT_PODS: usize = 20;
const DEFAULT_PARALLEL: usize = 4;
/// Targets (reported, not asserted).
const TARGET_TIME_RATIO: f64 = 0.4;
const TARGET_MONITOR_KIB: u64 = 2 * 1024;
const TARGET_DAEMON_IDLE_KIB: u64 = 20 * 1024;
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const BUSYBOX_REPO: &str = "bench/busybox";
const PAUSE_REPO: &str = "bench/pause";

const USAGE: &str = "usage: bench_pods [--pods N] [--parallel P] [--rounds R] [--warmup W]
                  [--keep-logs DIR] [--no-build] [--config-extra FILE]

Starts and tears down pods (busybox `sleep 3600`, one container each) with cri-server and with
containerd (/usr/bin/containerd, CRI plugin) and prints the times and the memory used.

  --pods N         pods per batch (default 20)
  --parallel P     pods at a time in the parallel batch (default 4)
  --rounds R       rounds of both batches (default 1)
  --warmup W       untimed pods started and torn down before the batches (default 1)
  --keep-logs DIR  copy each daemon's log into DIR (cri-server logs at debug level)
  --no-build       do not run `cargo build -p cri-server -p cri-monitor` first; use the
                   binaries next to this one (or $CRI_SERVER_BIN)
  --config-extra FILE
                   TOML appended to cri-server's config (e.g. `[runtime]` settings to compare)";

struct Args {
    pods: usize,
    parallel: usize,
    rounds: usize,
    warmup: usize,
    keep_logs: Option<PathBuf>,
    build: bool,
    /// TOML appended to cri-server's config (`--config-extra FILE`).
    extra_config: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        pods: DEFAULT_PODS,
        parallel: DEFAULT_PARALLEL,
        rounds: 1,
        warmup: 1,
        keep_logs: None,
        build: true,
        extra_config: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{name} needs a value")),
            }
        };
        let number = |name: &str, v: String| -> Result<usize> {
            v.parse().with_context(|| format!("bad {name} {v:?}"))
        };
        match key.as_str() {
            "--pods" => args.pods = number("--pods", value("--pods")?)?,
            "--parallel" => args.parallel = number("--parallel", value("--parallel")?)?,
            "--rounds" => args.rounds = number("--rounds", value("--rounds")?)?,
            "--warmup" => args.warmup = number("--warmup", value("--warmup")?)?,
            "--keep-logs" => args.keep_logs = Some(PathBuf::from(value("--keep-logs")?)),
            "--no-build" => args.build = false,
            "--config-extra" => {
                let path = value("--config-extra")?;
                args.extra_config = std::fs::read_to_string(&path)
                    .with_context(|| format!("read --config-extra {path}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(args.pods >= 1, "--pods must be at least 1");
    ensure!(args.parallel >= 1, "--parallel must be at least 1");
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    Ok(args)
}

fn main() -> ExitCode {
    match bench_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_pods: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn bench_main() -> Result<()> {
    let args = parse_args()?;
    ensure!(
        nix::unistd::geteuid().is_root(),
        "bench_pods needs root (namespaces, mounts, cgroups)"
    );
    for p in [
        e2e::containerd::containerd_bin(),
        PathBuf::from(CNI_BIN_DIR).join("bridge"),
        PathBuf::from(CNI_BIN_DIR).join("host-local"),
        PathBuf::from(CNI_BIN_DIR).join("portmap"),
    ] {
        ensure!(
            p.exists(),
            "{} not found (apt-get install containerd containernetworking-plugins)",
            p.display()
        );
    }
    let bin = e2e::daemon::daemon_binaries(args.build)?;
    // SAFETY: no other thread exists yet (the tokio runtime is built below); CriServer reads
    // this to find the binary.
    unsafe { std::env::set_var("CRI_SERVER_BIN", &bin) };
    // The main thread enters the node netns before any other thread or process exists: the
    // runtime's workers, the registry, the daemons and their children all live there.
    let node = NodeNetns::new().context("make the node network namespace")?;
    node.enter()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // On a signal the benchmark future is dropped, and with it (Drop guards) every pod,
        // daemon, shim, monitor, mount, cgroup and temp dir.
        tokio::select! {
            r = run(&args, &node) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    // Tasks still running (after an error) are cancelled before the namespace goes.
    rt.shutdown_timeout(Duration::from_secs(10));
    drop(node);
    result
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    Containerd,
}

impl Kind {
    fn slug(self) -> &'static str {
        match self {
            Kind::Ours => "cri-server",
            Kind::Containerd => "containerd",
        }
    }
    /// Subnet and bridge of the runtime's pods (distinct per runtime).
    fn net_index(self) -> u8 {
        match self {
            Kind::Ours => 1,
            Kind::Containerd => 2,
        }
    }
    fn subnet(self) -> String {
        format!("10.232.{}.0/24", self.net_index())
    }
    fn bridge(self) -> String {
        format!("benchbr{}", self.net_index())
    }
}

/// Per pod, in the order the RPCs are made.
#[derive(Clone, Copy, Default)]
struct StartTimes {
    run_sandbox: Duration,
    create: Duration,
    start: Duration,
}

impl StartTimes {
    fn total(&self) -> Duration {
        self.run_sandbox + self.create + self.start
    }
}

#[derive(Clone, Copy, Default)]
struct TeardownTimes {
    stop_container: Duration,
    remove_container: Duration,
    stop_sandbox: Duration,
    remove_sandbox: Duration,
}

impl TeardownTimes {
    fn total(&self) -> Duration {
        self.stop_container + self.remove_container + self.stop_sandbox + self.remove_sandbox
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Mem {
    rss_kib: u64,
    pss_kib: u64,
}

impl std::ops::Add for Mem {
    type Output = Mem;
    fn add(self, o: Mem) -> Mem {
        Mem {
            rss_kib: self.rss_kib + o.rss_kib,
            pss_kib: self.pss_kib + o.pss_kib,
        }
    }
}

/// Memory with the pods of a batch running.
#[derive(Clone, Copy, Default, Debug)]
struct LoadedMem {
    daemon: Mem,
    helpers: Mem,
    helper_count: usize,
    pods: usize,
    /// Median of 100 ExecSync `true` in one of the pods' containers.
    exec_sync: Duration,
    /// Median of 10 ExecSync `true` 250 ms apart (as exec probes come: each after a pause).
    exec_sync_spaced: Duration,
    /// Median of 20 ListContainerStats calls with the batch's containers running.
    list_stats: Duration,
}

#[derive(Default)]
struct Batch {
    starts: Vec<StartTimes>,
    teardowns: Vec<TeardownTimes>,
    start_wall: Duration,
    teardown_wall: Duration,
    mem: LoadedMem,
}

#[derive(Default)]
struct RuntimeResult {
    label: String,
    /// The daemon just started (no image, no pod).
    fresh: Vec<Mem>,
    /// Images pulled, no pod yet.
    idle: Vec<Mem>,
    seq: Batch,
    par: Batch,
}

struct Images {
    busybox: String,
    pause: String,
}

async fn run(args: &Args, node: &NodeNetns) -> Result<()> {
    let registry = Registry::start().context("cannot start the local registry")?;
    let images = push_images(&registry).await?;
    eprintln!(
        "registry on {}: {} {}",
        registry.url(),
        images.busybox,
        images.pause
    );
    // The bridge plugin turns forwarding on in the node netns: nothing from a pod subnet may
    // leave through anything but its bridge.
    for kind in [Kind::Ours, Kind::Containerd] {
        let out = node.run(
            "iptables",
            &[
                "-A",
                "FORWARD",
                "-s",
                &kind.subnet(),
                "!",
                "-o",
                &kind.bridge(),
                "-j",
                "DROP",
            ],
        )?;
        ensure!(
            out.status.success(),
            "iptables FORWARD rule: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let logs = tempfile::Builder::new()
        .prefix("bench-pods-logs-")
        .tempdir()?;
    if let Some(d) = &args.keep_logs {
        std::fs::create_dir_all(d)?;
    }

    // Both daemons stay up for the whole run (dropped in reverse order, each after its pods
    // are deleted), so that the sequential batch can alternate between them pod by pod.
    let mut runners = Vec::new();
    for kind in [Kind::Ours, Kind::Containerd] {
        let r = Runner::open(args, kind, &registry, &images, logs.path())
            .await
            .with_context(|| format!("set up {}", kind.slug()))?;
        runners.push(r);
    }
    let result = rounds(args, &mut runners).await;
    for r in &runners {
        if let Err(e) = &result {
            eprintln!(
                "---- {} log (tail) ----\n{}\n({e:#})",
                r.kind.slug(),
                r.session.daemon.log_tail(40)
            );
        }
        if let Some(dir) = &args.keep_logs {
            let to = dir.join(format!("{}.log", r.kind.slug()));
            std::fs::copy(r.session.daemon.log_path(), &to)
                .with_context(|| format!("copy the log to {}", to.display()))?;
            eprintln!("log kept in {}", to.display());
        }
    }
    result?;
    print_report(args, &runners[0].res, &runners[1].res);
    Ok(())
}

/// Per round: the sequential batch, pods alternating between the runtimes (so both see the
/// same background load), then the parallel batch of each runtime in turn (who goes first
/// alternates by round).
async fn rounds(args: &Args, runners: &mut [Runner]) -> Result<()> {
    for round in 1..=args.rounds {
        let seq = sequential_interleaved(runners, round, args.pods).await?;
        for (r, b) in runners.iter_mut().zip(seq) {
            eprintln!(
                "round {round}: {:<20} sequential: start median {}  teardown median {}",
                r.res.label,
                ms(median(&totals_start(&b))),
                ms(median(&totals_teardown(&b))),
            );
            merge(&mut r.res.seq, b);
        }
        let n = runners.len();
        for k in 0..n {
            let r = &mut runners[(k + round - 1) % n];
            let ctx = r.ctx("par", round);
            let b = batch(
                &r.clients,
                &ctx,
                args.pods,
                args.parallel,
                &r.session.daemon,
            )
            .await
            .with_context(|| format!("{} parallel batch", r.kind.slug()))?;
            eprintln!(
                "round {round}: {:<20} {} parallel: start median {}  teardown median {}",
                r.res.label,
                args.parallel,
                ms(median(&totals_start(&b))),
                ms(median(&totals_teardown(&b))),
            );
            merge(&mut r.res.par, b);
        }
    }
    Ok(())
}

fn totals_start(b: &Batch) -> Vec<Duration> {
    b.starts.iter().map(StartTimes::total).collect()
}

fn totals_teardown(b: &Batch) -> Vec<Duration> {
    b.teardowns.iter().map(TeardownTimes::total).collect()
}

/// Builds and pushes busybox (`sh`) and the pause image containerd needs for its sandboxes
/// (the same busybox layer, `sleep 2147483647` as entrypoint).
async fn push_images(registry: &Registry) -> Result<Images> {
    let layer = images::build_layer(&images::busybox_base_entries()?, images::Compression::Gzip)?;
    let pusher = Pusher::for_registry(registry)?;
    let busybox = PushSpec {
        cmd: Some(vec!["sh".into()]),
        ..PushSpec::new(vec![layer.clone()])
    };
    pusher
        .push_image(BUSYBOX_REPO, Some("1"), &busybox)
        .await
        .context("push busybox")?;
    let pause = PushSpec {
        entrypoint: Some(vec!["/bin/sleep".into(), "2147483647".into()]),
        ..PushSpec::new(vec![layer])
    };
    pusher
        .push_image(PAUSE_REPO, Some("1"), &pause)
        .await
        .context("push pause")?;
    Ok(Images {
        busybox: format!("{}/{BUSYBOX_REPO}:1", registry.addr()),
        pause: format!("{}/{PAUSE_REPO}:1", registry.addr()),
    })
}

/// The daemon under test. Field order of [`Session`] makes it drop after the pods are deleted
/// and before its cgroup parent and CNI dirs go.
enum Daemon {
    Ours(CriServer),
    Containerd(Box<Containerd>),
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        match self {
            Daemon::Ours(s) => s.pid(),
            Daemon::Containerd(c) => c.pid(),
        }
    }
    fn socket(&self) -> &Path {
        match self {
            Daemon::Ours(s) => &s.socket,
            Daemon::Containerd(c) => &c.socket,
        }
    }
    /// Per-pod helper processes: our monitors, containerd's shims.
    fn helper_pids(&self) -> Vec<u32> {
        match self {
            Daemon::Ours(s) => monitor_pids(s.dir.path()),
            Daemon::Containerd(c) => c.shim_pids(),
        }
    }
    fn log_path(&self) -> PathBuf {
        match self {
            Daemon::Ours(s) => s.log_path(),
            Daemon::Containerd(c) => c.log_path(),
        }
    }
    fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Monitors of a cri-server instance: `cri-monitor` processes whose command line names a
/// directory of the instance.
fn monitor_pids(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            (comm.trim() == "cri-monitor" && String::from_utf8_lossy(&cmdline).contains(&needle))
                .then_some(pid)
        })
        .collect()
}

/// Deletes every pod of a daemon through CRI when dropped (errors, Ctrl-C), before the daemon
/// itself is stopped: CNI DEL runs, and the runtime removes its own containers and mounts.
struct PodReaper {
    socket: PathBuf,
}

impl Drop for PodReaper {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        // A thread of its own: this may run inside the benchmark's runtime (a dropped future).
        let r = std::thread::spawn(move || -> Result<usize> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), remove_all_pods(&socket))
                    .await
                    .context("removing pods timed out")?
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

/// StopPodSandbox + RemovePodSandbox for every pod the daemon lists, twice (a cancelled
/// RunPodSandbox may still be finishing); returns how many were removed.
async fn remove_all_pods(socket: &Path) -> Result<usize> {
    let mut c = e2e::cri::connect(socket).await?;
    let mut removed = 0;
    for pass in 0..2 {
        if pass > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let pods = c
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items;
        for p in pods {
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
            removed += 1;
        }
    }
    Ok(removed)
}

/// A cgroup parent (cgroupfs) of the benchmark: removed in every controller when dropped,
/// deepest first (what a runtime left below it, if anything).
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.0) {
            remove_cgroup_tree(&dir);
        }
    }
}

/// The parent's directory in each mounted hierarchy (v1 controllers, `unified`, `systemd`).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|c| c.path().join(parent.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cgroup {}: {e}", dir.display());
    }
}

/// Everything of one runtime run; fields drop in order: pods, daemon, cgroup parent, CNI dirs.
struct Session {
    _reaper: PodReaper,
    daemon: Daemon,
    _cgroup: CgroupParent,
    _cni: tempfile::TempDir,
}

struct PodCtx {
    kind: Kind,
    prefix: String,
    busybox: String,
    logs: PathBuf,
    cgroup_parent: String,
}

async fn start_daemon(
    kind: Kind,
    registry: &Registry,
    images: &Images,
    cni_conf: &Path,
    extra_config: &str,
) -> Result<Daemon> {
    Ok(match kind {
        Kind::Ours => Daemon::Ours(
            CriServer::start(&format!(
                "[registry]\ninsecure_registries = [{:?}]\n[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}]\n{extra_config}",
                registry.addr(),
                cni_conf,
                CNI_BIN_DIR,
            ))
            .context("cannot start cri-server")?,
        ),
        Kind::Containerd => {
            let c = Containerd::start(&ContainerdOptions {
                insecure_registries: vec![registry.addr().to_string()],
                sandbox_image: Some(images.pause.clone()),
                cni_bin_dir: Some(CNI_BIN_DIR.into()),
                cni_conf_dir: Some(cni_conf.to_path_buf()),
                ..Default::default()
            })
            .await
            .context("cannot start containerd")?;
            Daemon::Containerd(Box::new(c))
        }
    })
}

/// One runtime under test: its daemon (with pods, cgroup parent and CNI dirs as Drop guards),
/// a CRI client, and what was measured.
struct Runner {
    kind: Kind,
    session: Session,
    clients: Clients,
    busybox: String,
    logs: PathBuf,
    cgroup_parent: String,
    res: RuntimeResult,
}

impl Runner {
    /// Starts the daemon, reads its memory, pulls the images through CRI (both runtimes then
    /// start pods with the images present), reads its memory idle, and runs the warm-up pods.
    async fn open(
        args: &Args,
        kind: Kind,
        registry: &Registry,
        images: &Images,
        logs: &Path,
    ) -> Result<Runner> {
        let cni = tempfile::Builder::new()
            .prefix("bench-pods-cni-")
            .tempdir()?;
        let conf_dir = cni.path().join("net.d");
        write_reference_conflist(
            &conf_dir,
            &kind.bridge(),
            &kind.subnet(),
            &cni.path().join("ipam"),
        )?;
        let cgroup_parent = format!("/bench-{}-{}", kind.slug(), std::process::id());
        let cgroup = CgroupParent(cgroup_parent.clone());
        let daemon = start_daemon(kind, registry, images, &conf_dir, &args.extra_config).await?;
        let session = Session {
            _reaper: PodReaper {
                socket: daemon.socket().to_path_buf(),
            },
            daemon,
            _cgroup: cgroup,
            _cni: cni,
        };
        let mut clients = e2e::cri::connect(session.daemon.socket()).await?;
        let version = clients
            .runtime
            .version(k8s_cri::v1::VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner();
        let mut runner = Runner {
            kind,
            session,
            clients: Clients {
                runtime: clients.runtime.clone(),
                image: clients.image.clone(),
            },
            busybox: images.busybox.clone(),
            logs: logs.join(kind.slug()),
            cgroup_parent,
            res: RuntimeResult {
                label: format!(
                    "{} {}",
                    version.runtime_name,
                    version
                        .runtime_version
                        .split('~')
                        .next()
                        .unwrap_or_default()
                ),
                ..Default::default()
            },
        };
        eprintln!("{} on {}", runner.res.label, kind.subnet());
        let pid = runner.session.daemon.pid().context("daemon not running")?;
        runner
            .res
            .fresh
            .push(proc_mem(pid).context("daemon memory")?);
        let mut pulls = vec![images.busybox.clone()];
        if kind == Kind::Containerd {
            pulls.push(images.pause.clone());
        }
        for image in pulls {
            clients
                .image
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("pull {image}"))?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        runner
            .res
            .idle
            .push(proc_mem(pid).context("daemon memory")?);
        if args.warmup > 0 {
            let ctx = runner.ctx("warmup", 0);
            batch(
                &runner.clients,
                &ctx,
                args.warmup,
                1,
                &runner.session.daemon,
            )
            .await
            .context("warm-up")?;
        }
        Ok(runner)
    }

    fn ctx(&self, prefix: &str, round: usize) -> PodCtx {
        PodCtx {
            kind: self.kind,
            prefix: format!("{prefix}-r{round}"),
            busybox: self.busybox.clone(),
            logs: self.logs.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
        }
    }
}

/// `n` pods per runtime one at a time, alternating between the runtimes pod by pod: all
/// started, then checked and measured, then all torn down. "wall" is the sum of the pods' times.
async fn sequential_interleaved(runners: &[Runner], round: usize, n: usize) -> Result<Vec<Batch>> {
    let ctxs: Vec<PodCtx> = runners.iter().map(|r| r.ctx("seq", round)).collect();
    let mut pods: Vec<Vec<Started>> = runners.iter().map(|_| Vec::new()).collect();
    for ctx in &ctxs {
        make_log_dirs(ctx, n)?;
    }
    for i in 0..n {
        for (k, r) in runners.iter().enumerate() {
            let mut c = clone_clients(&r.clients);
            let (sb, ctr, times) = start_pod(&mut c, &ctxs[k], i).await.with_context(|| {
                format!("{}: start pod {}", r.kind.slug(), pod_name(&ctxs[k], i))
            })?;
            pods[k].push((i, sb, ctr, times));
        }
    }
    let mut mems = Vec::new();
    for (k, r) in runners.iter().enumerate() {
        mems.push(check_and_measure(&r.clients, &pods[k], &r.session.daemon).await?);
    }
    let mut teardowns: Vec<Vec<TeardownTimes>> = runners.iter().map(|_| Vec::new()).collect();
    let mut started: Vec<_> = pods.iter().map(|p| p.iter()).collect();
    for _ in 0..n {
        for (k, r) in runners.iter().enumerate() {
            let mut c = clone_clients(&r.clients);
            let (i, sb, ctr, _) = started[k].next().expect("n pods started");
            let times = teardown_pod(&mut c, sb, ctr).await.with_context(|| {
                format!(
                    "{}: tear down pod {}",
                    r.kind.slug(),
                    pod_name(&ctxs[k], *i)
                )
            })?;
            teardowns[k].push(times);
        }
    }
    let mut out = Vec::new();
    for (k, r) in runners.iter().enumerate() {
        check_no_pods(&r.clients).await?;
        let starts: Vec<StartTimes> = pods[k].iter().map(|p| p.3).collect();
        let start_wall = starts.iter().map(StartTimes::total).sum();
        let teardown_wall = teardowns[k].iter().map(TeardownTimes::total).sum();
        out.push(Batch {
            starts,
            teardowns: std::mem::take(&mut teardowns[k]),
            start_wall,
            teardown_wall,
            mem: mems[k],
        });
    }
    Ok(out)
}

/// A started pod: index, sandbox id, container id, times.
type Started = (usize, String, String, StartTimes);

fn clone_clients(c: &Clients) -> Clients {
    Clients {
        runtime: c.runtime.clone(),
        image: c.image.clone(),
    }
}

/// The kubelet makes the pod's log directory (and the container's) before it asks.
fn make_log_dirs(ctx: &PodCtx, n: usize) -> Result<()> {
    for i in 0..n {
        std::fs::create_dir_all(ctx.logs.join(pod_name(ctx, i)).join("main"))?;
    }
    Ok(())
}

/// Checks that the pods' containers all run, then reads the memory of the daemon and of its
/// per-pod helpers (idle by then).
async fn check_and_measure(
    clients: &Clients,
    pods: &[Started],
    daemon: &Daemon,
) -> Result<LoadedMem> {
    let mut c = clone_clients(clients);
    let running = c
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    let ids: Vec<_> = pods.iter().map(|p| p.2.as_str()).collect();
    let running_ours = running
        .iter()
        .filter(|c| ids.contains(&c.id.as_str()))
        .count();
    ensure!(
        running_ours == pods.len(),
        "{running_ours} of {} containers running after StartContainer",
        pods.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (exec_sync, exec_sync_spaced, list_stats) =
        exec_and_stats_latency(&mut c, &pods[0].2).await?;
    let helpers = daemon.helper_pids();
    let mut mem = LoadedMem {
        daemon: proc_mem(daemon.pid().context("daemon gone")?).context("daemon memory")?,
        helper_count: helpers.len(),
        pods: pods.len(),
        exec_sync,
        exec_sync_spaced,
        list_stats,
        ..Default::default()
    };
    for p in helpers {
        if let Some(m) = proc_mem(p) {
            mem.helpers = mem.helpers + m;
        }
    }
    Ok(mem)
}

/// ExecSync `true` 100 times in `container` back to back, then 10 times 250 ms apart, and
/// ListContainerStats 20 times: the medians.
async fn exec_and_stats_latency(
    c: &mut Clients,
    container: &str,
) -> Result<(Duration, Duration, Duration)> {
    let exec_once = async |c: &mut Clients| -> Result<Duration> {
        let t = std::time::Instant::now();
        let r = c
            .runtime
            .exec_sync(k8s_cri::v1::ExecSyncRequest {
                container_id: container.to_string(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await?
            .into_inner();
        ensure!(r.exit_code == 0, "ExecSync true exited {}", r.exit_code);
        Ok(t.elapsed())
    };
    let mut exec = Vec::with_capacity(100);
    for _ in 0..100 {
        exec.push(exec_once(c).await?);
    }
    let mut spaced = Vec::with_capacity(10);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        spaced.push(exec_once(c).await?);
    }
    let mut stats = Vec::with_capacity(20);
    for _ in 0..20 {
        let t = std::time::Instant::now();
        c.runtime
            .list_container_stats(k8s_cri::v1::ListContainerStatsRequest { filter: None })
            .await?;
        stats.push(t.elapsed());
    }
    Ok((median(&exec), median(&spaced), median(&stats)))
}

async fn check_no_pods(clients: &Clients) -> Result<()> {
    let left = clone_clients(clients)
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items
        .len();
    ensure!(left == 0, "{left} pods listed after RemovePodSandbox");
    Ok(())
}

/// Appends a round's samples; memory: the highest seen.
fn merge(into: &mut Batch, b: Batch) {
    into.starts.extend(b.starts);
    into.teardowns.extend(b.teardowns);
    into.start_wall += b.start_wall;
    into.teardown_wall += b.teardown_wall;
    if b.mem.daemon.rss_kib + b.mem.helpers.rss_kib
        >= into.mem.daemon.rss_kib + into.mem.helpers.rss_kib
    {
        into.mem = b.mem;
    }
}

/// Starts `n` pods with `parallel` at a time, checks they all run, reads memory, then tears
/// them down with `parallel` at a time.
async fn batch(
    clients: &Clients,
    ctx: &PodCtx,
    n: usize,
    parallel: usize,
    daemon: &Daemon,
) -> Result<Batch> {
    make_log_dirs(ctx, n)?;
    let next = AtomicUsize::new(0);
    let pods: Mutex<Vec<Started>> = Mutex::new(Vec::new());
    let t = Instant::now();
    let workers = (0..parallel.min(n)).map(|_| {
        let mut c = clone_clients(clients);
        let (next, pods) = (&next, &pods);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let (sb, ctr, times) = start_pod(&mut c, ctx, i)
                    .await
                    .with_context(|| format!("start pod {}", pod_name(ctx, i)))?;
                pods.lock().expect("pods").push((i, sb, ctr, times));
            }
        }
    });
    futures_join_all(workers).await?;
    let start_wall = t.elapsed();
    let mut pods = pods.into_inner().expect("pods");
    pods.sort_by_key(|p| p.0);
    let mem = check_and_measure(clients, &pods, daemon).await?;

    let next = AtomicUsize::new(0);
    let teardowns: Mutex<Vec<TeardownTimes>> = Mutex::new(Vec::new());
    let t = Instant::now();
    let workers = (0..parallel.min(n)).map(|_| {
        let mut c = clone_clients(clients);
        let (next, pods, teardowns) = (&next, &pods, &teardowns);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, sb, ctr, _)) = pods.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let times = teardown_pod(&mut c, sb, ctr)
                    .await
                    .with_context(|| format!("tear down pod {}", pod_name(ctx, i)))?;
                teardowns.lock().expect("teardowns").push(times);
            }
        }
    });
    futures_join_all(workers).await?;
    let teardown_wall = t.elapsed();
    check_no_pods(clients).await?;
    Ok(Batch {
        starts: pods.into_iter().map(|p| p.3).collect(),
        teardowns: teardowns.into_inner().expect("teardowns"),
        start_wall,
        teardown_wall,
        mem,
    })
}

/// Runs the futures concurrently on this task; the first error wins (the others are dropped).
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        let mut i = 0;
        while i < set.len() {
            match set[i].as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(())) => {
                    set.swap_remove(i);
                }
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => i += 1,
            }
        }
        if set.is_empty() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn pod_name(ctx: &PodCtx, i: usize) -> String {
    format!("{}-{i}", ctx.prefix)
}

/// What the kubelet asks for by default: the pod's own network and IPC namespaces, a PID
/// namespace per container.
fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn pod_config(ctx: &PodCtx, i: usize) -> PodSandboxConfig {
    let name = pod_name(ctx, i);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: format!("{}-{}-{name}", ctx.kind.slug(), std::process::id()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: ctx.logs.join(&name).display().to_string(),
        labels: HashMap::from([("bench".to_string(), name)]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: ctx.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(ctx: &PodCtx) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: ctx.busybox.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "main/0.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn timed<T, F>(what: &str, f: F) -> Result<(T, Duration)>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let t = Instant::now();
    let r = tokio::time::timeout(RPC_TIMEOUT, f)
        .await
        .with_context(|| format!("{what} timed out"))?
        .with_context(|| what.to_string())?;
    Ok((r.into_inner(), t.elapsed()))
}

/// RunPodSandbox, CreateContainer, StartContainer: the pod's sandbox and container ids.
async fn start_pod(
    c: &mut Clients,
    ctx: &PodCtx,
    i: usize,
) -> Result<(String, String, StartTimes)> {
    let config = pod_config(ctx, i);
    let (r, run_sandbox) = timed(
        "RunPodSandbox",
        c.runtime.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?;
    let sandbox = r.pod_sandbox_id;
    let (r, create) = timed(
        "CreateContainer",
        c.runtime.create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config(ctx)),
            sandbox_config: Some(config),
        }),
    )
    .await?;
    let container = r.container_id;
    let (_, start) = timed(
        "StartContainer",
        c.runtime.start_container(StartContainerRequest {
            container_id: container.clone(),
        }),
    )
    .await?;
    Ok((
        sandbox,
        container,
        StartTimes {
            run_sandbox,
            create,
            start,
        },
    ))
}

/// StopContainer (timeout 0: `sleep` as PID 1 ignores SIGTERM, so any grace period would only
/// measure itself), RemoveContainer, StopPodSandbox, RemovePodSandbox.
async fn teardown_pod(c: &mut Clients, sandbox: &str, container: &str) -> Result<TeardownTimes> {
    let (_, stop_container) = timed(
        "StopContainer",
        c.runtime.stop_container(StopContainerRequest {
            container_id: container.into(),
            timeout: 0,
        }),
    )
    .await?;
    let (_, remove_container) = timed(
        "RemoveContainer",
        c.runtime.remove_container(RemoveContainerRequest {
            container_id: container.into(),
        }),
    )
    .await?;
    let (_, stop_sandbox) = timed(
        "StopPodSandbox",
        c.runtime.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.into(),
        }),
    )
    .await?;
    let (_, remove_sandbox) = timed(
        "RemovePodSandbox",
        c.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.into(),
        }),
    )
    .await?;
    Ok(TeardownTimes {
        stop_container,
        remove_container,
        stop_sandbox,
        remove_sandbox,
    })
}

/// VmRSS (from `status`) and Pss (from `smaps_rollup`) of a process, in KiB.
fn proc_mem(pid: u32) -> Option<Mem> {
    let field = |file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Mem {
        rss_kib: field("status", "VmRSS:")?,
        pss_kib: field("smaps_rollup", "Pss:").unwrap_or(0),
    })
}

fn median(v: &[Duration]) -> Duration {
    let mut t = v.to_vec();
    t.sort();
    let n = t.len();
    if n == 0 {
        return Duration::ZERO;
    }
    if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2
    }
}

/// Nearest-rank 95th percentile.
fn p95(v: &[Duration]) -> Duration {
    let mut t = v.to_vec();
    t.sort();
    if t.is_empty() {
        return Duration::ZERO;
    }
    let rank = (t.len() * 95).div_ceil(100).max(1);
    t[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn print_report(args: &Args, ours: &RuntimeResult, theirs: &RuntimeResult) {
    println!();
    println!(
        "bench_pods: {} pods per batch (busybox `sleep 3600`, one container per pod), {} round(s), \
         {} warm-up pod(s) per runtime untimed; images pre-pulled; CNI bridge + host-local + \
         portmap from {CNI_BIN_DIR}",
        args.pods, args.rounds, args.warmup
    );
    println!(
        "start    = RunPodSandbox + CreateContainer + StartContainer (per pod)\n\
         teardown = StopContainer(timeout 0) + RemoveContainer + StopPodSandbox + RemovePodSandbox \
         (per pod)\n\
         sequential: pods alternate between the runtimes, wall = sum of the pods' times; \
         parallel: one runtime at a time, wall = the batch's elapsed time"
    );
    let width = ours.label.len().max(theirs.label.len()) + 2;
    for (name, pick) in [
        (
            "sequential",
            (|r: &RuntimeResult| &r.seq) as fn(&RuntimeResult) -> &Batch,
        ),
        ("parallel", |r: &RuntimeResult| &r.par),
    ] {
        let title = if name == "parallel" {
            format!("{} at a time", args.parallel)
        } else {
            "one at a time".into()
        };
        println!();
        println!("== {title} ({} pods) ==", ours.seq.starts.len());
        println!(
            "{:<width$}{:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
            "", "start med", "p95", "wall", "tear med", "p95", "wall"
        );
        for r in [ours, theirs] {
            let b = pick(r);
            let s: Vec<_> = b.starts.iter().map(StartTimes::total).collect();
            let t: Vec<_> = b.teardowns.iter().map(TeardownTimes::total).collect();
            println!(
                "{:<width$}{:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
                r.label,
                ms(median(&s)),
                ms(p95(&s)),
                ms(b.start_wall),
                ms(median(&t)),
                ms(p95(&t)),
                ms(b.teardown_wall),
            );
        }
        let (a, b) = (pick(ours), pick(theirs));
        let ratio = |f: fn(&[Duration]) -> Duration, x: Vec<Duration>, y: Vec<Duration>| {
            f(&x).as_secs_f64() / f(&y).as_secs_f64()
        };
        let sa = || a.starts.iter().map(StartTimes::total).collect::<Vec<_>>();
        let sb = || b.starts.iter().map(StartTimes::total).collect::<Vec<_>>();
        let ta = || {
            a.teardowns
                .iter()
                .map(TeardownTimes::total)
                .collect::<Vec<_>>()
        };
        let tb = || {
            b.teardowns
                .iter()
                .map(TeardownTimes::total)
                .collect::<Vec<_>>()
        };
        let (sm, sp) = (ratio(median, sa(), sb()), ratio(p95, sa(), sb()));
        let (tm, tp) = (ratio(median, ta(), tb()), ratio(p95, ta(), tb()));
        println!(
            "ratio ours/containerd  start: median {sm:.2}, p95 {sp:.2}  (target <= \
             {TARGET_TIME_RATIO:.2}: {})",
            verdict(sm <= TARGET_TIME_RATIO)
        );
        println!(
            "ratio ours/containerd  teardown: median {tm:.2}, p95 {tp:.2}  (target <= \
             {TARGET_TIME_RATIO:.2}: {})",
            verdict(tm <= TARGET_TIME_RATIO)
        );
        println!("per RPC (median/p95):");
        for r in [ours, theirs] {
            let b = pick(r);
            let both = |v: Vec<Duration>| {
                format!(
                    "{:.1}/{:.1}ms",
                    median(&v).as_secs_f64() * 1e3,
                    p95(&v).as_secs_f64() * 1e3
                )
            };
            let m = |f: fn(&StartTimes) -> Duration| both(b.starts.iter().map(f).collect());
            let n = |f: fn(&TeardownTimes) -> Duration| both(b.teardowns.iter().map(f).collect());
            println!(
                "  {:<width$}RunPodSandbox {} CreateContainer {} StartContainer {} | \
                 StopContainer {} RemoveContainer {} StopPodSandbox {} RemovePodSandbox {}",
                r.label,
                m(|t| t.run_sandbox),
                m(|t| t.create),
                m(|t| t.start),
                n(|t| t.stop_container),
                n(|t| t.remove_container),
                n(|t| t.stop_sandbox),
                n(|t| t.remove_sandbox),
            );
        }
    }

    println!();
    println!(
        "== memory: VmRSS (PSS in parentheses); idle* = images pulled, no pod yet; helpers = our \
         monitors / containerd's shims, with the batch's pods running =="
    );
    let max_of = |v: &[Mem]| {
        v.iter()
            .copied()
            .max_by_key(|m| m.rss_kib)
            .unwrap_or_default()
    };
    let max_idle = |r: &RuntimeResult| max_of(&r.idle);
    let show = |m: Mem| format!("{} ({})", mib(m.rss_kib), mib(m.pss_kib));
    let per = |m: Mem, n: usize| {
        let n = n.max(1) as u64;
        Mem {
            rss_kib: m.rss_kib / n,
            pss_kib: m.pss_kib / n,
        }
    };
    println!(
        "{:<width$}{:>24} {:>24} {:>26} {:>24}",
        "", "daemon idle*", "daemon, pods running", "per-pod helpers (sum)", "per pod"
    );
    for (r, helper) in [(ours, "monitors"), (theirs, "shims")] {
        for (name, b) in [("seq", &r.seq), ("par", &r.par)] {
            let m = b.mem;
            println!(
                "{:<width$}{:>24} {:>24} {:>26} {:>24}   [{name} batch: {} pods, {} {helper}]",
                r.label,
                show(max_idle(r)),
                show(m.daemon),
                show(m.helpers),
                show(per(m.helpers, m.pods)),
                m.pods,
                m.helper_count,
            );
        }
    }
    for r in [ours, theirs] {
        println!(
            "{:<width$}daemon just started (no image yet): {}",
            r.label,
            show(max_of(&r.fresh))
        );
    }
    let idle = max_idle(ours).rss_kib;
    println!(
        "cri-server daemon idle (images pulled, no pod): {}  (target <= {}: {})",
        mib(idle),
        mib(TARGET_DAEMON_IDLE_KIB),
        verdict(idle <= TARGET_DAEMON_IDLE_KIB)
    );
    // The larger of the two batches' figures.
    let m = ours.seq.mem;
    let per_pod = [ours.seq.mem, ours.par.mem]
        .iter()
        .map(|m| per(m.helpers, m.pods).rss_kib)
        .max()
        .unwrap_or(0);
    println!(
        "cri-server monitor per pod: {}  (target <= {}: {})",
        mib(per_pod),
        mib(TARGET_MONITOR_KIB),
        verdict(per_pod <= TARGET_MONITOR_KIB)
    );
    let t = theirs.seq.mem;
    println!();
    println!(
        "== ExecSync `true` (median of 100 back to back; of 10 spaced 250 ms apart, as probes \
         come) and ListContainerStats (median of 20), pods of the sequential batch running =="
    );
    for (label, m) in [(&ours.label, ours.seq.mem), (&theirs.label, t)] {
        println!(
            "{label:<20} ExecSync {:>8.1?}   spaced {:>8.1?}   ListContainerStats ({} \
             containers) {:>8.1?}",
            m.exec_sync, m.exec_sync_spaced, m.pods, m.list_stats
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio ours/containerd  ExecSync {:.2} (spaced {:.2}), ListContainerStats {:.2}  \
         (target <= 0.50: {})",
        ratio(m.exec_sync, t.exec_sync),
        ratio(m.exec_sync_spaced, t.exec_sync_spaced),
        ratio(m.list_stats, t.list_stats),
        verdict(ratio(m.exec_sync, t.exec_sync) <= 0.5 && ratio(m.list_stats, t.list_stats) <= 0.5)
    );
    println!(
        "ratios ours/containerd (VmRSS): daemon idle {:.2}, daemon with pods {:.2}, per-pod \
         helper {:.2}",
        idle as f64 / max_idle(theirs).rss_kib.max(1) as f64,
        m.daemon.rss_kib as f64 / t.daemon.rss_kib.max(1) as f64,
        per_pod as f64 / per(t.helpers, t.pods).rss_kib.max(1) as f64,
    );
}
