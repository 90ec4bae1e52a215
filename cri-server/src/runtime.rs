//! The pod and container domain: sandboxes and containers, their records on disk, and the
//! mechanisms they use (pinned namespaces, CNI, the per-pod monitor, the OCI runtime).
//!
//! Records: `<root>/pods/<id>.json` and `<root>/containers/<id>.json`, written atomically. A
//! record in state `Creating` marks work a crash may have left half-made: it is torn down at
//! the next start.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::container::ContainerRecord;
use crate::image::ImageStore;
use crate::network::Cni;
use crate::oci::OciRuntime;
use crate::sandbox::SandboxRecord;
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{what}: {reason}")]
    Internal { what: String, reason: String },
}

impl RuntimeError {
    pub fn internal(what: impl Into<String>, reason: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Internal {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Paths and settings the domain needs from the config.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent: records, container upper dirs.
    pub root: PathBuf,
    /// Volatile: pod dirs (resolv.conf, shm, monitor socket), bundles, runtime state.
    pub state: PathBuf,
}

impl Paths {
    pub fn pod_records(&self) -> PathBuf {
        self.root.join("pods")
    }
    pub fn container_records(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn pins(&self) -> PathBuf {
        self.state.join("ns")
    }
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.state.join("pods").join(id)
    }
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state.join("bundles").join(id)
    }
    pub fn container_data(&self, id: &str) -> PathBuf {
        self.root.join("container-data").join(id)
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.state.join("runc")
    }
    /// Symlinks to the sealed copies of the runtime binaries, one dir per handler.
    pub fn runtime_bin(&self) -> PathBuf {
        self.state.join("runtime-bin")
    }
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni-cache")
    }
    /// Private mount dir: per container, the mounts we prepare for the OCI runtime (id-mapped
    /// layers and volumes, recursive read-only volumes, image volumes).
    pub fn mnt(&self) -> PathBuf {
        self.state.join("mnt")
    }
    pub fn container_mnt(&self, id: &str) -> PathBuf {
        self.mnt().join(id)
    }
}

