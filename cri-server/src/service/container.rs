//! Container RPCs: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers, ReopenContainerLog, ExecSync.

use std::collections::HashMap;

use k8s_cri::v1::*;
use tonic::Status;

use super::runtime_status;
use crate::container::status::ContainerFilter;
use crate::runtime::Runtime;

fn require_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument("container_id is required"))
    } else {
        Ok(id)
    }
}

pub async fn create(
    rt: &Runtime,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("config is required"))?;
    let id = rt
        .create_container(&req.pod_sandbox_id, config, req.sandbox_config)
        .await
        .map_err(runtime_status)?;
    Ok(CreateContainerResponse { container_id: id })
}

pub async fn start(
    rt: &Runtime,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    rt.start_container(require_id(&req.container_id)?)
        .await
        .map_err(runtime_status)?;
    Ok(StartContainerResponse {})
}

pub async fn stop(
    rt: &Runtime,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    rt.stop_container(require_id(&req.container_id)?, req.timeout)
        .await
        .map_err(runtime_status)?;
    Ok(StopContainerResponse {})
}

pub async fn remove(
    rt: &Runtime,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    rt.remove_container(require_id(&req.container_id)?)
        .await
        .map_err(runtime_status)?;
    Ok(RemoveContainerResponse {})
}

pub fn status(
    rt: &Runtime,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let id = require_id(&req.container_id)?;
    let c = rt
        .refreshed(id)
        .ok_or_else(|| Status::not_found(format!("container {id} not found")))?;
    let mut info = HashMap::new();
    if req.verbose {
        let v = serde_json::json!({
            "pid": c.pid,
            "sandboxID": c.sandbox_id,
            "bundle": c.bundle,
            "runtimeHandler": c.runtime_handler,
            "config": c.config,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(c.to_status()),
        info,
    })
}

pub fn list(rt: &Runtime, req: ListContainersRequest) -> ListContainersResponse {
    let f = req.filter.unwrap_or_default();
    let filter = ContainerFilter {
        id: Some(f.id).filter(|s| !s.is_empty()),
        sandbox_id: Some(f.pod_sandbox_id).filter(|s| !s.is_empty()),
        state: f.state.and_then(|s| ContainerState::try_from(s.state).ok()),
        labels: f.label_selector,
    };
    ListContainersResponse {
        containers: rt
            .list_containers(&filter)
            .iter()
            .map(|c| c.to_list_item())
            .collect(),
    }
}

pub async fn reopen_log(
    rt: &Runtime,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    rt.reopen_container_log(require_id(&req.container_id)?)
        .await
        .map_err(runtime_status)?;
    Ok(ReopenContainerLogResponse {})
}

pub async fn exec_sync(rt: &Runtime, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    let out = rt
        .exec_sync(require_id(&req.container_id)?, req.cmd, req.timeout)
        .await
        .map_err(runtime_status)?;
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

pub async fn update_resources(
    rt: &Runtime,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    rt.update_container_resources(require_id(&req.container_id)?, req.linux)
        .await
        .map_err(runtime_status)?;
    Ok(UpdateContainerResourcesResponse {})
}

pub fn stats(rt: &Runtime, req: ContainerStatsRequest) -> Result<ContainerStatsResponse, Status> {
    let id = require_id(&req.container_id)?;
    let c = rt
        .container(id)
        .ok_or_else(|| Status::not_found(format!("container {id} not found")))?;
    // Not collected yet (just created, or exited): an empty record with the attributes.
    let stats = rt.stats.container(&c.id).unwrap_or_else(|| ContainerStats {
        attributes: Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        ..Default::default()
    });
    Ok(ContainerStatsResponse { stats: Some(stats) })
}

pub fn list_stats(rt: &Runtime, req: ListContainerStatsRequest) -> ListContainerStatsResponse {
    let f = req.filter.unwrap_or_default();
    let sandbox_of: HashMap<String, String> = rt
        .list_containers(&ContainerFilter::default())
        .into_iter()
        .map(|c| (c.id, c.sandbox_id))
        .collect();
    let stats = rt
        .stats
        .containers()
        .into_iter()
        .filter(|s| {
            let Some(a) = &s.attributes else { return false };
            (f.id.is_empty() || a.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty()
                    || sandbox_of
                        .get(&a.id)
                        .is_some_and(|p| p.starts_with(&f.pod_sandbox_id)))
                && f.label_selector
                    .iter()
                    .all(|(k, v)| a.labels.get(k) == Some(v))
        })
        .collect();
    ListContainerStatsResponse { stats }
}
