//! Kernel mechanisms the volume engine is built on: loop devices (`loopdev`), the mount
//! table and mount syscalls (`mount`), and filesystems (`fs`: detection, mkfs, growth,
//! fsGroup ownership, usage). No volume policy lives here.

pub mod fs;
pub mod loopdev;
pub mod mount;

use std::path::Path;

/// `(major, minor)` of the device node at `path` (its `st_rdev`).
pub fn device_numbers(path: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path)?.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}
