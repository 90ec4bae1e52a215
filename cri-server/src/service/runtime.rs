//! RuntimeService: the trait implementation, delegating pod RPCs to `sandbox.rs`, container
//! RPCs to `container.rs` and Exec/Attach/PortForward to `streaming.rs`. RPCs whose capability
//! has not landed answer `Unimplemented` naming the issue.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};

pub const RUNTIME_NAME: &str = "cri-server";
pub const RUNTIME_API_VERSION: &str = "v1";

use super::{container, sandbox, streaming};
use crate::runtime::Runtime;
use crate::streaming::StreamingServer;

pub struct RuntimeServiceImpl {
    pub cgroup_driver: CgroupDriver,
    pub runtime: Arc<Runtime>,
    /// Where Exec, Attach and PortForward streams are served.
    pub streaming: Arc<StreamingServer>,
}

/// The answer for an RPC whose capability has not landed yet.
fn not_yet(rpc: &str, issue: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        format!("{rpc} is not implemented yet in cri-server ({issue})"),
    )
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

impl RuntimeServiceImpl {
    /// The configured handlers, and the default one under the empty name as the kubelet
    /// expects. User namespaces and recursive read-only mounts are prepared by us (not by the
    /// OCI runtime), so every handler has them exactly when this host's probes passed.
    fn handlers(&self) -> Vec<RuntimeHandler> {
        let f = &self.runtime.features;
        let features = Some(RuntimeHandlerFeatures {
            recursive_read_only_mounts: f.recursive_read_only.is_ok(),
            user_namespaces: f.user_namespaces.is_ok(),
        });
        let mut names: Vec<String> = self.runtime.handlers.keys().cloned().collect();
        names.sort();
        std::iter::once(String::new())
            .chain(names)
            .map(|name| RuntimeHandler { name, features })
            .collect()
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            match self.runtime.cni.ready() {
                Ok(_) => RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(reason) => RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: format!("cni: {reason}"),
                },
            },
        ];
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            info.insert(
                "config".into(),
                serde_json::json!({ "runtimeName": RUNTIME_NAME }).to_string(),
            );
        }
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: self.handlers(),
            // Merge and Strict are both applied, and ContainerStatus reports the groups.
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: self.cgroup_driver as i32,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        Ok(Response::new(
            sandbox::run(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        Ok(Response::new(
            sandbox::stop(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        Ok(Response::new(
            sandbox::remove(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        Ok(Response::new(sandbox::status(
            &self.runtime,
            req.into_inner(),
        )?))
    }
    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(sandbox::list(
            &self.runtime,
            req.into_inner(),
        )))
    }
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        Ok(Response::new(
            container::create(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        Ok(Response::new(
            container::start(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        Ok(Response::new(
            container::stop(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        Ok(Response::new(
            container::remove(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(container::list(
            &self.runtime,
            req.into_inner(),
        )))
    }
    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        Ok(Response::new(container::status(
            &self.runtime,
            req.into_inner(),
        )?))
    }
    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        Ok(Response::new(
            container::update_resources(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        Ok(Response::new(
            container::reopen_log(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        Ok(Response::new(
            container::exec_sync(&self.runtime, req.into_inner()).await?,
        ))
    }
    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Ok(Response::new(streaming::exec(
            &self.streaming,
            req.into_inner(),
        )?))
    }
    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        Ok(Response::new(streaming::attach(
            &self.streaming,
            req.into_inner(),
        )?))
    }
    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        Ok(Response::new(streaming::port_forward(
            &self.streaming,
            req.into_inner(),
        )?))
    }
    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        Ok(Response::new(container::stats(
            &self.runtime,
            req.into_inner(),
        )?))
    }
    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        Ok(Response::new(container::list_stats(
            &self.runtime,
            req.into_inner(),
        )))
    }
    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        Ok(Response::new(sandbox::stats(
            &self.runtime,
            req.into_inner(),
        )?))
    }
    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        Ok(Response::new(sandbox::list_stats(
            &self.runtime,
            req.into_inner(),
        )))
    }
    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "runtime config updated");
        *self.runtime.pod_cidr.write().expect("pod cidr") = cidr;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }
    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_yet(
            "CheckpointContainer",
            "no issue: checkpointing is not planned",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let rx = self.runtime.events.subscribe();
        // A client too slow for the buffer misses events (and relists), as with containerd.
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| e.ok().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: crate::stats::metrics::descriptors(),
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: crate::stats::metrics::pod_metrics(&self.runtime.stats.pods()),
        }))
    }
}
