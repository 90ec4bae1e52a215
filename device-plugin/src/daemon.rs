//! The daemon's life: start discovery (waiting for a driver if so configured), keep the CDI
//! spec current, then serve DevicePlugin on the plugin socket and register with the kubelet;
//! when the kubelet restarts (it deletes the plugin sockets and re-creates `kubelet.sock`),
//! serve and register again. Registration is retried with backoff while the kubelet is
//! absent or refuses. On shutdown the plugin socket is removed; nothing is unregistered (the
//! kubelet notices the socket is gone).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info, warn};

use crate::cdi::SpecWriter;
use crate::config::{Config, OnMissingDriver};
use crate::device::Inventory;
use crate::discovery;
use crate::error::Error;
use crate::fswatch;
use crate::kubelet::{self, FileId};
use crate::service::{DevicePluginService, PluginState};
use crate::v1beta1::device_plugin_server::DevicePluginServer;

/// How often the sockets are checked when inotify says nothing.
const POLL: Duration = Duration::from_secs(1);
/// Registration backoff: first retry, and the ceiling.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the NVML backend retries a missing driver with `on_missing_driver = "wait"`.
const DRIVER_RETRY: Duration = Duration::from_secs(30);

/// Runs until `shutdown` completes (then returns `Ok`) or a fatal error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    let Some(inventory) = start_discovery(&config, &mut shutdown).await? else {
        info!("stopped while waiting for the driver");
        return Ok(());
    };
    let cdi = config
        .cdi_enabled()
        .then(|| Arc::new(SpecWriter::new(&config.cdi_spec_dir, config.cdi_kind())));
    if let Some(writer) = &cdi {
        tokio::spawn(keep_cdi_spec(
            config.clone(),
            writer.clone(),
            inventory.clone(),
        ));
    }
    serve_and_register(&config, &inventory, &cdi, &mut shutdown).await;
    info!("device plugin stopped");
    Ok(())
}

