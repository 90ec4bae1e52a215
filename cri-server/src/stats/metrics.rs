//! ListMetricDescriptors and ListPodSandboxMetrics: the cached stats in cAdvisor's metric
//! names, so the kubelet's CRI metrics path needs no cAdvisor.

use k8s_cri::v1::{
    ContainerMetrics, ContainerStats, Metric, MetricDescriptor, MetricType, PodSandboxMetrics,
    UInt64Value,
};

/// Label keys of every container metric (values in this order).
const CONTAINER_LABELS: [&str; 4] = ["container", "id", "namespace", "pod"];
/// Label keys of pod network metrics.
const POD_LABELS: [&str; 4] = ["interface", "id", "namespace", "pod"];

/// (name, help, counter?, per-pod network metric?)
const METRICS: [(&str, &str, bool, bool); 9] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in nanoseconds (cAdvisor reports seconds).",
        true,
        false,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        false,
        false,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        false,
        false,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        false,
        false,
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of page faults.",
        true,
        false,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes consumed by the container's writable layer.",
        false,
        false,
    ),
    (
        "container_fs_inodes_total",
        "Number of inodes used by the container's writable layer.",
        false,
        false,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        true,
        true,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        true,
        true,
    ),
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    METRICS
        .iter()
        .map(|(name, help, _, pod)| MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: if *pod { POD_LABELS } else { CONTAINER_LABELS }
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

fn metric(name: &str, ts: i64, labels: &[String], value: Option<&UInt64Value>) -> Option<Metric> {
    let counter = METRICS.iter().find(|m| m.0 == name).is_some_and(|m| m.2);
    Some(Metric {
        name: name.to_string(),
        timestamp: ts,
        metric_type: if counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        } as i32,
        label_values: labels.to_vec(),
        value: Some(*value?),
    })
}

fn container_metrics(c: &ContainerStats, namespace: &str, pod: &str) -> ContainerMetrics {
    let a = c.attributes.clone().unwrap_or_default();
    let name = a.metadata.map(|m| m.name).unwrap_or_default();
    let labels = vec![name, a.id.clone(), namespace.to_string(), pod.to_string()];
    let mut out = Vec::new();
    if let Some(cpu) = &c.cpu {
        out.extend(metric(
            "container_cpu_usage_seconds_total",
            cpu.timestamp,
            &labels,
            cpu.usage_core_nano_seconds.as_ref(),
        ));
    }
    if let Some(m) = &c.memory {
        out.extend(metric(
            "container_memory_usage_bytes",
            m.timestamp,
            &labels,
            m.usage_bytes.as_ref(),
        ));
        out.extend(metric(
            "container_memory_working_set_bytes",
            m.timestamp,
            &labels,
            m.working_set_bytes.as_ref(),
        ));
        out.extend(metric(
            "container_memory_rss",
            m.timestamp,
            &labels,
            m.rss_bytes.as_ref(),
        ));
        out.extend(metric(
            "container_memory_failures_total",
            m.timestamp,
            &labels,
            m.page_faults.as_ref(),
        ));
    }
    if let Some(w) = &c.writable_layer {
        out.extend(metric(
            "container_fs_usage_bytes",
            w.timestamp,
            &labels,
            w.used_bytes.as_ref(),
        ));
        out.extend(metric(
            "container_fs_inodes_total",
            w.timestamp,
            &labels,
            w.inodes_used.as_ref(),
        ));
    }
    ContainerMetrics {
        container_id: a.id,
        metrics: out,
    }
}

/// Metrics for every pod in `stats`.
pub fn pod_metrics(stats: &[k8s_cri::v1::PodSandboxStats]) -> Vec<PodSandboxMetrics> {
    stats
        .iter()
        .map(|p| {
            let a = p.attributes.clone().unwrap_or_default();
            let meta = a.metadata.unwrap_or_default();
            let linux = p.linux.clone().unwrap_or_default();
            let mut metrics = Vec::new();
            if let Some(net) = &linux.network {
                for i in &net.interfaces {
                    let labels = vec![
                        i.name.clone(),
                        a.id.clone(),
                        meta.namespace.clone(),
                        meta.name.clone(),
                    ];
                    metrics.extend(metric(
                        "container_network_receive_bytes_total",
                        net.timestamp,
                        &labels,
                        i.rx_bytes.as_ref(),
                    ));
                    metrics.extend(metric(
                        "container_network_transmit_bytes_total",
                        net.timestamp,
                        &labels,
                        i.tx_bytes.as_ref(),
                    ));
                }
            }
            PodSandboxMetrics {
                pod_sandbox_id: a.id.clone(),
                metrics,
                container_metrics: linux
                    .containers
                    .iter()
                    .map(|c| container_metrics(c, &meta.namespace, &meta.name))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::*;

    #[test]
    fn metrics_follow_their_descriptors() {
        let d = descriptors();
        let stats = PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: "p1".into(),
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "ns".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            linux: Some(LinuxPodSandboxStats {
                network: Some(NetworkUsage {
                    timestamp: 5,
                    interfaces: vec![NetworkInterfaceUsage {
                        name: "eth0".into(),
                        rx_bytes: Some(UInt64Value { value: 10 }),
                        tx_bytes: Some(UInt64Value { value: 20 }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                containers: vec![ContainerStats {
                    attributes: Some(ContainerAttributes {
                        id: "c1".into(),
                        metadata: Some(ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        ..Default::default()
                    }),
                    cpu: Some(CpuUsage {
                        timestamp: 5,
                        usage_core_nano_seconds: Some(UInt64Value { value: 99 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            windows: None,
        };
        let m = pod_metrics(&[stats]);
        assert_eq!(m[0].metrics.len(), 2);
        let cpu = &m[0].container_metrics[0].metrics[0];
        assert_eq!(cpu.name, "container_cpu_usage_seconds_total");
        assert_eq!(cpu.label_values, vec!["app", "c1", "ns", "web"]);
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        for metric in m[0]
            .metrics
            .iter()
            .chain(&m[0].container_metrics[0].metrics)
        {
            let desc = d.iter().find(|x| x.name == metric.name).expect("described");
            assert_eq!(desc.label_keys.len(), metric.label_values.len());
        }
    }
}
