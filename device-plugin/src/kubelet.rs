//! Talking to the kubelet: gRPC channels over unix sockets, the Register call, and the file
//! identities that tell a re-created socket (a restarted kubelet) from the one we saw.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::Config;
use crate::error::Error;
use crate::v1beta1::registration_client::RegistrationClient;
use crate::v1beta1::{DevicePluginOptions, RegisterRequest};

/// The device plugin API version this plugin speaks.
pub const VERSION: &str = "v1beta1";

/// A gRPC channel to a unix socket.
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is required by the builder and ignored by the connector.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// An error and its sources, on one line (tonic's transport errors say little alone).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The Register request for this configuration.
pub fn register_request(config: &Config) -> RegisterRequest {
    RegisterRequest {
        version: VERSION.into(),
        endpoint: config.socket_name(),
        resource_name: config.resource_name.clone(),
        options: Some(DevicePluginOptions {
            pre_start_required: config.pre_start_required,
            get_preferred_allocation_available: config.get_preferred_allocation_available,
        }),
    }
}

/// Calls Registration.Register on the kubelet's socket.
pub async fn register(
    kubelet_socket: &Path,
    request: RegisterRequest,
    timeout: Duration,
) -> Result<(), Error> {
    let resource = request.resource_name.clone();
    let call = async {
        let channel = channel(kubelet_socket)
            .await
            .map_err(|e| format!("connect: {}", error_chain(&e)))?;
        RegistrationClient::new(channel)
            .register(request)
            .await
            .map_err(|s| format!("the kubelet answered {:?}: {}", s.code(), s.message()))?;
        Ok::<_, String>(())
    };
    let reason = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(reason)) => reason,
        Err(_) => format!("no answer within {timeout:?}"),
    };
    Err(Error::Register {
        socket: kubelet_socket.to_path_buf(),
        resource,
        reason,
    })
}

/// Which file a path names: a re-created file (same name, new inode or change time) differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

/// The identity of the unix socket at `path`, `None` if there is none.
pub fn socket_id(path: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    })
}
