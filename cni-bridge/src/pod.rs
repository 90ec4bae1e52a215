//! The pod side: the interface's addresses and routes (ADD, through a socket opened in the
//! pod's network namespace), reading them back for CHECK and deleting the interface (both
//! run on a thread inside that namespace).

use std::net::IpAddr;

use crate::cni::result::{IpConfig, Route};
use crate::cni::{Context, Error, Result};
use crate::netlink::link::{self, Link};
use crate::netlink::route::RouteEntry;
use crate::netlink::{CREATE_EXCL, Netlink, addr, route};

/// Brings `ifname` (already created; `index` when known) up, configures it, and returns what
/// the result reports. `nl` is a socket opened inside the pod's namespace. Everything goes to
/// the kernel in one batch, run in order: up, addresses, routes, then the link read back.
pub fn configure(
    nl: &mut Netlink,
    ifname: &str,
    index: Option<u32>,
    ips: &[IpConfig],
    routes: &[Route],
) -> Result<Link> {
    crate::trace::mark("pod socket open");
    let index = match index {
        Some(i) => i,
        None => {
            link::by_name(nl, ifname)
                .context(|| format!("look up {ifname} in the pod"))?
                .ok_or_else(|| {
                    Error::Internal(format!("{ifname} missing in the pod after creation"))
                })?
                .index
        }
    };
    let mut reqs = vec![(link::flags_message(index, true, None), 0)];
    for ip in ips {
        reqs.push((addr::add_message(index, &ip.address), CREATE_EXCL));
    }
    let mut gws = Vec::with_capacity(routes.len());
    for r in routes {
        let gw =
            r.gw.or_else(|| default_gateway(ips, r.dst.addr().is_ipv4()));
        gws.push(gw);
        let entry = RouteEntry {
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            ..RouteEntry::new(r.dst, gw, index)
        };
        reqs.push((route::add_message(&entry), CREATE_EXCL));
    }
    reqs.push((link::get_message(index, None), 0));
    let mut answers = nl
        .batch(reqs)
        .context(|| format!("configure {ifname} in the pod"))?
        .into_iter();
    let mut next = || answers.next().expect("one answer per request");
    next().context(|| format!("set {ifname} up"))?;
    for ip in ips {
        next().context(|| format!("add address {} to {ifname}", ip.address))?;
    }
    for (r, gw) in routes.iter().zip(gws) {
        match next() {
            Err(e) if !e.is_exists() => {
                return Err(Error::netlink(
                    format!("add route {} via {gw:?} on {ifname}", r.dst),
                    e,
                ));
            }
            _ => {}
        }
    }
    next()
        .context(|| format!("look up {ifname} in the pod"))?
        .into_iter()
        .find_map(Link::from_answer)
        .ok_or_else(|| Error::Internal(format!("{ifname} missing in the pod after creation")))
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
