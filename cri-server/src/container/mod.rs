//! Containers: the CRI config turned into an OCI spec (`spec`), an overlay rootfs over the
//! image's layers, and the lifecycle verbs (one file each) run through the pod's monitor and
//! the OCI runtime.

mod create;
pub(crate) mod exec;
mod lifecycle;
pub mod record;
pub mod spec;
pub mod status;
mod update;
pub mod volumes;

pub use record::{ContainerPhase, ContainerRecord};
