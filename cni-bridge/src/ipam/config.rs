//! The `host-local` IPAM configuration shape: `ranges` (a list of range sets, each a list of
//! ranges), the legacy top-level `subnet`/`rangeStart`/`rangeEnd`/`gateway`, `routes`,
//! `dataDir` and `resolvConf`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::cni::config::Dns;
use crate::cni::result::Route;
use crate::cni::{Error, Result};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One allocatable range inside a subnet, bounds inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip)
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }

    /// How many addresses this range can hand out (the gateway excluded).
    pub fn capacity(&self) -> u128 {
        let n = to_u128(self.end) - to_u128(self.start) + 1;
        if self.contains(self.gateway) {
            n - 1
        } else {
            n
        }
    }
}

/// Ranges from which one address is taken per ADD.
pub type RangeSet = Vec<Range>;

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    #[serde(default)]
    subnet: String,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    routes: Vec<Value>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_u128(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::InvalidConfig(format!("ipam: invalid {field} {s:?}")))
}

impl IpamConfig {
    pub fn parse(ipam: &Value) -> Result<IpamConfig> {
        let raw: RawIpam = serde_json::from_value(ipam.clone())
            .map_err(|e| Error::InvalidConfig(format!("ipam: {e}")))?;
        let mut sets: Vec<Vec<RawRange>> = Vec::new();
        if let Some(subnet) = raw.subnet {
            sets.push(vec![RawRange {
                subnet,
                range_start: raw.range_start,
                range_end: raw.range_end,
                gateway: raw.gateway,
            }]);
        }
        sets.extend(raw.ranges);
        if sets.is_empty() || sets.iter().any(Vec::is_empty) {
            return Err(Error::InvalidConfig("ipam: no IP ranges specified".into()));
        }
        let range_sets = sets
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(canonicalize)
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        // Ranges may not overlap, within a set or across sets; a set is one family.
        let all: Vec<&Range> = range_sets.iter().flatten().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.subnet.addr().is_ipv4() == b.subnet.addr().is_ipv4()
                    && to_u128(a.start) <= to_u128(b.end)
                    && to_u128(b.start) <= to_u128(a.end)
                {
                    return Err(Error::InvalidConfig(format!(
                        "ipam: range {}-{} overlaps {}-{}",
                        a.start, a.end, b.start, b.end
                    )));
                }
            }
        }
        for set in &range_sets {
            if set
                .iter()
                .any(|r| r.subnet.addr().is_ipv4() != set[0].subnet.addr().is_ipv4())
            {
                return Err(Error::InvalidConfig(
                    "ipam: mixed address families in one range set".into(),
                ));
            }
        }
        let routes = raw
            .routes
            .iter()
            .map(Route::from_json)
            .collect::<Result<Vec<_>>>()?;
        Ok(IpamConfig {
            range_sets,
            routes,
            data_dir: PathBuf::from(
                raw.data_dir
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            ),
            resolv_conf: raw.resolv_conf.filter(|r| !r.is_empty()).map(PathBuf::from),
        })
    }
}

fn canonicalize(r: RawRange) -> Result<Range> {
    let subnet: IpNet = r
        .subnet
        .parse()
        .map_err(|_| Error::InvalidConfig(format!("ipam: invalid subnet {:?}", r.subnet)))?;
    let subnet = subnet.trunc();
    let v6 = subnet.addr().is_ipv6();
    if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
        return Err(Error::InvalidConfig(format!(
            "ipam: network {subnet} too small to allocate from"
        )));
    }
    let network = to_u128(subnet.network());
    let last = to_u128(subnet.broadcast()) - if v6 { 0 } else { 1 };
    let in_subnet = |field: &str, ip: IpAddr| -> Result<IpAddr> {
        if subnet.contains(&ip) {
            Ok(ip)
        } else {
            Err(Error::InvalidConfig(format!(
                "ipam: {field} {ip} not in network {subnet}"
            )))
        }
    };
    let start = match r.range_start.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => in_subnet("rangeStart", parse_ip("rangeStart", s)?)?,
        None => from_u128(network + 1, v6),
    };
    let end = match r.range_end.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => in_subnet("rangeEnd", parse_ip("rangeEnd", s)?)?,
        None => from_u128(last, v6),
    };
    if to_u128(start) > to_u128(end) {
        return Err(Error::InvalidConfig(format!(
            "ipam: rangeStart {start} after rangeEnd {end}"
        )));
    }
    let gateway = match r.gateway.as_deref().filter(|s| !s.is_empty()) {
        Some(g) => parse_ip("gateway", g)?,
        None => from_u128(network + 1, v6),
    };
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// Reads nameserver/domain/search/options from a resolv.conf-style file.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().map(str::to_string),
            Some("search") => dns.search.extend(words.map(str::to_string)),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_subnet_gets_host_local_defaults() {
        let c = IpamConfig::parse(&json!({"type":"host-local","subnet":"10.22.0.0/16"})).unwrap();
        let r = &c.range_sets[0][0];
        assert_eq!(r.start.to_string(), "10.22.0.1");
        assert_eq!(r.end.to_string(), "10.22.255.254");
        assert_eq!(r.gateway.to_string(), "10.22.0.1");
        assert_eq!(r.capacity(), 65533);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_ranges_are_invalid_config() {
        for bad in [
            json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]}),
            json!({"ranges": [[{"subnet": "nope"}]]}),
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}),
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}),
            json!({"ranges": []}),
        ] {
            assert_eq!(IpamConfig::parse(&bad).unwrap_err().code(), 7, "{bad}");
        }
    }

    #[test]
    fn resolv_conf_is_read() {
        let d =
            parse_resolv_conf("nameserver 10.0.0.10\nsearch a.local b.local\noptions ndots:5\n");
        assert_eq!(d.nameservers, vec!["10.0.0.10"]);
        assert_eq!(d.search.len(), 2);
        assert_eq!(d.options, vec!["ndots:5"]);
    }
}
