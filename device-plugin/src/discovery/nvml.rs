//! The NVML backend: full GPUs (MIG-disabled) found through NVML, which `nvml-wrapper` loads
//! with libloading at run time, so the binary runs on nodes without a driver and says so.
//! Health comes from NVML critical XID events; the XIDs that application faults cause never
//! make a GPU unhealthy. A GPU marked unhealthy stays so until the plugin restarts (NVML
//! reports no recovery).
//!
//! All NVML calls happen on one dedicated thread that owns the library handle.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::device::{Device, DeviceNode, Health, Inventory, valid_id};
use crate::discovery::Discovery;
use crate::error::Error;

/// XIDs caused by applications (the GPU itself is fine), as NVIDIA's plugin ignores them:
/// 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped processing,
/// 45 preemptive cleanup, 68 video processor exception, 109 context switch timeout.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Nodes every GPU container needs, when the driver created them.
pub const COMMON_NODES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// Which XIDs leave a GPU healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidFilter {
    all: bool,
    ignored: BTreeSet<u64>,
}

impl XidFilter {
    /// `""`, a comma-separated list of XIDs (ignored besides [`APPLICATION_XIDS`]), or
    /// `"all"` / `"xids"` (no health checks).
    pub fn parse(s: &str) -> Result<XidFilter, String> {
        let mut filter = XidFilter {
            all: false,
            ignored: APPLICATION_XIDS.into_iter().collect(),
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "all" | "xids" => filter.all = true,
                n => {
                    let xid = n.parse::<u64>().map_err(|_| {
                        format!("disable_health_checks: {part:?} is not an XID or \"all\"")
                    })?;
                    filter.ignored.insert(xid);
                }
            }
        }
        Ok(filter)
    }

    pub fn checks_disabled(&self) -> bool {
        self.all
    }

    pub fn is_ignored(&self, xid: u64) -> bool {
        self.all || self.ignored.contains(&xid)
    }
}

pub struct NvmlDiscovery {
    library: String,
    xids: XidFilter,
}

impl NvmlDiscovery {
    pub fn new(library: String, xids: XidFilter) -> NvmlDiscovery {
        NvmlDiscovery { library, xids }
    }
}

/// NVML init errors that mean "there is no usable driver here".
fn init_error(library: &str, e: NvmlError) -> Error {
    let no_driver = |reason: String| Error::NoDriver {
        library: library.to_string(),
        reason,
    };
    match e {
        NvmlError::LibloadingError(e) => no_driver(e.to_string()),
        NvmlError::FailedToLoadSymbol(s) => no_driver(format!("missing symbol: {s}")),
        NvmlError::DriverNotLoaded => no_driver("the NVIDIA kernel driver is not loaded".into()),
        NvmlError::LibraryNotFound => no_driver("NVML found no driver library".into()),
        NvmlError::NoPermission => Error::Nvml {
            call: "nvmlInit_v2",
            reason: "no permission to talk to the driver (are /dev/nvidia* accessible?)".into(),
        },
        e => Error::Nvml {
            call: "nvmlInit_v2",
            reason: e.to_string(),
        },
    }
}

fn nvml_err(call: &'static str) -> impl Fn(NvmlError) -> Error {
    move |e| Error::Nvml {
        call,
        reason: e.to_string(),
    }
}

