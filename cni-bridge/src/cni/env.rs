//! The CNI_* environment of one invocation.

use std::path::PathBuf;

use super::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub fn command(var: impl Fn(&str) -> Option<String>) -> Result<Command> {
    let cmd = var("CNI_COMMAND")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::InvalidEnv("CNI_COMMAND is not set".into()))?;
    Ok(match cmd.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "VERSION" => Command::Version,
        "GC" => Command::Gc,
        "STATUS" => Command::Status,
        other => return Err(Error::InvalidEnv(format!("unknown CNI_COMMAND {other:?}"))),
    })
}

/// Reads and validates the variables `cmd` needs.
pub fn parse(cmd: Command, var: impl Fn(&str) -> Option<String>) -> Result<Env> {
    let get = |name: &str| var(name).filter(|v| !v.is_empty());
    let required = |name: &str| {
        get(name).ok_or_else(|| Error::InvalidEnv(format!("{name} is required for {cmd:?}")))
    };
    let mut env = Env::default();
    let attachment = matches!(cmd, Command::Add | Command::Del | Command::Check);
    if attachment {
        env.container_id = required("CNI_CONTAINERID")?;
        validate_container_id(&env.container_id)?;
        env.ifname = required("CNI_IFNAME")?;
        validate_ifname(&env.ifname)?;
        env.netns = match cmd {
            Command::Del => get("CNI_NETNS").map(PathBuf::from),
            _ => Some(PathBuf::from(required("CNI_NETNS")?)),
        };
        env.path = split_path(&required("CNI_PATH")?);
    } else if let Some(p) = get("CNI_PATH") {
        env.path = split_path(&p);
    }
    if let Some(args) = get("CNI_ARGS") {
        env.args = parse_args(&args)?;
    }
    Ok(env)
}

fn split_path(p: &str) -> Vec<PathBuf> {
    p.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::InvalidEnv(format!(
                "CNI_ARGS: invalid pair {pair:?}"
            ))),
        })
        .collect()
}

/// The spec: container IDs are alphanumeric, then alphanumerics, `_`, `.` and `-`.
pub fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv(format!("invalid CNI_CONTAINERID {id:?}")))
    }
}

/// Linux interface names: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv(format!("invalid CNI_IFNAME {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_are_split_into_pairs() {
        let args = parse_args("IgnoreUnknown=1;K8S_POD_NAME=a;MAC=0a:58:0a:00:00:02").unwrap();
        assert_eq!(args[2], ("MAC".into(), "0a:58:0a:00:00:02".into()));
        assert!(parse_args("novalue").is_err());
    }

    #[test]
    fn container_ids_and_ifnames_are_validated() {
        assert!(validate_container_id("abc-1.2_3").is_ok());
        assert!(validate_container_id("-abc").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a-very-long-name0").is_err());
        assert!(validate_ifname("..").is_err());
    }
}
