//! Address allocation for one attachment: one address per range set, round-robin after the
//! last one handed out (as `host-local` does), or exactly the ones asked for.

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{IpamConfig, Range, RangeSet, from_u128, to_u128};
use super::store::{Locked, Store};
use crate::cni::result::IpConfig;
use crate::cni::{Context, Error, Result};

/// Reserves the attachment's addresses. The store lock is held only inside this call.
pub fn allocate(
    cfg: &IpamConfig,
    network: &str,
    container_id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<IpConfig>> {
    let store = Store::new(&cfg.data_dir, network);
    let locked = store
        .lock()
        .context(|| format!("lock IPAM store {}", store.dir().display()))?;
    let mut taken: Vec<IpConfig> = Vec::new();
    let result = (|| {
        for wanted in requested {
            if !cfg
                .range_sets
                .iter()
                .flatten()
                .any(|r| r.subnet.contains(wanted))
            {
                return Err(Error::AddressUnavailable(format!(
                    "requested IP {wanted} is in no configured range"
                )));
            }
        }
        for (idx, set) in cfg.range_sets.iter().enumerate() {
            let wanted = requested
                .iter()
                .find(|ip| set.iter().any(|r| r.subnet.contains(*ip)));
            let ip = match wanted {
                Some(ip) => reserve_exact(&locked, set, *ip, container_id, ifname)?,
                None => reserve_next(&locked, idx, set, container_id, ifname)?,
            };
            let range = set
                .iter()
                .find(|r| r.subnet.contains(&ip))
                .unwrap_or(&set[0]);
            taken.push(IpConfig {
                address: IpNet::new(ip, range.subnet.prefix_len())
                    .map_err(|e| Error::Internal(e.to_string()))?,
                gateway: Some(range.gateway),
                interface: None,
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for ip in &taken {
            let _ = locked.remove(ip.address.addr());
        }
        return Err(e);
    }
    Ok(taken)
}

fn reserve_exact(
    locked: &Locked<'_>,
    set: &RangeSet,
    ip: IpAddr,
    container_id: &str,
    ifname: &str,
) -> Result<IpAddr> {
    let Some(range) = set.iter().find(|r| r.contains(ip)) else {
        return Err(Error::AddressUnavailable(format!(
            "requested IP {ip} is outside the range"
        )));
    };
    if range.gateway == ip {
        return Err(Error::AddressUnavailable(format!(
            "requested IP {ip} is the gateway"
        )));
    }
    if locked
        .reserve(ip, container_id, ifname)
        .context(|| format!("reserve {ip}"))?
    {
        Ok(ip)
    } else {
        Err(Error::AddressUnavailable(format!(
            "requested IP {ip} is already allocated"
        )))
    }
}

fn reserve_next(
    locked: &Locked<'_>,
    idx: usize,
    set: &[Range],
    container_id: &str,
    ifname: &str,
) -> Result<IpAddr> {
    let v6 = set[0].subnet.addr().is_ipv6();
    // Start right after the last reservation when it is still inside this set.
    let (mut ri, mut cur) = (0usize, to_u128(set[0].start));
    if let Some(last) = locked.last_reserved(idx)
        && let Some(i) = set.iter().position(|r| r.contains(last))
    {
        ri = i;
        cur = to_u128(last);
        (ri, cur) = advance(set, ri, cur);
    }
    let total: u128 = set
        .iter()
        .map(|r| to_u128(r.end) - to_u128(r.start) + 1)
        .sum();
    let mut tried: u128 = 0;
    while tried < total {
        let ip = from_u128(cur, v6);
        if ip != set[ri].gateway
            && locked
                .reserve(ip, container_id, ifname)
                .context(|| format!("reserve {ip}"))?
        {
            locked
                .set_last_reserved(idx, ip)
                .context(|| format!("record last reserved IP {ip}"))?;
            return Ok(ip);
        }
        (ri, cur) = advance(set, ri, cur);
        tried += 1;
    }
    let ranges: Vec<String> = set
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    Err(Error::Exhausted(format!(
        "no IP addresses available in range set: {}",
        ranges.join(",")
    )))
}

/// The address after `cur`, moving to the next range (and wrapping) at a range's end.
fn advance(set: &[Range], ri: usize, cur: u128) -> (usize, u128) {
    if cur >= to_u128(set[ri].end) {
        let next = (ri + 1) % set.len();
        (next, to_u128(set[next].start))
    } else {
        (ri, cur + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(dir: &std::path::Path, ranges: serde_json::Value) -> IpamConfig {
        IpamConfig::parse(&json!({"ranges": ranges, "dataDir": dir})).unwrap()
    }

    #[test]
    fn allocation_skips_gateway_and_goes_round_robin() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), json!([[{"subnet": "10.9.0.0/29"}]]));
        let a = allocate(&c, "n", "c1", "eth0", &[]).unwrap();
        assert_eq!(a[0].address.to_string(), "10.9.0.2/29");
        assert_eq!(a[0].gateway.unwrap().to_string(), "10.9.0.1");
        let b = allocate(&c, "n", "c2", "eth0", &[]).unwrap();
        assert_eq!(b[0].address.addr().to_string(), "10.9.0.3");
        // .2 freed, yet the next one continues after .3
        Store::new(d.path(), "n")
            .lock()
            .unwrap()
            .release("c1", "eth0")
            .unwrap();
        let e = allocate(&c, "n", "c3", "eth0", &[]).unwrap();
        assert_eq!(e[0].address.addr().to_string(), "10.9.0.4");
    }

    #[test]
    fn exhaustion_is_reported_and_leaves_nothing_half_taken() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(
            d.path(),
            json!([[{"subnet": "10.9.0.0/30"}], [{"subnet": "10.9.1.0/30"}]]),
        );
        // /30: .1 gateway, .2 the only address.
        allocate(&c, "n", "c1", "eth0", &[]).unwrap();
        let err = allocate(&c, "n", "c2", "eth0", &[]).unwrap_err();
        assert_eq!(err.code(), crate::cni::error::code::ADDRESS_EXHAUSTED);
        let all = Store::new(d.path(), "n").lock().unwrap().all().unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[test]
    fn requested_address_is_honoured_or_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), json!([[{"subnet": "10.9.0.0/24"}]]));
        let ip: IpAddr = "10.9.0.50".parse().unwrap();
        let a = allocate(&c, "n", "c1", "eth0", &[ip]).unwrap();
        assert_eq!(a[0].address.addr(), ip);
        assert!(allocate(&c, "n", "c2", "eth0", &[ip]).is_err());
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        assert!(allocate(&c, "n", "c3", "eth0", &[gw]).is_err());
    }
}
