//! Growth: the backing file grows (controller side: `expandvolume`,
//! ControllerExpandVolume), then the loop device and the filesystem follow, online
//! (node side: `expandfs`, NodeExpandVolume).

use super::{Backing, Volumes, fault};
use crate::sys::{fs, loopdev};
use crate::{Error, Result};

impl Volumes {
    /// Grows volume `id` to at least `new_size` bytes (rounded up to MiB) and, if it is
    /// attached, tells the loop device. Never shrinks. Returns the new size.
    pub fn expand(&self, id: &str, new_size: u64) -> Result<u64> {
        let _lock = self.lock(id)?;
        let mut rec = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let new_size = super::round_size(new_size);
        if new_size <= rec.size_bytes {
            return Ok(rec.size_bytes);
        }
        match &rec.backing {
            Backing::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io("open backing file", path, e))?;
                let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
                if len < new_size {
                    f.set_len(new_size)
                        .map_err(|e| Error::io("grow backing file", path, e))?;
                    f.sync_all().map_err(|e| Error::io("sync", path, e))?;
                }
            }
            Backing::Device(path) => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} lives on block device {}, which this driver cannot grow",
                    path.display()
                )));
            }
        }
        fault::crash_point("expand:after-grow");
        rec.size_bytes = new_size;
        rec.grow_pending = rec.formatted;
        self.reconcile(&mut rec)?;
        if let Some(device) = &rec.device {
            loopdev::set_capacity(device).map_err(|e| Error::io("set capacity of", device, e))?;
        }
        self.save(&rec)?;
        tracing::info!(volume = id, size = new_size, "volume grown");
        Ok(new_size)
    }

    /// Makes the attached loop device and the mounted filesystem of volume `id` fill the
    /// backing. Returns the device size in bytes.
    pub fn expand_fs(&self, id: &str) -> Result<u64> {
        let _lock = self.lock(id)?;
        let mut rec = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.reconcile(&mut rec)?;
        let Some(device) = rec.device.clone() else {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is not attached here"
            )));
        };
        if let Backing::File(path) = &rec.backing
            && let Ok(meta) = std::fs::metadata(path)
            && meta.len() > rec.size_bytes
        {
            rec.size_bytes = meta.len();
        }
        loopdev::set_capacity(&device).map_err(|e| Error::io("set capacity of", &device, e))?;
        match rec.staged.clone() {
            Some(staged) if staged.block => {}
            Some(_) if !fs::can_grow_online(&rec.fs_type) => {
                rec.grow_pending = true;
                self.save(&rec)?;
                return Err(Error::FailedPrecondition(format!(
                    "growing a mounted {} filesystem needs CAP_SYS_RESOURCE, which this driver lacks here; volume {id:?} grows when it is next staged (mountdevice)",
                    rec.fs_type
                )));
            }
            Some(staged) => {
                fs::grow(&rec.fs_type, &device, &staged.path)?;
                rec.grow_pending = false;
                tracing::info!(volume = id, "filesystem grown");
            }
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} is not staged; the filesystem grows while mounted"
                )));
            }
        }
        self.save(&rec)?;
        loopdev::size_bytes(&device).map_err(|e| Error::io("size of", &device, e))
    }
}
