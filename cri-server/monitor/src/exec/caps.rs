//! Capabilities by name, and setting a process's sets as runc does.

/// The highest capability number this table knows (CAP_CHECKPOINT_RESTORE).
pub const LAST_CAP: u64 = 40;

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of capability names as a bit mask. Unknown names are an error (runc only warns, but
/// then runc's process would differ from ours).
pub fn mask(names: &[String]) -> Result<u64, String> {
    let mut m = 0u64;
    for n in names {
        let i = NAMES
            .iter()
            .position(|c| c == n)
            .ok_or_else(|| format!("unknown capability {n}"))?;
        m |= 1 << i;
    }
    Ok(m)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// Sets effective, permitted and inheritable (capset), then the ambient set.
pub fn apply(s: &Sets) -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let word = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data = [0, 1].map(|i| Data {
        effective: word(s.effective, i),
        permitted: word(s.permitted, i),
        inheritable: word(s.inheritable, i),
    });
    // SAFETY: capset with a v3 header and two data words that outlive the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } != 0 {
        return Err(format!(
            "set capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: prctl on our own ambient set.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    for cap in 0..=LAST_CAP {
        if s.ambient & (1 << cap) != 0 {
            // SAFETY: as above. runc ignores failures here too (the cap may be missing from
            // the inheritable or permitted set).
            unsafe {
                libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_numbers() {
        assert_eq!(mask(&["CAP_CHOWN".into()]).unwrap(), 1);
        assert_eq!(mask(&["CAP_SYS_ADMIN".into()]).unwrap(), 1 << 21);
        assert_eq!(mask(&["CAP_CHECKPOINT_RESTORE".into()]).unwrap(), 1 << 40);
        assert!(mask(&["CAP_NOPE".into()]).is_err());
    }
}
