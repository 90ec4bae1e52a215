//! Unix socket paths longer than `sun_path` (107 bytes): pod state dirs under
//! `/var/lib/...` with a 64-hex-digit id get there. Such a path is reached through
//! `/proc/self/fd/<fd of its dir>/<name>`, which is short and names the same file.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest path that fits `sockaddr_un.sun_path` with its NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Connects to the unix socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

/// Binds a unix socket at `path`, however long.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    with_short_path(path, |p| UnixListener::bind(p))
}

/// Runs `f` on `path`, or on a `/proc/self/fd` alias of it while its dir is held open.
pub fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (dir, name) = split_parent(path)?;
    let dir = File::open(dir)?;
    f(&proc_fd_path(&dir, name))
}

fn proc_fd_path(dir: &File, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn split_parent(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a socket path", path.display()),
        )),
    }
}
