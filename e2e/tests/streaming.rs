//! Exec and PortForward streams end to end: the real cri-server with runc and the reference
//! CNI plugins, and a WebSocket client speaking the Kubernetes channel protocols to the URLs
//! the RPCs return. Every test runs in a node network namespace of its own, on 10.234.x.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cri_server::streaming::spdy;
use e2e::node::*;
use futures::{SinkExt, StreamExt};
use k8s_cri::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::Code;

/// How long a streaming URL stays valid in these tests.
const TOKEN_TTL_SECS: u64 = 2;

/// A node on 10.234.<subnet>.0/24 whose streaming URLs expire after TOKEN_TTL_SECS.
fn in_node<F, Fut>(subnet: u8, body: F)
where
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    in_node_opts(
        NodeOptions {
            net: 234,
            subnet,
            extra_config: format!("[streaming]\ntoken_ttl_secs = {TOKEN_TTL_SECS}\n"),
            ..Default::default()
        },
        body,
    )
}

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to a streaming URL offering `protocols`.
async fn ws_connect(
    url: &str,
    protocols: &str,
) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.as_str().into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(host)
        .await
        .expect("connect streaming server");
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, proto))
}

/// A plain HTTP GET of `url`: the status code.
async fn http_status(url: &str) -> u16 {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

/// Everything the server sent until it closed, per channel (binary framing).
#[derive(Debug, Default)]
struct Collected {
    channels: HashMap<u8, Vec<u8>>,
    closed: bool,
}

impl Collected {
    fn text(&self, ch: u8) -> String {
        String::from_utf8_lossy(self.channels.get(&ch).map(Vec::as_slice).unwrap_or(&[]))
            .into_owned()
    }
    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.text(3)).unwrap_or_else(|e| panic!("{e}: {:?}", self.text(3)))
    }
}

fn absorb(c: &mut Collected, msg: Message, base64: bool) {
    use base64::Engine;
    match msg {
        Message::Binary(b) if !b.is_empty() => c.channels.entry(b[0]).or_default().extend(&b[1..]),
        Message::Text(t) if base64 && !t.is_empty() => {
            let ch = t.as_bytes()[0] - b'0';
            let data = base64::engine::general_purpose::STANDARD
                .decode(&t.as_bytes()[1..])
                .unwrap();
            c.channels.entry(ch).or_default().extend(data);
        }
        Message::Close(_) => c.closed = true,
        _ => {}
    }
}

async fn collect(ws: &mut Ws, base64: bool, within: Duration) -> Collected {
    let mut c = Collected::default();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(m)) = ws.next().await {
            absorb(&mut c, m, base64);
            if c.closed {
                break;
            }
        }
    })
    .await;
    c
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = vec![ch];
    v.extend_from_slice(data);
    Message::binary(v)
}

