//! Pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox.

use std::collections::HashMap;

use k8s_cri::v1::*;
use tonic::Status;

use super::runtime_status;
use crate::runtime::Runtime;
use crate::sandbox::SandboxFilter;

fn require_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("pod_sandbox_id is required"))
    } else {
        Ok(id)
    }
}

pub async fn run(rt: &Runtime, req: RunPodSandboxRequest) -> Result<RunPodSandboxResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    let id = rt
        .run_pod_sandbox(config, &req.runtime_handler)
        .await
        .map_err(runtime_status)?;
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}

pub async fn stop(
    rt: &Runtime,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    rt.stop_pod_sandbox(require_id(&req.pod_sandbox_id)?)
        .await
        .map_err(runtime_status)?;
    Ok(StopPodSandboxResponse {})
}

pub async fn remove(
    rt: &Runtime,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    rt.remove_pod_sandbox(require_id(&req.pod_sandbox_id)?)
        .await
        .map_err(runtime_status)?;
    Ok(RemovePodSandboxResponse {})
}

pub fn status(
    rt: &Runtime,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    let id = require_id(&req.pod_sandbox_id)?;
    let sb = rt
        .sandbox(id)
        .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))?;
    let mut info = HashMap::new();
    if req.verbose {
        let v = serde_json::json!({
            "pid": 0,
            "namespaces": sb.pins,
            "network": sb.network,
            "cgroupParent": sb.cgroup_parent,
            "runtimeHandler": sb.runtime_handler,
            "config": sb.config,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(sb.to_status()),
        info,
        containers_statuses: vec![],
        timestamp: crate::runtime::now_nanos(),
    })
}

pub fn list(rt: &Runtime, req: ListPodSandboxRequest) -> ListPodSandboxResponse {
    let f = req.filter.unwrap_or_default();
    let filter = SandboxFilter {
        id: Some(f.id).filter(|s| !s.is_empty()),
        state: f
            .state
            .and_then(|s| PodSandboxState::try_from(s.state).ok()),
        labels: f.label_selector,
    };
    ListPodSandboxResponse {
        items: rt
            .list_sandboxes(&filter)
            .iter()
            .map(|s| s.to_list_item())
            .collect(),
    }
}

pub fn stats(rt: &Runtime, req: PodSandboxStatsRequest) -> Result<PodSandboxStatsResponse, Status> {
    let id = require_id(&req.pod_sandbox_id)?;
    let sb = rt
        .sandbox(id)
        .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))?;
    let stats = rt.stats.pod(&sb.id).unwrap_or_else(|| PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: sb.id.clone(),
            metadata: sb.config.metadata.clone(),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
        }),
        ..Default::default()
    });
    Ok(PodSandboxStatsResponse { stats: Some(stats) })
}

pub fn list_stats(rt: &Runtime, req: ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse {
    let f = req.filter.unwrap_or_default();
    let stats = rt
        .stats
        .pods()
        .into_iter()
        .filter(|s| {
            let Some(a) = &s.attributes else { return false };
            (f.id.is_empty() || a.id.starts_with(&f.id))
                && f.label_selector
                    .iter()
                    .all(|(k, v)| a.labels.get(k) == Some(v))
        })
        .collect();
    ListPodSandboxStatsResponse { stats }
}
