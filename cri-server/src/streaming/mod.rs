//! The streaming server for Exec, Attach and PortForward: the RPCs only validate a request and
//! park it under a one-time token (`cache`); the client then connects to the returned URL over
//! HTTP and upgrades to WebSocket or SPDY/3.1 (`http`, `spdy`, `spdy_session`), and gets a
//! command's stdio (`remotecommand`, `exec`) or a TCP port inside the pod (`portforward`).

mod attach;
mod cache;
mod exec;
mod http;
mod portforward;
mod remotecommand;
pub mod spdy;
mod spdy_session;
mod tty;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::config::StreamingConfig;
use crate::container::ContainerPhase;
use crate::runtime::{Phase, Runtime};

pub use cache::{Pending, TokenCache};

/// Most requests parked at once (the kubelet's own streaming server allows as many).
pub const MAX_IN_FLIGHT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} streaming requests are waiting for their client already")]
    TooManyInFlight(usize),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A validated Exec request, as parked under its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A validated Attach request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachParams {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A validated PortForward request (`ports` may be empty: the URL's `ports` query names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardParams {
    pub sandbox_id: String,
    pub ports: Vec<u16>,
}

/// The running server: its bound address and the parked requests.
pub struct StreamingServer {
    addr: SocketAddr,
    cache: Arc<TokenCache>,
    runtime: Arc<Runtime>,
}

impl StreamingServer {
    /// Binds `config.address` and serves in the background until the process ends.
    pub async fn start(
        config: &StreamingConfig,
        runtime: Arc<Runtime>,
    ) -> Result<Arc<StreamingServer>, StreamingError> {
        let listener = tokio::net::TcpListener::bind(&config.address)
            .await
            .map_err(|source| StreamingError::Io {
                what: format!("bind streaming server to {}", config.address),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StreamingError::Io {
            what: "streaming server address".into(),
            source,
        })?;
        let cache = Arc::new(TokenCache::new(
            Duration::from_secs(config.token_ttl_secs),
            MAX_IN_FLIGHT,
        ));
        let server = Arc::new(StreamingServer {
            addr,
            cache: cache.clone(),
            runtime: runtime.clone(),
        });
        tokio::spawn(http::serve(listener, cache, runtime));
        info!(%addr, "streaming server listening");
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, kind: &str, token: &str) -> String {
        format!("http://{}/{kind}/{token}", self.addr)
    }

    /// Checks that the container runs, parks the request, and returns its URL.
    pub fn exec(&self, p: ExecParams) -> Result<String, StreamingError> {
        if p.cmd.is_empty() {
            return Err(StreamingError::InvalidArgument(
                "exec needs a command".into(),
            ));
        }
        check_streams(p.tty, p.stdin, p.stdout, p.stderr)?;
        let id = self.running_container(&p.container_id)?;
        let token = self.cache.insert(Pending::Exec(ExecParams {
            container_id: id,
            ..p
        }))?;
        Ok(self.url("exec", &token))
    }

    /// Checks that the container runs, parks the request, and returns its URL.
    pub fn attach(&self, p: AttachParams) -> Result<String, StreamingError> {
        check_streams(p.tty, p.stdin, p.stdout, p.stderr)?;
        let id = self.running_container(&p.container_id)?;
        let token = self.cache.insert(Pending::Attach(AttachParams {
            container_id: id,
            ..p
        }))?;
        Ok(self.url("attach", &token))
    }

    /// Checks that the pod is ready, parks the request, and returns its URL.
    pub fn port_forward(&self, p: PortForwardParams) -> Result<String, StreamingError> {
        let sb = self
            .runtime
            .sandbox(&p.sandbox_id)
            .ok_or_else(|| StreamingError::NotFound(format!("pod sandbox {}", p.sandbox_id)))?;
        if sb.phase != Phase::Ready {
            return Err(StreamingError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sb.id
            )));
        }
        let token = self.cache.insert(Pending::PortForward(PortForwardParams {
            sandbox_id: sb.id,
            ports: p.ports,
        }))?;
        Ok(self.url("portforward", &token))
    }

    fn running_container(&self, id: &str) -> Result<String, StreamingError> {
        let rec = self
            .runtime
            .refreshed(id)
            .ok_or_else(|| StreamingError::NotFound(format!("container {id}")))?;
        if rec.phase != ContainerPhase::Running {
            return Err(StreamingError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(rec.id)
    }
}

/// The kubelet's own rules: some stream is wanted, and a tty has no separate stderr.
fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), StreamingError> {
    if !(stdin || stdout || stderr) {
        return Err(StreamingError::InvalidArgument(
            "one of stdin, stdout or stderr must be requested".into(),
        ));
    }
    if tty && stderr {
        return Err(StreamingError::InvalidArgument(
            "tty and stderr cannot both be requested (a tty merges them)".into(),
        ));
    }
    Ok(())
}
