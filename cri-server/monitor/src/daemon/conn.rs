//! One client connection on `monitor.sock`: requests are read without blocking (one JSON
//! object per line), answers are written blocking with a time-out (they are small).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};

use cri_monitor::protocol::{Request, Response, attach};

/// A request line longer than this closes the connection.
const MAX_REQUEST: usize = 64 * 1024;
/// Attach output queued for a peer that does not read, before it is dropped.
const MAX_ATTACH_BACKLOG: usize = 1 << 20;
/// How long an answer may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Connection {
    pub key: u64,
    pub stream: UnixStream,
    buf: Vec<u8>,
    /// A `create` from this connection is running; its later requests wait.
    pub busy: bool,
    /// The peer hung up or misbehaved: drop the connection.
    pub closed: bool,
    /// The container (key) this connection is attached to, after an `attach`.
    pub attached: Option<u64>,
    /// Attach output not yet taken by the peer.
    out: Vec<u8>,
}

impl Connection {
    pub fn new(key: u64, stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Connection {
            key,
            stream,
            buf: Vec::new(),
            busy: false,
            closed: false,
            attached: None,
            out: Vec::new(),
        })
    }

    /// Reads what the peer sent so far, without blocking.
    pub fn receive(&mut self, scratch: &mut [u8]) {
        loop {
            match recv(self.stream.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&scratch[..n]);
                    if self.attached.is_some() {
                        if self.buf.len() > MAX_ATTACH_BACKLOG {
                            self.closed = true;
                            return;
                        }
                        continue;
                    }
                    if self.buf.len() > MAX_REQUEST && !self.buf.contains(&b'\n') {
                        let _ = self.respond(&Response::error("request line too long"));
                        self.closed = true;
                        return;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// The next whole attach frame from the peer (kind, payload); a bad one closes.
    pub fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        match attach::parse(&self.buf)? {
            Ok((kind, payload, used)) => {
                let frame = (kind, payload.to_vec());
                self.buf.drain(..used);
                Some(frame)
            }
            Err(_) => {
                self.closed = true;
                None
            }
        }
    }

    /// Queues attach output for the peer and writes what it takes now. A peer that lets
    /// more than `MAX_ATTACH_BACKLOG` pile up is dropped.
    pub fn forward(&mut self, kind: u8, data: &[u8]) {
        if self.closed {
            return;
        }
        self.out.extend(attach::frame(kind, data));
        self.flush();
        if self.out.len() > MAX_ATTACH_BACKLOG {
            self.closed = true;
        }
    }

    /// Writes queued attach output without blocking.
    pub fn flush(&mut self) {
        while !self.out.is_empty() && !self.closed {
            match send(self.stream.as_raw_fd(), &self.out, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => self.closed = true,
            }
        }
    }

    /// Attach output is waiting for the peer.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// The attached container ended: write what is queued (waiting up to the write time-out)
    /// and close.
    pub fn end_attach(&mut self) {
        if !self.closed && !self.out.is_empty() {
            let _ = self.stream.write_all(&self.out);
        }
        self.out.clear();
        self.closed = true;
    }

    /// The next complete request line, parsed; `Err` holds the answer for a bad one.
    pub fn next_request(&mut self) -> Option<Result<Request, Response>> {
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
        let line = line.trim_ascii();
        if line.is_empty() {
            return self.next_request();
        }
        Some(serde_json::from_slice(line).map_err(|e| Response::error(format!("bad request: {e}"))))
    }

    /// Writes one answer line; a failure closes the connection.
    pub fn respond(&mut self, response: &Response) -> io::Result<()> {
        let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
        line.push(b'\n');
        let result = self.stream.write_all(&line);
        if result.is_err() {
            self.closed = true;
        }
        result
    }
}
