//! The HTTP side: `/exec/<token>`, `/attach/<token>`, `/portforward/<token>`. A token is
//! spent by its first request; unknown, spent and expired tokens get 404. A WebSocket or
//! SPDY/3.1 upgrade hands the connection to the protocol's session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, warn};

use super::cache::{Pending, TokenCache};
use super::{portforward, remotecommand, spdy_session};
use crate::runtime::Runtime;

/// Largest client message or frame: stdin chunks and resizes are small; more is hostile.
const MAX_MESSAGE: usize = 1 << 20;
/// Most connections served at once (sessions included).
const MAX_CONNECTIONS: usize = 256;
/// Most ports in one port-forward request (two channels each, channel numbers are a byte).
const MAX_PORTS: usize = 64;

pub(crate) async fn serve(listener: TcpListener, cache: Arc<TokenCache>, rt: Arc<Runtime>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // At the limit, new connections wait in the listen backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "streaming server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cache = cache.clone();
        let rt = rt.clone();
        tokio::spawn(async move {
            // Held by the connection and by the session an upgrade starts.
            let slot = Arc::new(slot);
            let svc = hyper::service::service_fn(move |req| {
                let res = route(&cache, &rt, req, &slot);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "streaming connection ended with an error");
            }
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Comma-separated values of every `name` header, trimmed.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

type Slot = Arc<tokio::sync::OwnedSemaphorePermit>;

fn route(
    cache: &TokenCache,
    rt: &Arc<Runtime>,
    mut req: Request<Incoming>,
    slot: &Slot,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let token = token.trim_end_matches('/');
    if token.is_empty() || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let Some(pending) = cache.take(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    let headers = req.headers();
    let upgrade = header_list(headers, "upgrade");
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return spdy_upgrade(rt, req, pending, slot.clone());
    }
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return plain(
            StatusCode::BAD_REQUEST,
            "an upgrade to WebSocket or SPDY/3.1 is required",
        );
    }
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if !version_ok {
        let mut r = plain(StatusCode::BAD_REQUEST, "unsupported WebSocket version");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return r;
    }
    let offered = header_list(headers, "sec-websocket-protocol");
    enum Session {
        Exec(remotecommand::WsProtocol, super::ExecParams, bool),
        PortForward(bool, super::PortForwardParams),
    }
    let (chosen, session) = match pending {
        Pending::Exec(p) => match remotecommand::negotiate(&offered) {
            Some((name, proto)) => (name, Session::Exec(proto, p, false)),
            None => return no_protocol(&offered),
        },
        Pending::Attach(a) => match remotecommand::negotiate(&offered) {
            Some((name, proto)) => (name, Session::Exec(proto, attach_params(a), true)),
            None => return no_protocol(&offered),
        },
        Pending::PortForward(mut p) => {
            let query = portforward::ports_from_query(req.uri().query().unwrap_or(""));
            match query {
                Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
                Ok(q) if !q.is_empty() => p.ports = q,
                Ok(_) => {}
            }
            if p.ports.is_empty() || p.ports.len() > MAX_PORTS {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("between 1 and {MAX_PORTS} ports are required"),
                );
            }
            match portforward::negotiate(&offered) {
                Some((name, base64)) => (name, Session::PortForward(base64, p)),
                None => return no_protocol(&offered),
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rt = rt.clone();
    let slot = slot.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        match session {
            Session::Exec(proto, p, attach) => {
                remotecommand::exec_ws(ws, proto, rt, p, attach).await
            }
            Session::PortForward(base64, p) => portforward::portforward_ws(ws, base64, rt, p).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(name) = chosen {
        h.insert("sec-websocket-protocol", HeaderValue::from_static(name));
    }
    r
}

/// The SPDY/3.1 upgrade: protocol from `X-Stream-Protocol-Version`, as the kubelet does.
fn spdy_upgrade(
    rt: &Arc<Runtime>,
    mut req: Request<Incoming>,
    pending: Pending,
    slot: Slot,
) -> Response<Full<Bytes>> {
    let offered = header_list(req.headers(), "x-stream-protocol-version");
    if offered.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let exec_names: Vec<&'static str> = spdy_session::EXEC_PROTOCOLS.iter().map(|p| p.0).collect();
    let ours: &[&'static str] = match &pending {
        Pending::Exec(_) | Pending::Attach(_) => &exec_names,
        Pending::PortForward(_) => &[spdy_session::PORTFORWARD_PROTOCOL],
    };
    let Some(chosen) = spdy_session::negotiate(&offered, ours) else {
        let mut r = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {ours:?}"
            ),
        );
        for p in ours {
            r.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(p),
            );
        }
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rt = rt.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                debug!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        let version = spdy_session::EXEC_PROTOCOLS
            .iter()
            .find(|(n, _)| *n == chosen)
            .map(|(_, v)| *v)
            .unwrap_or(remotecommand::Version::V1);
        match pending {
            Pending::Exec(p) => spdy_session::exec_spdy(io, version, rt, p, false).await,
            Pending::Attach(a) => {
                spdy_session::exec_spdy(io, version, rt, attach_params(a), true).await
            }
            Pending::PortForward(p) => spdy_session::portforward_spdy(io, rt, p).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(chosen),
    );
    r
}

/// An attach runs through the exec sessions, with no command.
fn attach_params(a: super::AttachParams) -> super::ExecParams {
    super::ExecParams {
        container_id: a.container_id,
        cmd: Vec::new(),
        tty: a.tty,
        stdin: a.stdin,
        stdout: a.stdout,
        stderr: a.stderr,
    }
}

fn no_protocol(offered: &[String]) -> Response<Full<Bytes>> {
    plain(
        StatusCode::BAD_REQUEST,
        &format!("none of the offered subprotocols {offered:?} is supported"),
    )
}
