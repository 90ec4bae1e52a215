//! CSI Controller over backing files: CreateVolume (idempotent by name), DeleteVolume,
//! ValidateVolumeCapabilities, ListVolumes (paged), GetCapacity,
//! ControllerExpandVolume (online: the loop device follows at once, the filesystem on
//! NodeExpandVolume). Publishing is node-local (NodeStageVolume attaches), so
//! ControllerPublish/Unpublish and snapshots are not offered.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::controller_server::Controller;
use super::proto::controller_service_capability::{Rpc, rpc};
use super::proto::*;
use super::{Access, blocking, require};
use crate::volume::{SizeRange, VolumeRecord, VolumeSpec, Volumes, validate_id};

/// The Controller service.
pub struct ControllerService {
    node_id: String,
    volumes: Arc<Volumes>,
}

impl ControllerService {
    pub fn new(config: &crate::Config, volumes: Arc<Volumes>) -> Self {
        ControllerService {
            node_id: config.node_id.clone(),
            volumes,
        }
    }

    fn to_volume(&self, rec: &VolumeRecord) -> Volume {
        Volume {
            accessible_topology: vec![super::node_topology(&self.node_id)],
            ..to_volume(rec)
        }
    }
}

const TOKEN_PREFIX: &str = "after:";

fn to_volume(rec: &VolumeRecord) -> Volume {
    Volume {
        capacity_bytes: rec.size_bytes as i64,
        volume_id: rec.id.clone(),
        volume_context: BTreeMap::from([("fsType".to_string(), rec.fs_type.clone())])
            .into_iter()
            .collect(),
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

fn range(c: Option<&CapacityRange>) -> Result<SizeRange, Status> {
    let Some(c) = c else {
        return Ok(SizeRange::default());
    };
    if c.required_bytes < 0 || c.limit_bytes < 0 {
        return Err(Status::invalid_argument(
            "capacity_range must not be negative",
        ));
    }
    if c.limit_bytes > 0 && c.limit_bytes < c.required_bytes {
        return Err(Status::invalid_argument(
            "capacity_range.limit_bytes is below required_bytes",
        ));
    }
    Ok(SizeRange {
        required: c.required_bytes as u64,
        limit: c.limit_bytes as u64,
    })
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = request.into_inner();
        require("name", &r.name)?;
        validate_id(&r.name).map_err(super::status)?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let mut fs_type = r
            .parameters
            .get("fsType")
            .or_else(|| r.parameters.get("csi.storage.k8s.io/fstype"))
            .cloned();
        for cap in &r.volume_capabilities {
            let access = Access::of(cap)?;
            if let Some(f) = access.fs_type {
                fs_type = Some(f);
            }
        }
        if r.volume_content_source.is_some() {
            return Err(Status::invalid_argument(
                "volume_content_source is not supported (no snapshots or clones)",
            ));
        }
        if let Some(req) = &r.accessibility_requirements {
            let here = super::node_topology(&self.node_id);
            let all: Vec<&Topology> = req.requisite.iter().chain(req.preferred.iter()).collect();
            if !req.requisite.is_empty() && !req.requisite.contains(&here) {
                return Err(Status::resource_exhausted(format!(
                    "this plugin makes volumes on node {} only, which the requisite topology excludes",
                    self.node_id
                )));
            }
            tracing::debug!(topologies = all.len(), "topology requirement accepted");
        }
        let range = range(r.capacity_range.as_ref())?;
        let parameters: BTreeMap<String, String> = r.parameters.into_iter().collect();
        let spec = VolumeSpec {
            size_bytes: None,
            backing: None,
            fs_type,
            mkfs_options: parameters
                .get("mkfsOptions")
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            parameters,
            alias: None,
        };
        let volumes = self.volumes.clone();
        let name = r.name;
        let (rec, _) = blocking(move || volumes.create(&name, &spec, range)).await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(self.to_volume(&rec)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        if validate_id(&r.volume_id).is_err() {
            // No volume can have that ID: it is already gone.
            return Ok(Response::new(DeleteVolumeResponse {}));
        }
        let volumes = self.volumes.clone();
        blocking(move || volumes.delete(&r.volume_id)).await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are attached on the node by NodeStageVolume",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "volumes are detached on the node by NodeUnstageVolume",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let volumes = self.volumes.clone();
        let id = r.volume_id.clone();
        let rec = blocking(move || match volumes.get(&id) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) | Err(crate::Error::InvalidArgument(_)) => Err(crate::Error::NotFound(id)),
            Err(e) => Err(e),
        })
        .await?;
        let mut problems = Vec::new();
        for cap in &r.volume_capabilities {
            match Access::of(cap) {
                Ok(a) => {
                    if let Some(f) = &a.fs_type
                        && rec.formatted
                        && crate::sys::fs::family(f) != crate::sys::fs::family(&rec.fs_type)
                    {
                        problems.push(format!("volume holds {}, not {f}", rec.fs_type));
                    }
                }
                Err(s) => problems.push(s.message().to_string()),
            }
        }
        let response = if problems.is_empty() {
            ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                }),
                message: String::new(),
            }
        } else {
            ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: problems.join("; "),
            }
        };
        Ok(Response::new(response))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = request.into_inner();
        if r.max_entries < 0 {
            return Err(Status::invalid_argument("max_entries must not be negative"));
        }
        let start = if r.starting_token.is_empty() {
            None
        } else {
            match r.starting_token.strip_prefix(TOKEN_PREFIX) {
                Some(id) if validate_id(id).is_ok() => Some(id.to_string()),
                _ => {
                    return Err(Status::aborted(format!(
                        "starting_token {:?} was not issued by this plugin",
                        r.starting_token
                    )));
                }
            }
        };
        let volumes = self.volumes.clone();
        let all = blocking(move || volumes.list()).await?;
        let mut rest: Vec<&VolumeRecord> = all
            .iter()
            .filter(|v| start.as_ref().is_none_or(|s| v.id.as_str() > s.as_str()))
            .collect();
        let mut next_token = String::new();
        if r.max_entries > 0 && rest.len() > r.max_entries as usize {
            rest.truncate(r.max_entries as usize);
            next_token = format!("{TOKEN_PREFIX}{}", rest[rest.len() - 1].id);
        }
        Ok(Response::new(ListVolumesResponse {
            entries: rest
                .into_iter()
                .map(|v| list_volumes_response::Entry {
                    volume: Some(self.to_volume(v)),
                    status: None,
                })
                .collect(),
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = request.into_inner();
        for cap in &r.volume_capabilities {
            if Access::of(cap).is_err() {
                // No volume with that capability can be made here.
                return Ok(Response::new(GetCapacityResponse {
                    available_capacity: 0,
                    maximum_volume_size: None,
                    minimum_volume_size: None,
                }));
            }
        }
        let volumes = self.volumes.clone();
        let available = blocking(move || volumes.available_bytes()).await?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: available as i64,
            maximum_volume_size: Some(available as i64),
            minimum_volume_size: Some(crate::volume::MIN_SIZE as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let cap = |t: rpc::Type| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(Rpc {
                r#type: t as i32,
            })),
        };
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::CreateDeleteVolume),
                cap(rpc::Type::ListVolumes),
                cap(rpc::Type::GetCapacity),
                cap(rpc::Type::ExpandVolume),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        _: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn delete_snapshot(
        &self,
        _: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("snapshots are not supported"))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        require("volume_id", &r.volume_id)?;
        let range =
            range(Some(r.capacity_range.as_ref().ok_or_else(|| {
                Status::invalid_argument("capacity_range is required")
            })?))?;
        if range.required == 0 {
            return Err(Status::invalid_argument(
                "capacity_range.required_bytes is required",
            ));
        }
        let block = match &r.volume_capability {
            Some(cap) => Access::of(cap)?.block,
            None => false,
        };
        if range.limit > 0 && crate::volume::round_size(range.required) > range.limit {
            return Err(Status::out_of_range(format!(
                "{} bytes rounded to whole MiB exceed limit_bytes {}",
                range.required, range.limit
            )));
        }
        let volumes = self.volumes.clone();
        let id = r.volume_id;
        let size = blocking(move || {
            if volumes.get(&id).ok().flatten().is_none() {
                return Err(crate::Error::NotFound(id));
            }
            volumes.expand(&id, range.required)
        })
        .await?;
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerGetVolume is not offered"))
    }
}
