//! Warming the kernel's cgroup migration lock just before the OCI runtime needs it.
//!
//! Every move of a process into a cgroup (a write to `cgroup.procs`, in any hierarchy, v1 or
//! v2) takes the one global `cgroup_threadgroup_rwsem` for writing. That percpu rwsem keeps
//! its readers (every fork and exit on the node) cheap by making the first writer after a quiet
//! spell wait for an RCU grace period; writers within a grace period of the last one do not
//! wait. So the first cgroup move of `runc run`, `runc exec` or `cri-exec` after a pause (a pod
//! started now and then, a probe every ten seconds) waits 5-8 ms on this machine.
//!
//! [`CgroupLockWarmer::warm`] makes such a move itself, at the moment we spawn the runtime: a
//! thread of ours writes `0` (itself) into the `cgroup.procs` of the cgroup the daemon is
//! already in, which moves nothing but takes the lock. The grace period then passes while runc
//! starts its Go runtime and reads its config, and runc's own moves find the lock warm.
//! Measured with `runc run --detach` 200 ms apart (a Python loop, 15 runs each, twice):
//! median 29.7 -> 21.0 ms and 33.1 -> 25.4 ms.
//!
//! The cgroup mount option `favordynmods` removes the wait for every writer, at some cost to
//! fork and exit; it is a setting of the whole node, left to the operator.

use std::path::{Path, PathBuf};

/// Where to make the no-op move; `None` when no cgroup tree of ours is found (nothing to warm).
#[derive(Debug, Clone, Default)]
pub struct CgroupLockWarmer {
    procs: Option<PathBuf>,
}

impl CgroupLockWarmer {
    /// Finds the daemon's own `cgroup.procs` in a mounted hierarchy (the unified one if any).
    pub fn detect() -> CgroupLockWarmer {
        let found = (|| {
            let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            own_procs_file(&cgroup, &mountinfo)
        })();
        CgroupLockWarmer {
            procs: found.filter(|p| p.exists()),
        }
    }

    /// Takes the migration lock once, on a blocking thread, without waiting for it.
    pub fn warm(&self) {
        let Some(procs) = self.procs.clone() else {
            return;
        };
        tokio::task::spawn_blocking(move || {
            // Errors are fine: the kernel takes the lock before it checks anything else.
            if let Err(e) = std::fs::write(&procs, "0") {
                tracing::trace!(path = %procs.display(), error = %e, "cgroup lock warm-up write");
            }
        });
    }
}

/// The `cgroup.procs` of our own cgroup: in the cgroup2 tree if one is mounted, else in the
/// first v1 hierarchy mounted with its controller's name. `cgroup` is `/proc/self/cgroup`,
/// `mountinfo` `/proc/self/mountinfo`.
fn own_procs_file(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let options = post.nth(1).unwrap_or("");
            // (fstype, mount root, mount point, super options)
            Some((fstype, *pre.get(3)?, *pre.get(4)?, options))
        })
        .filter(|(fstype, ..)| *fstype == "cgroup2" || *fstype == "cgroup")
        .collect();
    let under = |root: &str, point: &str, path: &str| -> Option<PathBuf> {
        let rel = path.strip_prefix(root)?.trim_start_matches('/');
        Some(Path::new(point).join(rel).join("cgroup.procs"))
    };
    let mut v1 = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            if let Some(found) = mounts
                .iter()
                .filter(|m| m.0 == "cgroup2")
                .find_map(|m| under(m.1, m.2, path))
            {
                return Some(found);
            }
        } else if v1.is_none() {
            v1 = mounts
                .iter()
                .filter(|m| m.0 == "cgroup")
                .filter(|m| {
                    controllers
                        .split(',')
                        .all(|c| m.3.split(',').any(|o| o == c))
                })
                .find_map(|m| under(m.1, m.2, path));
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
35 27 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
38 35 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
39 35 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn finds_the_unified_tree_first_then_a_v1_hierarchy_by_its_controllers() {
        let cgroup = "9:cpu,cpuacct:/system.slice/cri.service\n8:pids:/system.slice/cri.service\n0::/system.slice/cri.service\n";
        assert_eq!(
            own_procs_file(cgroup, HYBRID_MOUNTS),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/cri.service/cgroup.procs"
            ))
        );
        let v1_only: String = HYBRID_MOUNTS
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            own_procs_file(cgroup, &v1_only),
            Some(PathBuf::from(
                "/sys/fs/cgroup/cpu,cpuacct/system.slice/cri.service/cgroup.procs"
            ))
        );
    }

    #[test]
    fn a_cgroup_namespace_root_is_stripped_and_no_tree_means_none() {
        let mounts = "36 35 0:31 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_procs_file("0::/kubepods/pod1/ctr\n", mounts),
            Some(PathBuf::from("/sys/fs/cgroup/ctr/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file("0::/x\n", "1 2 0:3 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[tokio::test]
    async fn warming_moves_nothing() {
        let warmer = CgroupLockWarmer::detect();
        assert!(warmer.procs.is_some(), "a cgroup tree of ours on this host");
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        warmer.warm();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }
}
