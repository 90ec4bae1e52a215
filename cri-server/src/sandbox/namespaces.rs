//! Pod namespaces without a pause process: a short-lived thread unshares net/ipc/uts, sets the
//! hostname and the pod's sysctls from inside, and bind-mounts its namespace files onto pin
//! files in a private mount directory of ours (`ip netns` cannot shadow them there).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "sysctl {0} is not namespaced to the pod (only net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)"
    )]
    SysctlNotAllowed(String),
    #[error("sysctl {0} needs the pod's own network namespace")]
    SysctlNeedsPodNetwork(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> NsError {
    let what = what.into();
    move |e| NsError::Sys {
        what,
        source: e.into(),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NsError {
    let what = what.into();
    move |source| NsError::Sys { what, source }
}

/// Which new namespaces a pod gets, and what to set in them.
#[derive(Debug, Clone, Default)]
pub struct NsRequest {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub hostname: String,
    pub sysctls: Vec<(String, String)>,
    /// A pod user namespace: it is made first and owns the net/ipc/uts namespaces.
    pub userns: Option<super::userns::Userns>,
}

/// Pinned namespace files, `None` where the pod uses the host's.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pins {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<PathBuf>,
}

/// Makes `dir` a private mount point of its own (once), so pins under it neither propagate nor
/// get shadowed by shared mounts elsewhere.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), NsError> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read mountinfo"))?;
    let target = dir
        .canonicalize()
        .map_err(io(format!("resolve {}", dir.display())))?;
    let is_mount = mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap_or("")));
    if !is_mount {
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!("bind {} onto itself", target.display())))?;
    }
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys(format!("make {} private", target.display())))?;
    Ok(())
}

/// Classifies a sysctl: `Some(true)` network, `Some(false)` IPC, `None` not pod-scoped.
fn sysctl_scope(name: &str) -> Option<bool> {
    if name.starts_with("net.") {
        Some(true)
    } else if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some(false)
    } else {
        None
    }
}

