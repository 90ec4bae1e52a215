//! Facts about this host that change what the spec may ask for; tests pass fakes.

use std::path::Path;
use std::sync::OnceLock;

use oci_spec::runtime::Capability;
use tracing::warn;

use super::capabilities;

#[derive(Debug, Clone)]
pub(crate) struct HostFacts {
    /// `/sys/fs/cgroup` is cgroup v2 (unified), not v1 or hybrid.
    pub cgroup_unified: bool,
    /// The memory controller can limit swap (`memory.memsw.*` on v1, `memory.swap.max` on v2).
    pub swap_available: bool,
    /// The hugetlb controller is where runc will look for it.
    pub hugetlb_available: bool,
    /// The capabilities this process holds: all that a runtime it starts can grant.
    pub current_caps: Vec<Capability>,
    /// Kernel (major, minor), for seccomp `minKernel` rules.
    pub kernel: (u32, u32),
    /// `std::env::consts::ARCH`.
    pub arch: &'static str,
    /// This process's `oom_score_adj`.
    pub oom_score_adj: i32,
    /// The node's hostname, for `HOSTNAME` when the sandbox has none.
    pub hostname: String,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        static STATIC: OnceLock<HostFacts> = OnceLock::new();
        let mut facts = STATIC
            .get_or_init(|| {
                let cgroup_unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
                HostFacts {
                    cgroup_unified,
                    swap_available: swap_available(cgroup_unified),
                    hugetlb_available: hugetlb_available(cgroup_unified),
                    current_caps: current_caps(),
                    kernel: kernel_version(),
                    arch: std::env::consts::ARCH,
                    oom_score_adj: 0,
                    hostname: String::new(),
                }
            })
            .clone();
        facts.oom_score_adj = read_trimmed("/proc/self/oom_score_adj")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        facts.hostname = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_default();
        facts
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn swap_available(unified: bool) -> bool {
    if !unified {
        return Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    }
    // memory.swap.max is absent from the root cgroup: look in our own.
    let own = read_trimmed("/proc/self/cgroup")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_else(|| "/".to_string());
    Path::new("/sys/fs/cgroup")
        .join(own.trim_start_matches('/'))
        .join("memory.swap.max")
        .exists()
}

fn hugetlb_available(unified: bool) -> bool {
    if unified {
        read_trimmed("/sys/fs/cgroup/cgroup.controllers")
            .is_some_and(|c| c.split_whitespace().any(|x| x == "hugetlb"))
    } else {
        Path::new("/sys/fs/cgroup/hugetlb").is_dir()
    }
}

fn current_caps() -> Vec<Capability> {
    let status = read_trimmed("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    match mask {
        Some(mask) => capabilities::from_mask(mask),
        None => {
            warn!("cannot read CapEff from /proc/self/status; assuming every capability");
            capabilities::from_mask(u64::MAX)
        }
    }
}

fn kernel_version() -> (u32, u32) {
    let release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_kernel_version(&release).unwrap_or((0, 0))
}

/// "6.18.44-fc" -> (6, 18).
pub(crate) fn parse_kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version(""), None);
    }

    #[test]
    fn detect_reads_this_host() {
        let h = HostFacts::detect();
        assert!(h.kernel.0 >= 3);
        assert!(!h.arch.is_empty());
    }
}
