//! The crate's one error type: each variant says what was being done and to what, and maps
//! to the gRPC status the kubelet sees.

use std::path::PathBuf;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no NVIDIA driver on this node: NVML ({library}) could not be loaded or initialised: {reason}"
    )]
    NoDriver { library: String, reason: String },

    #[error("NVML {call}: {reason}")]
    Nvml { call: &'static str, reason: String },

    #[error("read device file {path}: {source}")]
    ReadDeviceFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("parse device file {path}: {source}")]
    ParseDeviceFile {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("device file {path}: {reason}")]
    InvalidDeviceFile { path: PathBuf, reason: String },

    #[error("watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },

    #[error("unknown device {id:?} for resource {resource}")]
    UnknownDevice { id: String, resource: String },

    #[error("device {id:?} of resource {resource} is unhealthy")]
    UnhealthyDevice { id: String, resource: String },

    #[error("device node {path} of device {id:?} does not exist on the host")]
    MissingDeviceNode { id: String, path: PathBuf },

    #[error("write CDI spec {path}: {source}")]
    WriteCdiSpec {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("serve the device plugin on {path}: {source}")]
    Serve {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("register {resource} with the kubelet at {socket}: {reason}")]
    Register {
        socket: PathBuf,
        resource: String,
        reason: String,
    },

    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The gRPC code a client gets for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::UnknownDevice { .. } => Code::InvalidArgument,
            Error::UnhealthyDevice { .. } | Error::MissingDeviceNode { .. } => {
                Code::FailedPrecondition
            }
            _ => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
