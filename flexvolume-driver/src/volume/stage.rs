//! mountdevice / unmountdevice (NodeStageVolume / NodeUnstageVolume): the filesystem on
//! the loop device, made once, mounted at the global path.

use std::path::{Path, PathBuf};

use super::{StageOptions, Staged, Volumes, fault, make_dir, mount_table, remove_quietly};
use crate::sys::fs::{self, Content, family};
use crate::sys::mount;
use crate::{Error, Result};

pub(super) fn require_absolute(path: &Path, what: &str) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} must be an absolute path, got {:?}",
            path.display()
        )))
    }
}

impl Volumes {
    /// Mounts the filesystem of attached volume `id` at `path`, making the filesystem
    /// first if the device holds nothing and the volume was never formatted. A device
    /// holding another filesystem, or anything else, is an error: nothing is ever
    /// reformatted. Returns the device.
    pub fn mount_device(&self, id: &str, path: &Path, opts: &StageOptions) -> Result<PathBuf> {
        require_absolute(path, "device mount path")?;
        let _lock = self.lock(id)?;
        let mut rec = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.reconcile(&mut rec)?;
        let Some(device) = rec.device.clone() else {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is not attached; attach it first"
            )));
        };
        if let Some(hint) = &opts.device_hint
            && hint != &device
        {
            tracing::warn!(volume = id, given = %hint.display(), actual = %device.display(), "device path given differs from the attached device; using the attached one");
        }
        if let Some(staged) = &rec.staged
            && mount::canonical(&staged.path) != mount::canonical(path)
        {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is already staged at {}",
                staged.path.display()
            )));
        }
        if opts.block {
            rec.staged = Some(Staged {
                path: path.to_path_buf(),
                read_only: opts.read_only,
                block: true,
            });
            self.save(&rec)?;
            return Ok(device);
        }

        let numbers =
            crate::sys::device_numbers(&device).map_err(|e| Error::io("stat", &device, e))?;
        let table = mount_table()?;
        let already = match mount::mount_at(&table, path) {
            Some(e) if (e.major, e.minor) == numbers => true,
            Some(e) => {
                return Err(Error::FailedPrecondition(format!(
                    "{} already has another mount ({} from {})",
                    path.display(),
                    e.fs_type,
                    e.source
                )));
            }
            None => false,
        };

        if !already {
            let requested = opts
                .fs_type
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| rec.fs_type.clone());
            if !fs::SUPPORTED.contains(&requested.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "filesystem type {requested:?} is not supported (supported: {})",
                    fs::SUPPORTED.join(", ")
                )));
            }
            if rec.formatted && family(&requested) != family(&rec.fs_type) {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} holds a {} filesystem, {requested} was requested; not reformatting",
                    rec.fs_type
                )));
            }
            let found = match fs::detect(&device)? {
                Content::Filesystem(found) if family(&found) == family(&requested) => found,
                Content::Filesystem(found) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} (volume {id:?}) holds a {found} filesystem, {requested} was requested; not reformatting",
                        device.display()
                    )));
                }
                Content::Other(what) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} (volume {id:?}) holds {what}, not a filesystem; refusing to format it",
                        device.display()
                    )));
                }
                Content::Empty if rec.formatted => {
                    return Err(Error::FailedPrecondition(format!(
                        "volume {id:?} was formatted before but {} shows no filesystem; refusing to format it again",
                        device.display()
                    )));
                }
                Content::Empty if opts.read_only => {
                    return Err(Error::FailedPrecondition(format!(
                        "volume {id:?} has no filesystem yet and is to be mounted read-only"
                    )));
                }
                Content::Empty => {
                    fs::mkfs(&device, &requested, &rec.mkfs_options)?;
                    tracing::info!(volume = id, device = %device.display(), fs = %requested, "filesystem made");
                    fault::crash_point("mountdevice:after-mkfs");
                    requested
                }
            };
            if !rec.formatted || rec.fs_type != found {
                rec.formatted = true;
                rec.fs_type = found.clone();
                self.save(&rec)?;
            }
            let grow_after_mount = rec.grow_pending && family(&found) != "ext";
            if rec.grow_pending && family(&found) == "ext" {
                crate::sys::loopdev::set_capacity(&device)
                    .map_err(|e| Error::io("set capacity of", &device, e))?;
                fs::grow_ext_offline(&device)?;
                rec.grow_pending = false;
                self.save(&rec)?;
                tracing::info!(volume = id, "filesystem grown offline before mounting");
            }
            make_dir(path)?;
            mount::mount_fs(&device, path, &found, opts.read_only, &opts.mount_options)?;
            tracing::info!(volume = id, path = %path.display(), read_only = opts.read_only, "device mounted");
            if grow_after_mount && !opts.read_only {
                crate::sys::loopdev::set_capacity(&device)
                    .map_err(|e| Error::io("set capacity of", &device, e))?;
                fs::grow(&found, &device, path)?;
                rec.grow_pending = false;
            }
            fault::crash_point("mountdevice:after-mount");
        }
        rec.staged = Some(Staged {
            path: path.to_path_buf(),
            read_only: opts.read_only,
            block: false,
        });
        self.save(&rec)?;
        Ok(device)
    }

    /// Unmounts the global mount at `path` and removes the directory. Refused while pod
    /// mounts of the device remain. A path that is not (or no longer) ours is fine.
    /// Returns the volume it belonged to.
    pub fn unmount_device(&self, path: &Path) -> Result<Option<String>> {
        require_absolute(path, "device mount path")?;
        let Some(id) = self.volume_at(path)? else {
            tracing::info!(path = %path.display(), "unmountdevice: no volume of ours there, nothing to do");
            return Ok(None);
        };
        let _lock = self.lock(&id)?;
        let Some(mut rec) = self.get(&id)? else {
            return Ok(None);
        };
        self.reconcile(&mut rec)?;
        let block = rec.staged.as_ref().is_some_and(|s| s.block);
        if let Some(device) = &rec.device
            && !block
        {
            let (major, minor) =
                crate::sys::device_numbers(device).map_err(|e| Error::io("stat", device, e))?;
            let table = mount_table()?;
            let here = mount::canonical(path);
            let others: Vec<String> = mount::mounts_of(&table, major, minor)
                .into_iter()
                .filter(|m| Some(&m.mount_point) != here.as_ref())
                .map(|m| m.mount_point.display().to_string())
                .collect();
            if !others.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id:?} is still mounted at {}; unmount those first",
                    others.join(", ")
                )));
            }
            mount::unmount_all(path)?;
            tracing::info!(volume = %id, path = %path.display(), "device unmounted");
            fault::crash_point("unmountdevice:after-umount");
        }
        remove_quietly(path);
        rec.staged = None;
        self.save(&rec)?;
        Ok(Some(id))
    }
}