pub struct Runtime {
    pub paths: Paths,
    pub images: Arc<ImageStore>,
    pub cni: Cni,
    pub handlers: HashMap<String, PathBuf>,
    /// Each handler's binary, with its sealed copy (`runtime.sealed_copy`).
    binaries: HashMap<String, crate::oci::sealed::RuntimeBinary>,
    pub default_handler: String,
    pub monitor_binary: PathBuf,
    /// `cri-exec` for ExecSync without the OCI runtime (`runtime.direct_exec`), when present.
    pub exec_binary: Option<PathBuf>,
    pub cdi_dirs: Vec<PathBuf>,
    /// The node's pod CIDR(s) from UpdateRuntimeConfig, offered to CNI as `ipRanges`.
    pub pod_cidr: RwLock<String>,
    pub cgroups: crate::stats::cgroup::Cgroups,
    /// Takes the kernel's cgroup migration lock as the OCI runtime or cri-exec starts.
    pub cgroup_warmer: crate::cgroup_warm::CgroupLockWarmer,
    pub stats: crate::stats::StatsCache,
    /// Container and sandbox events for GetContainerEvents streams.
    pub events: tokio::sync::broadcast::Sender<k8s_cri::v1::ContainerEventResponse>,
    /// False where CAP_SYS_RESOURCE is missing: oom_score_adj is never lowered.
    pub can_lower_oom_score: bool,
    /// User namespaces and recursive read-only mounts, as probed on this host at start.
    pub features: crate::features::HostFeatures,
    pub(crate) sandboxes: RwLock<HashMap<String, SandboxRecord>>,
    pub(crate) containers: RwLock<HashMap<String, ContainerRecord>>,
    /// One lock per pod id: lifecycle calls on one pod (and its containers) run one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cleanups of removed, exited containers still running, by pod id: the pod's removal
    /// waits for them.
    pub(crate) cleanups: Mutex<Vec<(String, tokio::task::JoinHandle<()>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Creating,
    Ready,
    NotReady,
}

impl Runtime {
    pub async fn open(
        config: &Config,
        images: Arc<ImageStore>,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        let paths = Paths {
            root: config.root.clone(),
            state: config.state_dir.clone(),
        };
        for d in [
            paths.pod_records(),
            paths.container_records(),
            paths.cni_cache(),
            paths.state.join("pods"),
            paths.state.join("bundles"),
            paths.runtime_root(),
            paths.root.join("container-data"),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| RuntimeError::internal(format!("create {}", d.display()), e))?;
            let _ = store::remove_temp_files(&d);
        }
        crate::sandbox::namespaces::prepare_pin_dir(&paths.pins())
            .map_err(|e| RuntimeError::internal("prepare namespace pin dir", e))?;
        crate::sandbox::namespaces::prepare_pin_dir(&paths.mnt())
            .map_err(|e| RuntimeError::internal("prepare container mount dir", e))?;
        let features = crate::features::HostFeatures::probe(&paths, images.root());
        let handlers = config
            .runtime
            .handlers
            .iter()
            .map(|(k, v)| (k.clone(), resolve_binary(&v.path)))
            .collect::<HashMap<_, _>>();
        // Symlinks to the sealed copies; those of an earlier run point into its /proc.
        let links = paths.runtime_bin();
        let _ = std::fs::remove_dir_all(&links);
        let binaries: HashMap<String, crate::oci::sealed::RuntimeBinary> = handlers
            .iter()
            .map(|(k, path)| {
                let binary = crate::oci::sealed::RuntimeBinary::new(
                    path.clone(),
                    config.runtime.sealed_copy,
                    Some(&links.join(k)),
                );
                (k.clone(), binary)
            })
            .collect();
        // The default handler's copy now, so that the first pod does not wait for it; the
        // others' when a pod first uses them (a copy of runc holds ~9 MB of memory).
        if let Some(b) = binaries.get(&config.runtime.default_handler) {
            let _ = b.current();
        }
        let monitor_binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("cri-monitor")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("cri-monitor"));
        let exec_binary = monitor_binary.with_file_name("cri-exec");
        let exec_binary =
            (config.runtime.direct_exec && exec_binary.is_file()).then_some(exec_binary);
        if config.runtime.direct_exec && exec_binary.is_none() {
            warn!(
                "cri-exec is not installed next to cri-monitor: ExecSync goes through the OCI runtime"
            );
        }
        let can_lower_oom_score = has_cap_sys_resource();
        if !can_lower_oom_score {
            warn!(
                "CAP_SYS_RESOURCE is missing: oom_score_adj below the daemon's own will be clamped (as containerd's restrict_oom_score_adj)"
            );
        }
        let rt = Arc::new(Runtime {
            cni: Cni::new(
                config.cni.conf_dir.clone(),
                config.cni.bin_dirs.clone(),
                paths.cni_cache(),
            ),
            paths,
            images,
            handlers,
            binaries,
            default_handler: config.runtime.default_handler.clone(),
            monitor_binary,
            exec_binary,
            cdi_dirs: config.cdi.spec_dirs.clone(),
            pod_cidr: RwLock::new(String::new()),
            cgroups: crate::stats::cgroup::Cgroups::detect(),
            cgroup_warmer: crate::cgroup_warm::CgroupLockWarmer::detect(),
            stats: Default::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            can_lower_oom_score,
            features,
            sandboxes: RwLock::new(HashMap::new()),
            containers: RwLock::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            cleanups: Mutex::new(Vec::new()),
        });
        rt.recover().await;
        Ok(rt)
    }

    /// The OCI runtime of a pod's handler.
    pub fn oci(&self, handler: &str) -> Result<OciRuntime, RuntimeError> {
        let name = if handler.is_empty() {
            self.default_handler.as_str()
        } else {
            handler
        };
        let binary = self.binaries.get(name).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!("unknown runtime handler {name:?}"))
        })?;
        Ok(OciRuntime::new(
            binary,
            self.paths.runtime_root().join(name),
        ))
    }

    pub(crate) fn pod_lock(&self, pod_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().expect("locks");
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(pod_id.to_string()).or_default().clone()
    }

    pub(crate) fn save_sandbox(&self, rec: &SandboxRecord) -> Result<(), RuntimeError> {
        let path = self.paths.pod_records().join(format!("{}.json", rec.id));
        store::write_json_volatile(&path, rec)
            .map_err(|e| RuntimeError::internal(format!("write {}", path.display()), e))?;
        self.sandboxes
            .write()
            .expect("sandboxes")
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    pub(crate) fn drop_sandbox_record(&self, id: &str) {
        let _ = std::fs::remove_file(self.paths.pod_records().join(format!("{id}.json")));
        self.sandboxes.write().expect("sandboxes").remove(id);
    }

    pub(crate) fn save_container(&self, rec: &ContainerRecord) -> Result<(), RuntimeError> {
        let path = self
            .paths
            .container_records()
            .join(format!("{}.json", rec.id));
        store::write_json_volatile(&path, rec)
            .map_err(|e| RuntimeError::internal(format!("write {}", path.display()), e))?;
        self.containers
            .write()
            .expect("containers")
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    pub(crate) fn drop_container_record(&self, id: &str) {
        let _ = std::fs::remove_file(self.paths.container_records().join(format!("{id}.json")));
        self.containers.write().expect("containers").remove(id);
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        let map = self.sandboxes.read().expect("sandboxes");
        map.get(id).cloned().or_else(|| unique_prefix(&map, id))
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        let map = self.containers.read().expect("containers");
        map.get(id).cloned().or_else(|| unique_prefix(&map, id))
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.containers
            .read()
            .expect("containers")
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Loads records; tears down what a crash left in `Creating`.
    async fn recover(self: &Arc<Self>) {
        let mut pods = Vec::new();
        let mut ctrs = Vec::new();
        for (dir, is_pod) in [
            (self.paths.pod_records(), true),
            (self.paths.container_records(), false),
        ] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if is_pod {
                    match store::read_json::<SandboxRecord>(&p) {
                        Ok(r) => pods.push(r),
                        Err(err) => {
                            warn!(path = %p.display(), error = %err, "unreadable pod record dropped")
                        }
                    }
                } else {
                    match store::read_json::<ContainerRecord>(&p) {
                        Ok(r) => ctrs.push(r),
                        Err(err) => {
                            warn!(path = %p.display(), error = %err, "unreadable container record dropped")
                        }
                    }
                }
            }
        }
        {
            let mut s = self.sandboxes.write().expect("sandboxes");
            for p in &pods {
                s.insert(p.id.clone(), p.clone());
            }
            let mut c = self.containers.write().expect("containers");
            for r in &ctrs {
                c.insert(r.id.clone(), r.clone());
            }
        }
        for c in ctrs
            .iter()
            .filter(|c| c.phase == crate::container::ContainerPhase::Creating)
        {
            warn!(container = %c.id, "container creation was cut short by a crash: cleaning up");
            self.destroy_container(c).await;
        }
        for c in ctrs.iter().filter(|c| {
            c.phase == crate::container::ContainerPhase::Created
                && !c.runtime_deferred
                && c.pid == 0
        }) {
            warn!(container = %c.id, "container start was cut short by a crash: stopping it");
            self.abort_start(c.clone()).await;
        }
        for p in pods.iter().filter(|p| p.phase == Phase::Creating) {
            warn!(pod = %p.id, "pod creation was cut short by a crash: cleaning up");
            self.destroy_sandbox(p).await;
        }
        // Pods whose namespaces vanished (a reboot) are not ready any more.
        for mut p in pods.into_iter().filter(|p| p.phase == Phase::Ready) {
            let lost = p
                .pins
                .net
                .as_deref()
                .is_some_and(|n| !crate::sandbox::namespaces::is_pinned(n));
            if lost {
                p.phase = Phase::NotReady;
                let _ = self.save_sandbox(&p);
            }
        }
        self.sweep_orphans().await;
        info!(
            pods = self.sandboxes.read().map(|s| s.len()).unwrap_or(0),
            containers = self.containers.read().map(|s| s.len()).unwrap_or(0),
            "pod and container records recovered"
        );
    }
}

