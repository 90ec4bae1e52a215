//! Talking to a pod's monitor (`cri-monitor`, its own crate): start it, and make blocking
//! client calls off the async workers. The monitor outlives cri-server, so every call
//! connects anew.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_monitor::client::Client;
use cri_monitor::launch::{self, MonitorConfig};
use cri_monitor::protocol::CreateRequest;

fn socket(dir: &Path) -> PathBuf {
    dir.join(cri_monitor::protocol::SOCKET_NAME)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Starts the pod's monitor; returns once it listens.
pub async fn start(
    binary: &Path,
    sandbox_id: &str,
    dir: &Path,
    runtime_root: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(runtime_root)?;
    let config = MonitorConfig {
        program: binary.to_path_buf(),
        sandbox_id: sandbox_id.to_string(),
        dir: dir.to_path_buf(),
        runtime_root: runtime_root.to_path_buf(),
    };
    blocking(move || {
        launch::start(&config)
            .map(drop)
            .map_err(std::io::Error::other)
    })
    .await
}

/// Has the monitor run the OCI runtime's `create` (or `run --detach`, `request.start`); returns
/// the container's init pid.
pub async fn create(dir: &Path, request: CreateRequest) -> std::io::Result<u32> {
    let sock = socket(dir);
    blocking(move || {
        let mut c = Client::connect(&sock).map_err(std::io::Error::other)?;
        // A busy node's runtime create can take long.
        c.set_timeout(Some(Duration::from_secs(120)))?;
        c.create(request)
            .map(|pid| pid as u32)
            .map_err(std::io::Error::other)
    })
    .await
}

pub async fn reopen_log(dir: &Path, id: &str) -> std::io::Result<()> {
    let (sock, id) = (socket(dir), id.to_string());
    blocking(move || {
        Client::connect(&sock)
            .and_then(|mut c| c.reopen_log(&id))
            .map_err(std::io::Error::other)
    })
    .await
}

/// Drops the monitor's record of a container; a monitor that is gone is fine.
pub async fn forget(dir: &Path, id: &str) {
    let (sock, id) = (socket(dir), id.to_string());
    let _ = blocking(move || {
        Client::connect(&sock)
            .and_then(|mut c| c.forget(&id))
            .map_err(std::io::Error::other)
    })
    .await;
}

/// Asks the monitor to exit, and makes sure it did; a monitor that is already gone is fine.
pub async fn shutdown(dir: &Path) {
    let sock = socket(dir);
    let _ = blocking(move || {
        Client::connect(&sock)
            .and_then(|mut c| c.shutdown())
            .map_err(std::io::Error::other)
    })
    .await;
    let Ok(pid) = launch::read_pid(dir) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    for _ in 0..100 {
        if !is_monitor(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Is `pid` a running monitor (not a reused pid)?
fn is_monitor(pid: nix::unistd::Pid) -> bool {
    is_live_process_named(pid.as_raw(), "cri-monitor")
}

/// `pid` runs and is named `comm`. A zombie counts as gone: an exited monitor or pause
/// process waits for its (reparented) parent to reap it, which can take a while.
fn is_live_process_named(pid: i32, comm: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": the comm may hold spaces, the state follows the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let name = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    name == comm && state != Some('Z')
}

/// Is the pod's monitor process running?
pub fn alive(dir: &Path) -> bool {
    launch::read_pid(dir).is_ok_and(|pid| is_monitor(nix::unistd::Pid::from_raw(pid)))
}

/// Starts the PID 1 of a pod-wide PID namespace; returns its pid.
pub async fn start_pause(binary: &Path, dir: &Path, userns: Option<&Path>) -> std::io::Result<i32> {
    let pid_file = dir.join("pause.pid");
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("pause").arg("--pid-file").arg(&pid_file);
    if let Some(u) = userns {
        cmd.arg("--userns").arg(u);
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} pause: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read_to_string(&pid_file)?
        .trim()
        .parse::<i32>()
        .map_err(std::io::Error::other)
}

/// Is `pid` a pod's PID 1 (not a reused pid)?
pub fn is_pause(pid: i32) -> bool {
    is_live_process_named(pid, cri_monitor::protocol::PAUSE_COMM)
}

/// Kills a pod's PID 1 (as recorded, or as its pid file in the pod dir says: a crash may
/// come between the two), which ends every process left in its PID namespace.
pub fn kill_pause(dir: &Path, recorded: Option<i32>) {
    let from_file = std::fs::read_to_string(dir.join("pause.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    for pid in [recorded, from_file]
        .into_iter()
        .flatten()
        .filter(|p| is_pause(*p))
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
