//! CSI Node: stage (attach + format once + global mount), publish (bind mount), their
//! inverses, stats, online filesystem growth, capabilities and node info.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::node_server::Node;
use super::proto::node_service_capability::{Rpc, rpc};
use super::proto::volume_usage::Unit;
use super::proto::*;
use super::{Access, blocking, require};
use crate::volume::{PublishOptions, StageOptions, VolumeSpec, Volumes};
use crate::{Config, Error};

/// The Node service.
pub struct NodeService {
    node_id: String,
    volumes: Arc<Volumes>,
}

impl NodeService {
    pub fn new(config: &Config, volumes: Arc<Volumes>) -> Self {
        NodeService {
            node_id: config.node_id.clone(),
            volumes,
        }
    }
}

fn known(volumes: &Volumes, id: &str) -> crate::Result<crate::volume::VolumeRecord> {
    match volumes.get(id) {
        Ok(Some(rec)) => Ok(rec),
        Ok(None) | Err(Error::InvalidArgument(_)) => Err(Error::NotFound(id.to_string())),
        Err(e) => Err(e),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("staging_target_path", &r.staging_target_path)?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let access = Access::of(cap)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            known(&volumes, &r.volume_id)?;
            volumes.attach(&r.volume_id, &VolumeSpec::default())?;
            let opts = StageOptions {
                fs_type: access.fs_type,
                read_only: access.reader_only,
                device_hint: None,
                mount_options: access.mount_flags,
                block: access.block,
            };
            volumes.mount_device(&r.volume_id, &PathBuf::from(&r.staging_target_path), &opts)
        })
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("staging_target_path", &r.staging_target_path)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            known(&volumes, &r.volume_id)?;
            volumes.unmount_device(&PathBuf::from(&r.staging_target_path))?;
            volumes.detach(&r.volume_id)
        })
        .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("target_path", &r.target_path)?;
        require("staging_target_path", &r.staging_target_path)?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let access = Access::of(cap)?;
        let opts = PublishOptions {
            read_only: r.readonly || access.reader_only,
            fs_group: access.mount_group,
        };
        let volumes = self.volumes.clone();
        blocking(move || {
            known(&volumes, &r.volume_id)?;
            volumes.publish(&r.volume_id, &PathBuf::from(&r.target_path), &opts)
        })
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("target_path", &r.target_path)?;
        let volumes = self.volumes.clone();
        blocking(move || {
            known(&volumes, &r.volume_id)?;
            volumes.unpublish(&PathBuf::from(&r.target_path))
        })
        .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        let volumes = self.volumes.clone();
        let response = blocking(move || {
            let rec = known(&volumes, &r.volume_id)?;
            let path = PathBuf::from(&r.volume_path);
            if !path.exists() {
                return Err(Error::NotFound(format!("{} (volume path)", path.display())));
            }
            if rec.staged.as_ref().is_some_and(|s| s.block) {
                let device = volumes
                    .attached_device(&r.volume_id)?
                    .ok_or_else(|| Error::NotFound(format!("{} is not attached", r.volume_id)))?;
                let total = crate::sys::loopdev::size_bytes(&device)
                    .map_err(|e| Error::io("size of", &device, e))?;
                return Ok(NodeGetVolumeStatsResponse {
                    usage: vec![VolumeUsage {
                        total: total as i64,
                        unit: Unit::Bytes as i32,
                        ..Default::default()
                    }],
                    volume_condition: None,
                });
            }
            let u = crate::sys::fs::usage(&path)?;
            let mounted = crate::sys::mount::table()
                .ok()
                .is_some_and(|t| crate::sys::mount::mount_at(&t, &path).is_some());
            Ok(NodeGetVolumeStatsResponse {
                usage: vec![
                    VolumeUsage {
                        available: u.available_bytes as i64,
                        total: u.total_bytes as i64,
                        used: u.used_bytes as i64,
                        unit: Unit::Bytes as i32,
                    },
                    VolumeUsage {
                        available: u.free_inodes as i64,
                        total: u.total_inodes as i64,
                        used: u.used_inodes as i64,
                        unit: Unit::Inodes as i32,
                    },
                ],
                volume_condition: Some(VolumeCondition {
                    abnormal: !mounted,
                    message: if mounted {
                        "mounted".into()
                    } else {
                        format!("{} is not a mount point", path.display())
                    },
                }),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        require("volume_path", &r.volume_path)?;
        let required = r.capacity_range.as_ref().map_or(0, |c| c.required_bytes);
        let limit = r.capacity_range.as_ref().map_or(0, |c| c.limit_bytes);
        if required < 0 || limit < 0 {
            return Err(Status::invalid_argument(
                "capacity_range must not be negative",
            ));
        }
        let volumes = self.volumes.clone();
        let size = blocking(move || {
            known(&volumes, &r.volume_id)?;
            if !PathBuf::from(&r.volume_path).exists() {
                return Err(Error::NotFound(format!("{} (volume path)", r.volume_path)));
            }
            if required > 0 {
                volumes.expand(&r.volume_id, required as u64)?;
            }
            volumes.expand_fs(&r.volume_id)
        })
        .await?;
        if limit > 0 && size > limit as u64 {
            return Err(Status::out_of_range(format!(
                "volume is {size} bytes, above the limit {limit}"
            )));
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::StageUnstageVolume),
                cap(rpc::Type::GetVolumeStats),
                cap(rpc::Type::ExpandVolume),
                cap(rpc::Type::VolumeMountGroup),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(super::node_topology(&self.node_id)),
        }))
    }
}
