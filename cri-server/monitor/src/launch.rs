//! Starting a pod's monitor from cri-server: run the binary and wait for it to exit. It exits
//! 0 once the daemon it forked has bound `DIR/monitor.sock`; the daemon then lives on alone.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::protocol::{PID_FILE_NAME, SOCKET_NAME};

/// Where and for what a monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The `cri-monitor` binary.
    pub program: PathBuf,
    pub sandbox_id: String,
    /// The pod's state dir (must exist).
    pub dir: PathBuf,
    /// The OCI runtime's `--root`.
    pub runtime_root: PathBuf,
}

/// A started monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The daemon's pid (from `DIR/monitor.pid`).
    pub pid: i32,
    /// `DIR/monitor.sock`.
    pub socket: PathBuf,
}

/// Why a monitor did not start.
#[derive(Debug)]
pub enum LaunchError {
    /// The binary could not be run.
    Spawn { program: PathBuf, source: io::Error },
    /// The monitor exited non-zero; `stderr` says why.
    Failed { status: String, stderr: String },
    /// It reported ready but its pid file is unreadable.
    PidFile { path: PathBuf, detail: String },
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::Spawn { program, source } => {
                write!(f, "run monitor {}: {source}", program.display())
            }
            LaunchError::Failed { status, stderr } => {
                write!(f, "monitor failed to start ({status}): {}", stderr.trim())
            }
            LaunchError::PidFile { path, detail } => {
                write!(f, "read monitor pid file {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for LaunchError {}

/// Runs `cri-monitor --sandbox-id ID --dir DIR --runtime-root ROOT` and waits until the
/// daemon is ready (blocking: call it from a blocking thread in async code).
pub fn start(config: &MonitorConfig) -> Result<Started, LaunchError> {
    let output = Command::new(&config.program)
        .arg("--sandbox-id")
        .arg(&config.sandbox_id)
        .arg("--dir")
        .arg(&config.dir)
        .arg("--runtime-root")
        .arg(&config.runtime_root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| LaunchError::Spawn {
            program: config.program.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(LaunchError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let pid = read_pid(&config.dir)?;
    Ok(Started {
        pid,
        socket: config.dir.join(SOCKET_NAME),
    })
}

/// Reads `DIR/monitor.pid`.
pub fn read_pid(dir: &Path) -> Result<i32, LaunchError> {
    let path = dir.join(PID_FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| LaunchError::PidFile {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    text.trim().parse().map_err(|e| LaunchError::PidFile {
        path,
        detail: format!("{e}: {:?}", text.trim()),
    })
}
