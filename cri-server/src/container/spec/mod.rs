//! CRI `CreateContainerRequest` + image run config -> OCI runtime spec (`config.json`).
//!
//! One pure-ish function, [`build`], in the way containerd's CRI plugin and CRI-O build theirs;
//! it reads only the container's rootfs (`/etc/passwd`, `/etc/group`), host device nodes,
//! mount sources, seccomp profiles and a few host facts (cgroup mode, capabilities, kernel).

mod capabilities;
pub mod cdi;
mod devices;
mod host;
mod mounts;
mod process;
mod resources;
mod seccomp;
mod user;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig,
};
use oci_spec::runtime::{
    Linux, LinuxDeviceCgroup, LinuxNamespace, LinuxNamespaceType, LinuxResources, Process, Root,
    Spec, User,
};
use tracing::debug;

pub(crate) use mounts::resolve_source;
pub use user::resolve_user;

/// The OCI resources for an UpdateContainerResources request, mapped exactly as at create.
pub fn resources_for_update(
    resources: &k8s_cri::v1::LinuxContainerResources,
) -> oci_spec::runtime::LinuxResources {
    let config = ContainerConfig {
        linux: Some(k8s_cri::v1::LinuxContainerConfig {
            resources: Some(resources.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    resources::linux_resources(&config, &HostFacts::detect())
}

/// Folds an update (from [`resources_for_update`]) into a spec not yet given to the runtime:
/// what the update sets replaces the spec's, the rest (device rules among it) stays, as
/// `<runtime> update` would leave it.
pub fn apply_update(spec: &mut Spec, update: &LinuxResources) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    if update.cpu().is_some() {
        res.set_cpu(update.cpu().clone());
    }
    if update.memory().is_some() {
        res.set_memory(*update.memory());
    }
    if update.hugepage_limits().is_some() {
        res.set_hugepage_limits(update.hugepage_limits().clone());
    }
    if update.unified().is_some() {
        res.set_unified(update.unified().clone());
    }
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
}

use host::HostFacts;

/// Everything [`build`] needs for one container.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    /// The pod sandbox the container belongs to (for annotations).
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a PodSandboxConfig,
    pub image: &'a crate::image::RunConfig,
    /// The mounted overlay rootfs; users and groups resolve against its `/etc/passwd` and
    /// `/etc/group`.
    pub rootfs: &'a Path,
    /// Paths of the pod's pinned namespaces.
    pub namespaces: SandboxNamespaces,
    /// Host paths of the pod's hosts, hostname, resolv.conf files and `/dev/shm` dir.
    pub etc_files: EtcFiles,
    /// `linux.cgroupsPath`: cgroupfs style `/kubepods/pod<uid>/<id>` or systemd
    /// `slice:prefix:name`.
    pub cgroups_path: String,
    /// False on hosts without `CAP_SYS_RESOURCE`: the spec then never asks for an
    /// `oom_score_adj` below this process's own, it clamps instead.
    pub can_lower_oom_score: bool,
    /// Localhost seccomp profiles resolve relative to this (the kubelet's seccomp dir) unless
    /// absolute.
    pub seccomp_profile_root: &'a Path,
    /// The pod's user namespace mappings, with `namespaces.user` its pin.
    pub userns: Option<crate::sandbox::userns::Userns>,
}

/// The pod's namespaces. `None` paths with `host_*` false mean "a new one for the container".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod-shared pid namespace holder (`/proc/<pid>/ns/pid`), or the target container's
    /// for a TARGET pid namespace. `None`: the container gets its own unless `host_pid`.
    pub pid: Option<PathBuf>,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// The pod's pinned user namespace (`hostUsers: false`); `None`: host users.
    pub user: Option<PathBuf>,
}

/// Host files bind-mounted into every container of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// The pod's `/dev/shm` directory; `None`: a private tmpfs (or the host's with host IPC).
    pub shm: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid container config: {0}")]
    InvalidArgument(String),
    #[error("user {user:?} not found in the image: {reason}")]
    UserNotFound { user: String, reason: String },
    #[error("group {group:?} not found in the image: {reason}")]
    GroupNotFound { group: String, reason: String },
    #[error("seccomp profile {profile}: {reason}")]
    Seccomp { profile: String, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SpecError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpecError {
        let path = path.to_path_buf();
        move |source| SpecError::Io { what, path, source }
    }

    fn invalid(msg: impl Into<String>) -> SpecError {
        SpecError::InvalidArgument(msg.into())
    }
}

/// Annotation keys containerd's CRI plugin sets (the NRI plugins and tools read them).
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// Builds the OCI runtime spec for a container.
///
/// Errors: [`SpecError::InvalidArgument`] for requests the kubelet should not have sent or we
/// do not support (no command, missing host paths, image volumes...), `UserNotFound` /
/// `GroupNotFound` for identities the image lacks, `Seccomp` for unusable profiles.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    build_with(input, &HostFacts::detect())
}

