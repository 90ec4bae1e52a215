//! cni-bridge: a CNI plugin that wires pod network namespaces to a Linux bridge through veth
//! pairs, with `host-local`-compatible IPAM built in and `ipMasq` through nftables.
//! `command` is the entry point; `cni` the protocol; the rest the mechanisms it drives.

pub mod bridge;
pub mod cni;
pub mod command;
pub mod ipam;
pub mod masq;
pub mod netlink;
pub mod netns;
pub mod pod;
pub mod trace;
pub mod veth;
