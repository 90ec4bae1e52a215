//! Capabilities: containerd's default set, then the security context's add/drop.

use std::str::FromStr;

use k8s_cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use tracing::warn;

use super::SpecError;

/// containerd's CRI default (the Docker set); CRI-O's default drops MKNOD, NET_RAW, SETFCAP,
/// SYS_CHROOT and AUDIT_WRITE from it.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Capability names by bit number (linux/capability.h).
const BY_BIT: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities set in a `/proc/<pid>/status` style mask (bits we know of).
pub(crate) fn from_mask(mask: u64) -> Vec<Capability> {
    BY_BIT
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// "NET_ADMIN", "net_admin", "CAP_NET_ADMIN" -> `Capability::NetAdmin`.
pub(crate) fn parse(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map_err(|_| SpecError::invalid(format!("unknown capability {name:?}")))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// containerd's order: add ALL (every capability this host can grant), drop ALL, then the
/// individual adds, then the individual drops; so `add: [ALL], drop: [CHOWN]` is everything
/// but CHOWN, and `drop: [ALL], add: [NET_ADMIN]` is NET_ADMIN alone.
pub(crate) fn container_caps(
    sc: Option<&LinuxContainerSecurityContext>,
    all: &[Capability],
) -> Result<Capabilities, SpecError> {
    let mut caps: Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(caps);
    };
    if c.add_capabilities.iter().any(|n| is_all(n)) {
        caps.extend(all.iter().copied());
    }
    if c.drop_capabilities.iter().any(|n| is_all(n)) {
        caps.clear();
    }
    for name in c.add_capabilities.iter().filter(|n| !is_all(n)) {
        caps.insert(parse(name)?);
    }
    for name in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
        caps.remove(&parse(name)?);
    }
    if !c.add_ambient_capabilities.is_empty() {
        // containerd clears the ambient set too (kubernetes/kubernetes#56374).
        warn!(caps = ?c.add_ambient_capabilities, "ignoring ambient capabilities");
    }
    Ok(caps)
}

/// Bounding, permitted and effective get the set; inheritable and ambient stay empty
/// (containerd clears ambient, and nobody sets inheritable since CVE-2022-24769).
pub(crate) fn to_oci(caps: &Capabilities) -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_permitted(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_prefix() {
        assert_eq!(parse("NET_ADMIN").unwrap(), Capability::NetAdmin);
        assert_eq!(parse("cap_net_admin").unwrap(), Capability::NetAdmin);
        assert_eq!(parse("CAP_SYS_ADMIN").unwrap(), Capability::SysAdmin);
        assert!(matches!(parse("FLY"), Err(SpecError::InvalidArgument(_))));
    }

    #[test]
    fn mask_bits_map_to_names() {
        assert_eq!(from_mask(0b1), vec![Capability::Chown]);
        assert_eq!(from_mask(1 << 21), vec![Capability::SysAdmin]);
        assert_eq!(from_mask(u64::MAX).len(), 41);
        // CapEff of a root shell on a host whose bounding set lacks SYS_RESOURCE.
        let caps = from_mask(0x000001fffeffffff);
        assert!(!caps.contains(&Capability::SysResource));
        assert!(caps.contains(&Capability::CheckpointRestore));
    }
}
