//! The part of the container's OCI config.json an exec'd process takes on, checked and turned
//! into what the child needs (compiled seccomp filter, capability masks, C strings) before we
//! enter the container.

use std::ffi::CString;
use std::path::Path;

use serde::Deserialize;

use super::caps::{self, Sets};
use super::seccomp::{self, Filter, Profile};

#[derive(Debug, Deserialize)]
pub struct Spec {
    #[serde(default)]
    pub process: Process,
    #[serde(default)]
    pub linux: Linux,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    #[serde(default)]
    pub selinux_label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub umask: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub typ: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Linux {
    #[serde(default)]
    pub seccomp: Option<Profile>,
}

/// Everything the child applies, ready before it forks.
pub struct Prepared {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub caps: Sets,
    pub no_new_privileges: bool,
    pub rlimits: Vec<(i32, u64, u64)>,
    pub cwd: String,
    pub env: Vec<CString>,
    /// The container's PATH (runc's default when env has none).
    pub env_path: String,
    pub seccomp: Option<Filter>,
}

fn rlimit(name: &str) -> Result<i32, String> {
    Ok(match name {
        "RLIMIT_CPU" => 0,
        "RLIMIT_FSIZE" => 1,
        "RLIMIT_DATA" => 2,
        "RLIMIT_STACK" => 3,
        "RLIMIT_CORE" => 4,
        "RLIMIT_RSS" => 5,
        "RLIMIT_NPROC" => 6,
        "RLIMIT_NOFILE" => 7,
        "RLIMIT_MEMLOCK" => 8,
        "RLIMIT_AS" => 9,
        "RLIMIT_LOCKS" => 10,
        "RLIMIT_SIGPENDING" => 11,
        "RLIMIT_MSGQUEUE" => 12,
        "RLIMIT_NICE" => 13,
        "RLIMIT_RTPRIO" => 14,
        "RLIMIT_RTTIME" => 15,
        other => return Err(format!("unknown rlimit {other}")),
    })
}

impl Spec {
    pub fn read(path: &Path) -> Result<Spec, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))
    }

    /// Checks that we reproduce every setting (no AppArmor or SELinux label, a umask only if
    /// the default) and prepares them.
    pub fn prepare(&self) -> Result<Prepared, String> {
        let p = &self.process;
        if p.apparmor_profile.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err("AppArmor profiles are applied by the OCI runtime only".into());
        }
        if p.selinux_label.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err("SELinux labels are applied by the OCI runtime only".into());
        }
        if p.user.umask.is_some_and(|u| u != 0o022) {
            return Err("a umask other than 022 is applied by the OCI runtime only".into());
        }
        let c = p.capabilities.as_ref();
        let set = |f: fn(&Capabilities) -> &Vec<String>| -> Result<u64, String> {
            c.map(|c| caps::mask(f(c))).unwrap_or(Ok(0))
        };
        let caps = Sets {
            bounding: set(|c| &c.bounding)?,
            effective: set(|c| &c.effective)?,
            permitted: set(|c| &c.permitted)?,
            inheritable: set(|c| &c.inheritable)?,
            ambient: set(|c| &c.ambient)?,
        };
        let env = p
            .env
            .iter()
            .map(|e| CString::new(e.as_str()).map_err(|_| "NUL in env".to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let env_path = p
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_string();
        let rlimits = p
            .rlimits
            .iter()
            .map(|r| rlimit(&r.typ).map(|t| (t, r.soft, r.hard)))
            .collect::<Result<Vec<_>, _>>()?;
        let seccomp = match &self.linux.seccomp {
            Some(profile) => Some(seccomp::compile(profile)?),
            None => None,
        };
        Ok(Prepared {
            uid: p.user.uid,
            gid: p.user.gid,
            additional_gids: p.user.additional_gids.clone(),
            caps,
            no_new_privileges: p.no_new_privileges,
            rlimits,
            cwd: if p.cwd.is_empty() {
                "/".into()
            } else {
                p.cwd.clone()
            },
            env,
            env_path,
            seccomp,
        })
    }
}
