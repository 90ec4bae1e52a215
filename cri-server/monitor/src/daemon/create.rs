//! The `create` verb: run `<runtime> create` (or `<runtime> run --detach`, which also starts
//! the container) with stdio the monitor holds, without blocking
//! the event loop; the reaper hands back the runtime's exit and [`PendingCreate::finish`]
//! turns it into a [`Container`] or an error.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::pipe2;

use cri_monitor::protocol::{CreateRequest, INIT_PID_FILE_NAME, RUNTIME_LOG_NAME};

use super::console::ConsoleSocket;
use super::container::{Container, Output, open_log};
use super::cri_log::Stream;
use super::reaper::Reaped;

/// A `create` whose runtime process is running.
#[derive(Debug)]
pub struct PendingCreate {
    /// The connection waiting for the answer.
    pub conn: u64,
    pub request: CreateRequest,
    pub runtime_pid: i32,
    pub started_at_unix_nanos: i64,
    stdout: Option<OwnedFd>,
    /// Container stderr, or (tty) the runtime's own stderr.
    stderr: OwnedFd,
    stdin: Option<OwnedFd>,
    console: Option<ConsoleSocket>,
    log: File,
    log_created: bool,
    runtime_log_offset: u64,
}

/// Where the daemon runs, as `create` needs it.
pub struct Context<'a> {
    pub runtime_root: &'a Path,
    pub dir: &'a Path,
    pub dir_handle: &'a File,
    /// Makes console socket names unique.
    pub seq: u64,
    pub now_unix_nanos: i64,
}

/// Checks the request, opens the log, makes the pipes and spawns the runtime.
pub fn start(
    conn: u64,
    request: CreateRequest,
    ctx: &Context<'_>,
) -> Result<PendingCreate, String> {
    validate(&request)?;
    let bundle = &request.bundle;
    let pid_file = bundle.join(INIT_PID_FILE_NAME);
    let runtime_log = bundle.join(RUNTIME_LOG_NAME);
    // Stale files from an earlier attempt in this bundle would be misread.
    let _ = fs::remove_file(&pid_file);
    let _ = fs::remove_file(bundle.join(cri_monitor::protocol::EXIT_FILE_NAME));
    let runtime_log_offset = fs::metadata(&runtime_log).map(|m| m.len()).unwrap_or(0);

    let (log, log_created) = open_log(&request.log_path)
        .map_err(|e| format!("open log {}: {e}", request.log_path.display()))?;
    let cleanup_log = |created: bool| {
        if created {
            let _ = fs::remove_file(&request.log_path);
        }
    };

    let result = (|| {
        let mut command = Command::new(&request.runtime);
        command
            .arg("--root")
            .arg(ctx.runtime_root)
            .arg("--log")
            .arg(&runtime_log)
            .args(["--log-format", "json"]);
        if request.start {
            command.args(["run", "--detach"]);
        } else {
            command.arg("create");
        }
        command
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);

        let (stdout, stderr, stdin, console);
        if request.tty {
            let sock = ConsoleSocket::bind(
                ctx.dir,
                ctx.dir_handle,
                &format!("console-{}.sock", ctx.seq),
            )
            .map_err(|e| format!("bind console socket in {}: {e}", ctx.dir.display()))?;
            command.arg("--console-socket").arg(&sock.runtime_path);
            let (err_r, err_w) = pipe()?;
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err_w);
            (stdout, stderr, stdin, console) = (None, err_r, None, Some(sock));
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            command.stdout(out_w).stderr(err_w);
            if request.stdin {
                let (in_r, in_w) = pipe()?;
                command.stdin(in_r);
                stdin = Some(in_w);
            } else {
                command.stdin(Stdio::null());
                stdin = None;
            }
            (stdout, stderr, console) = (Some(out_r), err_r, None);
        }
        command.arg(&request.id);
        let child = command
            .spawn()
            .map_err(|e| format!("run {}: {e}", request.runtime.display()))?;
        // `command` drops here with the child's ends of the pipes: the container holds them.
        Ok::<_, String>((child.id() as i32, stdout, stderr, stdin, console))
    })();

    match result {
        Ok((runtime_pid, stdout, stderr, stdin, console)) => Ok(PendingCreate {
            conn,
            request,
            runtime_pid,
            started_at_unix_nanos: ctx.now_unix_nanos,
            stdout,
            stderr,
            stdin,
            console,
            log,
            log_created,
            runtime_log_offset,
        }),
        Err(e) => {
            drop(log);
            cleanup_log(log_created);
            Err(e)
        }
    }
}

