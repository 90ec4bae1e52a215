//! Port forwarding over WebSocket (`v4.channel.k8s.io` framing, also offered under the
//! `v4.portforward.k8s.io` name): for the i-th port of the `ports` query, channel 2i carries
//! data and 2i+1 errors; our first message on each channel is the port, 2 bytes little
//! endian. The TCP connection is opened inside the pod's network namespace: a socket
//! belongs to the namespace of the thread that created it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;

use super::PortForwardParams;
use super::remotecommand::{Inbound, decode, encode};
use crate::runtime::Runtime;

/// Names we answer to, with whether frames are base64 text.
const PROTOCOLS: &[(&str, bool)] = &[
    ("v4.channel.k8s.io", false),
    ("v4.portforward.k8s.io", false),
    ("v4.base64.channel.k8s.io", true),
    ("channel.k8s.io", false),
    ("base64.channel.k8s.io", true),
];

/// The first offered protocol we speak (`None` offered: binary, no header).
pub fn negotiate(offered: &[String]) -> Option<(Option<&'static str>, bool)> {
    if offered.is_empty() {
        return Some((None, false));
    }
    offered.iter().find_map(|o| {
        PROTOCOLS
            .iter()
            .find(|(n, _)| n == o)
            .map(|(n, b)| (Some(*n), *b))
    })
}

/// Ports from a query string: `ports=80,8080` (the parameter may repeat).
pub fn ports_from_query(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(("ports", value)) = pair.split_once('=') else {
            continue;
        };
        for p in value.split([',', ' ']).filter(|s| !s.is_empty()) {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {p:?}"))?;
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Connects to 127.0.0.1:`port` in the network namespace pinned at `netns` (the daemon's own
/// when `None`, for host-network pods).
pub(crate) async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))?;
    };
    // A thread of its own (never a pooled one): it enters the pod's netns and ends.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let res = (|| -> std::io::Result<std::net::TcpStream> {
                let f = std::fs::File::open(&netns)?;
                setns(f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(res);
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread died"))??;
    TcpStream::from_std(std_stream)
}

/// Serves one port-forward session until every connection ended or the client goes.
pub(crate) async fn portforward_ws<S>(
    ws: WebSocketStream<S>,
    base64: bool,
    rt: Arc<Runtime>,
    p: PortForwardParams,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let sandbox = rt.sandbox(&p.sandbox_id);
    let mut writers: Vec<Option<OwnedWriteHalf>> = Vec::new();
    let (done_tx, mut done_rx) = mpsc::channel::<usize>(p.ports.len().max(1));
    let mut readers = Vec::new();
    for (i, port) in p.ports.iter().enumerate() {
        let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
        let prefix = port.to_le_bytes();
        let _ = tx.send(encode(base64, data, &prefix)).await;
        let _ = tx.send(encode(base64, err, &prefix)).await;
        let conn = match &sandbox {
            None => Err(std::io::Error::other("the pod sandbox is gone")),
            Some(sb) if sb.host_network => connect(None, *port).await,
            Some(sb) => match &sb.pins.net {
                Some(net) => connect(Some(net.clone()), *port).await,
                None => Err(std::io::Error::other("the pod has no network namespace")),
            },
        };
        match conn {
            Ok(c) => {
                let (mut r, w) = c.into_split();
                writers.push(Some(w));
                let tx = tx.clone();
                let done = done_tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(encode(base64, data, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = done.send(i).await;
                }));
            }
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod {}: {e}", p.sandbox_id);
                debug!(pod = %p.sandbox_id, port, error = %e, "port-forward connect failed");
                let _ = tx.send(encode(base64, err, msg.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    drop(done_tx);
    let mut open = readers.len();
    let reason = loop {
        if open == 0 {
            break None;
        }
        tokio::select! {
            d = done_rx.recv() => {
                if let Some(i) = d && let Some(w) = writers.get_mut(i) {
                    *w = None;
                }
                open -= 1;
            }
            msg = stream.next() => {
                let msg = match msg {
                    None | Some(Err(_)) => break Some("the client went away".to_string()),
                    Some(Ok(m)) => m,
                };
                match decode(base64, msg) {
                    Err(e) => break Some(e),
                    Ok(Inbound::Nothing) => {}
                    Ok(Inbound::Closed) => break Some("the client closed the stream".into()),
                    Ok(Inbound::Data(ch, data)) => {
                        let i = usize::from(ch / 2);
                        if i >= writers.len() {
                            break Some(format!("unknown channel {ch}"));
                        }
                        if ch % 2 == 0 && let Some(w) = writers[i].as_mut()
                            && w.write_all(&data).await.is_err()
                        {
                            writers[i] = None;
                        }
                    }
                }
            }
        }
    };
    for r in &readers {
        r.abort();
    }
    drop(writers);
    let (code, text) = match &reason {
        None => (CloseCode::Normal, String::new()),
        Some(r) => (CloseCode::Protocol, r.chars().take(100).collect()),
    };
    debug!(pod = %p.sandbox_id, reason = ?reason, "port-forward session ended");
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: text.into(),
        })))
        .await;
    drop(tx);
    // Read until the client answers the close: closing a socket with unread input resets
    // the connection, and the client could lose what we sent last.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports_from_query("ports=80,8080").unwrap(), vec![80, 8080]);
        assert_eq!(ports_from_query("a=1&ports=1&ports=2").unwrap(), vec![1, 2]);
        assert!(ports_from_query("ports=0").is_err());
        assert!(ports_from_query("ports=70000").is_err());
        assert!(ports_from_query("").unwrap().is_empty());
    }
}
