//! ExecSync: run a command in a running container, collect both streams (capped), kill it at
//! the timeout.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tracing::{instrument, warn};

use super::record::ContainerPhase;
use crate::oci::ExecOutput;
use crate::runtime::{Runtime, RuntimeError, new_id};

impl Runtime {
    #[instrument(skip(self, cmd))]
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<ExecOutput, RuntimeError> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec needs a command".into()));
        }
        let rec = self
            .refreshed(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        if rec.phase != ContainerPhase::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        // cri-exec or the runtime joins the container's cgroups in a moment.
        self.cgroup_warmer.warm();
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        if let Some(exec) = &self.exec_binary
            && rec.pid > 0
        {
            match direct(
                exec,
                rec.pid,
                &rec.id,
                &rec.bundle.join("config.json"),
                &cmd,
                timeout,
            )
            .await
            {
                Ok(Some(out)) => {
                    if out.timed_out {
                        return Err(RuntimeError::DeadlineExceeded(format!(
                            "command {cmd:?} timed out after {timeout_secs}s"
                        )));
                    }
                    return Ok(out);
                }
                Ok(None) => {}
                Err(e) => return Err(RuntimeError::internal(format!("exec in {}", rec.id), e)),
            }
        }
        // The exec'd process gets the container's own process settings with other args.
        let process = exec_process(&rec.bundle, &cmd, false)
            .ok_or_else(|| RuntimeError::internal("read container spec", rec.bundle.display()))?;
        let tag = &new_id()[..12];
        let process_path = rec.bundle.join(format!("exec-{tag}.json"));
        let pid_path = rec.bundle.join(format!("exec-{tag}.pid"));
        std::fs::write(
            &process_path,
            serde_json::to_vec(&process).unwrap_or_default(),
        )
        .map_err(|e| RuntimeError::internal("write exec process", e))?;
        let oci = self.oci(&rec.runtime_handler)?;
        let result = oci.exec(&rec.id, &process_path, &pid_path, timeout).await;
        let _ = std::fs::remove_file(&process_path);
        let _ = std::fs::remove_file(&pid_path);
        let out = result.map_err(|e| RuntimeError::internal(format!("exec in {}", rec.id), e))?;
        if out.timed_out {
            return Err(RuntimeError::DeadlineExceeded(format!(
                "command {cmd:?} timed out after {timeout_secs}s"
            )));
        }
        Ok(out)
    }
}

/// The process an OCI runtime's exec runs: the container's own process from its bundle's
/// config.json with `cmd` as args (and TERM set for a tty, as containerd does). None when the
/// spec cannot be read.
pub(crate) fn exec_process(bundle: &Path, cmd: &[String], tty: bool) -> Option<serde_json::Value> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    if tty {
        let mut env = process["env"].as_array().cloned().unwrap_or_default();
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM=")))
        {
            env.push("TERM=xterm".into());
            process["env"] = env.into();
        }
    }
    Some(process)
}

/// Starts `cmd` in the container through `cri-exec` with the given stdio, and waits until it
/// runs (its status pipe closes at the exec). `Ok(None)`: cri-exec could not set the process
/// up and nothing ran (it says why on the pipe); the caller uses the OCI runtime instead.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn spawn_direct(
    exec: &Path,
    pid: u32,
    id: &str,
    config: &Path,
    cmd: &[String],
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> std::io::Result<Option<tokio::process::Child>> {
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut command = tokio::process::Command::new(exec);
    command
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--id")
        .arg(id)
        .arg("--config")
        .arg(config)
        .arg("--")
        .args(cmd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    let w = status_w.as_raw_fd();
    // SAFETY: between fork and exec only dup2 (async-signal-safe) runs; it gives the status
    // pipe's write end to the child as fd 3 without CLOEXEC.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(w, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(status_w);
    let mut status_pipe = tokio::fs::File::from_std(std::fs::File::from(status_r));
    let mut status = String::new();
    let _ = status_pipe.read_to_string(&mut status).await;
    if let Some(reason) = status.lines().find_map(|l| l.strip_prefix("E ")) {
        let _ = child.wait().await;
        warn!(
            reason,
            "cri-exec could not run the command: using the OCI runtime"
        );
        return Ok(None);
    }
    Ok(Some(child))
}

/// ExecSync through `cri-exec`; `Ok(None)` as for [`spawn_direct`].
async fn direct(
    exec: &Path,
    pid: u32,
    id: &str,
    config: &Path,
    cmd: &[String],
    timeout: Option<Duration>,
) -> std::io::Result<Option<ExecOutput>> {
    let started = std::time::Instant::now();
    let spawn = spawn_direct(
        exec,
        pid,
        id,
        config,
        cmd,
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let spawned = match timeout {
        Some(t) => match tokio::time::timeout(t, spawn).await {
            Ok(r) => r?,
            Err(_) => {
                return Ok(Some(ExecOutput {
                    exit_code: 137,
                    timed_out: true,
                    ..Default::default()
                }));
            }
        },
        None => spawn.await?,
    };
    let Some(child) = spawned else {
        return Ok(None);
    };
    // The command dies with cri-exec (parent-death signal): killing it is enough.
    let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
    crate::oci::collect(child, left, || {}).await.map(Some)
}
