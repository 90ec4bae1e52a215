//! A created container as the monitor holds it: its stdio (pipes or pty master), its log file,
//! its init pid and, once reaped, its exit record.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cri_monitor::protocol::{ExitRecord, attach};

use super::cri_log::{LineSplitter, Stream};
use super::diag::diag;
use super::timestamp;

/// One output of a container (stdout pipe, stderr pipe, or pty master) and its line state.
#[derive(Debug)]
pub struct Output {
    pub file: File,
    splitter: LineSplitter,
    /// A pty master reports the end with EIO instead of EOF.
    pub is_pty: bool,
    /// The attach frame kind its data goes out as.
    pub kind: u8,
}

impl Output {
    pub fn pipe(fd: OwnedFd, stream: Stream) -> Self {
        Output {
            file: File::from(fd),
            kind: match stream {
                Stream::Stdout => attach::STDOUT,
                Stream::Stderr => attach::STDERR,
            },
            splitter: LineSplitter::new(stream),
            is_pty: false,
        }
    }

    pub fn pty(fd: OwnedFd) -> Self {
        Output {
            file: File::from(fd),
            splitter: LineSplitter::new(Stream::Stdout),
            is_pty: true,
            kind: attach::STDOUT,
        }
    }
}

#[derive(Debug)]
pub struct Container {
    /// Unique within this monitor's life (ids can be reused after `forget`).
    pub key: u64,
    pub id: String,
    pub pid: i32,
    pub bundle: PathBuf,
    pub log_path: PathBuf,
    pub cgroup_memory_dir: Option<PathBuf>,
    pub log: File,
    pub outputs: Vec<Output>,
    /// Write end of the stdin pipe, held open so the container does not see EOF.
    pub stdin: Option<OwnedFd>,
    pub exit: Option<ExitRecord>,
    /// Set after a log write failed, so the failure is reported once, not per line.
    log_failing: bool,
}

/// What a read from an output found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Data came (and was logged, or is held as an unfinished line).
    Data,
    /// Nothing to read now.
    Empty,
    /// The output is closed (EOF, pty hang-up, or error) and was removed.
    Closed,
}

impl Container {
    pub fn new(
        key: u64,
        id: String,
        pid: i32,
        bundle: PathBuf,
        log_path: PathBuf,
        log: File,
    ) -> Self {
        Container {
            key,
            id,
            pid,
            bundle,
            log_path,
            cgroup_memory_dir: None,
            log,
            outputs: Vec::new(),
            stdin: None,
            exit: None,
            log_failing: false,
        }
    }

    /// Reads once from output `index` (ready per poll) and logs what came. Also returns the
    /// attach kind and length of what was read (it is in `buf[..len]`).
    pub fn read_output(
        &mut self,
        index: usize,
        buf: &mut [u8],
        out: &mut Vec<u8>,
    ) -> (ReadOutcome, u8, usize) {
        let kind = self.outputs[index].kind;
        let (outcome, len) = read_once(&mut self.outputs[index], buf, out);
        if outcome == ReadOutcome::Closed {
            self.outputs.remove(index);
        }
        self.write_log(out);
        (outcome, kind, len)
    }

    /// The container has a terminal (its only output is the pty master).
    pub fn is_tty(&self) -> bool {
        self.outputs.first().is_some_and(|o| o.is_pty)
    }

    /// Writes attach input to the container's stdin (the pty master for a tty) without
    /// blocking; what does not fit now is dropped (and reported).
    pub fn write_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        let written = if let Some(o) = self.outputs.iter_mut().find(|o| o.is_pty) {
            o.file.write(data)
        } else if let Some(fd) = &self.stdin {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(
                    nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK,
                ),
            )?;
            nix::unistd::write(fd, data).map_err(io::Error::from)
        } else {
            return Err(io::Error::other("the container has no stdin"));
        }?;
        if written < data.len() {
            return Err(io::Error::other(format!(
                "stdin full: {} of {} bytes dropped",
                data.len() - written,
                data.len()
            )));
        }
        Ok(())
    }

    /// Closes the container's stdin pipe (a tty keeps its terminal).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sets the terminal size of a tty container.
    pub fn resize(&self, width: u16, height: u16) {
        let Some(o) = self.outputs.iter().find(|o| o.is_pty) else {
            return;
        };
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads one `winsize` from a pointer valid for the call.
        unsafe { libc::ioctl(o.file.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    /// Reads every output until it would block or ends: used when the init exits and before
    /// the monitor quits, so the log holds everything written before that moment.
    pub fn drain_outputs(&mut self, buf: &mut [u8], out: &mut Vec<u8>) {
        let mut index = 0;
        while index < self.outputs.len() {
            let mut outcome = ReadOutcome::Empty;
            // Bounded: a pipe holds 64 KiB by default (1 MiB at most); a writer still
            // running could keep it full forever.
            for _ in 0..64 {
                outcome = read_once(&mut self.outputs[index], buf, out).0;
                if outcome != ReadOutcome::Data {
                    break;
                }
                self.write_log(out);
            }
            self.write_log(out);
            if outcome == ReadOutcome::Closed {
                self.outputs.remove(index);
            } else {
                index += 1;
            }
        }
    }

    /// Ends every output (unfinished lines become `P` lines) and closes it.
    pub fn close_outputs(&mut self, out: &mut Vec<u8>) {
        let ts = timestamp::format(timestamp::now_unix_nanos());
        for mut output in self.outputs.drain(..) {
            output.splitter.finish(&ts, out);
        }
        self.write_log(out);
    }

    /// Appends `out` to the log file and empties it.
    pub fn write_log(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        match self.log.write_all(out) {
            Ok(()) => self.log_failing = false,
            Err(e) if !self.log_failing => {
                self.log_failing = true;
                diag!(
                    "container={} write log {}: {e} (dropping output until it works again)",
                    self.id,
                    self.log_path.display()
                );
            }
            Err(_) => {}
        }
        out.clear();
        if out.capacity() > 256 * 1024 {
            *out = Vec::with_capacity(64 * 1024);
        }
    }

    /// Closes the log file and opens the file at the same path again (kubelet rotation).
    pub fn reopen_log(&mut self) -> io::Result<()> {
        self.log = open_log(&self.log_path)?.0;
        self.log_failing = false;
        Ok(())
    }
}

fn read_once(output: &mut Output, buf: &mut [u8], out: &mut Vec<u8>) -> (ReadOutcome, usize) {
    loop {
        match output.file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                let ts = timestamp::format(timestamp::now_unix_nanos());
                output.splitter.feed(&buf[..n], &ts, out);
                return (ReadOutcome::Data, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (ReadOutcome::Empty, 0),
            Err(e) if output.is_pty && e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                diag!("read container output: {e}");
                break;
            }
        }
    }
    let ts = timestamp::format(timestamp::now_unix_nanos());
    output.splitter.finish(&ts, out);
    (ReadOutcome::Closed, 0)
}

/// Opens (creating it 0640, and its dir 0755, if missing) a CRI log file for appending.
/// Returns the file and whether this call created it.
pub fn open_log(path: &Path) -> io::Result<(File, bool)> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    Ok((file, !existed))
}
