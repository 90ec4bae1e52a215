//! The network configuration on stdin: the reference `bridge` plugin's shape, plus the
//! spec's `runtimeConfig`, `prevResult` and `cni.dev/valid-attachments`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Error, Result};
use super::version;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    /// Accepted for compatibility; masquerading always goes through nftables.
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: Option<u32>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Plugin-specific: delete the veth pair before DEL returns (slower by the kernel's
    /// 10-20 ms device teardown) instead of in a detached child right after.
    #[serde(default)]
    pub sync_link_delete: bool,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

pub const DEFAULT_BRIDGE: &str = "cni0";

impl NetConf {
    /// Parses stdin: broken JSON is a decode error (6), well-formed JSON of the wrong shape
    /// an invalid configuration (7).
    pub fn parse(stdin: &[u8]) -> Result<(NetConf, Value)> {
        let raw: Value = serde_json::from_slice(stdin).map_err(|source| Error::Decode {
            what: "network configuration",
            source,
        })?;
        let conf: NetConf =
            serde_json::from_value(raw.clone()).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok((conf, raw))
    }

    /// Checks what every command needs: a supported version and a valid name.
    pub fn validate(&mut self) -> Result<()> {
        version::check_supported(&self.cni_version)?;
        if !valid_network_name(&self.name) {
            return Err(Error::InvalidConfig(format!(
                "invalid network name {:?}",
                self.name
            )));
        }
        if let Some(br) = &self.bridge
            && super::env::validate_ifname(br).is_err()
        {
            return Err(Error::InvalidConfig(format!("invalid bridge name {br:?}")));
        }
        if let Some(vlan) = self.vlan
            && vlan > 4094
        {
            return Err(Error::InvalidConfig(format!(
                "invalid VLAN ID {vlan} (must be 0-4094)"
            )));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(Error::InvalidConfig(format!("invalid MTU {mtu}")));
        }
        if self.is_default_gateway {
            self.is_gateway = true;
        }
        Ok(())
    }

    pub fn bridge_name(&self) -> &str {
        self.bridge
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
    }

    pub fn vlan(&self) -> Option<u16> {
        self.vlan.filter(|v| *v > 0).map(|v| v as u16)
    }

    /// The IPAM plugin type; `None` for a layer-2-only network.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()?
            .get("type")?
            .as_str()
            .filter(|t| !t.is_empty())
    }

    /// `args.cni.<key>` (the CONVENTIONS.md args shape).
    pub fn cni_arg(&self, key: &str) -> Option<&Value> {
        self.args.as_ref()?.get("cni")?.get(key)
    }
}

/// The spec: alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(Error::InvalidConfig(format!("invalid MAC address {s:?}")));
    }
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16)
            .map_err(|_| Error::InvalidConfig(format!("invalid MAC address {s:?}")))?;
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_json_is_a_decode_error_and_wrong_types_invalid_config() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(br#"{"mtu":"big"}"#).unwrap_err().code(), 7);
    }

    #[test]
    fn default_gateway_implies_gateway_and_bridge_defaults_to_cni0() {
        let (mut c, _) = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","isDefaultGateway":true}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.is_gateway);
        assert_eq!(c.bridge_name(), "cni0");
    }

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("0a:58:0A:00:00:02").unwrap();
        assert_eq!(format_mac(&m), "0a:58:0a:00:00:02");
        assert!(parse_mac("0a:58").is_err());
    }
}
