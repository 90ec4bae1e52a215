//! DEL: release the addresses, remove the veth pair and the masquerade element. Succeeds
//! when the namespace or interface is already gone, and when repeated.

use std::net::IpAddr;

use crate::cni::config::NetConf;
use crate::cni::env::Env;
use crate::cni::result::CniResult;
use crate::cni::{Context, Error, Result};
use crate::ipam::Ipam;
use crate::masq;
use crate::netlink::{Netlink, link};
use crate::netns;
use crate::pod;
use crate::veth;

fn delete_link(nl: &mut Netlink, index: u32, name: &str) -> Result<()> {
    match link::delete(nl, index) {
        Err(e) if !e.is_not_found() => Err(Error::netlink(format!("delete {name}"), e)),
        _ => Ok(()),
    }
}

/// Runs `work` in a forked child detached from the runtime's pipes, so DEL returns without
/// waiting for the kernel's teardown (unregistering a net device and freeing a set element
/// each wait for RCU, 10-20 ms). `Err` when the fork failed and nothing ran.
fn in_background(work: impl FnOnce()) -> std::result::Result<(), ()> {
    use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};
    // SAFETY: DEL runs single-threaded (no helper thread exists on this path), so the child
    // may allocate and make syscalls freely.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = dup2_stdin(&null);
                let _ = dup2_stdout(&null);
                let _ = dup2_stderr(&null);
            }
            let _ = setsid();
            work();
            // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to the parent.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { .. }) => Ok(()),
        Err(_) => Err(()),
    }
}

pub fn del(conf: &NetConf, env: &Env, raw: &[u8]) -> Result<()> {
    let ipam = Ipam::from_conf(conf)?;
    let mut freed = ipam.del(conf, env, raw)?;
    crate::trace::mark("ipam released");
    // Masquerade entries to drop: the freed addresses, and prevResult's for delegated IPAM.
    let mut masq_ips = Vec::new();
    if conf.ip_masq {
        if let Some(prev) = &conf.prev_result
            && let Ok(prev) = CniResult::from_json(prev)
        {
            for ip in prev.ips {
                let ip: IpAddr = ip.address.addr();
                if !freed.contains(&ip) {
                    freed.push(ip);
                }
            }
        }
        masq_ips = freed;
    }
    let unmasquerade = || masq::del(&conf.name, &masq_ips);

    let mut nl = Netlink::open().context(|| "open netlink".into())?;
    let host_name = veth::host_name(&env.container_id, &env.ifname);
    let ours = veth::alias(&conf.name, &env.container_id, &env.ifname);
    let host = link::by_name(&mut nl, &host_name).context(|| format!("look up {host_name}"))?;
    match host {
        Some(l) if !conf.sync_link_delete && l.alias.as_deref().is_none_or(|a| a == ours) => {
            // Down first: the bridge stops forwarding to and from the pod at once; what
            // remains (the masquerade entry, the veth pair) waits on RCU grace periods in
            // the kernel and is finished by a detached child.
            link::set_flags(&mut nl, l.index, false, None)
                .context(|| format!("set {host_name} down"))?;
            crate::trace::mark("host end down");
            return in_background(|| {
                let _ = unmasquerade();
                let _ = link::delete(&mut nl, l.index);
            })
            .or_else(|()| {
                unmasquerade()?;
                delete_link(&mut nl, l.index, &host_name)
            });
        }
        Some(l) if l.alias.as_deref().is_none_or(|a| a == ours) => {
            delete_link(&mut nl, l.index, &host_name)?;
        }
        _ => {
            // Not found on the host (or not ours): remove the pod end if the pod still exists.
            if let Some(path) = &env.netns
                && let Ok(ns) = netns::open(path)
            {
                let ifname = env.ifname.clone();
                // A path that is no longer a network namespace cannot hold our interface.
                if let Ok(r) = netns::run_in(&ns, move || pod::delete_interface(&ifname)) {
                    r?;
                }
            }
        }
    }
    unmasquerade()
}
