//! The daemon's own Prometheus metrics on `GET /metrics` (loopback by default): gRPC calls
//! and their latencies per method (a tower layer around every RPC), pods and containers by
//! state, image pull durations.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tracing::warn;

use crate::container::ContainerPhase;
use crate::runtime::{Phase, Runtime};

/// Histogram upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    total: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.total += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.total
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.total);
    }
}

/// What the daemon counts.
#[derive(Default)]
pub struct Metrics {
    rpc: Mutex<BTreeMap<String, Histogram>>,
    pulls: Mutex<Histogram>,
}

impl Metrics {
    pub fn observe_rpc(&self, method: &str, secs: f64) {
        self.rpc
            .lock()
            .expect("metrics")
            .entry(method.to_string())
            .or_default()
            .observe(secs);
    }

    pub fn observe_pull(&self, secs: f64) {
        self.pulls.lock().expect("metrics").observe(secs);
    }

    /// The Prometheus text format.
    pub fn render(&self, rt: Option<&Runtime>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP cri_server_grpc_request_duration_seconds CRI calls served, by method.\n",
        );
        out.push_str("# TYPE cri_server_grpc_request_duration_seconds histogram\n");
        for (method, h) in self.rpc.lock().expect("metrics").iter() {
            h.render(
                &mut out,
                "cri_server_grpc_request_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
        out.push_str("# HELP cri_server_image_pull_duration_seconds Successful image pulls.\n");
        out.push_str("# TYPE cri_server_image_pull_duration_seconds histogram\n");
        self.pulls.lock().expect("metrics").render(
            &mut out,
            "cri_server_image_pull_duration_seconds",
            "",
        );
        if let Some(rt) = rt {
            let (mut ready, mut not_ready) = (0, 0);
            for s in rt.sandboxes.read().expect("sandboxes").values() {
                match s.phase {
                    Phase::Ready => ready += 1,
                    Phase::NotReady => not_ready += 1,
                    Phase::Creating => {}
                }
            }
            out.push_str(
                "# HELP cri_server_pods Pod sandboxes by state.\n# TYPE cri_server_pods gauge\n",
            );
            let _ = writeln!(out, "cri_server_pods{{state=\"ready\"}} {ready}");
            let _ = writeln!(out, "cri_server_pods{{state=\"notready\"}} {not_ready}");
            let mut by_state: BTreeMap<&str, u64> =
                [("created", 0), ("running", 0), ("exited", 0)].into();
            for c in rt.containers.read().expect("containers").values() {
                let state = match c.phase {
                    ContainerPhase::Creating => continue,
                    ContainerPhase::Created => "created",
                    ContainerPhase::Running => "running",
                    ContainerPhase::Exited => "exited",
                };
                *by_state.entry(state).or_default() += 1;
            }
            out.push_str("# HELP cri_server_containers Containers by state.\n# TYPE cri_server_containers gauge\n");
            for (state, n) in by_state {
                let _ = writeln!(out, "cri_server_containers{{state=\"{state}\"}} {n}");
            }
        }
        out
    }
}

/// Times every gRPC call by its path (`/runtime.v1.RuntimeService/Version`).
#[derive(Clone)]
pub struct RpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            metrics.observe_rpc(&method, started.elapsed().as_secs_f64());
            res
        })
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, rt: Arc<Runtime>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (metrics, rt) = (metrics.clone(), rt.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let res =
                        if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render(Some(&rt)))))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                    async move { Ok::<_, Infallible>(res.expect("static response")) }
                });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                warn!(error = %e, "metrics connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_rpc("/runtime.v1.RuntimeService/Version", 0.002);
        m.observe_rpc("/runtime.v1.RuntimeService/Version", 0.2);
        let text = m.render(None);
        let method = "method=\"/runtime.v1.RuntimeService/Version\"";
        assert!(
            text.contains(&format!(
                "cri_server_grpc_request_duration_seconds_bucket{{{method},le=\"0.0025\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "cri_server_grpc_request_duration_seconds_bucket{{{method},le=\"0.25\"}} 2"
        )));
        assert!(text.contains(&format!(
            "cri_server_grpc_request_duration_seconds_count{{{method}}} 2"
        )));
        assert!(text.contains("cri_server_image_pull_duration_seconds_count 0"));
    }
}
