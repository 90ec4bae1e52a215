//! A real, throw-away OCI registry (`/usr/bin/docker-registry`, distribution 2.8) listening on
//! 127.0.0.1 only, with filesystem storage in a fresh temporary directory.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

/// A running registry process. Dropping it kills the process and removes its storage.
pub struct Registry {
    child: Child,
    addr: String,
    auth: Option<(String, String)>,
    // Dropped after `Drop::drop` has killed and reaped the child.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an anonymous registry.
    pub fn start() -> Result<Registry> {
        Self::start_inner(None)
    }

    /// Starts a registry that requires HTTP basic auth (htpasswd, bcrypt) for every `/v2/` call.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<Registry> {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The basic-auth credentials the registry was started with, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Root of the filesystem storage driver (contains `docker/registry/v2/...`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry process has logged so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    fn start_inner(auth: Option<(String, String)>) -> Result<Registry> {
        let dir = tempfile::Builder::new().prefix("e2e-registry-").tempdir()?;
        let auth_yaml = match &auth {
            Some((user, password)) => {
                let hash = bcrypt::hash(password, 5).context("bcrypt hash")?;
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: e2e-registry\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            // The port is released before the registry binds it; another process may grab it in
            // between, in which case the registry exits and we retry with a new port.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), &addr, &auth_yaml))?;
            let mut child = spawn(dir.path(), &config)?;
            match wait_ready(&mut child, &addr) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        addr,
                        auth,
                        dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_log(dir.path());
                    last_err = Some(e.context(format!("registry log:\n{log}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
}

fn wait_ready(child: &mut Child, addr: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited early with {status}");
        }
        if let Ok(200 | 401) = registry_status(addr, "/v2/") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("docker-registry on {addr} not ready after {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(dir: &Path, addr: &str, auth_yaml: &str) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: e2e-not-a-secret
{auth_yaml}",
        storage = dir.join("storage").display(),
    )
}

fn spawn(dir: &Path, config: &Path) -> Result<Child> {
    let log = File::create(dir.join("registry.log"))?;
    let mut cmd = Command::new(REGISTRY_BIN);
    cmd.arg("serve")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Environment variables named REGISTRY_* override the config file; make sure none leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(key);
        }
    }
    cmd.spawn()
        .with_context(|| format!("spawning {REGISTRY_BIN}"))
}

/// Minimal blocking HTTP/1.1 GET returning the status code if the responder identifies itself as
/// a distribution registry (usable inside or outside a tokio runtime, unlike `reqwest::blocking`).
fn registry_status(addr: &str, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    // Guards against a foreign process that grabbed the port we picked.
    ensure!(
        head.contains("docker-distribution-api-version: registry/2.0"),
        "not a registry on {addr}"
    );
    let code = head
        .split(' ')
        .nth(1)
        .context("malformed HTTP status line")?;
    Ok(code.trim().parse()?)
}
