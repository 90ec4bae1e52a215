//! The per-volume lock: an exclusive flock on `<state>/locks/<id>.lock`.
//!
//! The lock file is removed when the holder releases a volume that is not attached, so
//! an idle volume leaves no lock file. That is safe because a waiter, once it holds the
//! flock, checks that the path still names the inode it locked, and starts over if the
//! file was removed (or replaced) meanwhile.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// A held volume lock; released (and its file removed if the volume is idle) on drop.
pub struct VolumeLock {
    file: Option<Flock<std::fs::File>>,
    path: PathBuf,
    record: PathBuf,
}

impl VolumeLock {
    /// Blocks until the lock of volume `id` is held.
    pub fn acquire(dir: &Path, id: &str, record: PathBuf) -> Result<VolumeLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let path = dir.join(format!("{id}.lock"));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| Error::io("open lock", &path, e))?;
            let locked = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::sys("lock", &path, e))?;
            let held = locked
                .metadata()
                .map_err(|e| Error::io("stat lock", &path, e))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(VolumeLock {
                        file: Some(locked),
                        path,
                        record: record.clone(),
                    });
                }
                // Removed or replaced by the previous holder: lock the new file.
                _ => continue,
            }
        }
    }
}

impl Drop for VolumeLock {
    fn drop(&mut self) {
        let idle = match super::record::load(&self.record) {
            Ok(None) => true,
            Ok(Some(rec)) => rec.device.is_none(),
            Err(_) => false,
        };
        if idle {
            let _ = std::fs::remove_file(&self.path);
        }
        // Unlock after the removal, so no one can lock the old inode and believe it
        // still guards the volume.
        self.file.take();
    }
}