impl Runtime {
    /// A crash came between asking the runtime to run a container and recording its pid: the
    /// runtime's container (running or not) is deleted, and the container reports a failed
    /// start, as if the runtime had refused it.
    async fn abort_start(&self, mut rec: ContainerRecord) {
        if let Ok(oci) = self.oci(&rec.runtime_handler)
            && let Err(e) = oci.delete(&rec.id).await
        {
            warn!(container = %rec.id, error = %e, "OCI runtime delete failed");
        }
        if let Some(sb) = self.sandbox(&rec.sandbox_id) {
            crate::sandbox::monitor::forget(&sb.dir, &rec.id).await;
        }
        rec.fail_start("cri-server stopped while the container was being started".into());
        if let Err(e) = self.save_container(&rec) {
            warn!(container = %rec.id, error = %e, "saving the container record");
        }
    }

    /// Removes what no record explains: namespace pins, CNI attachments, pod dirs with their
    /// monitors and shm, runtime containers, bundles with their rootfs mounts, container data
    /// and image leases. A crash between making a thing and recording it leaves exactly these.
    async fn sweep_orphans(&self) {
        let pods: HashSet<String> = self
            .sandboxes
            .read()
            .expect("sandboxes")
            .keys()
            .cloned()
            .collect();
        let ctrs: HashSet<String> = self
            .containers
            .read()
            .expect("containers")
            .keys()
            .cloned()
            .collect();
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        for name in names(&self.paths.pins()) {
            let id = name.rsplit_once('-').map(|(id, _)| id).unwrap_or(&name);
            if !pods.contains(id) {
                let pin = self.paths.pins().join(&name);
                let _ = nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(&pin);
                warn!(pin = %pin.display(), "removed an orphaned namespace pin");
            }
        }
        for name in names(&self.paths.cni_cache()) {
            if let Some(id) = name.strip_suffix(".json")
                && !pods.contains(id)
            {
                match self.cni.del(id, None).await {
                    Ok(()) => warn!(pod = %id, "released an orphaned pod network"),
                    Err(e) => warn!(pod = %id, error = %e, "orphaned pod network: CNI DEL failed"),
                }
            }
        }
        for name in names(&self.paths.state.join("pods")) {
            if !pods.contains(&name) {
                let dir = self.paths.pod_dir(&name);
                crate::sandbox::monitor::kill_pause(&dir, None);
                crate::sandbox::monitor::shutdown(&dir).await;
                crate::sandbox::files::unmount_shm(&dir);
                let _ = std::fs::remove_dir_all(&dir);
                warn!(pod = %name, "removed an orphaned pod dir");
            }
        }
        for handler in self.handlers.keys() {
            // A handler no container ever used has no root (and needs no sealed copy).
            if !self.paths.runtime_root().join(handler).exists() {
                continue;
            }
            let Ok(oci) = self.oci(handler) else { continue };
            for id in oci.list().await.unwrap_or_default() {
                if !ctrs.contains(&id) {
                    let _ = oci.delete(&id).await;
                    warn!(container = %id, "deleted an orphaned runtime container");
                }
            }
        }
        for name in names(&self.paths.state.join("bundles")) {
            if !ctrs.contains(&name) {
                let bundle = self.paths.bundle(&name);
                let _ =
                    nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir_all(&bundle);
            }
        }
        for name in names(&self.paths.root.join("container-data")) {
            if !ctrs.contains(&name) {
                let _ = std::fs::remove_dir_all(self.paths.container_data(&name));
            }
        }
        for name in names(&self.paths.mnt()) {
            // Dot names are ours (the empty lower dir, probes), not containers'.
            if !name.starts_with('.') && !ctrs.contains(&name) {
                let dir = self.paths.mnt().join(&name);
                match crate::mountapi::unmount_all_under(&dir) {
                    Ok(()) => warn!(container = %name, "removed orphaned container mounts"),
                    Err(e) => warn!(container = %name, error = %e, "orphaned container mounts"),
                }
            }
        }
        for holder in self.images.lease_holders() {
            let container = holder.split('.').next().unwrap_or(&holder);
            if !ctrs.contains(container) {
                let _ = self.images.release(&holder).await;
            }
        }
    }
}

fn unique_prefix<T: Clone>(map: &HashMap<String, T>, prefix: &str) -> Option<T> {
    if prefix.len() < 6 {
        return None;
    }
    let mut it = map.iter().filter(|(k, _)| k.starts_with(prefix));
    match (it.next(), it.next()) {
        (Some((_, v)), None) => Some(v.clone()),
        _ => None,
    }
}

fn has_cap_sys_resource() -> bool {
    // CAP_SYS_RESOURCE is bit 24 of the effective set.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// A random 64-hex id, as containerd and CRI-O use.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A bare binary name resolved through PATH (and the sbin dirs a daemon's PATH may lack).
fn resolve_binary(path: &Path) -> PathBuf {
    if path.components().count() > 1 {
        return path.to_path_buf();
    }
    let dirs = std::env::var("PATH").unwrap_or_default();
    dirs.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(path))
        .find(|p| p.is_file())
        .unwrap_or_else(|| path.to_path_buf())
}
