//! Container and pod stats, collected by one periodic task into a cache that the stats RPCs
//! read, so a List call never fans out syscalls per container; and the container events
//! stream (created, started, stopped, deleted) the kubelet's evented PLEG listens to.

pub mod cgroup;
pub mod metrics;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_cri::v1::{
    ContainerAttributes, ContainerEventResponse, ContainerEventType, ContainerStats, CpuUsage,
    FilesystemIdentifier, FilesystemUsage, LinuxPodSandboxStats, MemoryUsage,
    NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxStats, ProcessUsage,
    UInt64Value,
};
use tracing::debug;

use crate::container::{ContainerPhase, ContainerRecord};
use crate::runtime::{Phase, Runtime, now_nanos};
use crate::sandbox::SandboxRecord;

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// The latest stats, and the previous CPU reading per cgroup for the usage rate.
#[derive(Default)]
pub struct StatsCache {
    containers: RwLock<HashMap<String, ContainerStats>>,
    pods: RwLock<HashMap<String, PodSandboxStats>>,
    prev_cpu: Mutex<HashMap<String, (i64, u64)>>,
}

impl StatsCache {
    pub fn container(&self, id: &str) -> Option<ContainerStats> {
        self.containers.read().expect("stats").get(id).cloned()
    }
    pub fn containers(&self) -> Vec<ContainerStats> {
        self.containers
            .read()
            .expect("stats")
            .values()
            .cloned()
            .collect()
    }
    pub fn pod(&self, id: &str) -> Option<PodSandboxStats> {
        self.pods.read().expect("stats").get(id).cloned()
    }
    pub fn pods(&self) -> Vec<PodSandboxStats> {
        self.pods.read().expect("stats").values().cloned().collect()
    }

    /// nanocores between this reading and the previous one of the same cgroup.
    fn rate(&self, key: &str, now: i64, cpu: u64) -> u64 {
        let mut prev = self.prev_cpu.lock().expect("stats");
        let rate = match prev.get(key) {
            Some((t, c)) if now > *t && cpu >= *c => {
                ((cpu - c) as u128 * 1_000_000_000 / (now - t) as u128) as u64
            }
            _ => 0,
        };
        prev.insert(key.to_string(), (now, cpu));
        rate
    }
}

fn cpu_mem(cache: &StatsCache, key: &str, s: &cgroup::Sample, ts: i64) -> (CpuUsage, MemoryUsage) {
    let cpu = CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: v(s.cpu_usage_ns),
        usage_nano_cores: v(cache.rate(key, ts, s.cpu_usage_ns)),
    };
    let memory = MemoryUsage {
        timestamp: ts,
        working_set_bytes: v(s.working_set),
        available_bytes: s.memory_limit.map(|l| UInt64Value {
            value: l.saturating_sub(s.working_set),
        }),
        usage_bytes: v(s.memory_usage),
        rss_bytes: v(s.rss),
        page_faults: v(s.page_faults),
        major_page_faults: v(s.major_page_faults),
    };
    (cpu, memory)
}

/// Bytes and inodes under `dir` (the container's writable layer), not crossing mounts.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Interface counters from `/proc/<pid>/net/dev` (the pid's network namespace), without lo.
fn network(pid: u32, ts: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if name.trim() == "lo" || f.len() < 11 {
            continue;
        }
        interfaces.push(NetworkInterfaceUsage {
            name: name.trim().to_string(),
            rx_bytes: v(f[0]),
            rx_errors: v(f[2]),
            tx_bytes: v(f[8]),
            tx_errors: v(f[10]),
        });
    }
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .or(interfaces.first())
        .cloned();
    Some(NetworkUsage {
        timestamp: ts,
        default_interface,
        interfaces,
    })
}

