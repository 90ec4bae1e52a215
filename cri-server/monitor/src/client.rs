//! A tiny blocking client for the monitor socket: one request line out, one response line in.
//!
//! ```no_run
//! # fn demo(req: cri_monitor::protocol::CreateRequest) -> Result<(), cri_monitor::client::Error> {
//! let pid = cri_monitor::client::Client::connect("/run/pod/monitor.sock")?.create(req)?;
//! # let _ = pid; Ok(()) }
//! ```

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{ContainerInfo, CreateRequest, Request, Response};

/// How long a call waits for the monitor by default (a `create` runs the OCI runtime).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to a monitor.
#[derive(Debug)]
pub enum Error {
    /// Could not connect to the socket.
    Connect { path: PathBuf, source: io::Error },
    /// The connection failed while sending or receiving (includes time-outs).
    Io { op: &'static str, source: io::Error },
    /// The monitor closed the connection or answered something that is not a response.
    Protocol { op: &'static str, detail: String },
    /// The monitor answered `{"ok":false,"error":...}`.
    Monitor { op: &'static str, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { path, source } => {
                write!(f, "connect to monitor at {}: {source}", path.display())
            }
            Error::Io { op, source } => write!(f, "monitor {op}: {source}"),
            Error::Protocol { op, detail } => write!(f, "monitor {op}: bad answer: {detail}"),
            Error::Monitor { op, message } => write!(f, "monitor {op}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One connection to a monitor; several requests may be sent on it in turn.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    line: String,
}

impl Client {
    /// Connects to `DIR/monitor.sock` (paths beyond the 107-byte `sun_path` limit work too).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let path = path.as_ref();
        let stream = crate::sockpath::connect(path).map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let client = Client {
            reader: BufReader::new(stream),
            line: String::new(),
        };
        client
            .set_timeout(Some(DEFAULT_TIMEOUT))
            .map_err(|source| Error::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(client)
    }

    /// Sets the read and write time-out of the connection (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)
    }

    /// Sends one request and returns the monitor's response as is (`ok` may be false).
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        let op = op_name(request);
        let mut line = serde_json::to_vec(request).map_err(|e| Error::Protocol {
            op,
            detail: e.to_string(),
        })?;
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(|source| Error::Io { op, source })?;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|source| Error::Io { op, source })?;
        if n == 0 {
            return Err(Error::Protocol {
                op,
                detail: "connection closed before the answer".into(),
            });
        }
        serde_json::from_str(self.line.trim_end()).map_err(|e| Error::Protocol {
            op,
            detail: format!("{e}: {:?}", self.line.trim_end()),
        })
    }

    fn call_ok(&mut self, request: &Request) -> Result<Response> {
        let response = self.call(request)?;
        if response.ok {
            Ok(response)
        } else {
            Err(Error::Monitor {
                op: op_name(request),
                message: response
                    .error
                    .unwrap_or_else(|| "failed without a message".into()),
            })
        }
    }

    /// Creates a container (runs `<runtime> create`); returns the init pid.
    pub fn create(&mut self, request: CreateRequest) -> Result<i32> {
        let response = self.call_ok(&Request::Create(request))?;
        response.pid.ok_or_else(|| Error::Protocol {
            op: "create",
            detail: "answer has no pid".into(),
        })
    }

    /// Makes the monitor reopen the container's log file (after the kubelet rotated it).
    pub fn reopen_log(&mut self, id: &str) -> Result<()> {
        self.call_ok(&Request::ReopenLog { id: id.into() })
            .map(drop)
    }

    /// Lists the containers the monitor knows.
    pub fn list(&mut self) -> Result<Vec<ContainerInfo>> {
        Ok(self.call_ok(&Request::List)?.containers.unwrap_or_default())
    }

    /// Makes the monitor forget a container (ok if unknown).
    pub fn forget(&mut self, id: &str) -> Result<()> {
        self.call_ok(&Request::Forget { id: id.into() }).map(drop)
    }

    /// Attaches to a running container: returns whether it has a tty, the connection, which
    /// from now on carries [`crate::protocol::attach`] frames, and the frame bytes already
    /// read behind the answer.
    pub fn attach(mut self, id: &str) -> Result<(bool, UnixStream, Vec<u8>)> {
        let r = self.call_ok(&Request::Attach { id: id.into() })?;
        let early = self.reader.buffer().to_vec();
        Ok((r.tty.unwrap_or(false), self.reader.into_inner(), early))
    }

    /// Asks the monitor to flush its logs and exit.
    pub fn shutdown(&mut self) -> Result<()> {
        self.call_ok(&Request::Shutdown).map(drop)
    }
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Create(_) => "create",
        Request::ReopenLog { .. } => "reopen_log",
        Request::List => "list",
        Request::Forget { .. } => "forget",
        Request::Shutdown => "shutdown",
        Request::Attach { .. } => "attach",
    }
}
