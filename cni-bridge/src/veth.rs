//! Host-side veth names and the ownership mark we put on them.
//!
//! The host end's name is derived from the attachment (container ID + ifname), so DEL finds
//! it without the pod's namespace; its alias `cni-bridge/<network>/<id>/<ifname>` marks it
//! as ours, so a name collision is never mistaken for our link and GC can find stale ones.

/// FNV-1a 64, printed as `len` hex digits.
pub fn short_hash(data: &[u8], len: usize) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let hex = format!("{h:016x}");
    hex[..len.min(16)].to_string()
}

/// `veth` + 11 hex digits: 15 bytes, the kernel's limit.
pub fn host_name(container_id: &str, ifname: &str) -> String {
    let mut key = container_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(ifname.as_bytes());
    format!("veth{}", short_hash(&key, 11))
}

pub const ALIAS_PREFIX: &str = "cni-bridge/";

pub fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{container_id}/{ifname}")
}

/// Splits an alias of ours into (network, container ID, ifname).
pub fn parse_alias(alias: &str) -> Option<(&str, &str, &str)> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_unique_and_short() {
        let a = host_name("abc", "eth0");
        assert_eq!(a, host_name("abc", "eth0"));
        assert_ne!(a, host_name("abc", "eth1"));
        assert_eq!(a.len(), 15);
    }

    #[test]
    fn aliases_round_trip() {
        let a = alias("net", "c1", "eth0");
        assert_eq!(parse_alias(&a), Some(("net", "c1", "eth0")));
        assert_eq!(parse_alias("something else"), None);
    }
}