fn build_with(input: &SpecInput, host: &HostFacts) -> Result<Spec, SpecError> {
    let config = input.config;
    let sc = security_context(config);
    let privileged = sc.is_some_and(|s| s.privileged);
    debug!(
        container = input.container_id,
        privileged, "building OCI spec"
    );

    if privileged
        && !input
            .sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    {
        return Err(SpecError::invalid(
            "privileged container in a sandbox that is not privileged",
        ));
    }
    if input.userns.is_some() != input.namespaces.user.is_some() {
        return Err(SpecError::invalid(
            "user namespace mappings and the namespace must come together",
        ));
    }
    if input.userns.is_some() && privileged {
        return Err(SpecError::invalid(
            "a privileged container cannot run in a pod with its own user namespace",
        ));
    }

    // Process.
    let (uid, gid, additional_gids) = resolve_user(input.rootfs, config, &input.image.user)?;
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(additional_gids));

    let caps = if privileged {
        host.current_caps.iter().copied().collect()
    } else {
        capabilities::container_caps(sc, &host.current_caps)?
    };

    let mut proc_ = Process::default();
    proc_.set_terminal(Some(config.tty));
    proc_.set_console_size(None);
    proc_.set_user(user);
    proc_.set_args(Some(process::args(config, input.image)?));
    proc_.set_env(Some(process::env(config, input.image, input.sandbox, host)));
    proc_.set_cwd(process::cwd(config, input.image)?);
    proc_.set_capabilities(Some(capabilities::to_oci(&caps)));
    proc_.set_rlimits(None);
    proc_.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    proc_.set_apparmor_profile(None);
    proc_.set_selinux_label(None);
    proc_.set_oom_score_adj(resources::oom_score_adj(
        config,
        input.can_lower_oom_score,
        host.oom_score_adj,
    ));

    // Root.
    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(sc.is_some_and(|s| s.readonly_rootfs)));

    // Mounts.
    let mounted = mounts::build(config, &input.etc_files, &input.namespaces, privileged)?;

    // Linux.
    let mut linux = Linux::default();
    // With a pod user namespace the runtime joins it by path; it still needs the mappings
    // (runc computes the container root's host ids from them).
    let idmap = |m: &crate::sandbox::userns::IdMap| {
        oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(m.container_id)
            .host_id(m.host_id)
            .size(m.length)
            .build()
            .map(|o| vec![o])
            .unwrap_or_default()
    };
    linux.set_uid_mappings(input.userns.as_ref().map(|u| idmap(&u.uids)));
    linux.set_gid_mappings(input.userns.as_ref().map(|u| idmap(&u.gids)));
    linux.set_sysctl(None);
    linux.set_namespaces(Some(namespaces(
        config,
        &input.namespaces,
        privileged,
        host.cgroup_unified,
    )?));
    linux.set_cgroups_path(if input.cgroups_path.is_empty() {
        None
    } else {
        Some(PathBuf::from(&input.cgroups_path))
    });
    linux.set_rootfs_propagation(mounted.rootfs_propagation.clone());

    let mut res: LinuxResources = resources::linux_resources(config, host);
    if privileged {
        linux.set_devices(Some(devices::host_devices()?));
        res.set_devices(Some(vec![devices::allow_all()]));
    } else {
        let (devs, rules) = devices::cri_devices(&config.devices)?;
        let mut all_rules: Vec<LinuxDeviceCgroup> = vec![devices::deny_all()];
        all_rules.extend(rules);
        linux.set_devices(if devs.is_empty() { None } else { Some(devs) });
        res.set_devices(Some(all_rules));
    }
    linux.set_resources(Some(res));

    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        let (masked, readonly) = masked_and_readonly_paths(sc);
        linux.set_masked_paths(Some(masked));
        linux.set_readonly_paths(Some(readonly));
    }
    linux.set_mount_label(None);
    linux.set_seccomp(if privileged {
        None
    } else {
        seccomp::for_container(sc, input.seccomp_profile_root, &caps, host)?
    });

    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounted.mounts));
    spec.set_process(Some(proc_));
    spec.set_hostname(hostname(input));
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(annotations(input)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn security_context(config: &ContainerConfig) -> Option<&LinuxContainerSecurityContext> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
}

