//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{CREATE_EXCL, Netlink, Result};

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn message(index: u32, net: &IpNet) -> AddressMessage {
    let ip = net.addr();
    let mut msg = AddressMessage::default();
    msg.header.family = family(&ip);
    msg.header.prefix_len = net.prefix_len();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

/// Adds an address. IPv6 addresses skip duplicate address detection: the IPAM store already
/// guarantees uniqueness, and waiting for DAD would stall the pod for a second.
pub fn add(nl: &mut Netlink, index: u32, net: &IpNet) -> Result<()> {
    nl.request(add_message(index, net), CREATE_EXCL)
}

/// The request of [`add`] (to send with `CREATE_EXCL`).
pub fn add_message(index: u32, net: &IpNet) -> RouteNetlinkMessage {
    let mut msg = message(index, net);
    if let IpNet::V4(v4) = net {
        msg.attributes
            .push(AddressAttribute::Broadcast(v4.broadcast()));
    } else {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(msg)
}

pub fn delete(nl: &mut Netlink, index: u32, net: &IpNet) -> Result<()> {
    nl.request(RouteNetlinkMessage::DelAddress(message(index, net)), 0)
}

/// The addresses on one link (all families).
pub fn list(nl: &mut Netlink, index: u32) -> Result<Vec<IpNet>> {
    list_family(nl, index, None)
}

/// The addresses of one family (`None`: all) on one link.
pub fn list_family(nl: &mut Netlink, index: u32, v6: Option<bool>) -> Result<Vec<IpNet>> {
    let mut req = AddressMessage::default();
    req.header.index = index;
    req.header.family = match v6 {
        None => AddressFamily::Unspec,
        Some(false) => AddressFamily::Inet,
        Some(true) => AddressFamily::Inet6,
    };
    let mut out = Vec::new();
    for m in nl.dump(RouteNetlinkMessage::GetAddress(req))? {
        let RouteNetlinkMessage::NewAddress(m) = m else {
            continue;
        };
        if m.header.index != index {
            continue;
        }
        let mut ip = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(l) => ip = Some(*l),
                AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
                _ => {}
            }
        }
        if let Some(ip) = ip
            && let Ok(net) = IpNet::new(ip, m.header.prefix_len)
        {
            out.push(net);
        }
    }
    Ok(out)
}
