//! The crate's one error type: each variant says what failed and on what.

use std::path::Path;

/// Everything a volume operation can fail with. The front ends map the variants to a
/// Flexvolume `Failure` message or to the gRPC code the CSI spec prescribes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something unusable (bad JSON, a missing key, a relative path...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named volume does not exist.
    #[error("volume {0:?} not found")]
    NotFound(String),
    /// A volume of that name exists with other parameters.
    #[error("volume {name:?} already exists with other parameters: {detail}")]
    AlreadyExists { name: String, detail: String },
    /// The request cannot run in the volume's current state (not attached, busy,
    /// filesystem mismatch...). Nothing was changed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request asks for a size the driver cannot give.
    #[error("{0}")]
    OutOfRange(String),
    /// A file-system or device operation failed.
    #[error("{op} {target}: {source}")]
    Io {
        op: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// An external tool (mkfs, blkid, resize2fs, xfs_growfs) failed.
    #[error("{cmd} failed: {detail}")]
    Command { cmd: String, detail: String },
    /// A state record on disk could not be read or written.
    #[error("state record {path}: {detail}")]
    State { path: String, detail: String },
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error while doing `op` on `target`.
    pub fn io(op: &'static str, target: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            target: target.as_ref().display().to_string(),
            source,
        }
    }

    /// A syscall error (from nix) while doing `op` on `target`.
    pub fn sys(op: &'static str, target: impl AsRef<Path>, errno: nix::errno::Errno) -> Self {
        Self::io(op, target, std::io::Error::from(errno))
    }
}
