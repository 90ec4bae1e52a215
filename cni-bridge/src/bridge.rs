//! The host side: the bridge (created if absent), its gateway addresses, forwarding.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::cni::config::NetConf;
use crate::cni::{Context, Error, Result};
use crate::netlink::link::{self, Link};
use crate::netlink::{Netlink, addr};

/// Finds or creates the bridge and brings it to the configured state (up, promisc, VLAN
/// filtering). Concurrent ADDs may race to create it; the loser uses the winner's.
/// Returns the bridge and whether this call created it.
pub fn ensure(nl: &mut Netlink, conf: &NetConf) -> Result<(Link, bool)> {
    let name = conf.bridge_name();
    let existing = link::by_name(nl, name).context(|| format!("look up bridge {name}"))?;
    let mut created = false;
    let br = match existing {
        Some(l) => l,
        None => {
            created = true;
            match link::create_bridge(nl, name, conf.mtu, conf.vlan().is_some(), conf.promisc_mode)
            {
                Err(e) if conf.vlan().is_some() && e.errno() == Some(libc::EOPNOTSUPP) => {
                    return Err(Error::Internal(format!(
                        "create bridge {name}: this kernel has no bridge VLAN filtering \
                         (CONFIG_BRIDGE_VLAN_FILTERING), which \"vlan\" needs"
                    )));
                }
                Err(e) if !e.is_exists() => {
                    return Err(Error::netlink(format!("create bridge {name}"), e));
                }
                _ => {}
            }
            link::by_name(nl, name)
                .context(|| format!("look up bridge {name}"))?
                .ok_or_else(|| Error::Internal(format!("bridge {name} vanished after creation")))?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(Error::Internal(format!(
            "{name:?} already exists but is not a bridge"
        )));
    }
    if !br.up || (conf.promisc_mode && !br.promisc) {
        let promisc = conf.promisc_mode.then_some(true);
        link::set_flags(nl, br.index, true, promisc).context(|| format!("set bridge {name} up"))?;
    }
    if conf.vlan().is_some() && br.vlan_filtering != Some(true) {
        link::set_vlan_filtering(nl, br.index)
            .map_err(|e| Error::netlink(format!("turn on VLAN filtering on bridge {name}"), e))?;
    }
    Ok((br, created))
}

/// Puts `gw` on the bridge; returns whether it had to be added. Another address of the family (for IPv6: an overlapping one) is
/// replaced with `forceAddress` and refused without it, as the reference plugin does.
pub fn ensure_gateway(nl: &mut Netlink, br: &Link, gw: IpNet, force: bool) -> Result<bool> {
    // Only the family matters: a gateway never clashes with an address of the other one.
    let current = addr::list_family(nl, br.index, Some(gw.addr().is_ipv6()))
        .context(|| format!("list addresses of {}", br.name))?;
    for a in current {
        if a == gw {
            return Ok(false);
        }
        let same_family = a.addr().is_ipv4() == gw.addr().is_ipv4();
        let clashes = same_family
            && match (a, gw) {
                (IpNet::V4(_), _) => true,
                _ => a.contains(&gw.addr()) || gw.contains(&a.addr()),
            };
        if clashes {
            if force {
                addr::delete(nl, br.index, &a)
                    .context(|| format!("remove address {a} from {}", br.name))?;
            } else {
                return Err(Error::Internal(format!(
                    "{:?} already has an IP address different from {gw}",
                    br.name
                )));
            }
        }
    }
    match addr::add(nl, br.index, &gw) {
        Err(e) if !e.is_exists() => Err(Error::netlink(
            format!("add gateway address {gw} to {}", br.name),
            e,
        )),
        Err(_) => Ok(false),
        Ok(()) => Ok(true),
    }
}

/// Pins the bridge's MAC to its current one, so it no longer follows its lowest port's.
/// Done once, when the bridge or its gateway address is new (a set MAC stays set).
pub fn pin_mac(nl: &mut Netlink, name: &str) -> Result<Link> {
    let br = link::by_name(nl, name)
        .context(|| format!("look up bridge {name}"))?
        .ok_or_else(|| Error::Internal(format!("bridge {name} vanished")))?;
    link::set_mac(nl, br.index, &br.mac).context(|| format!("set MAC of bridge {name}"))?;
    Ok(br)
}

/// Turns on forwarding for the families used, in the caller's network namespace.
pub fn enable_forwarding(ips: &[IpAddr]) -> Result<()> {
    let mut files = Vec::new();
    if ips.iter().any(IpAddr::is_ipv4) {
        files.push("/proc/sys/net/ipv4/ip_forward");
    }
    if ips.iter().any(IpAddr::is_ipv6) {
        files.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for f in files {
        if std::fs::read_to_string(f)
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
        {
            continue;
        }
        std::fs::write(f, "1").context(|| format!("enable forwarding ({f})"))?;
    }
    Ok(())
}
