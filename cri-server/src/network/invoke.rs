//! Running one plugin binary by the execution protocol (SPEC section 2): parameters in `CNI_*`
//! environment variables over a clean environment, configuration on stdin, result or error
//! JSON on stdout, logs on stderr, non-zero exit for failure.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CniError;

/// The most of a plugin's stderr (its last bytes) kept for an error message.
const STDERR_KEEP: usize = 2048;
/// Directories added to the plugins' PATH when the daemon's own PATH lacks them (plugins such
/// as portmap exec `iptables` from PATH).
const DEFAULT_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The per-call parameters, passed as `CNI_*` variables.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// Empty for a DEL without a namespace (the spec makes `CNI_NETNS` optional there).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub cni_path: &'a str,
}

/// Runs `plugin` and returns its stdout when it exits 0. The plugin gets its own process group,
/// killed as a whole when `timeout` passes (so a delegated IPAM plugin dies with it).
pub async fn run_plugin(
    plugin: &Path,
    inv: &Invocation<'_>,
    stdin_data: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, CniError> {
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| plugin.display().to_string());
    let command = inv.command.as_str();
    let mut cmd = tokio::process::Command::new(plugin);
    cmd.env_clear()
        .env("PATH", plugin_path_env())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // ETXTBSY: the binary is still open for writing somewhere (being installed, or a write fd
    // inherited by a child forked meanwhile); it clears within moments.
    let mut attempt = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(CniError::io("start CNI plugin", plugin, e)),
        }
    };
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();

    let started = std::time::Instant::now();
    let run = async {
        let write = async {
            if let Some(pipe) = stdin.as_mut() {
                // A plugin may exit without reading stdin; its exit status tells the outcome.
                if let Err(e) = pipe.write_all(&stdin_data).await {
                    tracing::debug!(plugin = %name, error = %e, "writing CNI plugin stdin");
                }
            }
            drop(stdin.take());
        };
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(pipe) = stdout.as_mut() {
                pipe.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(pipe) = stderr.as_mut() {
                pipe.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let ((), out, err, status) = tokio::join!(write, read_out, read_err, child.wait());
        Ok::<_, std::io::Error>((out?, err?, status?))
    };
    let (out, err, status) = match tokio::time::timeout(timeout, run).await {
        Ok(res) => res.map_err(|e| CniError::io("run CNI plugin", plugin, e))?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            tracing::warn!(plugin = %name, command, ?timeout, "CNI plugin timed out, killed");
            return Err(CniError::Timeout {
                plugin: name,
                command: command.into(),
                timeout,
            });
        }
    };
    tracing::debug!(plugin = %name, command, ?status, elapsed = ?started.elapsed(), "CNI plugin ran");
    if status.success() {
        return Ok(out);
    }
    let stderr = tail(&err);
    let (code, msg, details) = match serde_json::from_slice::<ErrorJson>(&out) {
        Ok(e) if e.code.is_some() || e.msg.is_some() => (
            e.code.map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
            e.msg.unwrap_or_else(|| format!("exited with {status}")),
            e.details.unwrap_or_default(),
        ),
        _ => (0, format!("exited with {status}"), tail(&out)),
    };
    Err(CniError::Plugin {
        plugin: name,
        command: command.into(),
        code,
        msg,
        details,
        stderr,
    })
}

/// The error result structure (SPEC section 5, "Error").
#[derive(Deserialize)]
struct ErrorJson {
    code: Option<u64>,
    msg: Option<String>,
    details: Option<String>,
}

/// The end of a plugin's output as text, trimmed to [`STDERR_KEEP`] bytes.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= STDERR_KEEP {
        return text.to_string();
    }
    let mut start = text.len() - STDERR_KEEP;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// The daemon's PATH, completed with the standard directories.
fn plugin_path_env() -> OsString {
    let own = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&own).collect();
    for d in DEFAULT_PATH {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_of_long_output() {
        assert_eq!(tail(b"  short \n"), "short");
        let long = "x".repeat(STDERR_KEEP) + "END";
        let t = tail(long.as_bytes());
        assert!(t.starts_with("...") && t.ends_with("END"));
        assert_eq!(t.len(), STDERR_KEEP + 3);
    }

    #[test]
    fn plugin_path_has_the_sbin_directories() {
        let p = plugin_path_env();
        let dirs: Vec<_> = std::env::split_paths(&p).collect();
        assert!(dirs.iter().any(|d| d == Path::new("/usr/sbin")));
    }
}
