//! Mounts: the runtime's defaults (/proc, /dev, /sys...), the pod's etc files and /dev/shm,
//! and the CRI mounts, merged and ordered as containerd's `WithMounts` does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, MountPropagation};
use oci_spec::runtime::Mount;
use tracing::warn;

use super::{EtcFiles, SandboxNamespaces, SpecError};

pub(crate) struct Mounted {
    pub mounts: Vec<Mount>,
    /// `rshared` / `rslave` when a mount needs the rootfs to propagate.
    pub rootfs_propagation: Option<String>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// containerd's default Linux mounts without /run, plus the cgroup mount its CRI plugin adds;
/// sysfs and cgroupfs are read-write for privileged containers.
pub(crate) fn default_mounts(privileged: bool) -> Vec<Mount> {
    let rw = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", rw]),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", rw],
        ),
    ]
}

/// A bind mount to make, from the CRI or from the pod's files.
struct Wanted {
    dest: String,
    source: String,
    readonly: bool,
    propagation: MountPropagation,
}

pub(crate) fn build(
    config: &ContainerConfig,
    etc: &EtcFiles,
    ns: &SandboxNamespaces,
    privileged: bool,
) -> Result<Mounted, SpecError> {
    let readonly_rootfs = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.readonly_rootfs);

    let mut wanted = Vec::new();
    for m in &config.mounts {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(SpecError::invalid(format!(
                "mount at {:?}: image volumes: not supported yet",
                m.container_path
            )));
        }
        if m.recursive_read_only {
            return Err(SpecError::invalid(format!(
                "mount at {:?}: recursive read-only mounts: not supported yet",
                m.container_path
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(SpecError::invalid(format!(
                "mount at {:?}: id-mapped mounts: not supported yet",
                m.container_path
            )));
        }
        if !m.container_path.starts_with('/') {
            return Err(SpecError::invalid(format!(
                "mount container path {:?} is not absolute",
                m.container_path
            )));
        }
        if m.host_path.is_empty() {
            return Err(SpecError::invalid(format!(
                "mount at {:?} has no host path",
                m.container_path
            )));
        }
        let propagation = MountPropagation::try_from(m.propagation).unwrap_or_else(|_| {
            warn!(host_path = %m.host_path, propagation = m.propagation, "unknown mount propagation, using private");
            MountPropagation::PropagationPrivate
        });
        wanted.push(Wanted {
            dest: clean(&m.container_path),
            source: m.host_path.clone(),
            readonly: m.readonly,
            propagation,
        });
    }

    // The pod's files, unless a CRI mount covers the same path.
    let shm = match (&etc.shm, ns.host_ipc) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(PathBuf::from("/dev/shm")),
        (None, false) => None,
    };
    let extras = [
        ("/etc/hostname", etc.hostname.as_ref(), readonly_rootfs),
        ("/etc/hosts", etc.hosts.as_ref(), readonly_rootfs),
        (
            "/etc/resolv.conf",
            etc.resolv_conf.as_ref(),
            readonly_rootfs,
        ),
        ("/dev/shm", shm.as_ref(), false),
    ];
    let cri_dests: HashSet<String> = wanted.iter().map(|w| w.dest.clone()).collect();
    for (dest, source, readonly) in extras {
        let Some(source) = source else { continue };
        if cri_dests.contains(dest) {
            continue;
        }
        wanted.push(Wanted {
            dest: dest.to_string(),
            source: source.display().to_string(),
            readonly,
            propagation: MountPropagation::PropagationPrivate,
        });
    }

    // Parents before children: by depth, stable (containerd's orderedMounts).
    wanted.sort_by_key(|w| w.dest.matches('/').count());

    let dests: HashSet<&str> = wanted.iter().map(|w| w.dest.as_str()).collect();
    let dev_replaced = dests.contains("/dev");
    let mut mounts: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            let d = m.destination().to_string_lossy();
            let under_replaced_dev = dev_replaced && d.starts_with("/dev/");
            !(dests.contains(d.as_ref()) || under_replaced_dev)
        })
        .collect();

    let mut rootfs_propagation: Option<String> = None;
    let mut mountinfo: Option<String> = None;
    for w in wanted {
        let source = resolve_source(&w.source)?;
        let prop = match w.propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                let info = mountinfo_text(&mut mountinfo)?;
                check_propagation(&source, false, info)?;
                if rootfs_propagation.as_deref() != Some("rshared") {
                    rootfs_propagation = Some("rslave".into());
                }
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                let info = mountinfo_text(&mut mountinfo)?;
                check_propagation(&source, true, info)?;
                rootfs_propagation = Some("rshared".into());
                "rshared"
            }
        };
        let rw = if w.readonly { "ro" } else { "rw" };
        let mut options = vec!["rbind", prop, rw];
        options.extend(locked_flags(&source));
        mounts.push(mount(
            &w.dest,
            "bind",
            &source.display().to_string(),
            &options,
        ));
    }
    Ok(Mounted {
        mounts,
        rootfs_propagation,
    })
}

