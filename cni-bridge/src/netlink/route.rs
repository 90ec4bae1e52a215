//! Routes in the main table.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{CREATE_EXCL, Netlink, Result};

/// A route as we set and read it: destination, optional gateway, device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
}

impl RouteEntry {
    pub fn new(dst: IpNet, gw: Option<IpAddr>, oif: u32) -> Self {
        RouteEntry {
            dst,
            gw,
            oif: Some(oif),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
        }
    }
}

fn family(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

/// Adds a route; a gatewayless route is link-scoped.
pub fn add(nl: &mut Netlink, r: &RouteEntry) -> Result<()> {
    nl.request(add_message(r), CREATE_EXCL)
}

/// The request of [`add`] (to send with `CREATE_EXCL`).
pub fn add_message(r: &RouteEntry) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(&r.dst);
    msg.header.destination_prefix_length = r.dst.prefix_len();
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if r.gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    match r.table {
        Some(t) if t < 256 => msg.header.table = t as u8,
        Some(t) => {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
            msg.attributes.push(RouteAttribute::Table(t));
        }
        None => msg.header.table = RouteHeader::RT_TABLE_MAIN,
    }
    if r.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
    }
    if let Some(gw) = r.gw {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = r.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        msg.attributes.push(RouteAttribute::Priority(p));
    }
    let mut metrics = Vec::new();
    if let Some(m) = r.mtu {
        metrics.push(RouteMetric::Mtu(m));
    }
    if let Some(m) = r.advmss {
        metrics.push(RouteMetric::Advmss(m));
    }
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    RouteNetlinkMessage::NewRoute(msg)
}

/// The main-table unicast routes of one family.
pub fn list(nl: &mut Netlink, v6: bool) -> Result<Vec<RouteEntry>> {
    let mut req = RouteMessage::default();
    req.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let mut out = Vec::new();
    for m in nl.dump(RouteNetlinkMessage::GetRoute(req))? {
        let RouteNetlinkMessage::NewRoute(m) = m else {
            continue;
        };
        if m.header.kind != RouteType::Unicast {
            continue;
        }
        let mut dst = None;
        let mut gw = None;
        let mut oif = None;
        let mut table = m.header.table as u32;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dst = to_ip(d),
                RouteAttribute::Gateway(g) => gw = to_ip(g),
                RouteAttribute::Oif(o) => oif = Some(*o),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        if table != RouteHeader::RT_TABLE_MAIN as u32 {
            continue;
        }
        let dst = dst.unwrap_or(if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        });
        if let Ok(dst) = IpNet::new(dst, m.header.destination_prefix_length) {
            out.push(RouteEntry {
                gw,
                oif,
                ..RouteEntry::new(dst, None, 0)
            });
        }
    }
    Ok(out)
}

fn to_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
