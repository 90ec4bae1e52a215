//! Loop devices through the kernel's ioctls (linux/loop.h): allocate with
//! `LOOP_CTL_GET_FREE`, bind with `LOOP_CONFIGURE` (or `LOOP_SET_FD` +
//! `LOOP_SET_STATUS64` on kernels older than 5.8), unbind with `LOOP_CLR_FD`, grow with
//! `LOOP_SET_CAPACITY`. Bound devices are found again from sysfs
//! (`/sys/block/loopN/loop/backing_file`), confirmed by the backing inode, so a retry
//! after a crash finds the device a crashed call bound.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_STATUS64: u64 = 0x4C04;
const LOOP_GET_STATUS64: u64 = 0x4C05;
const LOOP_SET_CAPACITY: u64 = 0x4C07;
const LOOP_CONFIGURE: u64 = 0x4C0A;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;

/// The device is read-only.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// The kernel unbinds the device when its last opener closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    }
}

fn ioctl_ptr<T>(file: &File, request: u64, arg: *const T) -> io::Result<libc::c_int> {
    // SAFETY: `file` is an open descriptor and `arg` points to a live, properly laid out
    // `#[repr(C)]` value of the type the request expects (or the kernel ignores it).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn ioctl_val(file: &File, request: u64, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: `file` is an open descriptor; the request takes an integer argument.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_device(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Binds `backing` (a regular file or a block device) to a free loop device and returns
/// the device path (`/dev/loopN`). `flags` is a set of `LO_FLAGS_*`.
pub fn attach(backing: &Path, flags: u32) -> io::Result<PathBuf> {
    let read_only = flags & LO_FLAGS_READ_ONLY != 0;
    let file = open_device(backing, !read_only)?;
    let ctl = open_device(Path::new("/dev/loop-control"), true)?;
    let mut info = zeroed_info();
    info.lo_flags = flags;
    let name = backing.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);

    let mut last = io::Error::other("no free loop device");
    for _ in 0..64 {
        let index = ioctl_val(&ctl, LOOP_CTL_GET_FREE, 0)?;
        let path = PathBuf::from(format!("/dev/loop{index}"));
        let dev = match open_device(&path, !read_only) {
            Ok(dev) => dev,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The node is created asynchronously on some systems: let it appear.
                std::thread::sleep(Duration::from_millis(5));
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        match ioctl_ptr(&dev, LOOP_CONFIGURE, &config) {
            Ok(_) => return Ok(path),
            // Someone else bound it between GET_FREE and CONFIGURE: take another.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            // Kernel before 5.8: the two-step way.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => {
                match ioctl_val(&dev, LOOP_SET_FD, file.as_raw_fd() as libc::c_ulong) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        last = e;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                if let Err(e) = ioctl_ptr(&dev, LOOP_SET_STATUS64, &info) {
                    let _ = ioctl_val(&dev, LOOP_CLR_FD, 0);
                    return Err(e);
                }
                return Ok(path);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Unbinds the loop device at `device`. A device that is not bound is fine. If someone
/// still holds the device open, the kernel unbinds it when they close it (it sets
/// `LO_FLAGS_AUTOCLEAR`); this waits up to a second for that.
pub fn detach(device: &Path) -> io::Result<()> {
    let dev = match open_device(device, false) {
        Ok(dev) => dev,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match ioctl_val(&dev, LOOP_CLR_FD, 0) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
        Err(e) => return Err(e),
    }
    drop(dev);
    for _ in 0..100 {
        if backing_file(device).is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Makes the loop device pick up a changed size of its backing file.
pub fn set_capacity(device: &Path) -> io::Result<()> {
    let dev = open_device(device, false)?;
    ioctl_val(&dev, LOOP_SET_CAPACITY, 0).map(|_| ())
}

fn sys_name(device: &Path) -> Option<String> {
    let name = device.file_name()?.to_str()?;
    name.starts_with("loop").then(|| name.to_string())
}

/// The backing file of a bound loop device, from sysfs; `None` when unbound.
pub fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = sys_name(device)?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end_matches('\n');
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Size of the block device in bytes, from sysfs (512-byte sectors).
pub fn size_bytes(device: &Path) -> io::Result<u64> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("not a device path"))?;
    let text = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .map_err(|_| io::Error::other("bad size in sysfs"))?;
    Ok(sectors * 512)
}

/// All bound loop devices, as `(device path, backing file)`.
pub fn list() -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("loop") {
            continue;
        }
        let device = PathBuf::from("/dev").join(name);
        if let Some(backing) = backing_file(&device) {
            out.push((device, backing));
        }
    }
    out.sort();
    Ok(out)
}

/// The loop devices bound to `backing` (normally zero or one). Matches the sysfs path
/// and then the inode the kernel holds, so a file replaced at the same path is not
/// taken for the old one.
pub fn find_by_backing(backing: &Path) -> io::Result<Vec<PathBuf>> {
    let meta = match std::fs::metadata(backing) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let canonical = std::fs::canonicalize(backing)?;
    let mut found = Vec::new();
    for (device, file) in list()? {
        if file != canonical && file != backing {
            continue;
        }
        let Ok(dev) = open_device(&device, false) else {
            continue;
        };
        let mut info = zeroed_info();
        if ioctl_ptr(&dev, LOOP_GET_STATUS64, &mut info as *mut LoopInfo64).is_err() {
            continue;
        }
        if info.lo_inode == meta.ino() && info.lo_device == meta.dev() {
            found.push(device);
        }
    }
    Ok(found)
}

/// The loop device with numbers `major:minor`, if it is a loop device.
pub fn by_numbers(major: u32, minor: u32) -> Option<PathBuf> {
    let want = format!("{major}:{minor}");
    for entry in std::fs::read_dir("/sys/block").ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(dev) = std::fs::read_to_string(entry.path().join("dev"))
            && dev.trim() == want
        {
            return Some(PathBuf::from("/dev").join(name));
        }
    }
    None
}