/// `00000000:3B:00.0` (NVML) -> `/sys/bus/pci/devices/0000:3b:00.0/numa_node`.
fn numa_node(bus_id: &str) -> Option<i64> {
    let id = bus_id.to_ascii_lowercase();
    let id = if id.len() == 16 { &id[4..] } else { &id[..] };
    let path = Path::new("/sys/bus/pci/devices").join(id).join("numa_node");
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

fn gpu_node(minor: u32) -> DeviceNode {
    let path = PathBuf::from(format!("/dev/nvidia{minor}"));
    DeviceNode {
        host_path: path.clone(),
        container_path: path,
        permissions: "rw".into(),
        optional: false,
    }
}

fn common_nodes() -> Vec<DeviceNode> {
    COMMON_NODES
        .iter()
        .map(|p| DeviceNode {
            host_path: PathBuf::from(p),
            container_path: PathBuf::from(p),
            permissions: "rw".into(),
            optional: true,
        })
        .collect()
}

/// Full GPUs, with their NVML index.
fn enumerate(nvml: &Nvml) -> Result<Vec<(u32, Device)>, Error> {
    let count = nvml
        .device_count()
        .map_err(nvml_err("nvmlDeviceGetCount_v2"))?;
    let mut out = Vec::new();
    for index in 0..count {
        let gpu = nvml
            .device_by_index(index)
            .map_err(nvml_err("nvmlDeviceGetHandleByIndex_v2"))?;
        let uuid = gpu.uuid().map_err(nvml_err("nvmlDeviceGetUUID"))?;
        if gpu.mig_mode().is_ok_and(|m| m.current != 0) {
            info!(index, uuid = %uuid, "MIG is enabled: not exposed as a full GPU");
            continue;
        }
        if !valid_id(&uuid) {
            warn!(index, uuid = %uuid, "GPU UUID is not usable as a device ID; skipped");
            continue;
        }
        let minor = gpu
            .minor_number()
            .map_err(nvml_err("nvmlDeviceGetMinorNumber"))?;
        let numa = gpu.pci_info().ok().and_then(|p| numa_node(&p.bus_id));
        info!(index, uuid = %uuid, minor, numa_node = ?numa, "found GPU");
        out.push((
            index,
            Device {
                id: uuid,
                health: Health::Healthy,
                numa_node: numa,
                nodes: vec![gpu_node(minor)],
                replicas: None,
            },
        ));
    }
    Ok(out)
}

fn mark_unhealthy(tx: &watch::Sender<Inventory>, uuid: Option<&str>, why: &str) {
    tx.send_if_modified(|inv| {
        let mut changed = false;
        for d in inv.devices.iter_mut() {
            if uuid.is_none_or(|u| u == d.id) && d.health == Health::Healthy {
                error!(device = %d.id, reason = why, "GPU marked unhealthy");
                d.health = Health::Unhealthy;
                changed = true;
            }
        }
        changed
    });
}

/// The health loop: XID events until every receiver is gone.
fn watch_health(
    nvml: &Nvml,
    gpus: &[(u32, Device)],
    xids: &XidFilter,
    tx: &watch::Sender<Inventory>,
) {
    if xids.checks_disabled() {
        info!("health checks disabled");
        return;
    }
    info!(ignored = ?xids.ignored, "XIDs that do not make a GPU unhealthy");
    // Register every GPU that supports XID events; one whose registration fails is unhealthy
    // (NVML frees the set on failure, so the set is rebuilt without it).
    let mut failed: BTreeSet<u32> = BTreeSet::new();
    let set = 'build: loop {
        let mut set = match nvml.create_event_set() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "nvmlEventSetCreate failed: health checks disabled");
                return;
            }
        };
        for (index, dev) in gpus {
            if failed.contains(index) {
                continue;
            }
            let Ok(gpu) = nvml.device_by_index(*index) else {
                failed.insert(*index);
                mark_unhealthy(tx, Some(&dev.id), "device handle lost");
                continue 'build;
            };
            match gpu.supported_event_types() {
                Ok(t) if t.contains(EventTypes::CRITICAL_XID_ERROR) => {}
                Ok(_) => {
                    warn!(device = %dev.id, "GPU does not report XID events: health not checked");
                    continue;
                }
                Err(e) => {
                    failed.insert(*index);
                    mark_unhealthy(tx, Some(&dev.id), &format!("event types: {e}"));
                    continue 'build;
                }
            }
            set = match gpu.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(s) => s,
                Err(e) => {
                    failed.insert(*index);
                    mark_unhealthy(tx, Some(&dev.id), &format!("register events: {e}"));
                    continue 'build;
                }
            };
        }
        break set;
    };
    while !tx.is_closed() {
        match set.wait(1000) {
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                mark_unhealthy(tx, None, &format!("waiting for NVML events failed: {e}"));
                std::thread::sleep(Duration::from_secs(5));
            }
            Ok(event) => {
                if !event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    continue;
                }
                let xid = match event.event_data {
                    Some(XidError::Value(v)) => Some(v),
                    _ => None,
                };
                if xid.is_some_and(|x| xids.is_ignored(x)) {
                    info!(xid, "application XID: GPU stays healthy");
                    continue;
                }
                let why = format!("critical XID {}", xid.map_or("?".into(), |x| x.to_string()));
                match event.device.uuid() {
                    Ok(uuid) => mark_unhealthy(tx, Some(&uuid), &why),
                    Err(_) => mark_unhealthy(tx, None, &format!("{why} on an unknown GPU")),
                }
            }
        }
    }
}

impl Discovery for NvmlDiscovery {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn start(self: Box<Self>) -> Result<watch::Receiver<Inventory>, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let NvmlDiscovery { library, xids } = *self;
        std::thread::Builder::new()
            .name("nvml".into())
            .spawn(move || {
                let nvml = match Nvml::builder().lib_path(OsStr::new(&library)).init() {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ready_tx.send(Err(init_error(&library, e)));
                        return;
                    }
                };
                if let Ok(v) = nvml.sys_driver_version() {
                    info!(driver = %v, library = %library, "NVML initialised");
                }
                let gpus = match enumerate(&nvml) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let inventory = Inventory {
                    devices: gpus.iter().map(|(_, d)| d.clone()).collect(),
                    common_nodes: common_nodes(),
                };
                let (tx, rx) = watch::channel(inventory);
                if ready_tx.send(Ok(rx)).is_err() {
                    return;
                }
                watch_health(&nvml, &gpus, &xids, &tx);
                // Keep the inventory published until nobody listens.
                while !tx.is_closed() {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .map_err(|e| Error::Nvml {
                call: "spawn the NVML thread",
                reason: e.to_string(),
            })?;
        ready_rx.recv().unwrap_or_else(|_| {
            Err(Error::Nvml {
                call: "initialise",
                reason: "the NVML thread ended".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_xids_are_ignored_and_more_can_be() {
        let f = XidFilter::parse("").unwrap();
        for x in APPLICATION_XIDS {
            assert!(f.is_ignored(x));
        }
        assert!(!f.is_ignored(48) && !f.is_ignored(79));
        let f = XidFilter::parse("48, 63").unwrap();
        assert!(f.is_ignored(48) && f.is_ignored(63) && f.is_ignored(13));
        assert!(!f.is_ignored(79));
        let f = XidFilter::parse("all").unwrap();
        assert!(f.checks_disabled() && f.is_ignored(79));
        assert!(XidFilter::parse("x").is_err());
    }
}
