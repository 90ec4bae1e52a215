//! Netlink (rtnetlink) through netlink-packet-route on a blocking socket: links, addresses,
//! routes. A `Netlink` belongs to the namespace of the thread that opened it.

pub mod addr;
pub mod link;
pub mod route;
mod socket;

pub use socket::{CREATE_EXCL, Netlink, NetlinkError};
