//! `ipMasq` through nftables: each network gets, in table `inet cni_bridge`, one postrouting
//! NAT chain whose rules masquerade traffic from a set of pod addresses to anything outside
//! the pods' subnets (and outside multicast). Per pod there is only a set element:
//! - ADD adds it in one nf_tables netlink batch; when the network's table or set does not
//!   exist yet, one atomic `nft -f` batch creates table, sets, chain and rules with it;
//! - DEL removes it (netlink, no process);
//! - GC drops every element whose address IPAM no longer holds.

mod element;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde_json::Value;

use crate::cni::{Error, Result};

pub const TABLE: &str = "cni_bridge";

/// Names of one network's objects in the table.
pub struct Names {
    pub chain: String,
    pub set4: String,
    pub set6: String,
}

pub fn names(network: &str) -> Names {
    let id = crate::veth::short_hash(network.as_bytes(), 8);
    Names {
        chain: format!("masq_{id}"),
        set4: format!("pods4_{id}"),
        set6: format!("pods6_{id}"),
    }
}

fn nft_binary() -> Result<PathBuf> {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Nftables("nft binary not found (install nftables)".into()))
}

fn run_nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(nft_binary()?)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nftables(format!("run nft: {e}")))?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(script.as_bytes())
            .map_err(|e| Error::Nftables(format!("write batch: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nftables(format!("wait for nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nftables(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn declare(script: &mut String, n: &Names) {
    let _ = writeln!(script, "add table inet {TABLE}");
    let _ = writeln!(
        script,
        "add set inet {TABLE} {} {{ type ipv4_addr; }}",
        n.set4
    );
    let _ = writeln!(
        script,
        "add set inet {TABLE} {} {{ type ipv6_addr; }}",
        n.set6
    );
}

fn set_for(n: &Names, ip: &IpAddr) -> String {
    if ip.is_ipv4() {
        n.set4.clone()
    } else {
        n.set6.clone()
    }
}

/// The ADD batch: declares everything, rebuilds the chain's rules, adds the pod's addresses.
pub fn add_script(network: &str, pod: &[IpNet]) -> String {
    let n = names(network);
    let mut s = String::new();
    declare(&mut s, &n);
    let _ = writeln!(
        s,
        "add chain inet {TABLE} {} {{ type nat hook postrouting priority srcnat; policy accept; }}",
        n.chain
    );
    let _ = writeln!(s, "flush chain inet {TABLE} {}", n.chain);
    let mut subnets4: Vec<String> = Vec::new();
    let mut subnets6: Vec<String> = Vec::new();
    for ip in pod {
        let net = ip.trunc().to_string();
        let list = if ip.addr().is_ipv4() {
            &mut subnets4
        } else {
            &mut subnets6
        };
        if !list.contains(&net) {
            list.push(net);
        }
    }
    if !subnets4.is_empty() {
        subnets4.push("224.0.0.0/4".into());
        let _ = writeln!(
            s,
            "add rule inet {TABLE} {} ip saddr @{} ip daddr != {{ {} }} masquerade",
            n.chain,
            n.set4,
            subnets4.join(", ")
        );
    }
    if !subnets6.is_empty() {
        subnets6.push("ff00::/8".into());
        let _ = writeln!(
            s,
            "add rule inet {TABLE} {} ip6 saddr @{} ip6 daddr != {{ {} }} masquerade",
            n.chain,
            n.set6,
            subnets6.join(", ")
        );
    }
    for ip in pod {
        let _ = writeln!(
            s,
            "add element inet {TABLE} {} {{ {} }}",
            set_for(&n, &ip.addr()),
            ip.addr()
        );
    }
    s
}

pub fn add(network: &str, pod: &[IpNet]) -> Result<()> {
    if pod.is_empty() {
        return Ok(());
    }
    let n = names(network);
    let ips: Vec<IpAddr> = pod.iter().map(IpNet::addr).collect();
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
    let fast = (v4.is_empty() || element::add(TABLE, &n.set4, &v4).is_ok())
        && (v6.is_empty() || element::add(TABLE, &n.set6, &v6).is_ok());
    if fast {
        return Ok(());
    }
    run_nft(&["-f", "-"], Some(&add_script(network, pod))).map(|_| ())
}

pub fn del(network: &str, ips: &[IpAddr]) -> Result<()> {
    let n = names(network);
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
    for (set, ips) in [(&n.set4, v4), (&n.set6, v6)] {
        match element::del(TABLE, set, &ips) {
            // No nf_tables in this kernel: there is nothing to remove.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT)
                ) => {}
            Err(e) => {
                return Err(Error::Nftables(format!(
                    "remove {ips:?} from set {set}: {e}"
                )));
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// The addresses in one network's sets.
pub fn elements(network: &str) -> Result<Vec<IpAddr>> {
    let n = names(network);
    let mut out = Vec::new();
    for set in [&n.set4, &n.set6] {
        let json = match run_nft(&["-j", "list", "set", "inet", TABLE, set], None) {
            Ok(j) => j,
            // No table or set: nothing to collect.
            Err(_) => continue,
        };
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        for item in v["nftables"].as_array().into_iter().flatten() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let s = e.as_str().or_else(|| e["elem"]["val"].as_str());
                if let Some(ip) = s.and_then(|s| s.parse().ok()) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(out)
}

/// Removes every element not in `keep`.
pub fn gc(network: &str, keep: &[IpAddr]) -> Result<()> {
    let keep: HashSet<&IpAddr> = keep.iter().collect();
    let stale: Vec<IpAddr> = elements(network)?
        .into_iter()
        .filter(|ip| !keep.contains(ip))
        .collect();
    del(network, &stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_batch_rebuilds_rules_and_adds_the_pod() {
        let s = add_script("net1", &["10.22.0.5/16".parse().unwrap()]);
        let n = names("net1");
        assert!(s.contains(&format!("flush chain inet cni_bridge {}", n.chain)));
        assert!(s.contains("ip daddr != { 10.22.0.0/16, 224.0.0.0/4 } masquerade"));
        assert!(s.contains(&format!(
            "add element inet cni_bridge {} {{ 10.22.0.5 }}",
            n.set4
        )));
        assert!(!s.contains("ip6 saddr"));
    }
}