async fn start_discovery(
    config: &Config,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<watch::Receiver<Inventory>>, Error> {
    loop {
        let backend = discovery::from_config(config)?;
        let name = backend.name();
        match backend.start() {
            Ok(rx) => {
                let n = rx.borrow().devices.len();
                info!(backend = name, devices = n, resource = %config.resource_name, "discovery started");
                return Ok(Some(rx));
            }
            Err(e @ Error::NoDriver { .. })
                if config.on_missing_driver == OnMissingDriver::Wait =>
            {
                warn!(error = %e, retry_in = ?DRIVER_RETRY, "waiting for the NVIDIA driver");
                tokio::select! {
                    _ = tokio::time::sleep(DRIVER_RETRY) => {}
                    _ = &mut *shutdown => return Ok(None),
                }
            }
            Err(e @ Error::NoDriver { .. }) => {
                warn!(
                    "on_missing_driver = \"wait\" (DP_ON_MISSING_DRIVER=wait) makes the plugin \
                     wait for a driver instead of exiting"
                );
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Rewrites the CDI spec whenever the inventory changes.
async fn keep_cdi_spec(
    config: Arc<Config>,
    writer: Arc<SpecWriter>,
    mut inventory: watch::Receiver<Inventory>,
) {
    loop {
        let inv = inventory.borrow_and_update().clone();
        match writer.write(&crate::allocation::cdi_spec(&config, &inv)) {
            Ok(true) => {
                info!(path = %writer.path().display(), devices = inv.devices.len(), "CDI spec written")
            }
            Ok(false) => {}
            Err(e) => error!(error = %e, "CDI spec not written"),
        }
        if inventory.changed().await.is_err() {
            return;
        }
    }
}

/// One instance of the DevicePlugin server on the plugin socket.
struct PluginServer {
    socket: PathBuf,
    id: Option<FileId>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl PluginServer {
    fn start(
        config: &Arc<Config>,
        inventory: &watch::Receiver<Inventory>,
        cdi: &Option<Arc<SpecWriter>>,
    ) -> Result<PluginServer, Error> {
        let socket = config.socket_path();
        let serve_err = |source| Error::Serve {
            path: socket.clone(),
            source,
        };
        // A socket left by an earlier run (or instance) would make bind fail.
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(serve_err(e)),
        }
        let listener = UnixListener::bind(&socket).map_err(serve_err)?;
        let id = kubelet::socket_id(&socket);
        let (stop, stop_rx) = watch::channel(false);
        let service = DevicePluginService::new(PluginState {
            config: config.clone(),
            inventory: inventory.clone(),
            cdi: cdi.clone(),
            stop: stop_rx.clone(),
        });
        let mut shutdown = stop_rx;
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                }),
        );
        info!(socket = %socket.display(), "serving DevicePlugin");
        Ok(PluginServer {
            socket,
            id,
            stop,
            task,
        })
    }

    fn socket_is_ours(&self) -> bool {
        self.id.is_some() && kubelet::socket_id(&self.socket) == self.id
    }

    /// Ends the streams and the server (waiting a little for in-flight calls).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Stops and removes the socket, if it is still the one this server created.
    async fn shutdown(self) {
        let socket = self.socket.clone();
        let ours = self.socket_is_ours();
        self.stop().await;
        if ours {
            match std::fs::remove_file(&socket) {
                Ok(()) => info!(socket = %socket.display(), "plugin socket removed"),
                Err(e) => {
                    warn!(socket = %socket.display(), error = %e, "plugin socket not removed")
                }
            }
        }
    }
}

/// Waits for the first of: a wake-up from the directory watch, the poll interval, shutdown
/// (`true`).
async fn tick(
    fs_watch: &mut Option<fswatch::DirWatch>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    tokio::select! {
        _ = &mut *shutdown => true,
        _ = fswatch::changed(fs_watch) => false,
        _ = tokio::time::sleep(POLL) => false,
    }
}

async fn serve_and_register(
    config: &Arc<Config>,
    inventory: &watch::Receiver<Inventory>,
    cdi: &Option<Arc<SpecWriter>>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) {
    let dir = &config.device_plugin_dir;
    let kubelet_socket = config.kubelet_socket();
    let names = vec!["kubelet.sock".into(), config.socket_name().into()];
    let mut backoff = BACKOFF_START;
    'serve: loop {
        // 1. Wait for the kubelet's socket.
        let mut fs_watch = fswatch::watch_dir(dir, names.clone());
        let mut waiting_logged = false;
        let kubelet_id = loop {
            if let Some(id) = kubelet::socket_id(&kubelet_socket) {
                break id;
            }
            if !waiting_logged {
                info!(socket = %kubelet_socket.display(), "waiting for the kubelet");
                waiting_logged = true;
            }
            if tick(&mut fs_watch, shutdown).await {
                return;
            }
            if fs_watch.is_none() {
                fs_watch = fswatch::watch_dir(dir, names.clone());
            }
        };
        // 2. Serve.
        let server = match PluginServer::start(config, inventory, cdi) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, retry_in = ?backoff, "cannot serve the device plugin");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut *shutdown => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue 'serve;
            }
        };

        // 3. Register, retrying while the kubelet stays the same.
        loop {
            match kubelet::register(
                &kubelet_socket,
                kubelet::register_request(config),
                REGISTER_TIMEOUT,
            )
            .await
            {
                Ok(()) => {
                    info!(
                        resource = %config.resource_name,
                        endpoint = %config.socket_name(),
                        version = kubelet::VERSION,
                        "registered with the kubelet"
                    );
                    backoff = BACKOFF_START;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "registration failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut *shutdown => {
                            server.shutdown().await;
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if kubelet::socket_id(&kubelet_socket) != Some(kubelet_id)
                        || !server.socket_is_ours()
                    {
                        server.stop().await;
                        continue 'serve;
                    }
                }
            }
        }

        // 4. Watch for a kubelet restart.
        loop {
            if tick(&mut fs_watch, shutdown).await {
                server.shutdown().await;
                return;
            }
            let kubelet_same = kubelet::socket_id(&kubelet_socket) == Some(kubelet_id);
            let ours = server.socket_is_ours();
            if server.task.is_finished() {
                warn!("the DevicePlugin server ended; serving again");
            } else if kubelet_same && ours {
                continue;
            } else {
                info!(
                    kubelet_socket_recreated = !kubelet_same,
                    plugin_socket_removed = !ours,
                    "kubelet restarted: serving and registering again"
                );
            }
            server.stop().await;
            continue 'serve;
        }
    }
}
