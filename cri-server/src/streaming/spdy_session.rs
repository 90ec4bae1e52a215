//! Exec and port-forward over SPDY/3.1, as the kubelet's streaming server serves them: the
//! client opens one stream per stdio part (header `streamType`: error, stdin, stdout,
//! stderr, resize), or per forwarded connection a pair (`error` and `data`, with `port` and
//! `requestID`). We answer every stream with SYN_REPLY, echo PINGs, return the window of
//! every DATA frame, and end with GOAWAY.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::attach::Proc;
use super::exec::Reader;
use super::remotecommand::{Outcome, Version, error_payload};
use super::spdy::{self, FLAG_FIN, Frame, HeaderCodec, Headers};
use super::{ExecParams, PortForwardParams};
use crate::runtime::Runtime;

/// Most streams one connection may open.
const MAX_STREAMS: usize = 256;
/// How long a client has to open the streams an exec needs (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Client data buffered for a forwarded connection that is still being dialled.
const MAX_PENDING: usize = 1 << 20;

/// Protocols for exec (`X-Stream-Protocol-Version`), best first.
pub const EXEC_PROTOCOLS: &[(&str, Version)] = &[
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V1),
    ("v2.channel.k8s.io", Version::V1),
    ("channel.k8s.io", Version::V1),
];
pub const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The first client-offered protocol we speak, in the client's order.
pub fn negotiate<'a>(offered: &[String], ours: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| ours.iter().find(|p| **p == o).copied())
}

enum Event {
    NewStream { id: u32, headers: Headers },
    Data { id: u32, data: Vec<u8>, fin: bool },
    Reset(u32),
}