impl PendingCreate {
    /// The runtime exited: a container (with its init pid) or the runtime's error.
    pub fn finish(self, runtime: &Reaped, key: u64) -> Result<Container, String> {
        let request = &self.request;
        if !runtime.success() {
            let error = self.runtime_error(runtime);
            self.discard();
            return Err(error);
        }
        let pid_file = request.bundle.join(INIT_PID_FILE_NAME);
        let pid = match read_pid(&pid_file) {
            Ok(pid) => pid,
            Err(e) => {
                self.discard();
                return Err(e);
            }
        };
        let mut outputs = Vec::with_capacity(2);
        if let Some(console) = &self.console {
            match console.receive_master() {
                Ok(master) => outputs.push(Output::pty(master)),
                Err(e) => {
                    let error = format!("receive the pty of {}: {e}", request.id);
                    self.discard();
                    return Err(error);
                }
            }
        } else {
            for (fd, stream) in [
                (self.stdout, Stream::Stdout),
                (Some(self.stderr), Stream::Stderr),
            ] {
                if let Some(fd) = fd {
                    set_nonblocking(&fd)?;
                    outputs.push(Output::pipe(fd, stream));
                }
            }
        }
        let request = self.request;
        let mut container = Container::new(
            key,
            request.id,
            pid,
            request.bundle,
            request.log_path,
            self.log,
        );
        container.cgroup_memory_dir = request.cgroup_memory_dir;
        container.outputs = outputs;
        container.stdin = self.stdin;
        Ok(container)
    }

    /// The error to report for a failed create: the runtime's last error log line, else
    /// what it printed on stderr, else its exit status.
    fn runtime_error(&self, runtime: &Reaped) -> String {
        let runtime_log = self.request.bundle.join(RUNTIME_LOG_NAME);
        if let Some(message) = last_error_line(&runtime_log, self.runtime_log_offset) {
            return message;
        }
        let mut stderr = Vec::new();
        if set_nonblocking(&self.stderr).is_ok() {
            let mut buf = [0u8; 4096];
            while stderr.len() < 64 * 1024 {
                match nix::unistd::read(&self.stderr, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stderr.extend_from_slice(&buf[..n]),
                }
            }
        }
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            return stderr.to_string();
        }
        let verb = if self.request.start { "run" } else { "create" };
        match runtime.signal {
            Some(sig) => format!(
                "{} {verb} was killed by signal {sig}",
                self.request.runtime.display()
            ),
            None => format!(
                "{} {verb} exited with status {}",
                self.request.runtime.display(),
                runtime.exit_code
            ),
        }
    }

    /// Drops everything the failed create made (pipes, console socket, a log file it created
    /// and left empty).
    fn discard(self) {
        let empty = self.log.metadata().map(|m| m.len() == 0).unwrap_or(false);
        if self.log_created && empty {
            let _ = fs::remove_file(&self.request.log_path);
        }
    }
}

fn validate(request: &CreateRequest) -> Result<(), String> {
    let id = &request.id;
    if id.is_empty() || id.contains(['/', '\0']) || id.starts_with('.') {
        return Err(format!("invalid container id {id:?}"));
    }
    for (what, path) in [
        ("runtime", &request.runtime),
        ("bundle", &request.bundle),
        ("log_path", &request.log_path),
    ] {
        if !path.is_absolute() {
            return Err(format!(
                "{what} must be an absolute path: {}",
                path.display()
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("make a pipe: {e}"))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), String> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| format!("fcntl: {e}"))
}

fn read_pid(path: &PathBuf) -> Result<i32, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("parse {}: {e}: {:?}", path.display(), text.trim()))
}

/// The `msg` of the last `"level":"error"` (or fatal) JSON line after `offset`.
fn last_error_line(path: &Path, offset: u64) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    file.take(1024 * 1024).read_to_string(&mut text).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_after_the_offset_is_the_runtime_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.log");
        let old = "{\"level\":\"error\",\"msg\":\"old failure\",\"time\":\"t\"}\n";
        let new = "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n\
                   {\"level\":\"error\",\"msg\":\"first\",\"time\":\"t\"}\n\
                   {\"level\":\"error\",\"msg\":\"runc create failed: boom\",\"time\":\"t\"}\n";
        fs::write(&path, format!("{old}{new}")).unwrap();
        assert_eq!(
            last_error_line(&path, old.len() as u64).as_deref(),
            Some("runc create failed: boom")
        );
        fs::write(&path, old).unwrap();
        assert_eq!(last_error_line(&path, old.len() as u64), None);
    }
}
