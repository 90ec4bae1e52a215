//! CSI Identity: GetPluginInfo, GetPluginCapabilities, Probe.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::identity_server::Identity;
use super::proto::plugin_capability::{self, Service, VolumeExpansion};
use super::proto::*;
use crate::Config;
use crate::volume::Volumes;

/// The Identity service.
pub struct IdentityService {
    name: String,
    volumes: Arc<Volumes>,
}

impl IdentityService {
    pub fn new(config: &Config, volumes: Arc<Volumes>) -> Self {
        IdentityService {
            name: config.driver_name.clone(),
            volumes,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let service = |t: plugin_capability::service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(Service {
                r#type: t as i32,
            })),
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(plugin_capability::service::Type::ControllerService),
                service(plugin_capability::service::Type::VolumeAccessibilityConstraints),
                PluginCapability {
                    r#type: Some(plugin_capability::Type::VolumeExpansion(VolumeExpansion {
                        r#type: plugin_capability::volume_expansion::Type::Online as i32,
                    })),
                },
            ],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let dir = self.volumes.state_dir().to_path_buf();
        super::blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                crate::Error::FailedPrecondition(format!("state dir {}: {e}", dir.display()))
            })
        })
        .await?;
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
