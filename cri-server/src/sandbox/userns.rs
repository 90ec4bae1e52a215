//! Pod user namespaces (`hostUsers: false`): checking the kubelet's request, and a short-lived
//! helper process that makes the user namespace so the pod's other namespaces can be owned
//! by it.
//!
//! A multithreaded process cannot enter or create a user namespace, so a forked child does:
//! it unshares its user namespace, waits for us to write the id maps, unshares net/ipc/uts as
//! asked (so they belong to the pod's user namespace: sysfs, mqueue and hostname then work for
//! the container's root) and then waits until we have pinned everything and let it go.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use k8s_cri::v1::{IdMapping, NamespaceMode, NamespaceOption};
use serde::{Deserialize, Serialize};

/// One contiguous id range: container ids `container_id..+length` are host ids
/// `host_id..+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// The pod's user namespace mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Userns {
    pub uids: IdMap,
    pub gids: IdMap,
}

impl IdMap {
    /// The host id of container id `id`, if mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.container_id)
            .filter(|off| *off < self.length)
            .map(|off| self.host_id + off)
    }

    fn line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }

    pub fn to_cri(self) -> IdMapping {
        IdMapping {
            host_id: self.host_id,
            container_id: self.container_id,
            length: self.length,
        }
    }
}

impl Userns {
    /// Host uid and gid of the container's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }
}

