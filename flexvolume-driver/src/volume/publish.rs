//! mount / unmount (NodePublishVolume / NodeUnpublishVolume): bind mounts of the staged
//! volume into pod directories, read-only where asked, with fsGroup ownership.

use std::path::Path;

use super::stage::require_absolute;
use super::{PublishOptions, Published, Volumes, fault, make_dir, mount_table, remove_quietly};
use crate::sys::{fs, mount};
use crate::{Error, Result};

impl Volumes {
    /// Bind-mounts staged volume `id` at `target` (a directory, or for a block volume a
    /// file on which the device node is bound).
    pub fn publish(&self, id: &str, target: &Path, opts: &PublishOptions) -> Result<()> {
        require_absolute(target, "target path")?;
        let _lock = self.lock(id)?;
        let mut rec = self
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.reconcile(&mut rec)?;
        let (Some(staged), Some(device)) = (rec.staged.clone(), rec.device.clone()) else {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is not staged; mountdevice (NodeStageVolume) first"
            )));
        };
        if staged.read_only && !opts.read_only {
            return Err(Error::FailedPrecondition(format!(
                "volume {id:?} is staged read-only and cannot be mounted read-write"
            )));
        }
        let table = mount_table()?;
        let existing = mount::mount_at(&table, target);
        if staged.block {
            if existing.is_none() {
                if let Some(parent) = target.parent() {
                    make_dir(parent)?;
                }
                if !target.exists() {
                    std::fs::File::create(target).map_err(|e| Error::io("create", target, e))?;
                }
                mount::bind(&device, target, opts.read_only)?;
                fault::crash_point("mount:after-bind");
            } else if !rec.published.iter().any(|p| p.path == target) {
                return Err(Error::FailedPrecondition(format!(
                    "{} already has another mount",
                    target.display()
                )));
            }
        } else {
            let numbers =
                crate::sys::device_numbers(&device).map_err(|e| Error::io("stat", &device, e))?;
            match existing {
                Some(e) if (e.major, e.minor) == numbers => {
                    if e.read_only() != opts.read_only {
                        mount::remount_bind(target, opts.read_only)?;
                    }
                }
                Some(e) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} already has another mount ({} from {})",
                        target.display(),
                        e.fs_type,
                        e.source
                    )));
                }
                None => {
                    make_dir(target)?;
                    mount::bind(&staged.path, target, false)?;
                    fault::crash_point("mount:after-bind");
                    if opts.read_only {
                        mount::remount_bind(target, true)?;
                    }
                }
            }
            if let Some(gid) = opts.fs_group
                && !opts.read_only
            {
                fs::apply_fs_group(target, gid)?;
            }
        }
        tracing::info!(volume = id, target = %target.display(), read_only = opts.read_only, fs_group = ?opts.fs_group, "mounted into pod");
        rec.published.retain(|p| p.path != target);
        rec.published.push(Published {
            path: target.to_path_buf(),
            read_only: opts.read_only,
            block: staged.block,
        });
        self.save(&rec)
    }

    /// Unmounts the pod mount at `target` and removes what was created there. A target
    /// that is not (or no longer) ours is fine. Returns the volume it belonged to.
    pub fn unpublish(&self, target: &Path) -> Result<Option<String>> {
        require_absolute(target, "target path")?;
        let Some(id) = self.volume_at(target)? else {
            tracing::info!(target = %target.display(), "unmount: no volume of ours there, nothing to do");
            return Ok(None);
        };
        let _lock = self.lock(&id)?;
        let Some(mut rec) = self.get(&id)? else {
            return Ok(None);
        };
        mount::unmount_all(target)?;
        fault::crash_point("unmount:after-umount");
        remove_quietly(target);
        let canonical = mount::canonical(target);
        rec.published.retain(|p| {
            p.path != target && (canonical.is_none() || mount::canonical(&p.path) != canonical)
        });
        self.reconcile(&mut rec)?;
        self.save(&rec)?;
        tracing::info!(volume = %id, target = %target.display(), "unmounted from pod");
        Ok(Some(id))
    }
}
