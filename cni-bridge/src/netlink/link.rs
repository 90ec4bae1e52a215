//! Links: bridges, veth pairs, bridge ports and their VLANs.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::NLM_F_ECHO;
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort,
    InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{CREATE_EXCL, Netlink, Result};

/// What we read back about a link.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub promisc: bool,
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, its peer's index (in the peer's namespace).
    pub link: Option<u32>,
    pub kind: Option<String>,
    pub alias: Option<String>,
    pub hairpin: Option<bool>,
    pub vlan_filtering: Option<bool>,
}

impl Link {
    /// The link in a GETLINK answer or an RTM_NEWLINK notification.
    pub fn from_answer(msg: RouteNetlinkMessage) -> Option<Link> {
        match msg {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        }
    }

    fn from_message(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            ..Link::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = a,
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Controller(m) => link.master = Some(m),
                LinkAttribute::Link(l) => link.link = Some(l),
                LinkAttribute::IfAlias(a) => link.alias = Some(a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                for p in port {
                                    if let InfoBridgePort::HairpinMode(h) = p {
                                        link.hairpin = Some(h);
                                    }
                                }
                            }
                            LinkInfo::Data(InfoData::Bridge(br)) => {
                                for b in br {
                                    if let InfoBridge::VlanFiltering(v) = b {
                                        link.vlan_filtering = Some(v);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn message(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = attributes;
    msg
}

/// A GETLINK request by name (`index` 0) or index. Counters are left out of the answer.
pub fn get_message(index: u32, name: Option<&str>) -> RouteNetlinkMessage {
    let mut attrs = vec![LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])];
    if let Some(name) = name {
        attrs.push(LinkAttribute::IfName(name.to_string()));
    }
    RouteNetlinkMessage::GetLink(message(index, attrs))
}

/// Looks a link up by name; `None` when there is no such link.
pub fn by_name(nl: &mut Netlink, name: &str) -> Result<Option<Link>> {
    match nl.get(get_message(0, Some(name))) {
        Ok(RouteNetlinkMessage::NewLink(m)) => Ok(Some(Link::from_message(m))),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks a link up by index; `None` when there is no such link.
pub fn by_index(nl: &mut Netlink, index: u32) -> Result<Option<Link>> {
    match nl.get(get_message(index, None)) {
        Ok(RouteNetlinkMessage::NewLink(m)) => Ok(Some(Link::from_message(m))),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every link of the namespace.
pub fn list(nl: &mut Netlink) -> Result<Vec<Link>> {
    Ok(nl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        })
        .collect())
}

/// Creates a bridge, up. Fails with EEXIST when the name is taken.
pub fn create_bridge(
    nl: &mut Netlink,
    name: &str,
    mtu: Option<u32>,
    vlan_filtering: bool,
    promisc: bool,
) -> Result<()> {
    let mut data = Vec::new();
    if vlan_filtering {
        data.push(InfoBridge::VlanFiltering(true));
    }
    let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
    if !data.is_empty() {
        info.push(LinkInfo::Data(InfoData::Bridge(data)));
    }
    let mut attrs = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::LinkInfo(info),
    ];
    if let Some(mtu) = mtu {
        attrs.push(LinkAttribute::Mtu(mtu));
    }
    let mut msg = message(0, attrs);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    if promisc {
        msg.header.flags |= LinkFlags::Promisc;
        msg.header.change_mask |= LinkFlags::Promisc;
    }
    nl.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL)
}

/// Turns VLAN filtering on for an existing bridge.
pub fn set_vlan_filtering(nl: &mut Netlink, index: u32) -> Result<()> {
    let info = vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])),
    ];
    nl.request(
        RouteNetlinkMessage::NewLink(message(index, vec![LinkAttribute::LinkInfo(info)])),
        0,
    )
}

/// Sets IFF_UP and, optionally, IFF_PROMISC on a link.
pub fn set_flags(nl: &mut Netlink, index: u32, up: bool, promisc: Option<bool>) -> Result<()> {
    nl.request(flags_message(index, up, promisc), 0)
}

/// The request of [`set_flags`].
pub fn flags_message(index: u32, up: bool, promisc: Option<bool>) -> RouteNetlinkMessage {
    let mut msg = message(index, vec![]);
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
    if let Some(p) = promisc {
        msg.header.change_mask |= LinkFlags::Promisc;
        if p {
            msg.header.flags |= LinkFlags::Promisc;
        }
    }
    RouteNetlinkMessage::SetLink(msg)
}

/// Sets a link's hardware address.
pub fn set_mac(nl: &mut Netlink, index: u32, mac: &[u8]) -> Result<()> {
    let msg = message(index, vec![LinkAttribute::Address(mac.to_vec())]);
    nl.request(RouteNetlinkMessage::SetLink(msg), 0)
}

