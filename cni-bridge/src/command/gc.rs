//! GC: release every allocation, host veth and masquerade element that belongs to no
//! attachment in `cni.dev/valid-attachments`.

use std::collections::HashSet;

use crate::cni::config::NetConf;
use crate::cni::env::Env;
use crate::cni::{Context, Error, Result};
use crate::ipam::Ipam;
use crate::masq;
use crate::netlink::{Netlink, link};
use crate::veth;

pub fn gc(conf: &NetConf, env: &Env, raw: &[u8]) -> Result<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let ipam = Ipam::from_conf(conf)?;
    ipam.gc(conf, env, raw, &valid, |remaining| {
        if conf.ip_masq {
            masq::gc(&conf.name, remaining)
        } else {
            Ok(())
        }
    })?;

    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let mut nl = Netlink::open().context(|| "open netlink".into())?;
    for l in link::list(&mut nl).context(|| "list links".into())? {
        let Some((network, id, ifname)) = l.alias.as_deref().and_then(veth::parse_alias) else {
            continue;
        };
        if network == conf.name && !valid.contains(&(id, ifname)) {
            match link::delete(&mut nl, l.index) {
                Err(e) if !e.is_not_found() => {
                    return Err(Error::netlink(format!("delete stale {}", l.name), e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
