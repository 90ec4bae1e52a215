//! IPAM: the `host-local` shape allocated in-process from an on-disk store, or any other
//! IPAM plugin run by the spec.

pub mod allocate;
pub mod config;
pub mod delegate;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use crate::cni::config::{Attachment, Dns, NetConf};
use crate::cni::env::Env;
use crate::cni::result::{CniResult, IpConfig, Route};
use crate::cni::{Context, Error, Result};
use config::IpamConfig;
use store::Store;

/// How this network gets its addresses.
pub enum Ipam {
    /// No `ipam` section: a layer-2-only network.
    None,
    HostLocal(IpamConfig),
    Delegate(String),
}

/// What IPAM hands the plugin for one attachment.
#[derive(Debug, Default)]
pub struct Lease {
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Ipam {
    pub fn from_conf(conf: &NetConf) -> Result<Ipam> {
        match conf.ipam_type() {
            None => Ok(Ipam::None),
            Some("host-local") => Ok(Ipam::HostLocal(IpamConfig::parse(
                conf.ipam.as_ref().expect("ipam_type implies ipam"),
            )?)),
            Some(other) => Ok(Ipam::Delegate(other.to_string())),
        }
    }

    /// Reserves the attachment's addresses.
    pub fn add(&self, conf: &NetConf, env: &Env, raw: &[u8]) -> Result<Lease> {
        match self {
            Ipam::None => Ok(Lease::default()),
            Ipam::HostLocal(cfg) => {
                let requested = requested_ips(conf, env)?;
                let ips = allocate::allocate(
                    cfg,
                    &conf.name,
                    &env.container_id,
                    &env.ifname,
                    &requested,
                )?;
                let dns = match &cfg.resolv_conf {
                    Some(p) => config::parse_resolv_conf(
                        &std::fs::read_to_string(p)
                            .context(|| format!("read resolvConf {}", p.display()))?,
                    ),
                    None => Dns::default(),
                };
                Ok(Lease {
                    ips,
                    routes: cfg.routes.clone(),
                    dns,
                })
            }
            Ipam::Delegate(plugin) => {
                let out = delegate::run(plugin, "ADD", &env.path, raw)?;
                let r = CniResult::from_json(&out)?;
                if r.ips.is_empty() {
                    return Err(Error::Internal(format!(
                        "IPAM plugin {plugin} returned no IP"
                    )));
                }
                Ok(Lease {
                    ips: r.ips,
                    routes: r.routes,
                    dns: r.dns,
                })
            }
        }
    }

    /// Releases the attachment's addresses; returns those freed (built-in store only).
    pub fn del(&self, conf: &NetConf, env: &Env, raw: &[u8]) -> Result<Vec<IpAddr>> {
        match self {
            Ipam::None => Ok(Vec::new()),
            Ipam::HostLocal(cfg) => {
                let store = Store::new(&cfg.data_dir, &conf.name);
                if !store.dir().exists() {
                    return Ok(Vec::new());
                }
                let locked = store
                    .lock()
                    .context(|| format!("lock IPAM store {}", store.dir().display()))?;
                locked
                    .release(&env.container_id, &env.ifname)
                    .context(|| format!("release addresses of {}", env.container_id))
            }
            Ipam::Delegate(plugin) => {
                delegate::run(plugin, "DEL", &env.path, raw)?;
                Ok(Vec::new())
            }
        }
    }

    /// Checks that each address is still recorded for the attachment.
    pub fn check(&self, conf: &NetConf, env: &Env, raw: &[u8], ips: &[IpAddr]) -> Result<()> {
        match self {
            Ipam::None => Ok(()),
            Ipam::HostLocal(cfg) => {
                let store = Store::new(&cfg.data_dir, &conf.name);
                let locked = store
                    .lock()
                    .context(|| format!("lock IPAM store {}", store.dir().display()))?;
                for ip in ips {
                    let owner = locked
                        .owner(*ip)
                        .context(|| format!("read allocation of {ip}"))?;
                    if !owner.is_some_and(|o| o.is(&env.container_id, &env.ifname)) {
                        return Err(Error::Check(format!(
                            "IP {ip} is not allocated to {}/{}",
                            env.container_id, env.ifname
                        )));
                    }
                }
                Ok(())
            }
            Ipam::Delegate(plugin) => delegate::run(plugin, "CHECK", &env.path, raw).map(|_| ()),
        }
    }

    /// Releases every allocation not held by a valid attachment, then runs `while_locked` with
    /// the addresses still allocated, before the store lock is dropped (so no ADD can slip an
    /// address in between). Returns those addresses (built-in store only).
    pub fn gc(
        &self,
        conf: &NetConf,
        env: &Env,
        raw: &[u8],
        valid: &[Attachment],
        while_locked: impl FnOnce(&[IpAddr]) -> Result<()>,
    ) -> Result<Vec<IpAddr>> {
        match self {
            Ipam::None => Ok(Vec::new()),
            Ipam::HostLocal(cfg) => {
                let store = Store::new(&cfg.data_dir, &conf.name);
                if !store.dir().exists() {
                    while_locked(&[])?;
                    return Ok(Vec::new());
                }
                let valid: HashSet<(&str, &str)> = valid
                    .iter()
                    .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
                    .collect();
                let locked = store
                    .lock()
                    .context(|| format!("lock IPAM store {}", store.dir().display()))?;
                let is_valid = |o: &store::Owner| {
                    valid.contains(&(o.container_id.as_str(), o.ifname.as_str()))
                        || (o.ifname.is_empty()
                            && valid.iter().any(|(id, _)| *id == o.container_id))
                };
                locked
                    .release_where(|o| !is_valid(o))
                    .context(|| "garbage-collect addresses".into())?;
                let remaining: Vec<IpAddr> = locked
                    .all()
                    .context(|| "list addresses".into())?
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .collect();
                while_locked(&remaining)?;
                Ok(remaining)
            }
            Ipam::Delegate(plugin) => {
                delegate::run(plugin, "GC", &env.path, raw)?;
                Ok(Vec::new())
            }
        }
    }

    /// STATUS: the store must be usable and no range set exhausted.
    pub fn status(&self, conf: &NetConf, env: &Env, raw: &[u8]) -> Result<()> {
        match self {
            Ipam::None => Ok(()),
            Ipam::HostLocal(cfg) => {
                let store = Store::new(&cfg.data_dir, &conf.name);
                let locked = store.lock().map_err(|e| {
                    Error::NotAvailable(format!(
                        "IPAM store {} unusable: {e}",
                        store.dir().display()
                    ))
                })?;
                let all = locked
                    .all()
                    .map_err(|e| Error::NotAvailable(format!("IPAM store unreadable: {e}")))?;
                for set in &cfg.range_sets {
                    let capacity: u128 = set.iter().map(|r| r.capacity()).sum();
                    let used = all
                        .iter()
                        .filter(|(ip, _)| set.iter().any(|r| r.contains(*ip)))
                        .count() as u128;
                    if used >= capacity {
                        let ranges: Vec<String> =
                            set.iter().map(|r| r.subnet.to_string()).collect();
                        return Err(Error::NotAvailable(format!(
                            "IP range set {} exhausted ({used} of {capacity} addresses in use)",
                            ranges.join(",")
                        )));
                    }
                }
                Ok(())
            }
            Ipam::Delegate(plugin) => delegate::run(plugin, "STATUS", &env.path, raw).map(|_| ()),
        }
    }
}

/// Addresses asked for by `CNI_ARGS` `IP=`, `args.cni.ips` or `runtimeConfig.ips`
/// (a `/len` suffix is allowed and ignored).
fn requested_ips(conf: &NetConf, env: &Env) -> Result<Vec<IpAddr>> {
    let mut raw: Vec<String> = Vec::new();
    if let Some(ip) = env.arg("IP") {
        raw.extend(ip.split(',').map(str::to_string));
    }
    if let Some(ips) = conf.cni_arg("ips").and_then(|v| v.as_array()) {
        raw.extend(ips.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    raw.extend(conf.runtime_config.ips.iter().cloned());
    let mut out: Vec<IpAddr> = Vec::new();
    for s in raw {
        let addr = s.split('/').next().unwrap_or_default();
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| Error::InvalidConfig(format!("invalid requested IP {s:?}")))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}