/// The hostname goes into the spec only when the container gets a UTS namespace of its own:
/// a joined pod UTS namespace already carries it (containerd sets none for containers), and
/// with host networking the container is in the host's UTS namespace, where runc refuses one.
fn hostname(input: &SpecInput) -> Option<String> {
    let ns = &input.namespaces;
    if ns.host_network || ns.uts.is_some() || input.sandbox.hostname.is_empty() {
        return None;
    }
    Some(input.sandbox.hostname.clone())
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

/// net/ipc/uts join the pod's (or stay the host's); pid follows the container's namespace
/// mode; mount is always new; cgroup is new on cgroup v2 hosts for unprivileged containers,
/// as containerd does.
fn namespaces(
    config: &ContainerConfig,
    pod: &SandboxNamespaces,
    privileged: bool,
    cgroup_unified: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    use LinuxNamespaceType as T;
    let mut out = Vec::new();
    // The user namespace first: the others are owned by it.
    if let Some(user) = &pod.user {
        out.push(namespace(T::User, Some(user)));
    }

    let pid_mode = security_context(config)
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid);
    let pid_mode = pid_mode.and_then(|m| NamespaceMode::try_from(m).ok());
    match pid_mode {
        _ if pod.host_pid => {}
        Some(NamespaceMode::Node) => {}
        Some(NamespaceMode::Container) | None => out.push(namespace(T::Pid, None)),
        Some(NamespaceMode::Pod) => out.push(namespace(T::Pid, pod.pid.as_deref())),
        Some(NamespaceMode::Target) => match &pod.pid {
            Some(p) => out.push(namespace(T::Pid, Some(p))),
            None => {
                return Err(SpecError::invalid(
                    "TARGET pid namespace without the target's namespace path",
                ));
            }
        },
    }
    if !pod.host_ipc {
        out.push(namespace(T::Ipc, pod.ipc.as_deref()));
    }
    if !pod.host_network {
        out.push(namespace(T::Uts, pod.uts.as_deref()));
    }
    out.push(namespace(T::Mount, None));
    if !pod.host_network {
        out.push(namespace(T::Network, pod.net.as_deref()));
    }
    if cgroup_unified && !privileged {
        out.push(namespace(T::Cgroup, None));
    }
    Ok(out)
}

/// The paths the kubelet (and containerd, and runc's `spec`) mask by default.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths the kubelet (and containerd) make read-only by default.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The kubelet sends the defaults above for `procMount: Default` and empty lists for
/// `Unmasked`; proto3 cannot tell an empty list from an absent one, so empty means defaults
/// here (crictl sends nothing). `Unmasked` needs user namespaces, which we do not support.
fn masked_and_readonly_paths(
    sc: Option<&LinuxContainerSecurityContext>,
) -> (Vec<String>, Vec<String>) {
    let pick = |given: Option<&Vec<String>>, defaults: &[&str]| match given {
        Some(v) if !v.is_empty() => v.clone(),
        _ => defaults.iter().map(|s| s.to_string()).collect(),
    };
    (
        pick(sc.map(|s| &s.masked_paths), DEFAULT_MASKED_PATHS),
        pick(sc.map(|s| &s.readonly_paths), DEFAULT_READONLY_PATHS),
    )
}

/// The CRI annotations, then containerd's `io.kubernetes.cri.*` keys (which win).
fn annotations(input: &SpecInput) -> HashMap<String, String> {
    let mut a: HashMap<String, String> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta = input.sandbox.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let image = input
        .config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    for (k, v) in [
        (ANNOTATION_CONTAINER_TYPE, "container".to_string()),
        (ANNOTATION_CONTAINER_NAME, name),
        (ANNOTATION_SANDBOX_ID, input.sandbox_id.to_string()),
        (ANNOTATION_SANDBOX_NAME, meta.name),
        (ANNOTATION_SANDBOX_NAMESPACE, meta.namespace),
        (ANNOTATION_SANDBOX_UID, meta.uid),
        (ANNOTATION_IMAGE_NAME, image),
    ] {
        a.insert(k.to_string(), v);
    }
    a
}
