//! A blocking rtnetlink socket: one request, one answer (ack, object or dump).
//!
//! The socket lives in the network namespace of the thread that opened it, and stays there
//! when used from another thread.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A failed netlink request: the kernel's errno (or a local I/O or decode failure).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{0}")]
    Kernel(io::Error),
    #[error("netlink socket: {0}")]
    Io(io::Error),
    #[error("decode netlink answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
        )
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// Flags for a request that creates an object and fails if it exists.
pub const CREATE_EXCL: u16 = NLM_F_CREATE | NLM_F_EXCL;

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Io)?;
        socket.bind_auto().map_err(NetlinkError::Io)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Io)?;
        // Ask for dumps filtered by the kernel where it can (link by master, etc.).
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(NetlinkError::Io)?;
        Ok(self.seq)
    }

    /// Reads one datagram and splits it into messages answering `seq`.
    fn recv(&mut self, seq: u32) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let mut out = self.recv_any()?;
        out.retain(|m| m.header.sequence_number == seq);
        Ok(out)
    }

    /// Reads one datagram and splits it into messages.
    fn recv_any(&mut self) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        self.buf.clear();
        let n = self
            .socket
            .recv(&mut self.buf, 0)
            .map_err(NetlinkError::Io)?;
        let n = n.min(self.buf.len());
        let mut out = Vec::new();
        let mut off = 0;
        while off + 16 <= n {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
            out.push(msg);
        }
        Ok(out)
    }

    /// Sends a request and waits for the kernel's acknowledgement.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        loop {
            for m in self.recv(seq)? {
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(
                            -code.get(),
                        ))),
                    };
                }
            }
        }
    }

    /// Sends every request in one datagram (the kernel runs them in order, each whatever
    /// happened to the ones before it) and returns, per request, the objects answered before its
    /// acknowledgement (a GET's object, an `NLM_F_ECHO` notification), or its error. Every
    /// request is acknowledged; dumps do not belong in a batch.
    pub fn batch(
        &mut self,
        reqs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<Vec<RouteNetlinkMessage>>>> {
        let first = self.seq.wrapping_add(1);
        let mut bytes = Vec::with_capacity(256 * reqs.len());
        for (msg, flags) in reqs {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            header.sequence_number = self.seq;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
            packet.finalize();
            let start = bytes.len();
            bytes.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut bytes[start..]);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        let n = self.seq.wrapping_sub(first).wrapping_add(1) as usize;
        self.socket.send(&bytes, 0).map_err(NetlinkError::Io)?;
        let mut out: Vec<Option<Result<Vec<RouteNetlinkMessage>>>> = (0..n).map(|_| None).collect();
        let mut objects: Vec<Vec<RouteNetlinkMessage>> = (0..n).map(|_| Vec::new()).collect();
        let mut pending = n;
        while pending > 0 {
            for m in self.recv_any()? {
                let i = m.header.sequence_number.wrapping_sub(first) as usize;
                if i >= n || out[i].is_some() {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => objects[i].push(inner),
                    NetlinkPayload::Error(e) => {
                        out[i] = Some(match e.code {
                            None => Ok(std::mem::take(&mut objects[i])),
                            Some(code) => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(
                                -code.get(),
                            ))),
                        });
                        pending -= 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(out.into_iter().map(|r| r.expect("answered")).collect())
    }

    /// Sends a GET request for one object and returns the kernel's answer.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<RouteNetlinkMessage> {
        let seq = self.send(msg, 0)?;
        loop {
            for m in self.recv(seq)? {
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(inner),
                    NetlinkPayload::Error(e) => {
                        let code = e.code.map(|c| -c.get()).unwrap_or(libc::EIO);
                        return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(code)));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a dump request and collects every object until NLMSG_DONE.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut out = Vec::new();
        loop {
            for m in self.recv(seq)? {
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        let code = e.code.map(|c| -c.get()).unwrap_or(libc::EIO);
                        return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(code)));
                    }
                    _ => {}
                }
            }
        }
    }
}
