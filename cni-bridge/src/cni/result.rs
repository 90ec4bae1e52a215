//! The spec's result: interfaces, ips, routes, dns; printed in the shape of the requested
//! version (0.3.x/0.4.0 carry `"version"` on each IP; 1.1.0 adds route and interface MTUs).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::config::Dns;
use super::error::{Error, Result};
use super::version;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with the subnet's prefix length.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
        }
    }

    /// Parses `{"dst": "...", "gw": "...", ...}` (IPAM config and results alike).
    pub fn from_json(v: &Value) -> Result<Route> {
        let dst = v
            .get("dst")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidConfig(format!("route without dst: {v}")))?;
        let dst: IpNet = dst
            .parse()
            .map_err(|_| Error::InvalidConfig(format!("invalid route dst {dst:?}")))?;
        let gw = match v.get("gw").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| Error::InvalidConfig(format!("invalid route gw {g:?}")))?,
            ),
            _ => None,
        };
        let num = |k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as u32);
        Ok(Route {
            dst: dst.trunc(),
            gw,
            mtu: num("mtu"),
            advmss: num("advmss"),
            priority: num("priority"),
            table: num("table"),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    pub fn to_json(&self, cni_version: &str) -> Value {
        let legacy = !version::at_least(cni_version, "1.0.0");
        let v11 = version::at_least(cni_version, "1.1.0");
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(cni_version));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = json!({ "name": i.name, "mac": i.mac });
                    if let (true, Some(mtu)) = (v11, i.mtu) {
                        o["mtu"] = json!(mtu);
                    }
                    if let Some(s) = &i.sandbox {
                        o["sandbox"] = json!(s);
                    }
                    o
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = Map::new();
                    if legacy {
                        let v = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        o.insert("version".into(), json!(v));
                    }
                    if let Some(i) = ip.interface {
                        o.insert("interface".into(), json!(i));
                    }
                    o.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        o.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(o)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut o = json!({ "dst": r.dst.to_string() });
                    if let Some(gw) = r.gw {
                        o["gw"] = json!(gw.to_string());
                    }
                    if v11 {
                        for (k, val) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                        ] {
                            if let Some(val) = val {
                                o[k] = json!(val);
                            }
                        }
                    }
                    o
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).unwrap_or(json!({})),
        );
        Value::Object(out)
    }

    /// Reads a result of any version from 0.3.0 on (a prevResult, a delegated IPAM answer).
    pub fn from_json(v: &Value) -> Result<CniResult> {
        let bad = |what: String| Error::InvalidConfig(format!("result: {what}"));
        let mut r = CniResult::default();
        for i in v
            .get("interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            r.interfaces.push(Interface {
                name: i
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                mac: i
                    .get("mac")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: i.get("sandbox").and_then(Value::as_str).map(str::to_string),
            });
        }
        for ip in v.get("ips").and_then(Value::as_array).into_iter().flatten() {
            let addr = ip
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("ip without address: {ip}")))?;
            let address: IpNet = addr
                .parse()
                .map_err(|_| bad(format!("invalid address {addr:?}")))?;
            let gateway = match ip.get("gateway").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => Some(
                    g.parse()
                        .map_err(|_| bad(format!("invalid gateway {g:?}")))?,
                ),
                _ => None,
            };
            let interface = ip
                .get("interface")
                .and_then(Value::as_u64)
                .map(|i| i as usize);
            r.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for route in v
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            r.routes.push(Route::from_json(route)?);
        }
        if let Some(dns) = v.get("dns") {
            r.dns = serde_json::from_value(dns.clone()).unwrap_or_default();
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:00:00:00:00:01".into(),
                mtu: Some(1400),
                sandbox: Some("/run/netns/x".into()),
            }],
            ips: vec![IpConfig {
                address: "10.22.0.2/16".parse().unwrap(),
                gateway: Some("10.22.0.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            dns: Dns::default(),
        }
    }

    #[test]
    fn legacy_versions_carry_ip_version_and_1_1_carries_mtu() {
        let old = sample().to_json("0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = sample().to_json("1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1400);
        assert_eq!(new["ips"][0]["address"], "10.22.0.2/16");
    }

    #[test]
    fn results_parse_back() {
        let r = CniResult::from_json(&sample().to_json("1.0.0")).unwrap();
        assert_eq!(r.ips, sample().ips);
        assert_eq!(r.routes, sample().routes);
    }
}
