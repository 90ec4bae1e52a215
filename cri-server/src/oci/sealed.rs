//! One sealed in-memory copy of an OCI runtime binary, run instead of the file on disk.
//!
//! runc 1.1 protects its binary from a container (CVE-2019-5736) in every `runc init`: unless
//! `/proc/self/exe` is already a memfd sealed with exactly `F_SEAL_SEAL | F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_WRITE`, it makes a read-only bind mount of itself in its state dir (a
//! mount, a remount and an unmount in the host mount namespace) or else copies itself into a
//! memfd, and re-executes that. Upstream's `memfd-bind` shares one sealed copy between calls
//! for the same reason. We make that copy once per handler, keep its fd open for the daemon's
//! life and execute it as `/proc/<our pid>/fd/<n>`, through a symlink in the state dir named
//! like the file (`<state_dir>/runtime-bin/<handler>/runc`); the per-pod monitor runs
//! `create` through the same path. The copy cannot be written, truncated or grown by anyone (the seals are
//! themselves sealed), so what a container can reach through `/proc/<runc pid>/exe` stays
//! read-only, as with runc's own copy. A new copy is made when the file on disk changes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

/// The seals runc checks for (`RUNC_MEMFD_SEALS` in runc's `cloned_binary.c`): any other set
/// makes it copy itself again.
pub const RUNC_MEMFD_SEALS: i32 =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

/// A sealed memfd holding a copy of a binary. Executable as [`SealedCopy::exec_path`] for as
/// long as this value lives (the fd is close-on-exec: children reach it through our /proc).
#[derive(Debug)]
pub struct SealedCopy {
    fd: OwnedFd,
    key: FileKey,
    /// `/proc/<our pid>/fd/<n>`.
    fd_path: PathBuf,
    /// A symlink to `fd_path` named like the file (so the runtime's processes are called
    /// `runc`, not `12`), when one could be made.
    link: Option<PathBuf>,
}

impl SealedCopy {
    /// Copies `source` into a new memfd and seals it.
    pub fn create(source: &Path) -> io::Result<SealedCopy> {
        let mut file = File::open(source)?;
        let before = FileKey::of(&file.metadata()?);
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runtime".into());
        let fd = memfd_create(&name)?;
        let mut copy = File::from(fd);
        let copied = io::copy(&mut file, &mut copy)?;
        let after = FileKey::of(&file.metadata()?);
        if before != after || copied != before.size {
            return Err(io::Error::other(format!(
                "{} changed while it was copied",
                source.display()
            )));
        }
        let fd = OwnedFd::from(copy);
        // SAFETY: fcntl on an fd we own; F_ADD_SEALS takes an int argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, RUNC_MEMFD_SEALS) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let seals = seals(&fd)?;
        if seals != RUNC_MEMFD_SEALS {
            return Err(io::Error::other(format!(
                "the copy has seals {seals:#x}, not {RUNC_MEMFD_SEALS:#x}"
            )));
        }
        let fd_path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ));
        Ok(SealedCopy {
            fd,
            key: before,
            fd_path,
            link: None,
        })
    }

    /// Points the symlink `link` at this copy (replacing what it pointed at).
    fn link_at(&mut self, link: &Path) -> io::Result<()> {
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = link.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.fd_path, &tmp)?;
        std::fs::rename(&tmp, link)?;
        self.link = Some(link.to_path_buf());
        Ok(())
    }

    /// What to execute: the symlink, else `/proc/<our pid>/fd/<n>`. Valid in any process of
    /// our PID namespace that may read our fds (the per-pod monitors), while `self` lives.
    pub fn exec_path(&self) -> &Path {
        self.link.as_deref().unwrap_or(&self.fd_path)
    }

    /// The seals on the copy (always [`RUNC_MEMFD_SEALS`]).
    pub fn seals(&self) -> io::Result<i32> {
        seals(&self.fd)
    }
}

