//! Joining a process's cgroups: every hierarchy listed in /proc/<pid>/cgroup, found through
//! our mountinfo (cgroup v1 controllers, named hierarchies and the v2 unified tree alike).

use std::collections::HashMap;
use std::path::PathBuf;

/// Where each hierarchy is mounted: v1 by each controller (and `name=...`), v2 under "".
fn mounts() -> Result<HashMap<String, PathBuf>, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read mountinfo: {e}"))?;
    let mut out = HashMap::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
        let options = post.next().unwrap_or("");
        match fstype {
            "cgroup2" => {
                out.entry(String::new())
                    .or_insert_with(|| PathBuf::from(mount_point));
            }
            "cgroup" => {
                for opt in options.split(',') {
                    out.entry(opt.to_string())
                        .or_insert_with(|| PathBuf::from(mount_point));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Moves this process into `pid`'s cgroups.
pub fn join(pid: i32) -> Result<(), String> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("read /proc/{pid}/cgroup: {e}"))?;
    let mounts = mounts()?;
    let me = std::process::id().to_string();
    for line in list.lines() {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        // v1 "cpu,cpuacct" is mounted with both as options: the first names it.
        let key = controllers.split(',').next().unwrap_or("");
        let Some(root) = mounts.get(key) else {
            // A hierarchy we cannot see (not mounted here): nothing to join.
            continue;
        };
        let procs = root.join(path.trim_start_matches('/')).join("cgroup.procs");
        if let Err(e) = std::fs::write(&procs, &me) {
            return Err(format!("join cgroup {}: {e}", procs.display()));
        }
    }
    Ok(())
}