/// The source mount's nosuid/nodev/noexec, kept on the bind: the OCI runtime's read-only
/// remount would otherwise drop them (a weaker mount than the host's), and inside a user
/// namespace the kernel refuses to drop them at all.
fn locked_flags(source: &Path) -> Vec<&'static str> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(source) else {
        return Vec::new();
    };
    let f = st.flags();
    [
        (FsFlags::ST_NOSUID, "nosuid"),
        (FsFlags::ST_NODEV, "nodev"),
        (FsFlags::ST_NOEXEC, "noexec"),
    ]
    .into_iter()
    .filter(|(flag, _)| f.contains(*flag))
    .map(|(_, name)| name)
    .collect()
}

/// The host path with symlinks resolved; a missing one is the caller's error (the CRI says
/// runtimes should report it; containerd creates it, CRI-O refuses).
pub(crate) fn resolve_source(host_path: &str) -> Result<PathBuf, SpecError> {
    match std::fs::canonicalize(host_path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SpecError::invalid(format!(
            "mount host path {host_path:?} does not exist"
        ))),
        Err(e) => Err(SpecError::Io {
            what: "resolve mount host path",
            path: PathBuf::from(host_path),
            source: e,
        }),
    }
}

fn mountinfo_text(cache: &mut Option<String>) -> Result<&str, SpecError> {
    if cache.is_none() {
        let p = Path::new("/proc/self/mountinfo");
        *cache = Some(std::fs::read_to_string(p).map_err(SpecError::io("read", p))?);
    }
    Ok(cache.as_deref().unwrap_or_default())
}

/// A bidirectional mount needs its source on a shared mount, a host-to-container one on a
/// shared or slave mount; otherwise the propagation asked for silently does not happen.
pub(crate) fn check_propagation(
    source: &Path,
    shared: bool,
    mountinfo: &str,
) -> Result<(), SpecError> {
    let Some((mount_point, optional)) = mount_of(source, mountinfo) else {
        return Err(SpecError::invalid(format!(
            "no mount found for {}",
            source.display()
        )));
    };
    let ok = optional
        .iter()
        .any(|o| o.starts_with("shared:") || (!shared && o.starts_with("master:")));
    if ok {
        return Ok(());
    }
    let want = if shared { "shared" } else { "shared or slave" };
    Err(SpecError::invalid(format!(
        "path {} is mounted on {} but it is not a {want} mount",
        source.display(),
        mount_point.display()
    )))
}

/// The mount point holding `path` (the longest, last listed) and its optional fields.
fn mount_of<'a>(path: &Path, mountinfo: &'a str) -> Option<(PathBuf, Vec<&'a str>)> {
    let mut best: Option<(PathBuf, Vec<&'a str>)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 7 {
            continue;
        }
        let mp = PathBuf::from(crate::mountapi::unescape(fields[4]));
        if !path.starts_with(&mp) {
            continue;
        }
        let optional: Vec<&str> = fields[6..]
            .iter()
            .take_while(|f| **f != "-")
            .copied()
            .collect();
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len());
        if longer {
            best = Some((mp, optional));
        }
    }
    best
}

/// Go's `filepath.Clean` for absolute paths: no `.`, `..`, doubled or trailing slashes.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
23 22 0:22 / /shared rw,relatime shared:5 - ext4 /dev/vdb rw
24 22 0:23 / /slave rw,relatime master:5 - ext4 /dev/vdb rw
25 23 0:24 / /shared/private rw,relatime - tmpfs tmpfs rw
26 22 0:25 / /with\\040space rw shared:9 - tmpfs tmpfs rw
";

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a//b/./c/"), "/a/b/c");
        assert_eq!(clean("/a/../../b"), "/b");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn propagation_needs_shared_or_slave_sources() {
        let p = |s: &str| PathBuf::from(s);
        assert!(check_propagation(&p("/shared/x"), true, MOUNTINFO).is_ok());
        assert!(check_propagation(&p("/shared/x"), false, MOUNTINFO).is_ok());
        assert!(check_propagation(&p("/slave/x"), false, MOUNTINFO).is_ok());
        assert!(check_propagation(&p("/slave/x"), true, MOUNTINFO).is_err());
        assert!(check_propagation(&p("/shared/private/x"), false, MOUNTINFO).is_err());
        assert!(check_propagation(&p("/elsewhere"), false, MOUNTINFO).is_err());
        assert!(check_propagation(&p("/sharedfoo"), false, MOUNTINFO).is_err());
        assert!(check_propagation(&p("/with space/a"), true, MOUNTINFO).is_ok());
    }
}
