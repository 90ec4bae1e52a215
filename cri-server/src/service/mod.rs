//! The gRPC wire layer: RuntimeService and ImageService. Each RPC validates its request,
//! calls the domain, and maps domain errors to gRPC codes. No syscalls here.

pub mod container;
pub mod image;
pub mod runtime;
pub mod sandbox;
pub mod streaming;

use tonic::{Code, Status};

use crate::image::ImageError;
use crate::runtime::RuntimeError;

/// gRPC status for an image-domain error.
pub fn image_status(e: ImageError) -> Status {
    let code = match &e {
        ImageError::InvalidReference { .. } | ImageError::BadCredentials(_) => {
            Code::InvalidArgument
        }
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::Unauthorized(_) => Code::Unauthenticated,
        ImageError::Unsupported(_) => Code::FailedPrecondition,
        ImageError::Verification { .. } | ImageError::Unpack { .. } => Code::DataLoss,
        ImageError::RegistryConfig { .. } | ImageError::InUse { .. } => Code::FailedPrecondition,
        ImageError::Registry(_) => Code::Unavailable,
        ImageError::Io { .. } => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// gRPC status for a pod/container-domain error.
pub fn runtime_status(e: RuntimeError) -> Status {
    let code = match &e {
        RuntimeError::InvalidArgument(_) => Code::InvalidArgument,
        RuntimeError::NotFound(_) => Code::NotFound,
        RuntimeError::AlreadyExists(_) => Code::AlreadyExists,
        RuntimeError::FailedPrecondition(_) => Code::FailedPrecondition,
        RuntimeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        RuntimeError::Internal { .. } => Code::Internal,
    };
    Status::new(code, e.to_string())
}