fn seals(fd: &OwnedFd) -> io::Result<i32> {
    // SAFETY: fcntl on an fd we own; F_GET_SEALS takes no argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A close-on-exec memfd that allows sealing and stays executable. `MFD_EXEC` says so
/// explicitly on kernels with `vm.memfd_noexec` (6.3+); older kernels reject the flag.
fn memfd_create(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    for flags in [base | libc::MFD_EXEC, base] {
        // SAFETY: a NUL-terminated name and plain flags; the fd returned is ours.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: memfd_create just returned this fd and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// A handler's binary: the file on disk and, when enabled and possible, its sealed copy,
/// renewed when the file changes (path, inode, size, mtime or ctime).
#[derive(Debug)]
pub struct RuntimeBinary {
    path: PathBuf,
    sealed: bool,
    /// The symlink to the current copy.
    link: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    copy: Option<Arc<SealedCopy>>,
    /// The version of the file a copy could not be made of: not retried until it changes.
    failed: Option<FileKey>,
}

impl RuntimeBinary {
    /// `sealed`: run a sealed copy rather than the file, through a symlink named like the
    /// file in `link_dir` if given. The copy is made at the first [`RuntimeBinary::current`].
    pub fn new(path: PathBuf, sealed: bool, link_dir: Option<&Path>) -> RuntimeBinary {
        let link = link_dir.map(|d| {
            d.join(
                path.file_name()
                    .unwrap_or_else(|| std::ffi::OsStr::new("runtime")),
            )
        });
        RuntimeBinary {
            path,
            sealed,
            link,
            state: Mutex::new(State::default()),
        }
    }

    /// The file on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sealed copy of the file as it is now, or None (sealing is off, the file is
    /// missing, or no copy could be made of it: then the file itself is run).
    pub fn current(&self) -> Option<Arc<SealedCopy>> {
        if !self.sealed {
            return None;
        }
        let key = FileKey::of(&std::fs::metadata(&self.path).ok()?);
        let mut state = self.state.lock().expect("sealed binary state");
        if let Some(c) = &state.copy
            && c.key == key
        {
            return Some(c.clone());
        }
        if state.failed == Some(key) {
            return None;
        }
        match SealedCopy::create(&self.path) {
            Ok(mut copy) if copy.key == key => {
                if let Some(link) = &self.link
                    && let Err(e) = copy.link_at(link)
                {
                    warn!(link = %link.display(), error = %e, "no symlink to the sealed copy");
                }
                info!(
                    binary = %self.path.display(),
                    size = key.size,
                    exec = %copy.exec_path().display(),
                    "running the OCI runtime from a sealed in-memory copy"
                );
                let copy = Arc::new(copy);
                // A copy still in use elsewhere stays open until its last user drops it.
                state.copy = Some(copy.clone());
                state.failed = None;
                Some(copy)
            }
            // Replaced between the stat and the open: the next call copies the new file.
            Ok(_) => None,
            Err(e) => {
                warn!(
                    binary = %self.path.display(),
                    error = %e,
                    "no sealed copy of the OCI runtime: running the file itself"
                );
                state.copy = None;
                state.failed = Some(key);
                if let Some(link) = &self.link {
                    let _ = std::fs::remove_file(link);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("rt");
        let mut f = File::create(&path).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    #[test]
    fn the_copy_is_sealed_the_way_runc_checks_and_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "#!/bin/sh\necho v1\n");
        let copy = SealedCopy::create(&path).unwrap();
        assert_eq!(copy.seals().unwrap(), RUNC_MEMFD_SEALS);
        assert_eq!(
            std::fs::read(copy.exec_path()).unwrap(),
            std::fs::read(&path).unwrap()
        );
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.exec_path())
            .unwrap();
        assert!(w.write_all(b"#!/bin/sh\necho evil\n").is_err());
        assert!(w.set_len(0).is_err());
        // SAFETY: fcntl on a valid fd.
        let r = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert!(r < 0, "seals can be changed");
    }

    #[test]
    fn the_copy_runs_and_follows_changes_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "#!/bin/sh\necho v1\n");
        let binary = RuntimeBinary::new(path.clone(), true, Some(&dir.path().join("bin")));
        let first = binary.current().expect("a sealed copy");
        let out = std::process::Command::new("/bin/sh")
            .arg(first.exec_path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
        assert!(Arc::ptr_eq(&first, &binary.current().unwrap()));

        // Replaced (a package upgrade): a new copy of the new content.
        let tmp = dir.path().join("rt.new");
        std::fs::write(&tmp, "#!/bin/sh\necho v2\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let second = binary.current().expect("a new sealed copy");
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(
            std::fs::read_to_string(second.exec_path()).unwrap(),
            "#!/bin/sh\necho v2\n"
        );
        // The symlink now leads to the new copy; the old one stays usable while someone
        // holds it.
        assert_eq!(first.exec_path(), second.exec_path());
        assert_eq!(
            std::fs::read_to_string(&first.fd_path).unwrap(),
            "#!/bin/sh\necho v1\n"
        );
    }

    #[test]
    fn another_process_runs_the_copy_of_an_elf_binary() {
        let dir = tempfile::tempdir().unwrap();
        let binary = RuntimeBinary::new(PathBuf::from("/bin/true"), true, Some(dir.path()));
        let copy = binary.current().expect("a sealed copy of /bin/true");
        assert_eq!(copy.exec_path(), dir.path().join("true"));
        let status = std::process::Command::new(copy.exec_path())
            .status()
            .unwrap();
        assert!(status.success());
        // Without the symlink: /proc/<pid>/fd/<n>.
        let binary = RuntimeBinary::new(PathBuf::from("/bin/true"), true, None);
        let copy = binary.current().unwrap();
        assert!(copy.exec_path().starts_with("/proc"));
        let status = std::process::Command::new(copy.exec_path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn off_or_missing_means_the_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "#!/bin/sh\n");
        assert!(RuntimeBinary::new(path, false, None).current().is_none());
        assert!(
            RuntimeBinary::new(dir.path().join("missing"), true, None)
                .current()
                .is_none()
        );
    }
}
