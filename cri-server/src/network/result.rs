//! Reading a plugin chain's final result (SPEC section 5, "Success") into a [`NetworkStatus`].

use std::net::IpAddr;

use serde_json::Value;

use super::NetworkStatus;

/// The pod's addresses from a 0.3.x/0.4.0/1.x result: the IPs on the sandbox interface named
/// `ifname` when the result says which interface each IP is on, else every IP; IPv4 first,
/// otherwise in result order.
pub fn status_from_result(
    result: &Value,
    ifname: &str,
    network_name: &str,
) -> Result<NetworkStatus, String> {
    let obj = result
        .as_object()
        .ok_or_else(|| "result is not a JSON object".to_string())?;
    let sandbox_ifaces: Vec<usize> = match obj.get("interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.get("name").and_then(Value::as_str) == Some(ifname)
                    && i.get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
            .map(|(n, _)| n)
            .collect(),
        Some(_) => return Err("\"interfaces\" is not a list".into()),
    };
    let mut all = Vec::new();
    let mut on_iface = Vec::new();
    match obj.get("ips") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (n, ip) in list.iter().enumerate() {
                let addr = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("ips[{n}] has no \"address\""))?;
                let host = addr.split_once('/').map_or(addr, |(h, _)| h);
                let parsed: IpAddr = host
                    .parse()
                    .map_err(|_| format!("ips[{n}].address {addr:?} is not an IP address"))?;
                let index = ip.get("interface").and_then(Value::as_u64);
                if index.is_some_and(|i| sandbox_ifaces.iter().any(|&s| s as u64 == i)) {
                    on_iface.push(parsed);
                }
                all.push(parsed);
            }
        }
        Some(_) => return Err("\"ips\" is not a list".into()),
    }
    let mut ips = if on_iface.is_empty() { all } else { on_iface };
    // Stable: IPv4 before IPv6, each family in result order.
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    Ok(NetworkStatus {
        ips,
        interface: ifname.to_string(),
        network_name: network_name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ips_on_the_sandbox_interface_win_and_ipv4_comes_first() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth1", "mac": "00:11:22:33:44:56"},
                {"name": "eth0", "mac": "00:11:22:33:44:57", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.1.0.1/24", "interface": 0},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}
            ]
        });
        let s = status_from_result(&r, "eth0", "net").unwrap();
        assert_eq!(
            s.ips,
            vec![
                "10.1.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.network_name, "net");
    }

    #[test]
    fn without_interface_indexes_every_ip_counts() {
        // A 0.3.1 result from an IPAM-like plugin: no interfaces, "version" fields.
        let r = json!({"cniVersion": "0.3.1", "ips": [
            {"version": "6", "address": "fd00::7/64"},
            {"version": "4", "address": "10.2.0.7/16"}
        ]});
        let s = status_from_result(&r, "eth0", "n").unwrap();
        assert_eq!(
            s.ips,
            vec![
                "10.2.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert!(
            status_from_result(&json!({}), "eth0", "n")
                .unwrap()
                .ips
                .is_empty()
        );
    }

    #[test]
    fn malformed_results_are_errors() {
        assert!(status_from_result(&json!([]), "eth0", "n").is_err());
        assert!(status_from_result(&json!({"ips": {}}), "eth0", "n").is_err());
        assert!(
            status_from_result(&json!({"ips": [{"address": "nope/24"}]}), "eth0", "n").is_err()
        );
    }
}
