//! One file per CNI command; `run` parses the invocation and dispatches.

mod add;
mod check;
mod del;
mod gc;
mod status;
mod version;

use serde_json::Value;

use crate::cni::Result;
use crate::cni::config::NetConf;
use crate::cni::env::{self, Command};
use crate::cni::version::LATEST;

/// What a run prints: the result JSON or nothing; on error, the version to answer in.
pub struct Outcome {
    pub cni_version: String,
    pub output: Result<Option<Value>>,
}

/// Runs one invocation: `var` reads the environment, `stdin` is the configuration.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let mut cni_version = LATEST.to_string();
    let output = dispatch(&var, stdin, &mut cni_version);
    Outcome {
        cni_version,
        output,
    }
}

fn dispatch(
    var: &impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    cni_version: &mut String,
) -> Result<Option<Value>> {
    let cmd = env::command(var)?;
    if cmd == Command::Version {
        let requested: Option<String> = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        return Ok(Some(version::version(requested.as_deref())));
    }
    let env = env::parse(cmd, var)?;
    let (mut conf, _raw) = NetConf::parse(stdin)?;
    if crate::cni::version::SUPPORTED.contains(&conf.cni_version.as_str()) {
        *cni_version = conf.cni_version.clone();
    }
    conf.validate()?;
    match cmd {
        Command::Add => Ok(Some(
            add::add(&conf, &env, stdin)?.to_json(&conf.cni_version),
        )),
        Command::Del => del::del(&conf, &env, stdin).map(|_| None),
        Command::Check => check::check(&conf, &env, stdin).map(|_| None),
        Command::Gc => gc::gc(&conf, &env, stdin).map(|_| None),
        Command::Status => status::status(&conf, &env, stdin).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}
