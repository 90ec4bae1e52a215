//! Adding and removing one set element through nf_tables netlink directly (one atomic
//! batch, no `nft` process): the per-pod part of `ipMasq`, on the ADD/DEL fast path.

use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn nested(buf: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    inner(&mut body);
    attr(buf, kind | NLA_F_NESTED, &body);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg, attributes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// Runs one batch holding a single NEWSETELEM/DELSETELEM for `ips` on `table`/`set`
/// (family inet). Returns the kernel's errno on failure (ENOENT: no such table, set or
/// element).
fn batch(kind: u16, table: &str, set: &str, ips: &[IpAddr]) -> io::Result<()> {
    let mut attrs = Vec::new();
    attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
        for ip in ips {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            nested(list, NFTA_LIST_ELEM, |elem| {
                nested(elem, NFTA_SET_ELEM_KEY, |key| {
                    attr(key, NFTA_DATA_VALUE, &bytes)
                });
            });
        }
    });
    let mut flags = NLM_F_REQUEST | NLM_F_ACK;
    if kind == NFT_MSG_NEWSETELEM {
        flags |= NLM_F_CREATE;
    }
    let mut out = Vec::new();
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    message(
        &mut out,
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        2,
        NFPROTO_INET,
        0,
        &attrs,
    );
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        3,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );

    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&out, 0)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?.min(buf.len());
        let mut off = 0;
        while off + 20 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes"));
            if kind == NLMSG_ERROR && seq == 2 {
                let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            if len < 16 {
                break;
            }
            off += len.next_multiple_of(4);
        }
    }
}

/// Adds `ips` to the set; ENOENT when the table or set does not exist yet.
pub fn add(table: &str, set: &str, ips: &[IpAddr]) -> io::Result<()> {
    batch(NFT_MSG_NEWSETELEM, table, set, ips)
}

/// Removes `ips` from the set; absent elements, sets or tables are not an error.
pub fn del(table: &str, set: &str, ips: &[IpAddr]) -> io::Result<()> {
    // One element per batch: a batch fails whole when any element is absent.
    for ip in ips {
        match batch(NFT_MSG_DELSETELEM, table, set, std::slice::from_ref(ip)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
    }
    Ok(())
}
