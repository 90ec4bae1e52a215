//! attach / waitforattach / isattached / detach: a volume's backing bound to a loop
//! device, and unbound again.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Backing, VolumeRecord, VolumeSpec, Volumes, fault, record};
use crate::sys::{loopdev, mount};
use crate::{Error, Result};

impl Volumes {
    /// The record of `id`, created (with its backing file) from `spec` if missing.
    /// Caller holds the volume lock.
    pub(super) fn ensure_record(&self, id: &str, spec: &VolumeSpec) -> Result<VolumeRecord> {
        if let Some(mut rec) = self.get(id)? {
            if let Some(backing) = &spec.backing
                && *backing != rec.backing
            {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} already lives on {}, not {}",
                    rec.backing.path().display(),
                    backing.path().display()
                )));
            }
            if let Some(alias) = &spec.alias
                && alias != id
                && !rec.aliases.contains(alias)
            {
                rec.aliases.push(alias.clone());
                self.save(&rec)?;
            }
            self.ensure_backing(&rec)?;
            return Ok(rec);
        }
        let backing = spec
            .backing
            .clone()
            .unwrap_or_else(|| Backing::File(self.default_backing(id)));
        let size_bytes = match &backing {
            Backing::Device(path) => block_device_size(path)?,
            // An existing file keeps its size; a new one gets the size asked for.
            Backing::File(path) => match std::fs::metadata(path) {
                Ok(meta) if meta.len() > 0 => meta.len(),
                _ => super::round_size(spec.size_bytes.unwrap_or(self.default_size)),
            },
        };
        let fs_type = spec
            .fs_type
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| self.default_fs_type.clone());
        if !crate::sys::fs::SUPPORTED.contains(&fs_type.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "filesystem type {fs_type:?} is not supported (supported: {})",
                crate::sys::fs::SUPPORTED.join(", ")
            )));
        }
        let rec = VolumeRecord {
            id: id.to_string(),
            owned_backing: spec.backing.is_none(),
            backing,
            size_bytes,
            fs_type,
            mkfs_options: spec.mkfs_options.clone(),
            parameters: spec.parameters.clone(),
            aliases: spec.alias.iter().filter(|a| *a != id).cloned().collect(),
            formatted: false,
            device: None,
            staged: None,
            published: Vec::new(),
            grow_pending: false,
        };
        // Record first, then the file: a crash in between leaves a record whose file a
        // retry creates.
        self.save(&rec)?;
        self.ensure_backing(&rec)?;
        tracing::info!(volume = id, backing = %rec.backing.path().display(), size = rec.size_bytes, "volume created");
        Ok(rec)
    }

    /// Makes sure the backing exists: a missing backing file is created sparse (through
    /// a temp file and a rename, so it never exists half-sized), unless the volume was
    /// formatted before, which means its data is lost and must not be silently replaced.
    fn ensure_backing(&self, rec: &VolumeRecord) -> Result<()> {
        match &rec.backing {
            Backing::Device(path) => {
                use std::os::unix::fs::FileTypeExt;
                let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
                if !meta.file_type().is_block_device() {
                    return Err(Error::InvalidArgument(format!(
                        "{} is not a block device",
                        path.display()
                    )));
                }
                Ok(())
            }
            Backing::File(path) => {
                if path.exists() {
                    return Ok(());
                }
                if rec.formatted {
                    return Err(Error::FailedPrecondition(format!(
                        "backing file {} of formatted volume {:?} is missing; refusing to replace it with an empty one",
                        path.display(),
                        rec.id
                    )));
                }
                let dir = path.parent().unwrap_or(Path::new("/"));
                super::make_dir(dir)?;
                let tmp = path.with_extension(format!("img.tmp{}", std::process::id()));
                let create = || -> std::io::Result<()> {
                    let f = std::fs::File::create(&tmp)?;
                    f.set_len(rec.size_bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, path)
                };
                create().map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    Error::io("create backing file", path, e)
                })
            }
        }
    }

    /// Attaches volume `id` (created from `spec` if it does not exist) to a loop device
    /// and returns the device. Attaching an attached volume returns its device.
    pub fn attach(&self, id: &str, spec: &VolumeSpec) -> Result<PathBuf> {
        let _lock = self.lock(id)?;
        let mut rec = self.ensure_record(id, spec)?;
        if let Some(device) = self.kernel_device(&rec)? {
            if rec.device.as_ref() != Some(&device) {
                rec.device = Some(device.clone());
                self.save(&rec)?;
            }
            return Ok(device);
        }
        let path = rec.backing.path().to_path_buf();
        let device = loopdev::attach(&path, 0)
            .map_err(|e| Error::io("attach a loop device to", &path, e))?;
        tracing::info!(volume = id, device = %device.display(), "attached");
        fault::crash_point("attach:after-loop");
        rec.device = Some(device.clone());
        self.save(&rec)?;
        Ok(device)
    }

    /// The loop device volume `id` is attached to, if any (read-only look-up).
    pub fn attached_device(&self, id: &str) -> Result<Option<PathBuf>> {
        match self.get(id)? {
            Some(rec) => self.kernel_device(&rec),
            None => Ok(None),
        }
    }

    /// The ID of the volume called `name`: its ID, one of its aliases, or the loop
    /// device (`/dev/loopN`) it is attached to.
    pub fn resolve(&self, name: &str) -> Result<Option<String>> {
        if name.starts_with("/dev/") {
            let Some(backing) = loopdev::backing_file(Path::new(name)) else {
                return Ok(None);
            };
            return Ok(self
                .list()?
                .into_iter()
                .find(|r| {
                    let b = r.backing.path();
                    b == backing || mount::canonical(b).as_deref() == Some(backing.as_path())
                })
                .map(|r| r.id));
        }
        if super::validate_id(name).is_ok() && self.get(name)?.is_some() {
            return Ok(Some(name.to_string()));
        }
        Ok(self
            .list()?
            .into_iter()
            .find(|r| r.aliases.iter().any(|a| a == name))
            .map(|r| r.id))
    }

    /// Detaches the volume called `name` (see [`Volumes::resolve`]) from its loop
    /// device. Refuses while the device is still mounted anywhere; a volume that is not
    /// attached (or not known) is fine.
    pub fn detach(&self, name: &str) -> Result<Option<String>> {
        let Some(id) = self.resolve(name)? else {
            tracing::info!(name, "detach: no such volume here, nothing to do");
            return Ok(None);
        };
        let _lock = self.lock(&id)?;
        let Some(mut rec) = self.get(&id)? else {
            return Ok(None);
        };
        self.reconcile(&mut rec)?;
        let devices = loopdev::find_by_backing(rec.backing.path())
            .map_err(|e| Error::io("look up loop devices of", rec.backing.path(), e))?;
        let table = super::mount_table()?;
        for device in &devices {
            let (major, minor) =
                crate::sys::device_numbers(device).map_err(|e| Error::io("stat", device, e))?;
            let mounts = mount::mounts_of(&table, major, minor);
            if !mounts.is_empty() {
                let at: Vec<String> = mounts
                    .iter()
                    .map(|m| m.mount_point.display().to_string())
                    .collect();
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} ({}) is still mounted at {}; unmount it first",
                    device.display(),
                    at.join(", ")
                )));
            }
        }
        for device in &devices {
            loopdev::detach(device).map_err(|e| Error::io("detach loop device", device, e))?;
            tracing::info!(volume = %id, device = %device.display(), "detached");
        }
        fault::crash_point("detach:after-clear");
        rec.device = None;
        rec.staged = None;
        rec.published.clear();
        self.save(&rec)?;
        Ok(Some(id))
    }

    /// Removes volume `id` entirely (CSI DeleteVolume): refused while attached; the
    /// backing file goes only if the driver created it.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let _lock = self.lock(id)?;
        let Some(mut rec) = self.get(id)? else {
            return Ok(false);
        };
        self.reconcile(&mut rec)?;
        if let Some(device) = &rec.device {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is attached at {}; unstage it first",
                device.display()
            )));
        }
        if rec.owned_backing {
            let path = rec.backing.path();
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove backing file", path, e)),
            }
        }
        record::remove(&self.record_path(id))?;
        tracing::info!(volume = id, "volume deleted");
        Ok(true)
    }
}

/// Size of a block device in bytes.
fn block_device_size(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| Error::io("size of", path, e))
}
