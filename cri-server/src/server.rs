//! Wires the services to the unix socket and runs until SIGTERM/SIGINT: then it stops
//! accepting, lets in-flight calls finish, and returns.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use anyhow::Context;
use k8s_cri::v1::CgroupDriver;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

use crate::config::Config;
use crate::image::hosts::Hosts;
use crate::image::{ImageStore, PullOptions};
use crate::service::image::ImageServiceImpl;
use crate::service::runtime::RuntimeServiceImpl;

/// gRPC messages up to this size (image lists on busy nodes get large).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("create state dir {}", config.state_dir.display()))?;
    let images = ImageStore::open(
        &config.root.join("images"),
        PullOptions {
            hosts: Hosts::new(
                config.registry.config_path.clone(),
                config.registry.insecure_registries.clone(),
            ),
            docker_config: config.image.docker_config.clone(),
            max_concurrent_downloads: config.image.max_concurrent_downloads,
        },
    )
    .context("open image store")?;

    let runtime = crate::runtime::Runtime::open(&config, images.clone())
        .await
        .context("open pod and container state")?;
    runtime.spawn_background(std::time::Duration::from_millis(
        config.stats.collect_period_ms,
    ));

    let streaming = crate::streaming::StreamingServer::start(&config.streaming, runtime.clone())
        .await
        .context("start the streaming server")?;

    let metrics = Arc::new(crate::metrics::Metrics::default());
    if !config.metrics.address.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.address)
            .await
            .with_context(|| format!("bind the metrics endpoint {}", config.metrics.address))?;
        let addr = listener.local_addr().context("metrics address")?;
        let _ = std::fs::write(config.state_dir.join("metrics.addr"), addr.to_string());
        info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            runtime.clone(),
        ));
    }

    let listener = bind(&config.listen)?;
    info!(socket = %config.listen.display(), root = %config.root.display(), "cri-server listening");

    let runtime = RuntimeServiceImpl {
        cgroup_driver: CgroupDriver::Cgroupfs,
        runtime,
        streaming,
    };
    let image = ImageServiceImpl {
        images,
        metrics: metrics.clone(),
        pulls: Default::default(),
    };
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let in_flight = InFlight::default();
    let serve = tonic::transport::Server::builder()
        .layer(in_flight.clone())
        .layer(crate::metrics::RpcMetricsLayer(metrics.clone()))
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ImageServiceServer::new(image)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    let mut serve = tokio::spawn(serve);
    tokio::select! {
        res = &mut serve => {
            res.context("gRPC server task")?.context("serve gRPC")?;
            anyhow::bail!("gRPC server stopped on its own");
        }
        _ = term.recv() => info!("SIGTERM: finishing in-flight calls"),
        _ = int.recv() => info!("SIGINT: finishing in-flight calls"),
    }
    let _ = stop_accepting.send(());
    let _ = std::fs::remove_file(&config.listen);
    // Idle kubelet connections may stay open; what matters is that no call is cut short.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while in_flight.count() > 0 && !serve.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if in_flight.count() > 0 {
        tracing::warn!(
            calls = in_flight.count(),
            "grace period over, exiting with calls in flight"
        );
    }
    info!("cri-server stopped");
    Ok(())
}

/// How long SIGTERM waits for in-flight calls.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts calls in flight (a tower layer around every RPC), so shutdown can wait for them.
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = InFlightService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            count: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct InFlightService<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

impl<S, R> tower::Service<R> for InFlightService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        let guard = CallGuard(self.count.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

/// Binds the socket (replacing a stale one) with mode 0660.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create socket dir {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{} is in use by a running server", path.display());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale socket {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}