/// A running SPDY connection: frames out, stream events in.
struct Conn {
    out: mpsc::Sender<Frame>,
    events: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Conn {
    fn start<S>(io: S) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut r, mut w) = tokio::io::split(io);
        let (out, mut out_rx) = mpsc::channel::<Frame>(64);
        let (ev_tx, events) = mpsc::channel::<Event>(64);
        let writer = tokio::spawn(async move {
            let mut codec = HeaderCodec::new();
            while let Some(f) = out_rx.recv().await {
                if spdy::write_frame(&mut w, &f, &mut codec).await.is_err() {
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        let replies = out.clone();
        let reader = tokio::spawn(async move {
            let mut codec = HeaderCodec::new();
            let mut streams = 0usize;
            let mut last_good = 0u32;
            loop {
                let frame = match spdy::read_frame(&mut r, &mut codec).await {
                    Ok(f) => f,
                    Err(spdy::SpdyError::Io(_)) => return,
                    Err(e) => {
                        debug!(error = %e, "SPDY protocol error: going away");
                        let _ = replies
                            .send(Frame::GoAway {
                                last_good,
                                status: spdy::GOAWAY_PROTOCOL_ERROR,
                            })
                            .await;
                        return;
                    }
                };
                match frame {
                    Frame::SynStream {
                        stream_id, headers, ..
                    } => {
                        let refuse =
                            if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last_good {
                                Some(spdy::PROTOCOL_ERROR)
                            } else if streams >= MAX_STREAMS {
                                Some(spdy::REFUSED_STREAM)
                            } else {
                                None
                            };
                        if let Some(status) = refuse {
                            let _ = replies.send(Frame::RstStream { stream_id, status }).await;
                            continue;
                        }
                        streams += 1;
                        last_good = stream_id;
                        let _ = replies
                            .send(Frame::SynReply {
                                stream_id,
                                flags: 0,
                                headers: Vec::new(),
                            })
                            .await;
                        let ev = Event::NewStream {
                            id: stream_id,
                            headers,
                        };
                        if ev_tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        if !data.is_empty() {
                            let _ = replies
                                .send(Frame::WindowUpdate {
                                    stream_id,
                                    delta: data.len() as u32,
                                })
                                .await;
                        }
                        let ev = Event::Data {
                            id: stream_id,
                            data,
                            fin: flags & FLAG_FIN != 0,
                        };
                        if ev_tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Frame::RstStream { stream_id, .. } => {
                        let gone = ev_tx.send(Event::Reset(stream_id)).await.is_err();
                        if gone {
                            return;
                        }
                    }
                    Frame::Ping(id) => {
                        let _ = replies.send(Frame::Ping(id)).await;
                    }
                    Frame::GoAway { .. } => return,
                    _ => {}
                }
            }
        });
        Conn {
            out,
            events,
            reader,
            writer,
        }
    }

    async fn send(&self, f: Frame) {
        let _ = self.out.send(f).await;
    }

    async fn data(&self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.to_vec(),
        })
        .await;
    }

    /// GOAWAY, then give the client a moment to close, then stop both halves.
    async fn finish(self) {
        let Conn {
            out,
            mut events,
            reader,
            writer,
        } = self;
        let _ = out
            .send(Frame::GoAway {
                last_good: 0,
                status: spdy::GOAWAY_OK,
            })
            .await;
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while events.recv().await.is_some() {}
        })
        .await;
        reader.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
}

fn stream_type(headers: &Headers) -> String {
    spdy::header(headers, "streamtype")
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Serves one exec over an upgraded SPDY connection.
pub(crate) async fn exec_spdy<S>(
    io: S,
    version: Version,
    rt: Arc<Runtime>,
    p: ExecParams,
    attach: bool,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut conn = Conn::start(io);
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut early: Vec<Event> = Vec::new();
    let mut required = vec!["error"];
    if p.stdin {
        required.push("stdin");
    }
    if p.stdout {
        required.push("stdout");
    }
    if p.stderr && !p.tty {
        required.push("stderr");
    }
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !required.iter().all(|k| ids.contains_key(*k)) {
        let ev = match tokio::time::timeout_at(deadline, conn.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return conn.finish().await,
            Err(_) => {
                debug!(container = %p.container_id, "SPDY exec: streams not opened in time");
                return conn.finish().await;
            }
        };
        match ev {
            Event::NewStream { id, headers } => {
                if !register(&conn, &mut ids, id, &headers).await {
                    return conn.finish().await;
                }
            }
            other => early.push(other),
        }
    }
    let error_id = ids["error"];
    let mut proc = match Proc::start(&rt, &p, attach).await {
        Ok(proc) => proc,
        Err(e) => {
            if let Some(payload) = error_payload(version, &p.cmd, &Outcome::Failed(e)) {
                conn.data(error_id, &payload, false).await;
            }
            close_all(&conn, &ids).await;
            return conn.finish().await;
        }
    };
    let (mut stdin, stdout, stderr) = proc.take_io();
    let mut pumps = Vec::new();
    for (out, kind) in [(stdout, "stdout"), (stderr, "stderr")] {
        if let Some(r) = out {
            let id = ids.get(kind).copied();
            pumps.push(tokio::spawn(pump(r, id, conn.out.clone())));
        }
    }
    let mut resize_buf: Vec<u8> = Vec::new();
    let mut early = early.into_iter();
    let ended: Result<i32, String> = loop {
        let ev = if let Some(ev) = early.next() {
            Some(ev)
        } else {
            tokio::select! {
                code = proc.wait() => break Ok(code.unwrap_or(255)),
                ev = conn.events.recv() => ev,
            }
        };
        let Some(ev) = ev else {
            break Err("the client went away".into());
        };
        match ev {
            Event::NewStream { id, headers } => {
                if !register(&conn, &mut ids, id, &headers).await {
                    break Err("bad stream".into());
                }
            }
            Event::Data { id, data, fin } if Some(id) == ids.get("stdin").copied() => {
                if let Some(w) = stdin.as_mut()
                    && !data.is_empty()
                    && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
                if fin {
                    stdin = None;
                }
            }
            Event::Data { id, data, .. } if Some(id) == ids.get("resize").copied() => {
                resize_buf.extend(data);
                if resize_buf.len() > 64 << 10 {
                    break Err("resize stream overflow".into());
                }
                match drain_sizes(&mut resize_buf) {
                    Ok(sizes) => {
                        for (w, h) in sizes {
                            proc.resize(w, h);
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
            Event::Data { .. } => {}
            Event::Reset(id) if Some(id) == ids.get("stdin").copied() => stdin = None,
            Event::Reset(_) => break Err("a stream was reset".into()),
        }
    };
    drop(stdin);
    match ended {
        Ok(code) => {
            for pump in pumps.iter_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
            }
            for pump in &pumps {
                pump.abort();
            }
            if let Some(payload) = error_payload(version, &p.cmd, &Outcome::Exited(code)) {
                conn.data(error_id, &payload, false).await;
            }
        }
        Err(reason) => {
            debug!(container = %p.container_id, %reason, "SPDY exec ended early: killing it");
            proc.kill().await;
            for pump in &pumps {
                pump.abort();
            }
        }
    }
    close_all(&conn, &ids).await;
    conn.finish().await;
}

/// Records a new exec stream; false (after a RST) for unknown or duplicate types.
async fn register(conn: &Conn, ids: &mut HashMap<String, u32>, id: u32, headers: &Headers) -> bool {
    let kind = stream_type(headers);
    let known = matches!(
        kind.as_str(),
        "error" | "stdin" | "stdout" | "stderr" | "resize"
    );
    if !known || ids.contains_key(&kind) {
        conn.send(Frame::RstStream {
            stream_id: id,
            status: spdy::PROTOCOL_ERROR,
        })
        .await;
        return false;
    }
    ids.insert(kind, id);
    true
}

/// FIN on every stream we write to.
async fn close_all(conn: &Conn, ids: &HashMap<String, u32>) {
    for kind in ["stdout", "stderr", "error"] {
        if let Some(id) = ids.get(kind) {
            conn.data(*id, &[], true).await;
        }
    }
}

/// Whole JSON size objects from the resize stream (a Go json.Encoder stream).
fn drain_sizes(buf: &mut Vec<u8>) -> Result<Vec<(u16, u16)>, String> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut sizes = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Size>();
    let mut consumed = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                consumed = it.byte_offset();
                sizes.push((s.width, s.height));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Err(format!("bad resize message: {e}")),
            None => break,
        }
    }
    buf.drain(..consumed);
    Ok(sizes)
}

async fn pump(mut r: Reader, id: Option<u32>, out: mpsc::Sender<Frame>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Some(stream_id) = id else { continue };
                let f = Frame::Data {
                    stream_id,
                    flags: 0,
                    data: buf[..n].to_vec(),
                };
                if out.send(f).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One forwarded connection: its stream pair and its TCP connection.
#[derive(Default)]
struct Forward {
    port: u16,
    error_id: Option<u32>,
    data_id: Option<u32>,
    dialling: bool,
    writer: Option<OwnedWriteHalf>,
    pending: Vec<u8>,
    client_done: bool,
}

/// Serves port-forward streams over an upgraded SPDY connection until the client goes.
pub(crate) async fn portforward_spdy<S>(io: S, rt: Arc<Runtime>, p: PortForwardParams)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut conn = Conn::start(io);
    let sandbox = rt.sandbox(&p.sandbox_id);
    let mut forwards: HashMap<String, Forward> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    let (dialled_tx, mut dialled_rx) =
        mpsc::channel::<(String, std::io::Result<tokio::net::TcpStream>)>(16);
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            ev = conn.events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::NewStream { id, headers } => {
                        let kind = stream_type(&headers);
                        let port = spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                        // Old clients send no requestID: the data stream follows its error stream.
                        let key = match spdy::header(&headers, "requestid") {
                            Some(r) => r.to_string(),
                            None if kind == "data" => format!("#{}", id.saturating_sub(2)),
                            None => format!("#{id}"),
                        };
                        let (Some(port), true) = (port.filter(|p| *p > 0), kind == "error" || kind == "data") else {
                            conn.send(Frame::RstStream { stream_id: id, status: spdy::PROTOCOL_ERROR }).await;
                            continue;
                        };
                        if forwards.len() >= MAX_STREAMS / 2 && !forwards.contains_key(&key) {
                            conn.send(Frame::RstStream { stream_id: id, status: spdy::REFUSED_STREAM }).await;
                            continue;
                        }
                        let f = forwards.entry(key.clone()).or_default();
                        let slot = if kind == "error" { &mut f.error_id } else { &mut f.data_id };
                        if slot.is_some() || (f.port != 0 && f.port != port) {
                            conn.send(Frame::RstStream { stream_id: id, status: spdy::PROTOCOL_ERROR }).await;
                            continue;
                        }
                        *slot = Some(id);
                        f.port = port;
                        by_stream.insert(id, key.clone());
                        if f.error_id.is_some() && f.data_id.is_some() && !f.dialling {
                            f.dialling = true;
                            let netns = match &sandbox {
                                Some(sb) if sb.host_network => Ok(None),
                                Some(sb) => sb.pins.net.clone().map(Some).ok_or("the pod has no network namespace"),
                                None => Err("the pod sandbox is gone"),
                            };
                            let tx = dialled_tx.clone();
                            tokio::spawn(async move {
                                let res = match netns {
                                    Ok(ns) => super::portforward::connect(ns, port).await,
                                    Err(m) => Err(std::io::Error::other(m)),
                                };
                                let _ = tx.send((key, res)).await;
                            });
                        }
                    }
                    Event::Data { id, data, fin } => {
                        let Some(f) = by_stream.get(&id).and_then(|k| forwards.get_mut(k)) else { continue };
                        if f.data_id != Some(id) {
                            continue;
                        }
                        if let Some(w) = f.writer.as_mut() {
                            if w.write_all(&data).await.is_err() {
                                f.writer = None;
                            }
                        } else if f.pending.len() + data.len() <= MAX_PENDING {
                            f.pending.extend(data);
                        } else {
                            conn.send(Frame::RstStream { stream_id: id, status: spdy::FLOW_CONTROL_ERROR }).await;
                            continue;
                        }
                        if fin {
                            f.client_done = true;
                            if let Some(w) = f.writer.as_mut() {
                                let _ = w.shutdown().await;
                            }
                        }
                    }
                    Event::Reset(id) => {
                        if let Some(f) = by_stream.get(&id).and_then(|k| forwards.get_mut(k)) {
                            f.writer = None;
                            f.client_done = true;
                        }
                    }
                }
            }
            Some((key, res)) = dialled_rx.recv() => {
                let Some(f) = forwards.get_mut(&key) else { continue };
                let (Some(data_id), Some(error_id)) = (f.data_id, f.error_id) else { continue };
                match res {
                    Ok(stream) => {
                        let (mut r, mut w) = stream.into_split();
                        if !f.pending.is_empty() && w.write_all(&f.pending).await.is_err() {
                            f.client_done = true;
                        }
                        f.pending = Vec::new();
                        if f.client_done {
                            let _ = w.shutdown().await;
                        } else {
                            f.writer = Some(w);
                        }
                        let out = conn.out.clone();
                        readers.push(tokio::spawn(async move {
                            let mut buf = vec![0u8; 32 * 1024];
                            loop {
                                match r.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        let f = Frame::Data { stream_id: data_id, flags: 0, data: buf[..n].to_vec() };
                                        if out.send(f).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            for id in [data_id, error_id] {
                                let _ = out.send(Frame::Data { stream_id: id, flags: FLAG_FIN, data: Vec::new() }).await;
                            }
                        }));
                    }
                    Err(e) => {
                        let msg = format!("error forwarding port {} to pod {}: {e}", f.port, p.sandbox_id);
                        debug!(pod = %p.sandbox_id, port = f.port, error = %e, "SPDY port-forward dial failed");
                        conn.data(error_id, msg.as_bytes(), true).await;
                        conn.data(data_id, &[], true).await;
                    }
                }
            }
        }
    }
    for r in &readers {
        r.abort();
    }
    drop(forwards);
    conn.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_are_taken_whole_from_the_stream() {
        let mut buf = br#"{"Width":80,"Height":24}
{"Width":100,"Hei"#
            .to_vec();
        assert_eq!(drain_sizes(&mut buf).unwrap(), vec![(80, 24)]);
        buf.extend(
            br#"ght":30}
"#,
        );
        assert_eq!(drain_sizes(&mut buf).unwrap(), vec![(100, 30)]);
        assert!(drain_sizes(&mut b"[1]".to_vec()).is_err());
    }

    #[test]
    fn negotiation_follows_the_clients_order() {
        let ours: Vec<&str> = EXEC_PROTOCOLS.iter().map(|p| p.0).collect();
        let offered = vec![
            "v9".to_string(),
            "channel.k8s.io".into(),
            "v4.channel.k8s.io".into(),
        ];
        assert_eq!(negotiate(&offered, &ours), Some("channel.k8s.io"));
        assert_eq!(negotiate(&["x".to_string()], &ours), None);
    }
}