#[test]
fn streaming_urls_are_one_time_expire_and_unknown_ones_get_404() {
    in_node(41, |mut n| async move {
        let err = n
            .exec_url("nope", &["true"], false, false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let err =
            n.c.runtime
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: "nope".into(),
                    port: vec![80],
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        let pod = n.run_pod("tokens").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let err = n.exec_url(&id, &["sh"], true, true).await;
        assert!(err.is_ok(), "tty without stderr is fine: {err:?}");
        let err =
            n.c.runtime
                .exec(ExecRequest {
                    container_id: id.clone(),
                    cmd: vec!["sh".into()],
                    tty: true,
                    stderr: true,
                    ..Default::default()
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        let url = n.exec_url(&id, &["true"], false, false).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let base = url.rsplit_once('/').unwrap().0.to_string();
        assert_eq!(http_status(&format!("{base}/0123456789abcdef")).await, 404);
        // Used once (here without an upgrade), then spent.
        assert_eq!(http_status(&url).await, 400);
        assert_eq!(http_status(&url).await, 404);
        let url = n.exec_url(&id, &["true"], false, false).await.unwrap();
        let (mut ws, proto) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
        let got = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert_eq!(got.status()["status"], "Success", "{got:?}");
        assert!(ws_connect(&url, "v5.channel.k8s.io").await.is_err());
        assert_eq!(http_status(&url).await, 404);
        // A token of one kind does not open another.
        let pf =
            n.c.runtime
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: pod.0.clone(),
                    port: vec![80],
                })
                .await
                .unwrap()
                .into_inner()
                .url;
        assert!(pf.contains("/portforward/"), "{pf}");
        let token = pf.rsplit('/').next().unwrap();
        assert_eq!(http_status(&format!("{base}/{token}")).await, 404);
        // Expired.
        let url = n.exec_url(&id, &["true"], false, false).await.unwrap();
        tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECS + 1)).await;
        assert_eq!(http_status(&url).await, 404);
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn exec_over_websocket_echoes_stdin_and_reports_exit_codes() {
    in_node(42, |mut n| async move {
        let pod = n.run_pod("exec").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        // v5: stdin round trip, the close channel ends stdin, non-zero exit in the Status.
        let url = n
            .exec_url(&id, &["sh", "-c", "cat; echo err >&2; exit 3"], false, true)
            .await
            .unwrap();
        let (mut ws, proto) = ws_connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io")
            .await
            .unwrap();
        assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
        ws.send(frame(0, b"hello\n")).await.unwrap();
        ws.send(frame(0, b"world\n")).await.unwrap();
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
        let got = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert_eq!(got.text(1), "hello\nworld\n", "{got:?}");
        assert_eq!(got.text(2), "err\n", "{got:?}");
        let st = got.status();
        assert_eq!(st["status"], "Failure", "{st}");
        assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");
        assert!(got.closed);

        // v4 binary: success.
        let url = n
            .exec_url(&id, &["echo", "v4"], false, false)
            .await
            .unwrap();
        let (mut ws, proto) = ws_connect(&url, "v4.channel.k8s.io").await.unwrap();
        assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
        let got = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert_eq!(got.text(1), "v4\n");
        assert_eq!(got.status()["status"], "Success");

        // base64 text framing.
        let url = n
            .exec_url(&id, &["sh", "-c", "echo b64; exit 1"], false, false)
            .await
            .unwrap();
        let (mut ws, proto) = ws_connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
        assert_eq!(proto.as_deref(), Some("v4.base64.channel.k8s.io"));
        let got = collect(&mut ws, true, Duration::from_secs(20)).await;
        assert_eq!(got.text(1), "b64\n");
        assert_eq!(got.status()["details"]["causes"][0]["message"], "1");

        // A command that does not exist fails with a non-zero code, not a hang.
        let url = n
            .exec_url(&id, &["/no/such/binary"], false, false)
            .await
            .unwrap();
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        let got = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert_eq!(got.status()["status"], "Failure", "{got:?}");

        // No protocol we speak: refused.
        let url = n.exec_url(&id, &["true"], false, false).await.unwrap();
        assert!(ws_connect(&url, "v9.nothing").await.is_err());
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn exec_with_a_tty_applies_resizes() {
    in_node(43, |mut n| async move {
        let pod = n.run_pod("tty").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let url = n.exec_url(&id, &["sh"], true, true).await.unwrap();
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        ws.send(frame(4, br#"{"Width":123,"Height":45}"#))
            .await
            .unwrap();
        let mut got = Collected::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !got.text(1).contains("45 123") {
            assert!(
                Instant::now() < deadline,
                "no resize seen: {:?}",
                got.text(1)
            );
            ws.send(frame(0, b"stty size\n")).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(m)) = ws.next().await {
                    absorb(&mut got, m, false);
                }
            })
            .await;
        }
        ws.send(frame(4, br#"{"Width":70,"Height":20}"#))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(frame(0, b"stty size; exit 5\n")).await.unwrap();
        let rest = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert!(rest.text(1).contains("20 70"), "{:?}", rest.text(1));
        assert_eq!(
            rest.status()["details"]["causes"][0]["message"],
            "5",
            "{rest:?}"
        );
        assert!(!rest.channels.contains_key(&2), "a tty has no stderr");
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn a_client_that_goes_away_or_sends_garbage_leaves_no_process_behind() {
    in_node(44, |mut n| async move {
        let pod = n.run_pod("gone").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let needle = n.server.dir.path().display().to_string();
        let runc_execs = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd);
                    cmd.contains(&needle) && cmd.contains("stream-exec-")
                })
                .count()
        };
        // 1. Disconnect mid-stream.
        let url = n
            .exec_url(&id, &["sleep", "1234"], false, true)
            .await
            .unwrap();
        let (ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        n.wait_ps(&id, "sleep 1234", true).await;
        drop(ws);
        n.wait_ps(&id, "sleep 1234", false).await;
        // 2. A channel that does not exist.
        let url = n
            .exec_url(&id, &["sleep", "1235"], false, true)
            .await
            .unwrap();
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        n.wait_ps(&id, "sleep 1235", true).await;
        ws.send(frame(9, b"x")).await.unwrap();
        let got = collect(&mut ws, false, Duration::from_secs(10)).await;
        assert!(got.closed, "{got:?}");
        n.wait_ps(&id, "sleep 1235", false).await;
        // 3. A frame far beyond the limit.
        let url = n
            .exec_url(&id, &["sleep", "1236"], false, true)
            .await
            .unwrap();
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        n.wait_ps(&id, "sleep 1236", true).await;
        let _ = ws.send(frame(0, &vec![b'a'; 8 << 20])).await;
        let _ = collect(&mut ws, false, Duration::from_secs(10)).await;
        n.wait_ps(&id, "sleep 1236", false).await;
        // 4. A bad resize message and text on a binary protocol.
        for bad in [frame(4, b"{not json"), Message::text("0hello")] {
            let url = n
                .exec_url(&id, &["sleep", "1237"], false, true)
                .await
                .unwrap();
            let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
            n.wait_ps(&id, "sleep 1237", true).await;
            ws.send(bad).await.unwrap();
            let got = collect(&mut ws, false, Duration::from_secs(10)).await;
            assert!(got.closed, "{got:?}");
            n.wait_ps(&id, "sleep 1237", false).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while runc_execs() > 0 {
            assert!(Instant::now() < deadline, "runc exec processes left behind");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The server still serves.
        let url = n
            .exec_url(&id, &["echo", "alive"], false, false)
            .await
            .unwrap();
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        assert_eq!(
            collect(&mut ws, false, Duration::from_secs(20))
                .await
                .text(1),
            "alive\n"
        );
        n.remove_pod(&pod.0).await;
    });
}

/// Port-forwards `port` of `pod` and sends an HTTP/1.0 GET: the data channel's bytes and the
/// error channel's text.
async fn forward_get(n: &mut Node, pod: &str, port: u16) -> (String, String) {
    let url =
        n.c.runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let (mut ws, proto) = ws_connect(&format!("{url}?ports={port}"), "v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    ws.send(frame(0, b"GET / HTTP/1.0\r\n\r\n")).await.unwrap();
    let mut got = Collected::default();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            absorb(&mut got, m, false);
            if got.closed || got.channels.get(&1).is_some_and(|e| e.len() > 2) {
                break;
            }
        }
    })
    .await;
    let data = got.channels.remove(&0).unwrap_or_default();
    let err = got.channels.remove(&1).unwrap_or_default();
    let port_le = port.to_le_bytes();
    assert!(
        data.starts_with(&port_le),
        "data channel starts with the port: {data:?}"
    );
    assert!(
        err.starts_with(&port_le),
        "error channel starts with the port: {err:?} (port {port}, data {:?})",
        String::from_utf8_lossy(&data)
    );
    (
        String::from_utf8_lossy(&data[2..]).into_owned(),
        String::from_utf8_lossy(&err[2..]).into_owned(),
    )
}

#[test]
fn port_forward_fetches_a_page_from_the_pod_and_from_a_host_network_pod() {
    in_node(45, |mut n| async move {
        let pod = n.run_pod("web").await;
        n.run_container(&pod, "httpd", &["sh", "-c", "mkdir -p /tmp/www && echo hi-through-portforward > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]).await;
        let mut body = String::new();
        for _ in 0..50 {
            let (data, err) = forward_get(&mut n, &pod.0, 8080).await;
            body = data;
            if body.contains("hi-through-portforward") {
                assert_eq!(err, "");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            body.contains("200 OK") && body.contains("hi-through-portforward"),
            "{body:?}"
        );
        // The port is the pod's, not the node's: nothing listens on 8080 here.
        assert!(std::net::TcpStream::connect("127.0.0.1:8080").is_err());
        // Nothing listens on 8081 in the pod: the error channel says so.
        let (data, err) = forward_get(&mut n, &pod.0, 8081).await;
        assert!(data.is_empty() && err.contains("8081"), "{data:?} {err:?}");

        // A host-network pod: the port is the node's.
        let mut cfg = n.pod_config("hostnet");
        cfg.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .network = NamespaceMode::Node as i32;
        let host = n.run_pod_with(cfg).await;
        n.run_container(&host, "httpd", &["sh", "-c", "mkdir -p /tmp/www && echo hi-from-the-host-network > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:18081 -h /tmp/www"]).await;
        let mut body = String::new();
        for _ in 0..50 {
            body = forward_get(&mut n, &host.0, 18081).await.0;
            if body.contains("hi-from-the-host-network") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(body.contains("hi-from-the-host-network"), "{body:?}");
        n.remove_pod(&host.0).await;
        n.remove_pod(&pod.0).await;
    });
}

/// A SPDY/3.1 client on the framing of cri-server's streaming module.
struct Spdy {
    conn: TcpStream,
    tx: spdy::HeaderCodec,
    rx: spdy::HeaderCodec,
    next_id: u32,
}

/// What a SPDY connection delivered until GOAWAY or EOF.
#[derive(Debug, Default)]
struct SpdyCollected {
    data: HashMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    replies: Vec<u32>,
    resets: Vec<u32>,
    goaway: bool,
}

impl SpdyCollected {
    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or(&[])).into_owned()
    }
}

/// POSTs an upgrade to `url` offering `protocol`: the client and the status line, or the
/// status code of a refusal.
async fn spdy_connect(url: &str, protocol: &str) -> Result<(Spdy, String), u16> {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = TcpStream::connect(host).await.unwrap();
    conn.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut b).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let code: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    if code != 101 {
        return Err(code);
    }
    let chosen = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-stream-protocol-version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((
        Spdy {
            conn,
            tx: spdy::HeaderCodec::new(),
            rx: spdy::HeaderCodec::new(),
            next_id: 1,
        },
        chosen,
    ))
}

impl Spdy {
    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let f = spdy::Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        spdy::write_frame(&mut self.conn, &f, &mut self.tx)
            .await
            .unwrap();
        id
    }

    async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        let f = spdy::Frame::Data {
            stream_id: id,
            flags: if fin { spdy::FLAG_FIN } else { 0 },
            data: data.to_vec(),
        };
        let _ = spdy::write_frame(&mut self.conn, &f, &mut self.tx).await;
    }

    async fn absorb(&mut self, got: &mut SpdyCollected) -> bool {
        match spdy::read_frame(&mut self.conn, &mut self.rx).await {
            Ok(spdy::Frame::Data {
                stream_id,
                flags,
                data,
            }) => {
                got.data.entry(stream_id).or_default().extend(data);
                if flags & spdy::FLAG_FIN != 0 {
                    got.fin.push(stream_id);
                }
                true
            }
            Ok(spdy::Frame::SynReply { stream_id, .. }) => {
                got.replies.push(stream_id);
                true
            }
            Ok(spdy::Frame::RstStream { stream_id, .. }) => {
                got.resets.push(stream_id);
                true
            }
            Ok(spdy::Frame::GoAway { .. }) => {
                got.goaway = true;
                false
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    async fn collect(&mut self, within: Duration) -> SpdyCollected {
        let mut got = SpdyCollected::default();
        let _ = tokio::time::timeout(within, async { while self.absorb(&mut got).await {} }).await;
        got
    }
}

#[test]
fn exec_over_spdy_round_trips_stdin_reports_exit_codes_and_resizes() {
    in_node(46, |mut n| async move {
        let pod = n.run_pod("spdy-exec").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let url = n
            .exec_url(&id, &["sh", "-c", "cat; echo err >&2; exit 3"], false, true)
            .await
            .unwrap();
        let (mut c, chosen) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
        assert_eq!(chosen, "v4.channel.k8s.io");
        let error = c.open(&[("streamType", "error")]).await;
        let stdin = c.open(&[("streamType", "stdin")]).await;
        let stdout = c.open(&[("streamType", "stdout")]).await;
        let stderr = c.open(&[("streamType", "stderr")]).await;
        c.send(stdin, b"hello over spdy\n", false).await;
        c.send(stdin, b"", true).await;
        let got = c.collect(Duration::from_secs(20)).await;
        assert_eq!(got.replies, vec![error, stdin, stdout, stderr], "{got:?}");
        assert_eq!(got.text(stdout), "hello over spdy\n", "{got:?}");
        assert_eq!(got.text(stderr), "err\n", "{got:?}");
        let st: serde_json::Value = serde_json::from_str(&got.text(error)).unwrap();
        assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");
        assert!(got.fin.contains(&error) && got.goaway, "{got:?}");

        // Protocol negotiation: the client's order, 403 for none we speak.
        let url = n.exec_url(&id, &["true"], false, false).await.unwrap();
        assert_eq!(
            spdy_connect(&url, "v9.channel.k8s.io").await.err(),
            Some(403)
        );

        // A tty with a resize stream.
        let url = n.exec_url(&id, &["sh"], true, true).await.unwrap();
        let (mut c, _) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
        let error = c.open(&[("streamtype", "error")]).await;
        let stdin = c.open(&[("streamtype", "stdin")]).await;
        let stdout = c.open(&[("streamtype", "stdout")]).await;
        let resize = c.open(&[("streamtype", "resize")]).await;
        c.send(resize, b"{\"Width\":123,\"Height\":45}\n", false)
            .await;
        let mut got = SpdyCollected::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !got.text(stdout).contains("45 123") {
            assert!(Instant::now() < deadline, "{:?}", got.text(stdout));
            c.send(stdin, b"stty size\n", false).await;
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while c.absorb(&mut got).await {}
            })
            .await;
        }
        c.send(stdin, b"exit 0\n", false).await;
        let rest = c.collect(Duration::from_secs(20)).await;
        let st: serde_json::Value = serde_json::from_str(&rest.text(error)).unwrap();
        assert_eq!(st["status"], "Success", "{st}");
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn port_forward_over_spdy_fetches_a_page_and_reports_a_closed_port() {
    in_node(47, |mut n| async move {
        let pod = n.run_pod("spdy-web").await;
        n.run_container(&pod, "httpd", &["sh", "-c", "mkdir -p /tmp/www && echo hi-over-spdy > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]).await;
        let mut body = String::new();
        for attempt in 0..50 {
            let url =
                n.c.runtime
                    .port_forward(PortForwardRequest {
                        pod_sandbox_id: pod.0.clone(),
                        port: vec![8080],
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .url;
            let (mut c, chosen) = spdy_connect(&url, "portforward.k8s.io").await.unwrap();
            assert_eq!(chosen, "portforward.k8s.io");
            let req = attempt.to_string();
            let error = c
                .open(&[
                    ("streamType", "error"),
                    ("port", "8080"),
                    ("requestID", &req),
                ])
                .await;
            let data = c
                .open(&[
                    ("streamType", "data"),
                    ("port", "8080"),
                    ("requestID", &req),
                ])
                .await;
            c.send(data, b"GET / HTTP/1.0\r\n\r\n", true).await;
            // A second connection on the same session, to a port nothing listens on.
            let error2 = c
                .open(&[
                    ("streamType", "error"),
                    ("port", "8081"),
                    ("requestID", "x"),
                ])
                .await;
            let data2 = c
                .open(&[("streamType", "data"), ("port", "8081"), ("requestID", "x")])
                .await;
            let mut got = SpdyCollected::default();
            let _ = tokio::time::timeout(Duration::from_secs(20), async {
                while !(got.fin.contains(&data) && got.fin.contains(&data2))
                    && c.absorb(&mut got).await
                {}
            })
            .await;
            body = got.text(data);
            if body.contains("hi-over-spdy") {
                assert_eq!(got.text(error), "");
                assert!(got.text(error2).contains("8081"), "{got:?}");
                assert_eq!(got.text(data2), "");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            body.contains("200 OK") && body.contains("hi-over-spdy"),
            "{body:?}"
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn spdy_garbage_ends_the_connection_and_the_exec() {
    in_node(48, |mut n| async move {
        let pod = n.run_pod("spdy-bad").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let bad_frames: [&[u8]; 3] = [
            // A control frame of SPDY/2.
            &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
            // A frame far beyond the size limit.
            &[0, 0, 0, 3, 0, 0xff, 0xff, 0xff],
            // A SYN_STREAM whose header block is not zlib.
            &[
                0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
            ],
        ];
        for (i, bad) in bad_frames.iter().enumerate() {
            let sleep = format!("{}", 1240 + i);
            let url = n
                .exec_url(&id, &["sleep", &sleep], false, true)
                .await
                .unwrap();
            let (mut c, _) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
            c.open(&[("streamtype", "error")]).await;
            c.open(&[("streamtype", "stdin")]).await;
            c.open(&[("streamtype", "stdout")]).await;
            c.open(&[("streamtype", "stderr")]).await;
            n.wait_ps(&id, &format!("sleep {sleep}"), true).await;
            c.conn.write_all(bad).await.unwrap();
            let got = c.collect(Duration::from_secs(10)).await;
            assert!(got.goaway, "{got:?}");
            n.wait_ps(&id, &format!("sleep {sleep}"), false).await;
        }
        // A client that just goes away.
        let url = n
            .exec_url(&id, &["sleep", "1249"], false, true)
            .await
            .unwrap();
        let (mut c, _) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
        for t in ["error", "stdin", "stdout", "stderr"] {
            c.open(&[("streamtype", t)]).await;
        }
        n.wait_ps(&id, "sleep 1249", true).await;
        drop(c);
        n.wait_ps(&id, "sleep 1249", false).await;
        // An unknown stream type is reset and ends the session.
        let url = n
            .exec_url(&id, &["sleep", "1250"], false, true)
            .await
            .unwrap();
        let (mut c, _) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
        let bogus = c.open(&[("streamtype", "bogus")]).await;
        let got = c.collect(Duration::from_secs(10)).await;
        assert!(got.resets.contains(&bogus) && got.goaway, "{got:?}");
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn attach_reaches_a_running_containers_stdio_and_detaching_leaves_it_running() {
    in_node(49, |mut n| async move {
        let pod = n.run_pod("attach").await;
        let mut cfg = n.container_config(
            "echo",
            &[
                "sh",
                "-c",
                "while read line; do echo \"got $line\"; echo \"err $line\" >&2; done",
            ],
        );
        cfg.stdin = true;
        let id = n.run_container_with(&pod, cfg).await;
        let attach_url = |n: &mut Node, tty: bool| {
            let id = id.clone();
            let mut rt = n.c.runtime.clone();
            async move {
                rt.attach(AttachRequest {
                    container_id: id,
                    stdin: true,
                    tty,
                    stdout: true,
                    stderr: !tty,
                })
                .await
                .map(|r| r.into_inner().url)
            }
        };
        // WebSocket: stdin in, both streams out; then detach.
        let url = attach_url(&mut n, false).await.unwrap();
        assert!(url.contains("/attach/"), "{url}");
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        let mut got = Collected::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while !(got.text(1).contains("got hello") && got.text(2).contains("err hello")) {
            assert!(Instant::now() < deadline, "{got:?}");
            i += 1;
            ws.send(frame(0, format!("hello {i}\n").as_bytes()))
                .await
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(m)) = ws.next().await {
                    absorb(&mut got, m, false);
                }
            })
            .await;
        }
        drop(ws);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let st =
            n.c.runtime
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
        assert_eq!(
            st.state,
            ContainerState::ContainerRunning as i32,
            "detach keeps it running"
        );

        // SPDY: the same container, attached again.
        let url = attach_url(&mut n, false).await.unwrap();
        let (mut c, _) = spdy_connect(&url, "v4.channel.k8s.io").await.unwrap();
        c.open(&[("streamtype", "error")]).await;
        let stdin = c.open(&[("streamtype", "stdin")]).await;
        let stdout = c.open(&[("streamtype", "stdout")]).await;
        c.open(&[("streamtype", "stderr")]).await;
        let mut got = SpdyCollected::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !got.text(stdout).contains("got spdy") {
            assert!(Instant::now() < deadline, "{got:?}");
            c.send(stdin, b"spdy\n", false).await;
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while c.absorb(&mut got).await {}
            })
            .await;
        }
        drop(c);

        // A tty container: resize reaches its terminal.
        let mut cfg = n.container_config("tty", &["sh"]);
        cfg.stdin = true;
        cfg.tty = true;
        let tty_id = n.run_container_with(&pod, cfg).await;
        let url =
            n.c.runtime
                .attach(AttachRequest {
                    container_id: tty_id.clone(),
                    stdin: true,
                    tty: true,
                    stdout: true,
                    stderr: false,
                })
                .await
                .unwrap()
                .into_inner()
                .url;
        let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await.unwrap();
        ws.send(frame(4, br#"{"Width":99,"Height":33}"#))
            .await
            .unwrap();
        let mut got = Collected::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !got.text(1).contains("33 99") {
            assert!(Instant::now() < deadline, "{:?}", got.text(1));
            ws.send(frame(0, b"stty size\n")).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(m)) = ws.next().await {
                    absorb(&mut got, m, false);
                }
            })
            .await;
        }
        // The container's end ends the attach with success.
        ws.send(frame(0, b"exit 0\n")).await.unwrap();
        let rest = collect(&mut ws, false, Duration::from_secs(20)).await;
        assert_eq!(rest.status()["status"], "Success", "{rest:?}");
        n.remove_pod(&pod.0).await;
    });
}
