//! Reading a cgroup's usage, cgroup v1 (one tree per controller; also the hybrid layout) or
//! v2 (one unified tree), into one sample shape.

use std::path::{Path, PathBuf};

/// Usage of one cgroup at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file pages, as the kubelet computes it (cAdvisor's working set).
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
    /// The memory limit, when one is set.
    pub memory_limit: Option<u64>,
}

/// Where the cgroup trees are mounted.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    v2: bool,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroups {
    /// The host's cgroups: v2 when `/sys/fs/cgroup` is the unified tree itself.
    pub fn detect() -> Cgroups {
        Self::at(Path::new("/sys/fs/cgroup"))
    }

    pub fn at(root: &Path) -> Cgroups {
        Cgroups {
            root: root.to_path_buf(),
            v2: root.join("cgroup.controllers").exists(),
        }
    }

    /// Reads the cgroup at `rel` (a cgroupfs path like `/kubepods/pod1/<id>`). `None` when it
    /// does not exist (the container is gone).
    pub fn read(&self, rel: &str) -> Option<Sample> {
        let rel = rel.trim_start_matches('/');
        if self.v2 {
            self.read_v2(&self.root.join(rel))
        } else {
            self.read_v1(rel)
        }
    }

    /// The memory controller's dir of the cgroup at `rel` (where an OOM kill is counted).
    pub fn memory_dir(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if self.v2 {
            self.root.join(rel)
        } else {
            self.root.join("memory").join(rel)
        }
    }

    fn read_v1(&self, rel: &str) -> Option<Sample> {
        let mem = self.root.join("memory").join(rel);
        let cpu = self.root.join("cpuacct").join(rel);
        if !mem.exists() && !cpu.exists() {
            return None;
        }
        let stat = std::fs::read_to_string(mem.join("memory.stat")).unwrap_or_default();
        let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
        // v1 reports "no limit" as a huge page-aligned number.
        let limit = read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
        Some(Sample {
            cpu_usage_ns: read_u64(&cpu.join("cpuacct.usage")).unwrap_or(0),
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: stat_field(&stat, "total_rss").unwrap_or(0),
            page_faults: stat_field(&stat, "total_pgfault").unwrap_or(0),
            major_page_faults: stat_field(&stat, "total_pgmajfault").unwrap_or(0),
            pids: read_u64(&self.root.join("pids").join(rel).join("pids.current")).unwrap_or(0),
            memory_limit: limit,
        })
    }

    fn read_v2(&self, dir: &Path) -> Option<Sample> {
        if !dir.exists() {
            return None;
        }
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let cpu = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = stat_field(&stat, "inactive_file").unwrap_or(0);
        Some(Sample {
            cpu_usage_ns: stat_field(&cpu, "usage_usec").unwrap_or(0) * 1000,
            memory_usage: usage,
            working_set: usage.saturating_sub(inactive),
            rss: stat_field(&stat, "anon").unwrap_or(0),
            page_faults: stat_field(&stat, "pgfault").unwrap_or(0),
            major_page_faults: stat_field(&stat, "pgmajfault").unwrap_or(0),
            pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
            memory_limit: read_u64(&dir.join("memory.max")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_layout_is_read_per_controller() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "memory/pod/c/memory.usage_in_bytes", "1000\n");
        write(
            r,
            "memory/pod/c/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            r,
            "memory/pod/c/memory.stat",
            "cache 5\ntotal_rss 600\ntotal_inactive_file 300\ntotal_pgfault 7\ntotal_pgmajfault 2\n",
        );
        write(r, "cpuacct/pod/c/cpuacct.usage", "123456\n");
        write(r, "pids/pod/c/pids.current", "3\n");
        let s = Cgroups::at(r).read("/pod/c").unwrap();
        assert_eq!(
            s,
            Sample {
                cpu_usage_ns: 123456,
                memory_usage: 1000,
                working_set: 700,
                rss: 600,
                page_faults: 7,
                major_page_faults: 2,
                pids: 3,
                memory_limit: None
            }
        );
        assert!(Cgroups::at(r).read("/pod/gone").is_none());
        assert_eq!(Cgroups::at(r).memory_dir("/pod/c"), r.join("memory/pod/c"));
    }

    #[test]
    fn v2_layout_is_read_from_the_unified_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "cgroup.controllers", "cpu memory pids\n");
        write(r, "pod/c/memory.current", "2000\n");
        write(r, "pod/c/memory.max", "4096\n");
        write(
            r,
            "pod/c/memory.stat",
            "anon 900\ninactive_file 500\npgfault 11\npgmajfault 1\n",
        );
        write(r, "pod/c/cpu.stat", "usage_usec 42\nuser_usec 40\n");
        write(r, "pod/c/pids.current", "5\n");
        let s = Cgroups::at(r).read("pod/c").unwrap();
        assert_eq!(Cgroups::at(r).memory_dir("/pod/c"), r.join("pod/c"));
        assert_eq!(
            s,
            Sample {
                cpu_usage_ns: 42_000,
                memory_usage: 2000,
                working_set: 1500,
                rss: 900,
                page_faults: 11,
                major_page_faults: 1,
                pids: 5,
                memory_limit: Some(4096)
            }
        );
    }
}
