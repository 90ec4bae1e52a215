//! The DevicePlugin gRPC service: the wire layer. Each RPC lives in the file named after it
//! and calls into the domain (`sharing`, `allocation`, `preferred`, `cdi`); this file only
//! wires the tonic trait to them.

mod allocate;
mod get_device_plugin_options;
mod get_preferred_allocation;
mod list_and_watch;
mod pre_start_container;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::cdi::SpecWriter;
use crate::config::Config;
use crate::device::Inventory;
use crate::v1beta1::device_plugin_server::DevicePlugin;
use crate::v1beta1::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};

/// What every RPC of one server instance reads.
pub struct PluginState {
    pub config: Arc<Config>,
    pub inventory: watch::Receiver<Inventory>,
    /// Present when a CDI strategy is on.
    pub cdi: Option<Arc<SpecWriter>>,
    /// Becomes `true` when this server instance stops: open ListAndWatch streams end.
    pub stop: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct DevicePluginService {
    state: Arc<PluginState>,
}

impl DevicePluginService {
    pub fn new(state: PluginState) -> DevicePluginService {
        DevicePluginService {
            state: Arc::new(state),
        }
    }
}

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(get_device_plugin_options::options(
            &self.state.config,
        )))
    }

    type ListAndWatchStream = ReceiverStream<Result<ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        Ok(Response::new(list_and_watch::list_and_watch(&self.state)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        get_preferred_allocation::get_preferred_allocation(&self.state, request.into_inner())
            .map(Response::new)
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        allocate::allocate(&self.state, request.into_inner()).map(Response::new)
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        pre_start_container::pre_start_container(&self.state, request.into_inner())
            .map(Response::new)
    }
}