impl Runtime {
    /// Starts the background work: stats every `period`, exit watching (created and running
    /// containers) every 500 ms.
    pub fn spawn_background(self: &Arc<Self>, period: Duration) {
        let rt = self.clone();
        tokio::spawn(async move {
            loop {
                rt.collect_stats().await;
                tokio::time::sleep(period).await;
            }
        });
        let rt = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let running: Vec<String> = rt
                    .containers
                    .read()
                    .expect("containers")
                    .values()
                    .filter(|c| {
                        matches!(c.phase, ContainerPhase::Created | ContainerPhase::Running)
                    })
                    .map(|c| c.id.clone())
                    .collect();
                for id in running {
                    // Folds in exits; a change emits the stopped event.
                    rt.refreshed(&id);
                }
            }
        });
    }

    async fn collect_stats(&self) {
        let ts = now_nanos();
        let sandboxes: Vec<SandboxRecord> = self
            .sandboxes
            .read()
            .expect("sandboxes")
            .values()
            .filter(|s| s.phase == Phase::Ready)
            .cloned()
            .collect();
        let containers: Vec<ContainerRecord> = self
            .containers
            .read()
            .expect("containers")
            .values()
            .filter(|c| matches!(c.phase, ContainerPhase::Created | ContainerPhase::Running))
            .cloned()
            .collect();
        let cgroups = self.cgroups.clone();
        let uppers: Vec<(String, std::path::PathBuf)> = containers
            .iter()
            .map(|c| (c.id.clone(), c.data_dir.join("upper")))
            .collect();
        let layer_usage: HashMap<String, (u64, u64)> = tokio::task::spawn_blocking(move || {
            uppers
                .into_iter()
                .map(|(id, dir)| (id, disk_usage(&dir)))
                .collect()
        })
        .await
        .unwrap_or_default();
        let mut by_container = HashMap::new();
        for c in &containers {
            let Some(sb) = sandboxes.iter().find(|s| s.id == c.sandbox_id) else {
                continue;
            };
            let path = format!("{}/{}", sb.cgroup_parent.trim_end_matches('/'), c.id);
            let Some(sample) = cgroups.read(&path) else {
                continue;
            };
            let (cpu, memory) = cpu_mem(&self.stats, &c.id, &sample, ts);
            let (bytes, inodes) = layer_usage.get(&c.id).copied().unwrap_or_default();
            let stats = ContainerStats {
                attributes: Some(ContainerAttributes {
                    id: c.id.clone(),
                    metadata: c.config.metadata.clone(),
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                }),
                cpu: Some(cpu),
                memory: Some(memory),
                writable_layer: Some(FilesystemUsage {
                    timestamp: ts,
                    fs_id: Some(FilesystemIdentifier {
                        mountpoint: self.paths.root.display().to_string(),
                    }),
                    used_bytes: v(bytes),
                    inodes_used: v(inodes),
                }),
                swap: None,
            };
            by_container.insert(c.id.clone(), (stats, sample.pids));
        }
        let mut pods = HashMap::new();
        for sb in &sandboxes {
            let mine: Vec<&ContainerRecord> = containers
                .iter()
                .filter(|c| c.sandbox_id == sb.id)
                .collect();
            let sample = cgroups.read(&sb.cgroup_parent);
            let (cpu, memory) = match &sample {
                Some(s) => {
                    let (c, m) = cpu_mem(&self.stats, &format!("pod:{}", sb.id), s, ts);
                    (Some(c), Some(m))
                }
                None => (None, None),
            };
            let pid = mine
                .iter()
                .find(|c| c.phase == ContainerPhase::Running && c.pid > 0)
                .map(|c| c.pid)
                .or(sb.infra_pid.map(|p| p as u32));
            let process_count: u64 = mine
                .iter()
                .filter_map(|c| by_container.get(&c.id))
                .map(|(_, pids)| *pids)
                .sum();
            pods.insert(
                sb.id.clone(),
                PodSandboxStats {
                    attributes: Some(PodSandboxAttributes {
                        id: sb.id.clone(),
                        metadata: sb.config.metadata.clone(),
                        labels: sb.config.labels.clone(),
                        annotations: sb.config.annotations.clone(),
                    }),
                    linux: Some(LinuxPodSandboxStats {
                        cpu,
                        memory,
                        network: pid
                            .filter(|_| !sb.host_network)
                            .and_then(|p| network(p, ts)),
                        process: Some(ProcessUsage {
                            timestamp: ts,
                            process_count: v(process_count),
                        }),
                        containers: mine
                            .iter()
                            .filter_map(|c| by_container.get(&c.id))
                            .map(|(s, _)| s.clone())
                            .collect(),
                    }),
                    windows: None,
                },
            );
        }
        debug!(
            containers = by_container.len(),
            pods = pods.len(),
            "stats collected"
        );
        *self.stats.containers.write().expect("stats") =
            by_container.into_iter().map(|(k, (s, _))| (k, s)).collect();
        *self.stats.pods.write().expect("stats") = pods;
    }

    /// Publishes a container or sandbox event to every GetContainerEvents stream.
    pub fn emit(&self, id: &str, kind: ContainerEventType, sandbox_id: &str) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let pod_sandbox_status = self.sandbox(sandbox_id).map(|s| s.to_status());
        let containers_statuses = self
            .containers_of(sandbox_id)
            .iter()
            .map(|c| c.to_status())
            .collect();
        let _ = self.events.send(ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }
}
