//! Device discovery behind one trait, with two backends: [`nvml`] (NVIDIA GPUs, health from
//! NVML XID events) and [`file`] (devices described in a JSON file, re-read when it changes).
//! A started backend publishes its current [`Inventory`] on a `watch` channel.

pub mod file;
pub mod nvml;

use tokio::sync::watch;

use crate::config::{Backend, Config};
use crate::device::Inventory;
use crate::error::Error;

/// A source of devices and of their health.
pub trait Discovery: Send {
    /// The backend's name, for logs.
    fn name(&self) -> &'static str;

    /// Finds the devices and keeps them current (health changes, file edits) from then on.
    /// The receiver always holds the latest inventory; the backend stops watching once every
    /// receiver is gone. Must be called inside a tokio runtime.
    fn start(self: Box<Self>) -> Result<watch::Receiver<Inventory>, Error>;
}

/// The backend the configuration names.
pub fn from_config(config: &Config) -> Result<Box<dyn Discovery>, Error> {
    Ok(match config.backend {
        Backend::File => Box::new(file::FileDiscovery::new(config.devices_file.clone())),
        Backend::Nvml => Box::new(nvml::NvmlDiscovery::new(
            config.nvml_library.clone(),
            nvml::XidFilter::parse(&config.disable_health_checks).map_err(Error::Config)?,
        )),
    })
}
