//! The wire protocol between cri-server and a pod's monitor: one JSON object per line over
//! `DIR/monitor.sock`, one response line per request. Also the `exit.json` record the monitor
//! writes into a container's bundle when its init process exits.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the monitor's socket inside the pod state dir.
pub const SOCKET_NAME: &str = "monitor.sock";
/// The comm name of a pod's PID 1 (`cri-monitor pause`), to tell it from a reused pid.
pub const PAUSE_COMM: &str = "cri-pause";
/// File name of the monitor's pid file inside the pod state dir.
pub const PID_FILE_NAME: &str = "monitor.pid";
/// File name of the monitor's own diagnostic log inside the pod state dir.
pub const DIAG_LOG_NAME: &str = "monitor.log";
/// File name of the exit record inside a container's bundle.
pub const EXIT_FILE_NAME: &str = "exit.json";
/// File name of the runtime's pid file inside a container's bundle.
pub const INIT_PID_FILE_NAME: &str = "init.pid";
/// File name of the runtime's own (JSON) log inside a container's bundle.
pub const RUNTIME_LOG_NAME: &str = "runtime.log";

/// A request, tagged by `op`: `{"op":"list"}`, `{"op":"forget","id":"c1"}`...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run `<runtime> create` with pipes (or a pty) held by the monitor.
    Create(CreateRequest),
    /// Close and reopen the container's log file at the same path (after rotation).
    ReopenLog { id: String },
    /// List the containers the monitor knows.
    List,
    /// Drop the monitor's record of a container (ok even if unknown).
    Forget { id: String },
    /// Answer, flush logs and exit.
    Shutdown,
    /// Answer (with `tty`), then turn this connection into an attach stream of a running
    /// container: [`attach`] frames both ways until either side closes.
    Attach { id: String },
}

/// The body of `{"op":"create", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Container id, as given to the OCI runtime.
    pub id: String,
    /// Absolute path of the OCI runtime binary (runc or crun).
    pub runtime: PathBuf,
    /// Absolute path of the OCI bundle (holds `config.json`).
    pub bundle: PathBuf,
    /// Absolute path of the CRI log file the kubelet reads.
    pub log_path: PathBuf,
    /// Allocate a pty (`process.terminal` must be true in `config.json`).
    #[serde(default)]
    pub tty: bool,
    /// Keep a stdin pipe open for the container.
    #[serde(default)]
    pub stdin: bool,
    /// CRI `stdin_once`; recorded, has no effect until attach exists.
    #[serde(default)]
    pub stdin_once: bool,
    /// Memory cgroup dir of the container, read at exit to tell an OOM kill.
    #[serde(default)]
    pub cgroup_memory_dir: Option<PathBuf>,
    /// Create and start in one runtime process (`<runtime> run --detach`) rather than only
    /// create (`<runtime> create`, started later with `<runtime> start`).
    #[serde(default)]
    pub start: bool,
}

/// One response line. Fields other than `ok` are present only where they apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The container's init pid (answer to `create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The containers (answer to `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerInfo>>,
    /// Whether the container has a terminal (answer to `attach`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

impl Response {
    /// `{"ok":true}`.
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    /// `{"ok":false,"error":...}`.
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// One entry of the `list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub pid: i32,
    pub exited: bool,
}

/// The content of `<bundle>/exit.json`, written atomically when the init process exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128 + signal number when the process was killed.
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    pub exited_at_unix_nanos: i64,
    /// The container's memory cgroup counted an OOM kill.
    pub oom_killed: bool,
}

impl ExitRecord {
    /// Reads `<bundle>/exit.json`; `Ok(None)` when the container has not exited (no file).
    pub fn read(bundle: &Path) -> std::io::Result<Option<ExitRecord>> {
        let path = bundle.join(EXIT_FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("parse {}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The frames of an attach stream: `[kind: u8][length: u32 big endian][payload]`.
/// Monitor to client: `STDOUT` and `STDERR` data (a tty's output is `STDOUT`); the monitor
/// closes the connection when the container's outputs end. Client to monitor: `STDIN` data,
/// `CLOSE_STDIN` (empty) and `RESIZE` (width, height: two u16 big endian, tty only).
pub mod attach {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const RESIZE: u8 = 4;
    pub const CLOSE_STDIN: u8 = 5;
    /// Largest payload either side sends; a larger one closes the stream.
    pub const MAX_FRAME: usize = 32 * 1024;

    /// One frame.
    pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + payload.len());
        v.push(kind);
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// The first whole frame in `buf` and its size; `None` until one is complete, `Err` for
    /// one over [`MAX_FRAME`].
    #[allow(clippy::type_complexity)]
    pub fn parse(buf: &[u8]) -> Option<Result<(u8, &[u8], usize), usize>> {
        if buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Some(Err(len));
        }
        let payload = buf.get(5..5 + len)?;
        Some(Ok((buf[0], payload, 5 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_json() {
        let list: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, Request::List);
        let forget: Request = serde_json::from_str(r#"{"op":"forget","id":"c1"}"#).unwrap();
        assert_eq!(forget, Request::Forget { id: "c1".into() });
        let create: Request = serde_json::from_str(
            r#"{"op":"create","id":"c","runtime":"/usr/sbin/runc","bundle":"/b",
                "log_path":"/l/c.log","tty":false,"stdin":true,"stdin_once":false,
                "cgroup_memory_dir":null}"#,
        )
        .unwrap();
        let Request::Create(c) = create else {
            panic!("not a create")
        };
        assert!(c.stdin && !c.tty && c.cgroup_memory_dir.is_none());
        assert_eq!(
            serde_json::to_string(&Request::ReopenLog { id: "x".into() }).unwrap(),
            r#"{"op":"reopen_log","id":"x"}"#
        );
    }

    #[test]
    fn attach_frames_parse_whole_or_not_at_all() {
        let f = attach::frame(attach::STDIN, b"hi");
        assert_eq!(attach::parse(&f[..4]), None);
        assert_eq!(attach::parse(&f[..6]), None);
        assert_eq!(attach::parse(&f), Some(Ok((attach::STDIN, &b"hi"[..], 7))));
        assert_eq!(attach::parse(&[1, 0xff, 0, 0, 0]), Some(Err(0xff00_0000)));
        let attach: Request = serde_json::from_str(r#"{"op":"attach","id":"c"}"#).unwrap();
        assert_eq!(attach, Request::Attach { id: "c".into() });
    }

    #[test]
    fn responses_carry_only_what_applies() {
        assert_eq!(
            serde_json::to_string(&Response::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::error("boom")).unwrap(),
            r#"{"ok":false,"error":"boom"}"#
        );
    }
}
