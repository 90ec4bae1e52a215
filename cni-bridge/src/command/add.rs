//! ADD: lease addresses, make sure the bridge exists, create the veth pair straight into the
//! pod, configure the pod side, masquerade, and report the spec's result.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bridge;
use crate::cni::config::{NetConf, format_mac, parse_mac};
use crate::cni::env::Env;
use crate::cni::result::{CniResult, Interface, Route};
use crate::cni::{Context, Error, Result};
use crate::ipam::{Ipam, Lease};
use crate::masq;
use crate::netlink::Netlink;
use crate::netlink::link::{self, Link, VethSpec};
use crate::netns;
use crate::pod;
use crate::veth;

pub fn add(conf: &NetConf, env: &Env, raw: &[u8]) -> Result<CniResult> {
    let netns_path = env.netns.as_ref().expect("ADD requires CNI_NETNS");
    let netns = netns::open(netns_path)
        .context(|| format!("open network namespace {}", netns_path.display()))?;
    let mac = requested_mac(conf, env)?;
    let ipam = Ipam::from_conf(conf)?;
    crate::trace::mark("parsed");

    let mut lease = ipam.add(conf, env, raw)?;
    crate::trace::mark("ipam allocated");
    let host_name = veth::host_name(&env.container_id, &env.ifname);
    let mut nl = None;
    match wire(
        conf, env, &netns, netns_path, mac, &host_name, &mut lease, &mut nl,
    ) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Undo what was done; the original error is the one reported.
            let ours = veth::alias(&conf.name, &env.container_id, &env.ifname);
            if let Some(nl) = nl.as_mut()
                && let Ok(Some(l)) = link::by_name(nl, &host_name)
                && l.alias.as_deref().is_none_or(|a| a == ours)
            {
                let _ = link::delete(nl, l.index);
            }
            if let Err(undo) = ipam.del(conf, env, raw) {
                eprintln!("cni-bridge: ADD rollback: release addresses: {undo}");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wire(
    conf: &NetConf,
    env: &Env,
    netns: &std::fs::File,
    netns_path: &std::path::Path,
    mac: Option<[u8; 6]>,
    host_name: &str,
    lease: &mut Lease,
    nl_slot: &mut Option<Netlink>,
) -> Result<CniResult> {
    let nl = nl_slot.insert(Netlink::open().context(|| "open netlink".into())?);
    let (br, created) = bridge::ensure(nl, conf)?;
    crate::trace::mark("bridge ensured");

    // Gateways: from IPAM, or the subnet's first address when IPAM gave none.
    for ip in &mut lease.ips {
        if ip.gateway.is_none() && conf.is_gateway {
            let first = crate::ipam::config::to_u128(ip.address.network()) + 1;
            ip.gateway = Some(crate::ipam::config::from_u128(
                first,
                ip.address.addr().is_ipv6(),
            ));
        }
    }
    let br_name = br.name.clone();
    if conf.is_gateway {
        let mut added = false;
        for ip in &lease.ips {
            if let Some(gw) = ip.gateway {
                let net = IpNet::new(gw, ip.address.prefix_len())
                    .map_err(|e| Error::Internal(e.to_string()))?;
                added |= bridge::ensure_gateway(nl, &br, net, conf.force_address)?;
            }
        }
        if let Some(vid) = conf.vlan() {
            link::set_access_vlan(nl, br.index, vid, true)
                .context(|| format!("set VLAN {vid} on bridge {}", br.name))?;
        }
        if created || added {
            bridge::pin_mac(nl, &br.name)?;
        }
        let gws: Vec<IpAddr> = lease.ips.iter().filter_map(|i| i.gateway).collect();
        bridge::enable_forwarding(&gws)?;
        crate::trace::mark("gateway+forwarding");
    }

    // Routes: IPAM's, plus a default route per family with isDefaultGateway.
    let mut routes = lease.routes.clone();
    if conf.is_default_gateway {
        for ip in &lease.ips {
            let Some(gw) = ip.gateway else { continue };
            let any: IpNet = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
                .parse()
                .expect("literal");
            match routes.iter_mut().find(|r| r.dst == any) {
                Some(r) if r.gw.is_some_and(|g| g != gw) => {
                    return Err(Error::InvalidConfig(format!(
                        "isDefaultGateway ineffective because IPAM sets default route via {:?}",
                        r.gw
                    )));
                }
                Some(r) => r.gw = Some(gw),
                None => routes.push(Route::new(any, Some(gw))),
            }
        }
    }

    let echoed = create_veth(nl, conf, env, netns, mac, host_name, br.index)?;
    crate::trace::mark("veth created");
    // One batch: label the port as ours, with its hairpin mode unless it is a new port's
    // default (off) (by index when the kernel echoed the new link, else by name); read the
    // host end back when it was not echoed; read the bridge again (its MAC may have followed
    // the new port's).
    let alias = veth::alias(&conf.name, &env.container_id, &env.ifname);
    let (index, name) = match &echoed {
        Some(h) => (h.index, None),
        None => (0, Some(host_name)),
    };
    let label = if conf.hairpin_mode {
        link::port_message(index, name, &alias, true)
    } else {
        link::alias_message(index, name, &alias)
    };
    let mut reqs = vec![(label, 0)];
    if echoed.is_none() {
        reqs.push((link::get_message(0, Some(host_name)), 0));
    }
    reqs.push((link::get_message(br.index, None), 0));
    let mut answers = nl
        .batch(reqs)
        .context(|| format!("configure bridge port {host_name}"))?
        .into_iter();
    let mut next = || answers.next().expect("one answer per request");
    next().context(|| format!("configure bridge port {host_name}"))?;
    let host = match echoed {
        Some(h) => h,
        None => next()
            .context(|| format!("look up {host_name}"))?
            .into_iter()
            .find_map(Link::from_answer)
            .ok_or_else(|| Error::Internal(format!("{host_name} vanished after creation")))?,
    };
    let br_mac = match next() {
        Ok(objs) => objs
            .into_iter()
            .find_map(Link::from_answer)
            .map(|b| format_mac(&b.mac))
            .unwrap_or_default(),
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(Error::netlink(format!("look up bridge {br_name}"), e)),
    };
    crate::trace::mark("port set");
    if let Some(vid) = conf.vlan() {
        link::set_access_vlan(nl, host.index, vid, false)
            .context(|| format!("set VLAN {vid} on {host_name}"))?;
    }

    // The pod side, through a socket opened in the pod's namespace (by this thread, which
    // goes back at once: no thread to start).
    let mut pod_nl = netns::with_thread_in(netns, Netlink::open)
        .context(|| format!("enter network namespace {}", netns_path.display()))?
        .context(|| "open netlink in the pod namespace".into())?;
    let pod_link = pod::configure(&mut pod_nl, &env.ifname, host.link, &lease.ips, &routes)?;
    drop(pod_nl);
    crate::trace::mark("pod configured");

    if conf.ip_masq {
        let nets: Vec<IpNet> = lease.ips.iter().map(|i| i.address).collect();
        masq::add(&conf.name, &nets)?;
    }

    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: br_name,
                mac: br_mac,
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: host.name.clone(),
                mac: format_mac(&host.mac),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: format_mac(&pod_link.mac),
                mtu: Some(pod_link.mtu),
                sandbox: Some(netns_path.display().to_string()),
            },
        ],
        ips: lease.ips.clone(),
        routes,
        dns: lease.dns.clone(),
    };
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    if let Some(dns) = &conf.dns
        && !dns.is_empty()
    {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Creates the pair; a stale host end left by an earlier ADD of the same attachment is
/// replaced, anything else with that name is left alone. Returns the host end when the kernel
/// echoed it.
fn create_veth(
    nl: &mut Netlink,
    conf: &NetConf,
    env: &Env,
    netns: &std::fs::File,
    mac: Option<[u8; 6]>,
    host_name: &str,
    master: u32,
) -> Result<Option<Link>> {
    use std::os::fd::AsFd;
    let spec = VethSpec {
        host_name,
        peer_name: &env.ifname,
        peer_netns: netns.as_fd(),
        master: Some(master),
        mtu: conf.mtu,
        peer_mac: mac,
    };
    let mut waited_for_pod = false;
    for attempt in 0..3 {
        let e = match link::create_veth(nl, &spec) {
            Ok(echoed) => return Ok(echoed),
            Err(e) => e,
        };
        if !e.is_exists() || attempt == 2 {
            return Err(Error::netlink(
                format!("create veth pair {host_name} <-> {}", env.ifname),
                e,
            ));
        }
        let ours = veth::alias(&conf.name, &env.container_id, &env.ifname);
        match link::by_name(nl, host_name).context(|| format!("look up {host_name}"))? {
            Some(l) if l.alias.as_deref().is_none_or(|a| a == ours) => {
                // Left by an earlier ADD of this attachment, or going away already (a
                // background DEL teardown).
                match link::delete(nl, l.index) {
                    Err(e) if !e.is_not_found() => {
                        return Err(Error::netlink(format!("delete stale {host_name}"), e));
                    }
                    _ => {}
                }
            }
            Some(_) => {
                return Err(Error::Internal(format!(
                    "host interface name {host_name} is taken by another attachment"
                )));
            }
            None if !waited_for_pod => {
                // The pod already has `ifname`: maybe a pair whose DEL teardown is still
                // running in the background. Give it a moment to go.
                waited_for_pod = true;
                let ifname = env.ifname.clone();
                netns::run_in(netns, move || wait_until_gone(&ifname, POD_IFNAME_GRACE))
                    .context(|| "enter the pod network namespace".into())?;
            }
            None => {
                return Err(Error::Internal(format!(
                    "container interface {} already exists in {}",
                    env.ifname,
                    env.netns
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )));
            }
        }
    }
    unreachable!("the third attempt returns")
}

/// How long ADD waits for a pod interface of the same name to finish going away.
const POD_IFNAME_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// Polls (in the current namespace) until `ifname` is gone or `grace` has passed.
fn wait_until_gone(ifname: &str, grace: std::time::Duration) {
    let Ok(mut nl) = Netlink::open() else { return };
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        match link::by_name(&mut nl, ifname) {
            Ok(Some(_)) => std::thread::sleep(std::time::Duration::from_millis(2)),
            _ => return,
        }
    }
}

/// The pod's MAC: `runtimeConfig.mac` over `args.cni.mac` over `CNI_ARGS` `MAC=` over
/// the config's `mac`.
fn requested_mac(conf: &NetConf, env: &Env) -> Result<Option<[u8; 6]>> {
    let candidates = [
        conf.runtime_config.mac.as_deref(),
        conf.cni_arg("mac").and_then(|v| v.as_str()),
        env.arg("MAC"),
        conf.mac.as_deref(),
    ];
    match candidates.into_iter().flatten().find(|m| !m.is_empty()) {
        Some(m) => parse_mac(m).map(Some),
        None => Ok(None),
    }
}
