//! The `--console-socket` of a tty container: the OCI runtime connects to it and sends the
//! pty master as SCM_RIGHTS; the monitor then reads the container's output from the master.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use cri_monitor::sockpath;

#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    /// Where the socket file is (removed on drop).
    path: PathBuf,
    /// The path to give the runtime: `path`, or a short `/proc/<pid>/fd/...` alias of it.
    pub runtime_path: PathBuf,
}

impl ConsoleSocket {
    /// Binds `<dir>/<name>`; `dir_handle` is `dir` held open, for the short alias.
    pub fn bind(dir: &Path, dir_handle: &File, name: &str) -> io::Result<Self> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let listener = sockpath::bind(&path)?;
        listener.set_nonblocking(true)?;
        let runtime_path = if path.as_os_str().len() <= sockpath::SUN_PATH_MAX {
            path.clone()
        } else {
            PathBuf::from(format!(
                "/proc/{}/fd/{}/{name}",
                std::process::id(),
                dir_handle.as_raw_fd()
            ))
        };
        Ok(ConsoleSocket {
            listener,
            path,
            runtime_path,
        })
    }

    /// Takes the pty master the runtime sent. Called after the runtime's `create` exited 0,
    /// so its connection and message are already queued: nothing here waits long.
    pub fn receive_master(&self) -> io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::other("the runtime did not connect to the console socket")
            } else {
                e
            }
        })?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut master = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in our table for this message;
                    // nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        let master =
            master.ok_or_else(|| io::Error::other("console socket message carried no fd"))?;
        let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        fcntl(
            &master,
            FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        Ok(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
