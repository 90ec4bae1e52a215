//! The one error type of the CNI executor.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while loading a network config or running its plugins. Every variant names
/// what was being done and to what (file, plugin, command, sandbox).
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The config directory holds no `.conflist`, `.conf` or `.json` file.
    #[error("no CNI network config (.conflist, .conf, .json) in {}", dir.display())]
    NoConfig { dir: PathBuf },

    /// A config file could not be read or is not a valid CNI network config. When several
    /// files are invalid and none is valid, this names the first of them by file name.
    #[error("invalid CNI network config {}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },

    /// A plugin named by `type` is in none of the plugin directories.
    #[error("CNI plugin {plugin:?} not found in {}", DirList(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    /// A plugin exited non-zero. `code`, `msg` and `details` come from its error JSON on stdout
    /// (`code` is 0 when it printed none); `stderr` is what it logged, truncated.
    #[error(
        "CNI plugin {plugin} {command} failed: {msg} (code {code}){}{}",
        Prefixed("; ", details),
        Prefixed("; stderr: ", stderr)
    )]
    Plugin {
        plugin: String,
        command: String,
        code: u32,
        msg: String,
        details: String,
        stderr: String,
    },

    /// A plugin did not finish in time and was killed (with its process group).
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: String,
        timeout: Duration,
    },

    /// A plugin exited 0 but its stdout is not a usable result.
    #[error("CNI plugin {plugin} {command} returned an invalid result: {reason}")]
    BadResult {
        plugin: String,
        command: String,
        reason: String,
    },

    /// A caller-supplied parameter breaks the CNI rules (container ID, interface name, CNI_ARGS
    /// values).
    #[error("invalid CNI parameter {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },

    /// ADD for a sandbox that has a completed attachment; the spec forbids a second ADD
    /// without a DEL in between.
    #[error("sandbox {sandbox_id} is already attached to CNI network {network}; DEL it first")]
    AlreadyAttached { sandbox_id: String, network: String },

    /// CHECK for a sandbox without a completed attachment.
    #[error("sandbox {sandbox_id} has no CNI network attachment")]
    NotAttached { sandbox_id: String },

    /// CHECK on a network whose cniVersion predates CHECK (0.4.0).
    #[error("CNI network {network} uses cniVersion {version}, which has no CHECK (needs 0.4.0+)")]
    CheckUnsupported { network: String, version: String },

    /// A cache record exists but cannot be used.
    #[error("CNI cache record {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },

    /// A file-system or process operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CniError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CniError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

struct DirList<'a>(&'a [PathBuf]);

impl fmt::Display for DirList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(no plugin directories)");
        }
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{}", d.display())?;
        }
        Ok(())
    }
}

/// Writes `prefix` and `text` only when `text` is not empty.
struct Prefixed<'a>(&'static str, &'a str);

impl fmt::Display for Prefixed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1.is_empty() {
            Ok(())
        } else {
            write!(f, "{}{}", self.0, self.1)
        }
    }
}