fn one_range(what: &str, maps: &[IdMapping]) -> Result<IdMap, String> {
    let [m] = maps else {
        return Err(format!(
            "user namespace: exactly one {what} mapping range is supported, got {}",
            maps.len()
        ));
    };
    if m.length == 0 {
        return Err(format!("user namespace: empty {what} mapping"));
    }
    if m.container_id != 0 {
        return Err(format!(
            "user namespace: container {what} 0 must be mapped (the range starts at {})",
            m.container_id
        ));
    }
    if m.host_id == 0 {
        return Err(format!(
            "user namespace: host {what} 0 (root) cannot be mapped into a pod"
        ));
    }
    if m.host_id.checked_add(m.length).is_none() {
        return Err(format!(
            "user namespace: {what} range {}+{} overflows",
            m.host_id, m.length
        ));
    }
    Ok(IdMap {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

/// What a pod's namespace options ask for: `Ok(None)` host users (no options, or mode NODE),
/// `Ok(Some)` a pod user namespace, `Err` a request we refuse (InvalidArgument).
pub fn from_request(ns: Option<&NamespaceOption>) -> Result<Option<Userns>, String> {
    let Some(ns) = ns else { return Ok(None) };
    let Some(u) = ns.userns_options.as_ref() else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err("user namespace mode NODE takes no id mappings".into());
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => {
            for (name, mode) in [("network", ns.network), ("IPC", ns.ipc), ("PID", ns.pid)] {
                if mode == NamespaceMode::Node as i32 {
                    return Err(format!(
                        "user namespace: a pod with the host's {name} namespace cannot have its own user namespace"
                    ));
                }
            }
            Ok(Some(Userns {
                uids: one_range("uid", &u.uids)?,
                gids: one_range("gid", &u.gids)?,
            }))
        }
        Ok(other) => Err(format!(
            "user namespace mode {} is not supported (only POD and NODE)",
            other.as_str_name()
        )),
        Err(_) => Err(format!("user namespace mode {} is unknown", u.mode)),
    }
}

/// A child process sitting in a new user namespace (and the pod's new namespaces) until
/// dropped.
pub struct Holder {
    pid: libc::pid_t,
    /// Closing it lets the child exit.
    release: Option<OwnedFd>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just returned by the kernel.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Holder {
    /// Forks the child, writes its maps, and returns once it also holds new namespaces for
    /// `flags` (CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS, any of them).
    pub fn spawn(userns: &Userns, flags: libc::c_int) -> std::io::Result<Holder> {
        let (to_child_r, to_child_w) = pipe()?;
        let (to_parent_r, to_parent_w) = pipe()?;
        // SAFETY: the child only makes async-signal-safe calls (unshare, read, write, _exit)
        // on descriptors it inherited, and never returns into Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; every path ends in _exit.
            unsafe {
                let rd = to_child_r.as_raw_fd();
                let wr = to_parent_w.as_raw_fd();
                let mut b = 0u8;
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    libc::_exit(10);
                }
                libc::write(wr, b"u".as_ptr().cast(), 1);
                // The maps are written.
                if libc::read(rd, (&mut b as *mut u8).cast(), 1) != 1 {
                    libc::_exit(11);
                }
                if flags != 0 && libc::unshare(flags) != 0 {
                    libc::_exit(12);
                }
                libc::write(wr, b"n".as_ptr().cast(), 1);
                // Until the parent closes its end.
                while libc::read(rd, (&mut b as *mut u8).cast(), 1) > 0 {}
                libc::_exit(0);
            }
        }
        drop(to_child_r);
        drop(to_parent_w);
        let holder = Holder {
            pid,
            release: Some(to_child_w),
        };
        let mut from_child = std::fs::File::from(to_parent_r);
        let mut step = |want: u8, what: &str| -> std::io::Result<()> {
            let mut b = [0u8];
            match from_child.read_exact(&mut b) {
                Ok(()) if b[0] == want => Ok(()),
                _ => Err(std::io::Error::other(format!(
                    "user namespace helper failed to {what}"
                ))),
            }
        };
        step(b'u', "create the user namespace")?;
        let write_map = |file: &str, map: &IdMap| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, map.line()).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("write {path} ({}): {e}", map.line().trim()),
                )
            })
        };
        write_map("uid_map", &userns.uids)?;
        write_map("gid_map", &userns.gids)?;
        if let Some(w) = holder.release.as_ref() {
            std::fs::File::from(w.try_clone()?).write_all(b"m")?;
        }
        step(b'n', "create the pod namespaces")?;
        Ok(holder)
    }

    /// `/proc/<pid>/ns/<ns>` of the child.
    pub fn ns_path(&self, ns: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{ns}", self.pid))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.release.take();
        // SAFETY: reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::UserNamespace;

    fn map(c: u32, h: u32, l: u32) -> IdMapping {
        IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    fn opts(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> NamespaceOption {
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                uids,
                gids,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_mode_with_one_range_each_is_accepted() {
        let o = opts(
            NamespaceMode::Pod,
            vec![map(0, 65536, 65536)],
            vec![map(0, 131072, 65536)],
        );
        let u = from_request(Some(&o)).unwrap().unwrap();
        assert_eq!(u.root(), (65536, 131072));
        assert_eq!(u.uids.to_host(1000), Some(66536));
        assert_eq!(u.uids.to_host(65536), None);
    }

    #[test]
    fn invalid_user_namespace_requests_are_refused() {
        let ok = || vec![map(0, 65536, 65536)];
        let cases = [
            (
                "two ranges",
                opts(
                    NamespaceMode::Pod,
                    vec![map(0, 65536, 10), map(10, 70000, 10)],
                    ok(),
                ),
            ),
            ("no gid range", opts(NamespaceMode::Pod, ok(), vec![])),
            (
                "root unmapped",
                opts(NamespaceMode::Pod, vec![map(1, 65536, 65536)], ok()),
            ),
            (
                "host root",
                opts(NamespaceMode::Pod, vec![map(0, 0, 65536)], ok()),
            ),
            (
                "empty range",
                opts(NamespaceMode::Pod, vec![map(0, 65536, 0)], ok()),
            ),
            (
                "overflow",
                opts(NamespaceMode::Pod, vec![map(0, u32::MAX - 1, 10)], ok()),
            ),
            ("container", opts(NamespaceMode::Container, ok(), ok())),
            ("target", opts(NamespaceMode::Target, ok(), ok())),
            ("node with maps", opts(NamespaceMode::Node, ok(), ok())),
            (
                "host network",
                NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..opts(NamespaceMode::Pod, ok(), ok())
                },
            ),
            (
                "host pid",
                NamespaceOption {
                    pid: NamespaceMode::Node as i32,
                    ..opts(NamespaceMode::Pod, ok(), ok())
                },
            ),
        ];
        for (name, o) in cases {
            assert!(from_request(Some(&o)).is_err(), "{name} must be refused");
        }
        assert_eq!(
            from_request(Some(&opts(NamespaceMode::Node, vec![], vec![]))),
            Ok(None)
        );
        assert_eq!(from_request(None), Ok(None));
    }

    #[test]
    fn holder_owns_a_mapped_user_namespace_with_the_pod_namespaces_inside() {
        let u = Userns {
            uids: IdMap {
                container_id: 0,
                host_id: 300000,
                length: 65536,
            },
            gids: IdMap {
                container_id: 0,
                host_id: 400000,
                length: 65536,
            },
        };
        let h = Holder::spawn(&u, libc::CLONE_NEWNET | libc::CLONE_NEWUTS).unwrap();
        let uid_map = std::fs::read_to_string(format!("/proc/{}/uid_map", h.pid)).unwrap();
        assert_eq!(
            uid_map.split_whitespace().collect::<Vec<_>>(),
            ["0", "300000", "65536"]
        );
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(std::fs::read_link(h.ns_path("net")).unwrap(), own);
        let pid = h.pid;
        drop(h);
        assert!(!std::path::Path::new(&format!("/proc/{pid}/ns")).exists());
    }
}
