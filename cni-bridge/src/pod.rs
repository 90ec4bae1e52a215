//! The pod side, run on a thread inside the pod's network namespace: the interface's
//! addresses and routes, and reading them back for CHECK.

use std::net::IpAddr;

use crate::cni::result::{IpConfig, Route};
use crate::cni::{Context, Error, Result};
use crate::netlink::link::{self, Link};
use crate::netlink::route::RouteEntry;
use crate::netlink::{Netlink, addr, route};

/// Brings `ifname` (already created) up, configures it, and returns what the result reports.
pub fn configure(ifname: &str, ips: &[IpConfig], routes: &[Route]) -> Result<Link> {
    let mut nl = Netlink::open().context(|| "open netlink in the pod namespace".into())?;
    let link = link::by_name(&mut nl, ifname)
        .context(|| format!("look up {ifname} in the pod"))?
        .ok_or_else(|| Error::Internal(format!("{ifname} missing in the pod after creation")))?;
    link::set_flags(&mut nl, link.index, true, None).context(|| format!("set {ifname} up"))?;
    for ip in ips {
        addr::add(&mut nl, link.index, &ip.address)
            .context(|| format!("add address {} to {ifname}", ip.address))?;
    }
    for r in routes {
        let gw =
            r.gw.or_else(|| default_gateway(ips, r.dst.addr().is_ipv4()));
        let entry = RouteEntry {
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            ..RouteEntry::new(r.dst, gw, link.index)
        };
        match route::add(&mut nl, &entry) {
            Err(e) if !e.is_exists() => {
                return Err(Error::netlink(
                    format!("add route {} via {gw:?} on {ifname}", r.dst),
                    e,
                ));
            }
            _ => {}
        }
    }
    Ok(link)
}

fn default_gateway(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|i| i.address.addr().is_ipv4() == v4)
        .find_map(|i| i.gateway)
}

/// Deletes `ifname` in the current namespace; absent is fine.
pub fn delete_interface(ifname: &str) -> Result<()> {
    let mut nl = Netlink::open().context(|| "open netlink in the pod namespace".into())?;
    if let Some(l) = link::by_name(&mut nl, ifname).context(|| format!("look up {ifname}"))? {
        match link::delete(&mut nl, l.index) {
            Err(e) if !e.is_not_found() => {
                return Err(Error::netlink(format!("delete {ifname}"), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// CHECK inside the pod: the interface, its MAC, addresses and routes are as reported.
pub fn check(ifname: &str, mac: &str, ips: &[IpConfig], routes: &[Route]) -> Result<()> {
    let mut nl = Netlink::open().context(|| "open netlink in the pod namespace".into())?;
    let link = link::by_name(&mut nl, ifname)
        .context(|| format!("look up {ifname}"))?
        .ok_or_else(|| Error::Check(format!("interface {ifname} not found in the pod")))?;
    let actual_mac = crate::cni::config::format_mac(&link.mac);
    if !mac.is_empty() && !mac.eq_ignore_ascii_case(&actual_mac) {
        return Err(Error::Check(format!(
            "{ifname} has MAC {actual_mac}, expected {mac}"
        )));
    }
    let addrs =
        addr::list(&mut nl, link.index).context(|| format!("list addresses of {ifname}"))?;
    for ip in ips {
        if !addrs.contains(&ip.address) {
            return Err(Error::Check(format!(
                "{ifname} lacks address {}",
                ip.address
            )));
        }
    }
    for r in routes {
        let v6 = r.dst.addr().is_ipv6();
        let present = route::list(&mut nl, v6)
            .context(|| "list routes".into())?
            .iter()
            .any(|e| e.dst == r.dst && (r.gw.is_none() || e.gw == r.gw));
        if !present {
            return Err(Error::Check(format!(
                "route {} via {:?} missing in the pod",
                r.dst, r.gw
            )));
        }
    }
    Ok(())
}
