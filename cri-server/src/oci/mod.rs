//! Drives the OCI runtime binary (runc, crun): start, kill, delete, state, exec. `create` is the
//! per-pod monitor's job, because the monitor must hold the container's stdio.

pub mod sealed;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{runtime} {verb} {id}: {message}")]
    Failed {
        runtime: String,
        verb: &'static str,
        id: String,
        message: String,
    },
    #[error("run {runtime}: {source}")]
    Spawn {
        runtime: String,
        source: std::io::Error,
    },
    #[error("{runtime} {verb} {id}: container does not exist")]
    NotFound {
        runtime: String,
        verb: &'static str,
        id: String,
    },
}

/// One OCI runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    /// What to execute: the sealed copy (its symlink in the state dir, or
    /// `/proc/<pid>/fd/<n>`) or the file itself.
    pub binary: PathBuf,
    /// The file on disk: argv[0] and the name in messages.
    pub name: PathBuf,
    pub root: PathBuf,
    /// Keeps the sealed copy `binary` names open while this value lives.
    pub sealed: Option<Arc<sealed::SealedCopy>>,
}

/// What ExecSync returns.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

/// Output beyond this is dropped (the kubelet caps exec output at 16 MiB too).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

impl OciRuntime {
    /// The handler's binary as it is now (its sealed copy if it has one) with its `--root`.
    pub fn new(binary: &sealed::RuntimeBinary, root: PathBuf) -> OciRuntime {
        let sealed = binary.current();
        OciRuntime {
            binary: sealed
                .as_ref()
                .map(|s| s.exec_path().to_path_buf())
                .unwrap_or_else(|| binary.path().to_path_buf()),
            name: binary.path().to_path_buf(),
            root,
            sealed,
        }
    }

    /// `<runtime> --root <root>`, argv[0] the file's path however it is run.
    pub fn base_command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg0(&self.name);
        c.arg("--root").arg(&self.root);
        c
    }

    fn command(&self) -> Command {
        let mut c = self.base_command();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn name(&self) -> String {
        self.name.display().to_string()
    }

    async fn run(&self, verb: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>, OciError> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|source| OciError::Spawn {
                runtime: self.name(),
                source,
            })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.contains("does not exist") || message.contains("not found") {
            return Err(OciError::NotFound {
                runtime: self.name(),
                verb,
                id: id.into(),
            });
        }
        Err(OciError::Failed {
            runtime: self.name(),
            verb,
            id: id.into(),
            message,
        })
    }

    pub async fn start(&self, id: &str) -> Result<(), OciError> {
        self.run("start", id, &["start", id]).await.map(drop)
    }

    /// Sends `signal` (a name like "TERM" or a number) to the container's init.
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), OciError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        self.run("kill", id, &args).await.map(drop)
    }

    /// Deletes the container (forcefully: a running one is killed). Unknown ids are fine.
    pub async fn delete(&self, id: &str) -> Result<(), OciError> {
        match self.run("delete", id, &["delete", "--force", id]).await {
            Ok(_) | Err(OciError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Applies new cgroup limits (`resources_json`: an OCI `LinuxResources` document).
    pub async fn update(&self, id: &str, resources_json: &Path) -> Result<(), OciError> {
        let path = resources_json.display().to_string();
        self.run("update", id, &["update", "--resources", &path, id])
            .await
            .map(drop)
    }

    /// Ids of the containers the runtime knows under its root.
    pub async fn list(&self) -> Result<Vec<String>, OciError> {
        let out = self.run("list", "", &["list", "-q"]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// The runtime's status word ("created", "running", "stopped", "paused").
    pub async fn state(&self, id: &str) -> Result<String, OciError> {
        let out = self.run("state", id, &["state", id]).await?;
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| OciError::Failed {
            runtime: self.name(),
            verb: "state",
            id: id.into(),
            message: format!("unreadable state: {e}"),
        })?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Runs `process.json` (an OCI process) in the container and collects its output; kills the
    /// process when `timeout` passes.
    pub async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError> {
        let child = self
            .command()
            .arg("exec")
            .arg("--process")
            .arg(process_json)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| OciError::Spawn {
                runtime: self.name(),
                source,
            })?;
        let pid_file = pid_file.to_path_buf();
        collect(child, timeout, move || {
            // Kill the process inside the container; the runtime's exec goes next.
            if let Ok(pid) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        })
        .await
        .map_err(|source| OciError::Spawn {
            runtime: self.name(),
            source,
        })
    }
}

/// An exec's result: both streams read (capped) while waiting for `child` up to `timeout`.
/// At the timeout `on_timeout` runs, then the child is killed; the exit code is then 137.
pub(crate) async fn collect(
    mut child: tokio::process::Child,
    timeout: Option<Duration>,
    on_timeout: impl FnOnce(),
) -> std::io::Result<ExecOutput> {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out_task = tokio::spawn(read_capped(stdout));
    let err_task = tokio::spawn(read_capped(stderr));
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let (exit_code, timed_out) = match waited {
        Some(status) => (status?.code().unwrap_or(255), false),
        None => {
            on_timeout();
            let _ = child.kill().await;
            (137, true)
        }
    };
    Ok(ExecOutput {
        stdout: out_task.await.unwrap_or_default(),
        stderr: err_task.await.unwrap_or_default(),
        exit_code,
        timed_out,
    })
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
