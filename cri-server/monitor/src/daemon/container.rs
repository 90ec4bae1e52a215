//! A created container as the monitor holds it: its stdio (pipes or pty master), its log file,
//! its init pid and, once reaped, its exit record.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cri_monitor::protocol::ExitRecord;

use super::cri_log::{LineSplitter, Stream};
use super::diag::diag;
use super::timestamp;

/// One output of a container (stdout pipe, stderr pipe, or pty master) and its line state.
#[derive(Debug)]
pub struct Output {
    pub file: File,
    splitter: LineSplitter,
    /// A pty master reports the end with EIO instead of EOF.
    is_pty: bool,
}

impl Output {
    pub fn pipe(fd: OwnedFd, stream: Stream) -> Self {
        Output {
            file: File::from(fd),
            splitter: LineSplitter::new(stream),
            is_pty: false,
        }
    }

    pub fn pty(fd: OwnedFd) -> Self {
        Output {
            file: File::from(fd),
            splitter: LineSplitter::new(Stream::Stdout),
            is_pty: true,
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

    /// Reads once from output `index` (ready per poll) and logs what came.
    pub fn read_output(&mut self, index: usize, buf: &mut [u8], out: &mut Vec<u8>) -> ReadOutcome {
        let outcome = read_once(&mut self.outputs[index], buf, out);
        if outcome == ReadOutcome::Closed {
            self.outputs.remove(index);
        }
        self.write_log(out);
        outcome
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
                outcome = read_once(&mut self.outputs[index], buf, out);
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

fn read_once(output: &mut Output, buf: &mut [u8], out: &mut Vec<u8>) -> ReadOutcome {
    loop {
        match output.file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                let ts = timestamp::format(timestamp::now_unix_nanos());
                output.splitter.feed(&buf[..n], &ts, out);
                return ReadOutcome::Data;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Empty,
            Err(e) if output.is_pty && e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                diag!("read container output: {e}");
                break;
            }
        }
    }
    let ts = timestamp::format(timestamp::now_unix_nanos());
    output.splitter.finish(&ts, out);
    ReadOutcome::Closed
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
