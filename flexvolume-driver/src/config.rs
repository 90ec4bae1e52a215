//! Run-time settings, read from the environment so the kubelet (which passes none)
//! gets the defaults and tests can point everything at temp dirs.

use std::path::PathBuf;

/// Default size of a volume created without a `size` option: 1 GiB (sparse).
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// Settings shared by the Flexvolume and CSI front ends.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where volume records, backing files and lock files live
    /// (`FLEXVOLUME_DRIVER_STATE_DIR`, default `/var/lib/flexvolume-driver`).
    pub state_dir: PathBuf,
    /// Log file for Flexvolume calls (`FLEXVOLUME_DRIVER_LOG`, default
    /// `/var/log/flexvolume-driver.log`).
    pub log_file: PathBuf,
    /// Whether `FLEXVOLUME_DRIVER_LOG` was set explicitly (serve mode then logs there
    /// instead of stderr).
    pub log_file_explicit: bool,
    /// Size of volumes created without a size (`FLEXVOLUME_DRIVER_DEFAULT_SIZE`, bytes or
    /// a quantity such as `1Gi`).
    pub default_size: u64,
    /// Filesystem made on a volume that names none (`FLEXVOLUME_DRIVER_DEFAULT_FSTYPE`,
    /// default `ext4`).
    pub default_fs_type: String,
    /// This node's name as the CSI node ID (`NODE_ID`, else `NODE_NAME`, else the hostname).
    pub node_id: String,
    /// CSI driver name (`CSI_DRIVER_NAME`, default `loop.csi.node-rs.io`).
    pub driver_name: String,
}

impl Config {
    /// Reads the settings from the environment, with defaults.
    pub fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let log = var("FLEXVOLUME_DRIVER_LOG");
        Config {
            state_dir: var("FLEXVOLUME_DRIVER_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/flexvolume-driver")),
            log_file_explicit: log.is_some(),
            log_file: log
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/log/flexvolume-driver.log")),
            default_size: var("FLEXVOLUME_DRIVER_DEFAULT_SIZE")
                .and_then(|s| crate::volume::parse_size(&s).ok())
                .unwrap_or(DEFAULT_SIZE),
            default_fs_type: var("FLEXVOLUME_DRIVER_DEFAULT_FSTYPE")
                .unwrap_or_else(|| "ext4".to_string()),
            node_id: var("NODE_ID")
                .or_else(|| var("NODE_NAME"))
                .unwrap_or_else(hostname),
            driver_name: var("CSI_DRIVER_NAME")
                .unwrap_or_else(|| "loop.csi.node-rs.io".to_string()),
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}
