//! flexvolume-driver: loop-backed block volumes for the kubelet.
//!
//! One volume engine (`volume`) over kernel mechanisms (`sys`: loop devices, mounts,
//! filesystems), reached through two front ends: the Flexvolume exec protocol
//! (`flexvolume`) and a CSI gRPC endpoint (`csi`).

pub mod config;
pub mod csi;
pub mod error;
pub mod flexvolume;
pub mod logging;
pub mod sys;
pub mod volume;

pub use config::Config;
pub use error::{Error, Result};
pub use volume::Volumes;
