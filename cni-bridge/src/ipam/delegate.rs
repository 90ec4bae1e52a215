//! Any `ipam.type` other than `host-local` is run as its own plugin, by the spec: found in
//! `CNI_PATH`, given our environment (with `CNI_COMMAND` set) and the same configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cni::error::code;
use crate::cni::{Error, Result};

fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf> {
    if plugin.contains('/') {
        return Err(Error::InvalidConfig(format!(
            "invalid IPAM plugin type {plugin:?}"
        )));
    }
    path.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "IPAM plugin {plugin:?} not found in CNI_PATH {path:?}"
            ))
        })
}

/// Runs the delegate and returns its stdout JSON (`Value::Null` when it printed nothing).
pub fn run(plugin: &str, command: &str, path: &[PathBuf], config: &[u8]) -> Result<Value> {
    let bin = find(plugin, path)?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io(format!("run IPAM plugin {}", bin.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("wait for IPAM plugin {}", bin.display()), e))?;
    let parsed: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|source| Error::Decode {
            what: "IPAM plugin output",
            source,
        })?
    };
    if out.status.success() {
        return Ok(parsed);
    }
    Err(Error::Delegated {
        code: parsed
            .get("code")
            .and_then(Value::as_u64)
            .map_or(code::INTERNAL, |c| c as u32),
        msg: parsed.get("msg").and_then(Value::as_str).map_or_else(
            || format!("IPAM plugin {plugin} failed ({})", out.status),
            str::to_string,
        ),
        details: parsed
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}
