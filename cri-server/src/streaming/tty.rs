//! A pseudo-terminal pair for `exec -t`: the slave becomes the OCI runtime's stdio (runc then
//! proxies it to the container's own pty), the master is ours. Both are close-on-exec from
//! the start, so no other child of the daemon inherits them and EOF arrives when runc exits.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    pub(crate) fn open() -> io::Result<Pty> {
        // SAFETY: plain syscall; the returned fd is checked and owned below.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `m` is a fresh fd nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: `master` is a valid pty master fd.
        if unsafe { libc::grantpt(master.as_raw_fd()) } != 0
            || unsafe { libc::unlockpt(master.as_raw_fd()) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for its length; ptsname_r NUL-terminates on success.
        let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: NUL-terminated by ptsname_r.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        // SAFETY: `path` is a valid C string.
        let s = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `s` is a fresh fd nothing else owns.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        Ok(Pty { master, slave })
    }
}

/// Sets the window size of the terminal behind `fd` (TIOCSWINSZ).
pub(crate) fn set_size(fd: &impl AsRawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_set_on_the_master_is_seen_on_the_slave() {
        let pty = Pty::open().unwrap();
        set_size(&pty.master, 123, 45).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the valid pointer.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (123, 45));
    }
}
