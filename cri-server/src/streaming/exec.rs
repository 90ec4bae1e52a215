//! A streamed exec: `runc exec` in the foreground with pipes, or with a pty of ours as its
//! stdio for a tty (runc proxies it to the container's pty and applies our size on SIGWINCH).
//! The process is killed (in the container and runc itself) when dropped before it exited.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::Child;
use tracing::debug;

use super::ExecParams;
use super::tty::{self, Pty};
use crate::container::ContainerPhase;
use crate::runtime::{Runtime, new_id};

pub(crate) type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub(crate) type Writer = Box<dyn AsyncWrite + Unpin + Send>;

pub(crate) struct ExecProcess {
    child: Child,
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// The pty master, for resizes.
    master: Option<OwnedFd>,
    /// The OCI runtime's process JSON and pid file (None through cri-exec, whose command dies
    /// with it).
    runtime_files: Option<(PathBuf, PathBuf)>,
    exited: bool,
}

impl ExecProcess {
    /// Starts `p.cmd` in the (running) container.
    pub(crate) async fn spawn(rt: &Runtime, p: &ExecParams) -> Result<ExecProcess, String> {
        let rec = rt
            .refreshed(&p.container_id)
            .ok_or_else(|| format!("container {} not found", p.container_id))?;
        if rec.phase != ContainerPhase::Running {
            return Err(format!("container {} is not running", rec.id));
        }
        rt.cgroup_warmer.warm();
        // Without a tty, through cri-exec as ExecSync (a tty needs the container's own pty,
        // which runc makes).
        if !p.tty
            && let Some(exec) = &rt.exec_binary
            && rec.pid > 0
        {
            let pipe = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            let spawned = crate::container::exec::spawn_direct(
                exec,
                rec.pid,
                &rec.id,
                &rec.bundle.join("config.json"),
                &p.cmd,
                pipe(p.stdin),
                pipe(p.stdout),
                pipe(p.stderr),
            )
            .await
            .map_err(|e| format!("run cri-exec: {e}"))?;
            if let Some(mut c) = spawned {
                debug!(container = %rec.id, cmd = ?p.cmd, "streamed exec started (cri-exec)");
                return Ok(ExecProcess {
                    stdin: c.stdin.take().map(|s| Box::new(s) as Writer),
                    stdout: c.stdout.take().map(|s| Box::new(s) as Reader),
                    stderr: c.stderr.take().map(|s| Box::new(s) as Reader),
                    child: c,
                    master: None,
                    runtime_files: None,
                    exited: false,
                });
            }
        }
        let process = crate::container::exec::exec_process(&rec.bundle, &p.cmd, p.tty)
            .ok_or_else(|| format!("read the spec of container {}", rec.id))?;
        let tag = &new_id()[..12];
        let process_json = rec.bundle.join(format!("stream-exec-{tag}.json"));
        let pid_file = rec.bundle.join(format!("stream-exec-{tag}.pid"));
        std::fs::write(
            &process_json,
            serde_json::to_vec(&process).unwrap_or_default(),
        )
        .map_err(|e| format!("write {}: {e}", process_json.display()))?;
        let oci = rt.oci(&rec.runtime_handler).map_err(|e| e.to_string())?;
        let mut cmd = oci.base_command();
        cmd.arg("exec")
            .arg("--process")
            .arg(&process_json)
            .arg("--pid-file")
            .arg(&pid_file);
        if p.tty {
            cmd.arg("--tty");
        }
        cmd.arg(&rec.id).kill_on_drop(true);
        let cleanup = |e: String| {
            let _ = std::fs::remove_file(&process_json);
            e
        };
        let mut master = None;
        let (stdin, stdout, stderr): (Option<Writer>, Option<Reader>, Option<Reader>);
        let child;
        if p.tty {
            let pty = Pty::open().map_err(|e| cleanup(format!("open a pty: {e}")))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            let stdio = (dup(&pty.slave), dup(&pty.slave), dup(&pty.slave));
            let (Ok(i), Ok(o), Ok(e)) = stdio else {
                return Err(cleanup("duplicate the pty slave".into()));
            };
            cmd.stdin(i).stdout(o).stderr(e);
            child = cmd
                .spawn()
                .map_err(|e| cleanup(format!("run {}: {e}", oci.name.display())))?;
            // Our copies of the slave go now: EOF on the master then means runc is gone.
            drop(cmd);
            drop(pty.slave);
            let (Ok(r), Ok(w)) = (pty.master.try_clone(), pty.master.try_clone()) else {
                return Err(cleanup("duplicate the pty master".into()));
            };
            stdout = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(r))));
            stdin = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(w))));
            stderr = None;
            master = Some(pty.master);
        } else {
            let pipe = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            cmd.stdin(pipe(p.stdin))
                .stdout(pipe(p.stdout))
                .stderr(pipe(p.stderr));
            let mut c = cmd
                .spawn()
                .map_err(|e| cleanup(format!("run {}: {e}", oci.name.display())))?;
            stdin = c.stdin.take().map(|s| Box::new(s) as Writer);
            stdout = c.stdout.take().map(|s| Box::new(s) as Reader);
            stderr = c.stderr.take().map(|s| Box::new(s) as Reader);
            child = c;
        }
        debug!(container = %rec.id, cmd = ?p.cmd, tty = p.tty, "streamed exec started");
        Ok(ExecProcess {
            child,
            stdin: if p.stdin { stdin } else { None },
            stdout,
            stderr,
            master,
            runtime_files: Some((process_json, pid_file)),
            exited: false,
        })
    }

    /// Waits for the exit; the exit code as runc reports it (128+signal when killed).
    pub(crate) async fn wait(&mut self) -> std::io::Result<i32> {
        let st = self.child.wait().await?;
        self.exited = true;
        use std::os::unix::process::ExitStatusExt;
        Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
    }

    /// New terminal size: set on our pty, then SIGWINCH tells runc to copy it inward.
    pub(crate) fn resize(&self, width: u16, height: u16) {
        let Some(master) = &self.master else { return };
        if tty::set_size(master, width, height).is_ok()
            && let Some(pid) = self.child.id()
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGWINCH);
        }
    }

    /// Kills the process inside the container (and its process group) and runc.
    pub(crate) async fn kill(&mut self) {
        self.kill_now();
        let _ = self.child.wait().await;
        self.exited = true;
    }

    fn kill_now(&mut self) {
        if let Some((_, pid_file)) = &self.runtime_files
            && let Ok(pid) = std::fs::read_to_string(pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
            && pid > 1
        {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if !self.exited {
            self.kill_now();
        }
        if let Some((process_json, pid_file)) = &self.runtime_files {
            let _ = std::fs::remove_file(process_json);
            let _ = std::fs::remove_file(pid_file);
        }
    }
}
