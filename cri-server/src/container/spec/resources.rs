//! cgroup resources and the OOM score, as containerd's `WithResources` / `WithOOMScoreAdj`.

use std::collections::HashMap;

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources};
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};
use tracing::warn;

use super::host::HostFacts;

fn container_resources(config: &ContainerConfig) -> Option<&LinuxContainerResources> {
    config.linux.as_ref().and_then(|l| l.resources.as_ref())
}

/// CPU, memory, hugepages and the unified map; zero means "not set". Swap is set to the
/// memory limit (no swapping) unless a swap limit is given, where the host can limit swap.
/// Hugepage limits are skipped, with a warning, when the hugetlb controller is missing
/// (containerd's default `tolerate_missing_hugetlb_controller = true`).
pub(crate) fn linux_resources(config: &ContainerConfig, host: &HostFacts) -> LinuxResources {
    let mut out = LinuxResources::default();
    let Some(r) = container_resources(config) else {
        return out;
    };

    let mut cpu = LinuxCpu::default();
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
        if r.memory_swap_limit_in_bytes == 0 && host.swap_available {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if r.memory_swap_limit_in_bytes != 0 && host.swap_available {
        memory.set_swap(Some(r.memory_swap_limit_in_bytes));
    }
    if memory != LinuxMemory::default() {
        out.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        if host.hugetlb_available {
            let limits = r
                .hugepage_limits
                .iter()
                .map(|h| {
                    let mut l = LinuxHugepageLimit::default();
                    l.set_page_size(h.page_size.clone());
                    l.set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
                    l
                })
                .collect();
            out.set_hugepage_limits(Some(limits));
        } else {
            warn!("hugetlb cgroup controller is absent: skipping hugepage limits");
        }
    }

    if !r.unified.is_empty() {
        let unified: HashMap<String, String> = r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.set_unified(Some(unified));
    }
    out
}

/// The requested `oom_score_adj`; when this host cannot lower scores (no
/// `CAP_SYS_RESOURCE`), never below ours (`current`): containerd's
/// `restrict_oom_score_adj`. `None` when the config has no resources.
pub(crate) fn oom_score_adj(
    config: &ContainerConfig,
    can_lower: bool,
    current: i32,
) -> Option<i32> {
    let r = container_resources(config)?;
    let want = r.oom_score_adj.clamp(-1000, 1000) as i32;
    Some(if !can_lower && want < current {
        current
    } else {
        want
    })
}
