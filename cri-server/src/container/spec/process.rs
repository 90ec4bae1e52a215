//! The process: argv by the Kubernetes command/args rules, environment, working directory.

use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

use super::SpecError;
use super::host::HostFacts;
use crate::image::RunConfig;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes rules (as containerd implements them, after Docker): `command` replaces the
/// image ENTRYPOINT and drops its CMD; `args` replace CMD; with neither, ENTRYPOINT + CMD.
/// An image ENTRYPOINT of `[""]` means "none".
pub(crate) fn args(config: &ContainerConfig, image: &RunConfig) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::invalid(
            "no command specified: neither the container config nor the image has one",
        ));
    }
    Ok(command)
}

/// containerd's order: PATH (default), TERM=xterm with a tty, HOSTNAME, then the image's
/// env, then the CRI envs; a later entry with the same key replaces an earlier one in place,
/// an entry without `=` removes the key.
pub(crate) fn env(
    config: &ContainerConfig,
    image: &RunConfig,
    sandbox: &PodSandboxConfig,
    host: &HostFacts,
) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_string()];
    if config.tty {
        env.push("TERM=xterm".to_string());
    }
    let hostname = if sandbox.hostname.is_empty() {
        host.hostname.as_str()
    } else {
        sandbox.hostname.as_str()
    };
    if !hostname.is_empty() {
        env.push(format!("HOSTNAME={hostname}"));
    }
    replace_or_append(&mut env, image.env.iter().cloned());
    replace_or_append(
        &mut env,
        config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value)),
    );
    env
}

fn replace_or_append(env: &mut Vec<String>, overrides: impl IntoIterator<Item = String>) {
    for value in overrides {
        let (key, has_value) = match value.split_once('=') {
            Some((k, _)) => (k.to_string(), true),
            None => (value.clone(), false),
        };
        let pos = env
            .iter()
            .position(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key);
        match (pos, has_value) {
            (Some(i), true) => env[i] = value,
            (None, true) => env.push(value),
            (Some(i), false) => {
                env.remove(i);
            }
            (None, false) => {}
        }
    }
}

/// `working_dir`, else the image's WORKDIR, else `/`; it must be absolute.
pub(crate) fn cwd(config: &ContainerConfig, image: &RunConfig) -> Result<PathBuf, SpecError> {
    let dir = [config.working_dir.as_str(), image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/");
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(format!(
            "working directory {dir:?} is not absolute"
        )));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> RunConfig {
        RunConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image(&["/entry"], &["cmd", "x"]);
        assert_eq!(
            args(&config(&[], &[]), &img).unwrap(),
            ["/entry", "cmd", "x"]
        );
        assert_eq!(args(&config(&["/bin/sh"], &[]), &img).unwrap(), ["/bin/sh"]);
        assert_eq!(
            args(&config(&[], &["a", "b"]), &img).unwrap(),
            ["/entry", "a", "b"]
        );
        assert_eq!(
            args(&config(&["/bin/sh", "-c"], &["echo"]), &img).unwrap(),
            ["/bin/sh", "-c", "echo"]
        );
        let no_entry = image(&[""], &["cmd"]);
        assert_eq!(args(&config(&[], &[]), &no_entry).unwrap(), ["cmd"]);
        assert!(matches!(
            args(&config(&[], &[]), &image(&[], &[])),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn env_replaces_in_place_and_removes() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string(), "C=3".to_string()];
        replace_or_append(
            &mut env,
            ["B=20", "D=4", "C", "E"].iter().map(|s| s.to_string()),
        );
        assert_eq!(env, ["A=1", "B=20", "D=4"]);
    }

    #[test]
    fn cwd_prefers_config_then_image() {
        let mut img = RunConfig::default();
        assert_eq!(
            cwd(&ContainerConfig::default(), &img).unwrap(),
            PathBuf::from("/")
        );
        img.working_dir = "/app".into();
        assert_eq!(
            cwd(&ContainerConfig::default(), &img).unwrap(),
            PathBuf::from("/app")
        );
        let c = ContainerConfig {
            working_dir: "/work".into(),
            ..Default::default()
        };
        assert_eq!(cwd(&c, &img).unwrap(), PathBuf::from("/work"));
        let c = ContainerConfig {
            working_dir: "rel".into(),
            ..Default::default()
        };
        assert!(cwd(&c, &img).is_err());
    }
}
