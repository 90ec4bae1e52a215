//! Seccomp: RuntimeDefault (our embedded profile), Unconfined, or a Localhost profile file.
//!
//! Profiles are in the Docker/containerd format (`archMap`, per-rule `includes`/`excludes`
//! on capabilities, arches and kernel versions), of which the OCI format is a subset; they are
//! filtered for this host and the container's bounding set, as containerd's `setupSeccomp`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_cri::v1::LinuxContainerSecurityContext;
use k8s_cri::v1::security_profile::ProfileType;
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::SpecError;
use super::host::{HostFacts, parse_kernel_version};

/// The RuntimeDefault profile.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp_default.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    syscalls: Option<Vec<SyscallRule>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<ArgRule>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgRule {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

enum Choice {
    None,
    Default,
    Localhost(String),
}

/// The container's seccomp filter, `None` for unconfined. `caps` is its bounding set.
pub(crate) fn for_container(
    sc: Option<&LinuxContainerSecurityContext>,
    profile_root: &Path,
    caps: &Capabilities,
    host: &HostFacts,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let choice = match sc.and_then(|s| s.seccomp.as_ref()) {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Choice::Default,
            Ok(ProfileType::Unconfined) => Choice::None,
            Ok(ProfileType::Localhost) => Choice::Localhost(p.localhost_ref.clone()),
            Err(_) => {
                return Err(SpecError::invalid(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )));
            }
        },
        // The deprecated string field; empty means unconfined, as in containerd.
        #[allow(deprecated)]
        None => match sc.map(|s| s.seccomp_profile_path.as_str()).unwrap_or("") {
            "" | "unconfined" => Choice::None,
            "runtime/default" | "docker/default" => Choice::Default,
            p => match p.strip_prefix("localhost/") {
                Some(path) => Choice::Localhost(path.to_string()),
                None => {
                    return Err(SpecError::invalid(format!("unknown seccomp profile {p:?}")));
                }
            },
        },
    };
    let caps: HashSet<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    match choice {
        Choice::None => Ok(None),
        Choice::Default => {
            convert(default_profile(), &caps, host).map_err(|reason| SpecError::Seccomp {
                profile: "RuntimeDefault".into(),
                reason,
            })
        }
        Choice::Localhost(r) => {
            if r.is_empty() {
                return Err(SpecError::invalid(
                    "Localhost seccomp profile without a localhost_ref",
                ));
            }
            let path = if Path::new(&r).is_absolute() {
                PathBuf::from(&r)
            } else {
                profile_root.join(&r)
            };
            let err = |reason: String| SpecError::Seccomp {
                profile: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    err("no such file".into())
                } else {
                    err(format!("read: {e}"))
                }
            })?;
            let profile: Profile =
                serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
            convert(&profile, &caps, host).map_err(err)
        }
    }
}

fn default_profile() -> &'static Profile {
    static P: OnceLock<Profile> = OnceLock::new();
    P.get_or_init(|| {
        serde_json::from_str(DEFAULT_PROFILE_JSON).expect("embedded seccomp_default.json parses")
    })
}

/// libseccomp's name for this host's arch, as profiles' `arches` spell it.
fn native_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn scmp_arch(native: &str) -> Option<&'static str> {
    Some(match native {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        "x86" => "SCMP_ARCH_X86",
        "arm" => "SCMP_ARCH_ARM",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "loong64" => "SCMP_ARCH_LOONGARCH64",
        _ => return None,
    })
}

fn enum_value<T: DeserializeOwned>(what: &str, s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown {what} {s:?}"))
}

fn kernel_at_least(host: (u32, u32), min: &str) -> Result<bool, String> {
    let want = parse_kernel_version(min).ok_or_else(|| format!("invalid minKernel {min:?}"))?;
    Ok(host >= want)
}

