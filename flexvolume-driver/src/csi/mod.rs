//! The CSI endpoint (`serve` mode): Identity, Node and Controller services on a unix
//! socket, each a thin layer that validates the request, runs the shared volume engine
//! on a blocking thread, and maps errors to the gRPC codes the CSI spec prescribes.

mod controller;
mod identity;
mod node;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::Status;

use crate::volume::Volumes;
use crate::{Config, Error};
pub use controller::ControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

/// Generated CSI v1 messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

use proto::volume_capability::AccessType;
use proto::volume_capability::access_mode::Mode;

/// Topology key naming the node a volume lives on: volumes are node-local files, so
/// the plugin reports VOLUME_ACCESSIBILITY_CONSTRAINTS and pins each volume to its node.
pub const TOPOLOGY_KEY: &str = "topology.loop.csi.node-rs.io/node";

/// The topology segment of node `node_id`.
pub fn node_topology(node_id: &str) -> proto::Topology {
    proto::Topology {
        segments: [(TOPOLOGY_KEY.to_string(), node_id.to_string())].into(),
    }
}

/// The socket path of a CSI endpoint: `unix:///path`, `unix:/path` or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "CSI endpoint {endpoint:?} is not a unix socket"
        )));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(Error::InvalidArgument("CSI endpoint is empty".into()));
    }
    Ok(PathBuf::from(path))
}

/// Serves the three CSI services on `endpoint` until `shutdown` completes, then removes
/// the socket.
pub async fn serve(
    endpoint: &str,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::FileTypeExt;

    let path = socket_path(endpoint)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)
            .with_context(|| format!("remove stale socket {}", path.display()))?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("listen on {}", path.display()))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let volumes = Arc::new(Volumes::from_config(config));
    tracing::info!(endpoint = %path.display(), driver = %config.driver_name, node = %config.node_id, "CSI endpoint serving");
    let result = tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(
            IdentityService::new(config, volumes.clone()),
        ))
        .add_service(proto::controller_server::ControllerServer::new(
            ControllerService::new(config, volumes.clone()),
        ))
        .add_service(proto::node_server::NodeServer::new(NodeService::new(
            config, volumes,
        )))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(&path);
    result.context("CSI server")?;
    tracing::info!("CSI endpoint stopped");
    Ok(())
}

/// The gRPC status for an engine error.
pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument(_) => Status::invalid_argument(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::AlreadyExists { .. } => Status::already_exists(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::OutOfRange(_) => Status::out_of_range(msg),
        Error::Io { .. } | Error::Command { .. } | Error::State { .. } => Status::internal(msg),
    }
}

/// Runs engine work on the blocking pool (it makes syscalls and runs mkfs).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> crate::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(status)
}

pub(crate) fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(())
    }
}

/// What a volume capability asks of this driver.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    pub block: bool,
    pub fs_type: Option<String>,
    pub mount_flags: Vec<String>,
    pub mount_group: Option<u32>,
    pub reader_only: bool,
}

impl Access {
    /// Checks a capability: single-node access modes only (a loop device lives on one
    /// node), block or mount access, a supported filesystem.
    pub fn of(cap: &proto::VolumeCapability) -> Result<Access, Status> {
        let mode =
            cap.access_mode.as_ref().map(|m| m.mode()).ok_or_else(|| {
                Status::invalid_argument("volume_capability.access_mode is required")
            })?;
        let reader_only = match mode {
            Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter => {
                false
            }
            Mode::SingleNodeReaderOnly => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "access mode {} is not supported: loop volumes live on one node",
                    other.as_str_name()
                )));
            }
        };
        match &cap.access_type {
            Some(AccessType::Block(_)) => Ok(Access {
                block: true,
                reader_only,
                ..Access::default()
            }),
            Some(AccessType::Mount(m)) => {
                let fs_type = Some(m.fs_type.clone()).filter(|f| !f.is_empty());
                if let Some(f) = &fs_type
                    && !crate::sys::fs::SUPPORTED.contains(&f.as_str())
                {
                    return Err(Status::invalid_argument(format!(
                        "filesystem type {f:?} is not supported"
                    )));
                }
                let mount_group = if m.volume_mount_group.is_empty() {
                    None
                } else {
                    Some(m.volume_mount_group.parse::<u32>().map_err(|_| {
                        Status::invalid_argument(format!(
                            "volume_mount_group must be a numeric group ID, got {:?}",
                            m.volume_mount_group
                        ))
                    })?)
                };
                Ok(Access {
                    block: false,
                    fs_type,
                    mount_flags: m.mount_flags.clone(),
                    mount_group,
                    reader_only,
                })
            }
            None => Err(Status::invalid_argument(
                "volume_capability needs block or mount access",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/csi/csi.sock").unwrap(),
            PathBuf::from("/run/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/run/csi.sock").unwrap(),
            PathBuf::from("/run/csi.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:10000").is_err());
        assert!(socket_path("unix://").is_err());
    }

    #[test]
    fn capabilities_are_checked() {
        use proto::volume_capability::{AccessMode, MountVolume};
        let cap = |mode: Mode, fs: &str| proto::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        };
        assert!(
            !Access::of(&cap(Mode::SingleNodeWriter, "ext4"))
                .unwrap()
                .reader_only
        );
        assert!(
            Access::of(&cap(Mode::SingleNodeReaderOnly, ""))
                .unwrap()
                .reader_only
        );
        assert_eq!(
            Access::of(&cap(Mode::MultiNodeMultiWriter, "ext4"))
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert!(Access::of(&cap(Mode::SingleNodeWriter, "ntfs")).is_err());
    }
}