/// The veth pair to create: host end in the caller's namespace, peer in `peer_netns`.
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub peer_netns: BorrowedFd<'a>,
    /// The bridge to attach the host end to, up; `None`: the host end is created down and
    /// on no bridge.
    pub master: Option<u32>,
    pub mtu: Option<u32>,
    pub peer_mac: Option<[u8; 6]>,
}

/// Creates a veth pair in one request: host end attached to `master` and up (or down and
/// unattached), peer created directly inside the pod namespace (down). Returns the host end
/// as the kernel echoes it (Linux 6.3 and later: index, MAC, peer index; not yet its master),
/// `None` on older kernels.
pub fn create_veth(nl: &mut Netlink, spec: &VethSpec<'_>) -> Result<Option<Link>> {
    // One queue each way per end. The kernel's default is one per possible CPU, each with
    // its sysfs objects to create (and later remove): on a many-core node that is most of the
    // pair's cost, and the bridge path does not use them (a veth without XDP hands packets to
    // the per-CPU backlog whatever its queue).
    let queues = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
    let mut peer_attrs = vec![
        LinkAttribute::IfName(spec.peer_name.to_string()),
        LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()),
    ];
    peer_attrs.extend(queues.clone());
    if let Some(mtu) = spec.mtu {
        peer_attrs.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer_attrs.push(LinkAttribute::Address(mac.to_vec()));
    }
    // The peer is brought up from inside the pod: asking for IFF_UP on a peer created in
    // another namespace fails with ENOTCONN on recent kernels.
    let peer = message(0, peer_attrs);

    let mut attrs = vec![
        LinkAttribute::IfName(spec.host_name.to_string()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    attrs.extend(queues);
    if let Some(mtu) = spec.mtu {
        attrs.push(LinkAttribute::Mtu(mtu));
    }
    let mut msg = message(0, attrs);
    if let Some(master) = spec.master {
        msg.attributes.push(LinkAttribute::Controller(master));
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    let answer = nl
        .batch(vec![(
            RouteNetlinkMessage::NewLink(msg),
            CREATE_EXCL | NLM_F_ECHO,
        )])?
        .pop()
        .expect("one answer per request")?;
    Ok(answer
        .into_iter()
        .filter_map(Link::from_answer)
        .find(|l| l.name == spec.host_name))
}

/// Labels a link (`index`, or `name` when `index` is 0) with `alias`, our ownership mark.
pub fn alias_message(index: u32, name: Option<&str>, alias: &str) -> RouteNetlinkMessage {
    let mut attrs = Vec::new();
    if let Some(name) = name {
        attrs.push(LinkAttribute::IfName(name.to_string()));
    }
    attrs.push(LinkAttribute::IfAlias(alias.to_string()));
    RouteNetlinkMessage::NewLink(message(index, attrs))
}

/// Labels a bridge port with an alias (our ownership mark) and sets its hairpin mode.
pub fn set_port(nl: &mut Netlink, index: u32, alias: &str, hairpin: bool) -> Result<()> {
    nl.request(port_message(index, None, alias, hairpin), 0)
}

/// The request of [`set_port`], for the link `index`, or `name` when `index` is 0.
pub fn port_message(
    index: u32,
    name: Option<&str>,
    alias: &str,
    hairpin: bool,
) -> RouteNetlinkMessage {
    let mut attrs = Vec::new();
    if let Some(name) = name {
        attrs.push(LinkAttribute::IfName(name.to_string()));
    }
    attrs.push(LinkAttribute::IfAlias(alias.to_string()));
    attrs.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            hairpin,
        )])),
    ]));
    RouteNetlinkMessage::NewLink(message(index, attrs))
}

fn vlan_message(index: u32, vid: u16, flags: BridgeVlanInfoFlags, on_self: bool) -> LinkMessage {
    let mut spec = Vec::new();
    if on_self {
        spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
    }
    spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid }));
    let mut msg = message(index, vec![LinkAttribute::AfSpecBridge(spec)]);
    msg.header.interface_family = AddressFamily::Bridge;
    msg
}

/// Makes `vid` the untagged PVID of a bridge port (or of the bridge itself with `on_self`) and
/// removes the default VLAN 1 from it.
pub fn set_access_vlan(nl: &mut Netlink, index: u32, vid: u16, on_self: bool) -> Result<()> {
    let flags = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
    nl.request(
        RouteNetlinkMessage::SetLink(vlan_message(index, vid, flags, on_self)),
        0,
    )?;
    if vid != 1 {
        let del = vlan_message(index, 1, BridgeVlanInfoFlags::empty(), on_self);
        match nl.request(RouteNetlinkMessage::DelLink(del), 0) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Deletes a link (a veth deletes its peer with it).
pub fn delete(nl: &mut Netlink, index: u32) -> Result<()> {
    nl.request(RouteNetlinkMessage::DelLink(message(index, vec![])), 0)
}