/// Checks the sysctls against what the pod's namespaces can hold, before anything is made.
pub fn check_sysctls(req: &NsRequest) -> Result<(), NsError> {
    for (k, _) in &req.sysctls {
        match sysctl_scope(k) {
            None => return Err(NsError::SysctlNotAllowed(k.clone())),
            Some(true) if !req.net => return Err(NsError::SysctlNeedsPodNetwork(k.clone())),
            Some(false) if !req.ipc => {
                return Err(NsError::SysctlNotAllowed(format!("{k} (host IPC)")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates and pins the requested namespaces under `pin_dir/<id>-{net,ipc,uts}`. On error
/// nothing stays pinned.
pub fn create(pin_dir: &Path, id: &str, req: &NsRequest) -> Result<Pins, NsError> {
    check_sysctls(req)?;
    let pin_dir = pin_dir.to_path_buf();
    let id = id.to_string();
    let req = req.clone();
    let handle = std::thread::Builder::new()
        .name("pin-ns".into())
        .stack_size(256 * 1024)
        .spawn(move || create_on_this_thread(&pin_dir, &id, &req))
        .map_err(io("spawn namespace thread"))?;
    handle.join().unwrap_or_else(|_| {
        Err(NsError::Sys {
            what: "namespace thread panicked".into(),
            source: std::io::Error::other("panic"),
        })
    })
}

fn create_on_this_thread(pin_dir: &Path, id: &str, req: &NsRequest) -> Result<Pins, NsError> {
    let mut flags = CloneFlags::empty();
    if req.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if req.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    // Threads keep their own net/ipc/uts namespaces: this one is discarded when it ends.
    let holder = match &req.userns {
        None => {
            unshare(flags).map_err(sys("unshare pod namespaces"))?;
            None
        }
        Some(userns) => {
            // Made (owned by the user namespace) in a helper process; this thread joins them.
            let holder = super::userns::Holder::spawn(userns, flags.bits())
                .map_err(io("create the pod user namespace"))?;
            for (wanted, ns, flag) in [
                (req.net, "net", CloneFlags::CLONE_NEWNET),
                (req.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
                (req.uts, "uts", CloneFlags::CLONE_NEWUTS),
            ] {
                if wanted {
                    let f = std::fs::File::open(holder.ns_path(ns))
                        .map_err(io(format!("open the pod {ns} namespace")))?;
                    nix::sched::setns(f, flag)
                        .map_err(sys(format!("join the pod {ns} namespace")))?;
                }
            }
            Some(holder)
        }
    };
    if req.uts && !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname)
            .map_err(sys(format!("set hostname {:?}", req.hostname)))?;
    }
    if req.net {
        set_loopback_up()?;
    }
    for (k, v) in &req.sysctls {
        // /proc/sys resolves net and ipc entries against the opening thread's namespaces.
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(io(format!("set sysctl {k}={v}")))?;
    }
    let mut pins = Pins::default();
    let result = (|| {
        for (wanted, ns, slot) in [
            (holder.is_some(), "user", &mut pins.user),
            (req.net, "net", &mut pins.net),
            (req.ipc, "ipc", &mut pins.ipc),
            (req.uts, "uts", &mut pins.uts),
        ] {
            if !wanted {
                continue;
            }
            let pin = pin_dir.join(format!("{id}-{ns}"));
            std::fs::File::create(&pin).map_err(io(format!("create pin {}", pin.display())))?;
            let src = match (&holder, ns) {
                (Some(h), "user") => h.ns_path("user").display().to_string(),
                _ => format!("/proc/thread-self/ns/{ns}"),
            };
            if let Err(e) = mount(
                Some(src.as_str()),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ) {
                let _ = std::fs::remove_file(&pin);
                return Err(sys(format!("pin {ns} namespace at {}", pin.display()))(e));
            }
            *slot = Some(pin);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pins),
        Err(e) => {
            remove(&pins);
            Err(e)
        }
    }
}

/// Brings `lo` up in the calling thread's network namespace.
fn set_loopback_up() -> Result<(), NsError> {
    // SAFETY: plain socket/ioctl calls on a struct we own; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(NsError::Sys {
                what: "socket for lo".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = CString::new("lo").expect("static name");
        for (i, b) in name.as_bytes_with_nul().iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(NsError::Sys {
                what: "bring lo up".into(),
                source: err,
            });
        }
    }
    Ok(())
}

/// Unpins (lazy unmount) and removes pin files. Missing pins are fine.
pub fn remove(pins: &Pins) {
    for pin in [&pins.net, &pins.ipc, &pins.uts, &pins.user]
        .into_iter()
        .flatten()
    {
        let _ = umount2(pin, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(pin);
    }
}

/// True when `pin` still holds a namespace (a bind mount, not a plain empty file).
pub fn is_pinned(pin: &Path) -> bool {
    std::fs::metadata(pin)
        .map(|m| {
            m.len() == 0
                && nix::sys::statfs::statfs(pin)
                    .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
                    .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_are_checked_against_the_pod_namespaces() {
        let mut req = NsRequest {
            net: true,
            ipc: true,
            uts: true,
            ..Default::default()
        };
        req.sysctls = vec![
            ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
            ("kernel.shmmax".into(), "1".into()),
        ];
        assert!(check_sysctls(&req).is_ok());
        req.sysctls = vec![("kernel.pid_max".into(), "1".into())];
        assert!(matches!(
            check_sysctls(&req),
            Err(NsError::SysctlNotAllowed(_))
        ));
        req.net = false;
        req.sysctls = vec![("net.core.somaxconn".into(), "1".into())];
        assert!(matches!(
            check_sysctls(&req),
            Err(NsError::SysctlNeedsPodNetwork(_))
        ));
    }

    #[test]
    fn pinned_namespaces_hold_hostname_sysctls_and_unpin_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        prepare_pin_dir(dir.path()).unwrap();
        let req = NsRequest {
            net: true,
            ipc: true,
            uts: true,
            hostname: "pod-a".into(),
            sysctls: vec![
                ("net.ipv4.ip_unprivileged_port_start".into(), "80".into()),
                ("kernel.shmmni".into(), "1234".into()),
            ],
            userns: None,
        };
        let pins = create(dir.path(), "abc", &req).unwrap();
        let net = pins.net.clone().unwrap();
        assert!(is_pinned(&net));
        // Read back from inside the namespaces.
        let (host, port, shm) = {
            let pins = pins.clone();
            std::thread::spawn(move || {
                for p in [&pins.net, &pins.ipc, &pins.uts].into_iter().flatten() {
                    let f = std::fs::File::open(p).unwrap();
                    nix::sched::setns(f, CloneFlags::empty()).unwrap();
                }
                (
                    nix::unistd::gethostname().unwrap().into_string().unwrap(),
                    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                        .unwrap(),
                    std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
                )
            })
            .join()
            .unwrap()
        };
        assert_eq!(
            (host.as_str(), port.trim(), shm.trim()),
            ("pod-a", "80", "1234")
        );
        assert_ne!(
            nix::unistd::gethostname().unwrap().into_string().unwrap(),
            "pod-a",
            "host untouched"
        );
        remove(&pins);
        assert!(!net.exists());
        let _ = umount2(dir.path(), MntFlags::MNT_DETACH);
    }
}
