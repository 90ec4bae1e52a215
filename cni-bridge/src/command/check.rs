//! CHECK: the previous result still matches the store and the kernel.

use crate::cni::config::NetConf;
use crate::cni::env::Env;
use crate::cni::result::CniResult;
use crate::cni::{Context, Error, Result, version};
use crate::ipam::Ipam;
use crate::netlink::{Netlink, link};
use crate::netns;
use crate::pod;
use crate::veth;

pub fn check(conf: &NetConf, env: &Env, raw: &[u8]) -> Result<()> {
    if !version::at_least(&conf.cni_version, "0.4.0") {
        return Err(Error::IncompatibleVersion(format!(
            "{}: CHECK needs 0.4.0 or later",
            conf.cni_version
        )));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("required prevResult missing".into()))?;
    let prev = CniResult::from_json(prev)?;
    let ipam = Ipam::from_conf(conf)?;
    let ips: Vec<_> = prev.ips.iter().map(|i| i.address.addr()).collect();
    ipam.check(conf, env, raw, &ips)?;

    let mut nl = Netlink::open().context(|| "open netlink".into())?;
    let br_name = conf.bridge_name();
    let br = link::by_name(&mut nl, br_name)
        .context(|| format!("look up bridge {br_name}"))?
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .ok_or_else(|| Error::Check(format!("bridge {br_name} not found")))?;
    let host_name = veth::host_name(&env.container_id, &env.ifname);
    let host = link::by_name(&mut nl, &host_name)
        .context(|| format!("look up {host_name}"))?
        .ok_or_else(|| Error::Check(format!("host interface {host_name} not found")))?;
    if host.master != Some(br.index) {
        return Err(Error::Check(format!(
            "{host_name} is not attached to bridge {br_name}"
        )));
    }
    if host.hairpin.is_some_and(|h| h != conf.hairpin_mode) {
        return Err(Error::Check(format!(
            "{host_name} hairpin mode differs from the config"
        )));
    }

    let pod_if = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox.is_some())
        .ok_or_else(|| Error::Check(format!("prevResult has no interface {}", env.ifname)))?;
    let mac = prev.interfaces[pod_if].mac.clone();
    let pod_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|n| n == pod_if))
        .cloned()
        .collect();
    let routes = prev.routes.clone();
    let ifname = env.ifname.clone();
    let path = env.netns.as_ref().expect("CHECK requires CNI_NETNS");
    let ns = netns::open(path).context(|| format!("open network namespace {}", path.display()))?;
    netns::run_in(&ns, move || pod::check(&ifname, &mac, &pod_ips, &routes))
        .context(|| format!("enter network namespace {}", path.display()))?
}