/// Docker-format profile -> the OCI filter for this host and bounding set.
pub(crate) fn convert(
    p: &Profile,
    caps: &HashSet<String>,
    host: &HostFacts,
) -> Result<Option<LinuxSeccomp>, String> {
    let rules = p.syscalls.as_deref().unwrap_or_default();
    if p.default_action.is_empty() && rules.is_empty() {
        return Ok(None);
    }
    if p.default_action.is_empty() {
        return Err("no defaultAction".into());
    }
    let arch_list = p.architectures.as_deref().unwrap_or_default();
    let arch_map = p.arch_map.as_deref().unwrap_or_default();
    if !arch_list.is_empty() && !arch_map.is_empty() {
        return Err("both 'architectures' and 'archMap' are set; use one".into());
    }
    let native = native_arch(host.arch);
    let mut arches: Vec<Arch> = Vec::new();
    for a in arch_list {
        arches.push(enum_value("architecture", a)?);
    }
    if let Some(scmp) = scmp_arch(native)
        && let Some(entry) = arch_map.iter().find(|e| e.architecture == scmp)
    {
        arches.push(enum_value("architecture", &entry.architecture)?);
        for sub in entry.sub_architectures.as_deref().unwrap_or_default() {
            arches.push(enum_value("architecture", sub)?);
        }
    }

    let mut out = LinuxSeccomp::default();
    out.set_default_action(enum_value::<LinuxSeccompAction>(
        "action",
        &p.default_action,
    )?);
    out.set_default_errno_ret(p.default_errno_ret);
    out.set_architectures(if arches.is_empty() {
        None
    } else {
        Some(arches)
    });
    let flags = p
        .flags
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|f| enum_value::<LinuxSeccompFilterFlag>("flag", f))
        .collect::<Result<Vec<_>, _>>()?;
    out.set_flags(if flags.is_empty() { None } else { Some(flags) });
    out.set_listener_path(
        p.listener_path
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    );
    out.set_listener_metadata(p.listener_metadata.clone().filter(|s| !s.is_empty()));

    let mut syscalls = Vec::new();
    for rule in rules {
        let inc = rule.includes.clone().unwrap_or_default();
        let exc = rule.excludes.clone().unwrap_or_default();
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        if list(&exc.arches).iter().any(|a| a == native) {
            continue;
        }
        if list(&exc.caps).iter().any(|c| caps.contains(c)) {
            continue;
        }
        if let Some(k) = exc.min_kernel.as_deref().filter(|k| !k.is_empty())
            && kernel_at_least(host.kernel, k)?
        {
            continue;
        }
        let inc_arches = list(&inc.arches);
        if !inc_arches.is_empty() && !inc_arches.iter().any(|a| a == native) {
            continue;
        }
        if !list(&inc.caps).iter().all(|c| caps.contains(c)) {
            continue;
        }
        if let Some(k) = inc.min_kernel.as_deref().filter(|k| !k.is_empty())
            && !kernel_at_least(host.kernel, k)?
        {
            continue;
        }

        let names = match (&rule.name, &rule.names) {
            (Some(n), Some(ns)) if !n.is_empty() && !ns.is_empty() => {
                return Err("a rule sets both 'name' and 'names'; use one".into());
            }
            (Some(n), _) if !n.is_empty() => vec![n.clone()],
            (_, Some(ns)) if !ns.is_empty() => ns.clone(),
            _ => continue,
        };
        let args = rule
            .args
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let mut b = LinuxSeccompArgBuilder::default()
                    .index(a.index)
                    .value(a.value)
                    .op(enum_value::<LinuxSeccompOperator>("operator", &a.op)?);
                if a.value_two != 0 {
                    b = b.value_two(a.value_two);
                }
                b.build().map_err(|e| format!("syscall argument: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut s = LinuxSyscall::default();
        s.set_names(names);
        s.set_action(enum_value::<LinuxSeccompAction>("action", &rule.action)?);
        s.set_errno_ret(rule.errno_ret);
        s.set_args(if args.is_empty() { None } else { Some(args) });
        syscalls.push(s);
    }
    out.set_syscalls(Some(syscalls));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    pub(crate) fn fake_host(arch: &'static str) -> HostFacts {
        HostFacts {
            cgroup_unified: false,
            swap_available: true,
            hugetlb_available: true,
            current_caps: vec![],
            kernel: (6, 1),
            arch,
            oom_score_adj: 0,
            hostname: "node".into(),
        }
    }

    fn caps(names: &[Capability]) -> HashSet<String> {
        names.iter().map(|c| format!("CAP_{c}")).collect()
    }

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        s.syscalls().as_ref().unwrap().iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().is_none()
                && r.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn default_profile_is_an_allowlist_for_x86_64() {
        let s = convert(
            default_profile(),
            &caps(&[Capability::Chown]),
            &fake_host("x86_64"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().as_deref().unwrap(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        for name in ["read", "write", "execve", "openat", "arch_prctl", "ptrace"] {
            assert!(allowed(&s, name), "{name} allowed");
        }
        // Needs CAP_SYS_ADMIN / other arches.
        for name in ["mount", "unshare", "setns", "set_tls", "reboot"] {
            assert!(!allowed(&s, name), "{name} not allowed");
        }
        // clone only without namespace flags, clone3 answers ENOSYS.
        let clone3 = s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.names() == &["clone3"])
            .unwrap();
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));
    }

    #[test]
    fn capabilities_and_arches_change_the_filter() {
        let s = convert(
            default_profile(),
            &caps(&[Capability::SysAdmin]),
            &fake_host("aarch64"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.architectures().as_deref().unwrap(),
            [Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        assert!(allowed(&s, "mount"));
        assert!(allowed(&s, "clone3"));
        assert!(allowed(&s, "set_tls"));
        assert!(!allowed(&s, "arch_prctl"));
        assert!(!s.syscalls().as_ref().unwrap().iter().any(|r| r.names() == &["clone3"]
            && r.action() == LinuxSeccompAction::ScmpActErrno));
        // Old kernels lose the minKernel rule.
        let mut old = fake_host("x86_64");
        old.kernel = (4, 4);
        let s = convert(default_profile(), &caps(&[]), &old)
            .unwrap()
            .unwrap();
        assert!(!allowed(&s, "ptrace"));
    }

    #[test]
    fn oci_format_profiles_convert() {
        let p: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
                "args":[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        )
        .unwrap();
        let s = convert(&p, &caps(&[]), &fake_host("x86_64"))
            .unwrap()
            .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActLog);
        let r = &s.syscalls().as_ref().unwrap()[0];
        assert_eq!(r.errno_ret(), Some(1));
        let a = r.args().as_ref().unwrap()[0];
        assert_eq!((a.index(), a.value(), a.value_two()), (0, 1, Some(2)));
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);

        let empty: Profile = serde_json::from_str("{}").unwrap();
        assert!(
            convert(&empty, &caps(&[]), &fake_host("x86_64"))
                .unwrap()
                .is_none()
        );
        let bad: Profile = serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#).unwrap();
        assert!(convert(&bad, &caps(&[]), &fake_host("x86_64")).is_err());
    }
}
