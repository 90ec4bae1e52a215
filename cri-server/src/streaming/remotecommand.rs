//! The remotecommand protocol over WebSocket (`channel.k8s.io` and its `v4.`/`v5.` and
//! `base64.` variants): every message is one channel byte (or digit, base64) and a payload.
//! Channels: 0 stdin, 1 stdout, 2 stderr, 3 error (a Status JSON from v4 on), 4 resize
//! (`{"Width":..,"Height":..}`), 255 close (v5: the payload names the channel to close).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, warn};

use super::ExecParams;
use super::attach::Proc;
use super::exec::Reader;
use crate::runtime::Runtime;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`: the error channel carries plain text.
    V1,
    /// `v4.channel.k8s.io`: the error channel carries a Status JSON.
    V4,
    /// `v5.channel.k8s.io`: v4 plus the close channel.
    V5,
}

/// A negotiated WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProtocol {
    pub name: &'static str,
    pub version: Version,
    /// Text frames: a channel digit and base64 payload.
    pub base64: bool,
}

const PROTOCOLS: &[WsProtocol] = &[
    WsProtocol {
        name: "v5.channel.k8s.io",
        version: Version::V5,
        base64: false,
    },
    WsProtocol {
        name: "v4.channel.k8s.io",
        version: Version::V4,
        base64: false,
    },
    WsProtocol {
        name: "v4.base64.channel.k8s.io",
        version: Version::V4,
        base64: true,
    },
    WsProtocol {
        name: "channel.k8s.io",
        version: Version::V1,
        base64: false,
    },
    WsProtocol {
        name: "base64.channel.k8s.io",
        version: Version::V1,
        base64: true,
    },
];

/// The first offered protocol we speak; a client that offers none gets `channel.k8s.io`
/// (no header in the answer), as the kubelet does. `None`: nothing offered matches.
pub fn negotiate(offered: &[String]) -> Option<(Option<&'static str>, WsProtocol)> {
    if offered.is_empty() {
        return Some((None, PROTOCOLS[3]));
    }
    offered.iter().find_map(|o| {
        PROTOCOLS
            .iter()
            .find(|p| p.name == o)
            .map(|p| (Some(p.name), *p))
    })
}

/// One message of ours on `channel`.
pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(2 + data.len() * 4 / 3);
        s.push((b'0' + channel % 10) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// What a client message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Data(u8, Vec<u8>),
    /// Control frames and empty messages.
    Nothing,
    Closed,
}

/// Decodes a client message; `Err` for frames the protocol does not allow.
pub fn decode(base64: bool, msg: Message) -> Result<Inbound, String> {
    match msg {
        Message::Binary(b) if !base64 => match b.split_first() {
            None => Ok(Inbound::Nothing),
            Some((c, rest)) => Ok(Inbound::Data(*c, rest.to_vec())),
        },
        Message::Text(t) if base64 => {
            let b = t.as_bytes();
            let Some((c, rest)) = b.split_first() else {
                return Ok(Inbound::Nothing);
            };
            if !c.is_ascii_digit() {
                return Err(format!("channel {:?} is not a digit", *c as char));
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|e| format!("bad base64 payload: {e}"))?;
            Ok(Inbound::Data(c - b'0', data))
        }
        Message::Binary(_) => Err("binary frame on a base64 protocol".into()),
        Message::Text(_) => Err("text frame on a binary protocol".into()),
        Message::Close(_) => Ok(Inbound::Closed),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Inbound::Nothing),
    }
}

/// How a remote command ended, for the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Failed(String),
}

/// The error channel's payload (`None`: nothing to send), as the kubelet writes it.
pub fn error_payload(version: Version, cmd: &[String], outcome: &Outcome) -> Option<Vec<u8>> {
    let message = match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
        )),
        Outcome::Failed(m) => Some(m.clone()),
    };
    if version == Version::V1 {
        return message.map(String::into_bytes);
    }
    let status = match (outcome, message) {
        (_, None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Outcome::Exited(code), Some(message)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        (Outcome::Failed(_), Some(message)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// Terminal size as the client sends it on the resize channel.
#[derive(Debug, serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Serves one exec over an upgraded WebSocket until the command exits or the client goes.
pub(crate) async fn exec_ws<S>(
    ws: WebSocketStream<S>,
    proto: WsProtocol,
    rt: Arc<Runtime>,
    p: ExecParams,
    attach: bool,
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
    let mut proc = match Proc::start(&rt, &p, attach).await {
        Ok(proc) => proc,
        Err(e) => {
            warn!(container = %p.container_id, error = %e, "streamed exec failed to start");
            finish(&tx, proto, &p.cmd, Outcome::Failed(e)).await;
            drop(tx);
            drain(&mut stream).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            return;
        }
    };
    let (mut stdin, stdout, stderr) = proc.take_io();
    let mut pumps = Vec::new();
    for (out, ch, wanted) in [(stdout, STDOUT, p.stdout), (stderr, STDERR, p.stderr)] {
        if let Some(r) = out {
            pumps.push(tokio::spawn(pump(r, proto.base64, ch, wanted, tx.clone())));
        }
    }
    let ended = loop {
        tokio::select! {
            code = proc.wait() => break Ok(code),
            msg = stream.next() => {
                let msg = match msg {
                    None => break Err("the client went away".to_string()),
                    Some(Err(e)) => break Err(format!("websocket: {e}")),
                    Some(Ok(m)) => m,
                };
                match decode(proto.base64, msg) {
                    Err(e) => break Err(e),
                    Ok(Inbound::Nothing) => {}
                    Ok(Inbound::Closed) => break Err("the client closed the stream".into()),
                    Ok(Inbound::Data(STDIN, data)) => {
                        if let Some(w) = stdin.as_mut()
                            && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                        {
                            stdin = None;
                        }
                    }
                    Ok(Inbound::Data(RESIZE, data)) => match serde_json::from_slice::<TermSize>(&data) {
                        Ok(s) => proc.resize(s.width, s.height),
                        Err(e) => break Err(format!("bad resize message: {e}")),
                    },
                    Ok(Inbound::Data(CLOSE, data)) if proto.version == Version::V5 => {
                        if data.first() == Some(&STDIN) {
                            stdin = None;
                        }
                    }
                    Ok(Inbound::Data(ch, _)) => break Err(format!("unknown channel {ch}")),
                }
            }
        }
    };
    drop(stdin);
    match ended {
        Ok(code) => {
            let code = code.unwrap_or(255);
            // Output the process wrote before it exited; a background child holding the pipe
            // open does not keep the stream.
            for pump in pumps.iter_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
            }
            for pump in &pumps {
                pump.abort();
            }
            debug!(container = %p.container_id, exit_code = code, "streamed exec exited");
            finish(&tx, proto, &p.cmd, Outcome::Exited(code)).await;
            drain(&mut stream).await;
        }
        Err(reason) => {
            debug!(container = %p.container_id, %reason, "streamed exec ended early: killing it");
            proc.kill().await;
            for pump in &pumps {
                pump.abort();
            }
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Protocol,
                    reason: reason.chars().take(100).collect::<String>().into(),
                })))
                .await;
            drain(&mut stream).await;
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

/// Reads until the client answers our close frame (or 2 s pass): closing a socket with unread
/// input resets the connection, and the client could lose what we sent last.
async fn drain<S>(stream: &mut S)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Sends the outcome on the error channel, then a normal close.
async fn finish(tx: &mpsc::Sender<Message>, proto: WsProtocol, cmd: &[String], outcome: Outcome) {
    if let Some(payload) = error_payload(proto.version, cmd, &outcome) {
        let _ = tx.send(encode(proto.base64, ERROR, &payload)).await;
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

/// Copies one output of the process into messages on `channel` (or discards it).
async fn pump(mut r: Reader, base64: bool, channel: u8, wanted: bool, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if wanted => {
                if tx.send(encode(base64, channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_known_protocol() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (name, p) = negotiate(&o(&["v9.x", "v4.channel.k8s.io", "v5.channel.k8s.io"])).unwrap();
        assert_eq!(
            (name, p.version, p.base64),
            (Some("v4.channel.k8s.io"), Version::V4, false)
        );
        let (_, p) = negotiate(&o(&["base64.channel.k8s.io"])).unwrap();
        assert_eq!((p.version, p.base64), (Version::V1, true));
        assert_eq!(negotiate(&[]).unwrap().0, None);
        assert!(negotiate(&o(&["SPDY/3.1"])).is_none());
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_errors() {
        for b64 in [false, true] {
            let m = encode(b64, STDIN, b"hi\n");
            assert_eq!(decode(b64, m).unwrap(), Inbound::Data(0, b"hi\n".to_vec()));
        }
        assert_eq!(encode(true, STDOUT, b"ab"), Message::text("1YWI="));
        assert!(decode(true, Message::text("x")).is_err());
        assert!(decode(true, Message::text("1!!!")).is_err());
        assert!(decode(false, Message::text("0abc")).is_err());
        assert!(decode(true, Message::binary(vec![0u8])).is_err());
        assert_eq!(
            decode(false, Message::binary(vec![])).unwrap(),
            Inbound::Nothing
        );
    }

    #[test]
    fn non_zero_exit_is_a_status_with_the_exit_code_cause() {
        let cmd = vec!["sh".to_string()];
        let v: serde_json::Value =
            serde_json::from_slice(&error_payload(Version::V4, &cmd, &Outcome::Exited(3)).unwrap())
                .unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let ok = error_payload(Version::V5, &cmd, &Outcome::Exited(0)).unwrap();
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(error_payload(Version::V1, &cmd, &Outcome::Exited(0)), None);
    }
}
