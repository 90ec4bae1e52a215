//! The test node: a temp dir with the device-plugins dir, a CDI dir, device nodes and the
//! device file; the kubelet stand-in; the plugin process and its client.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use device_plugin::v1beta1::device_plugin_client::DevicePluginClient;
use device_plugin::v1beta1::registration_server::{Registration, RegistrationServer};
use device_plugin::v1beta1::{Empty, RegisterRequest};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A temp dir laid out like a node.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub plugin_dir: PathBuf,
    pub cdi_dir: PathBuf,
    pub dev_dir: PathBuf,
    pub devices_file: PathBuf,
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = dir.path().join("device-plugins");
        let cdi_dir = dir.path().join("cdi");
        let dev_dir = dir.path().join("dev");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        std::fs::create_dir_all(&dev_dir).unwrap();
        let devices_file = dir.path().join("devices.json");
        Node {
            dir,
            plugin_dir,
            cdi_dir,
            dev_dir,
            devices_file,
        }
    }

    /// A char device node `<dev_dir>/<name>` with the given numbers.
    pub fn mknod(&self, name: &str, major: u64, minor: u64) -> PathBuf {
        let path = self.dev_dir.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e} (the tests need root)", path.display()));
        path
    }

    /// Writes the device file by rename (as config management does).
    pub fn write_devices(&self, json: &serde_json::Value) {
        let tmp = self.dir.path().join("devices.json.new");
        std::fs::write(&tmp, serde_json::to_vec_pretty(json).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.devices_file).unwrap();
    }

    /// Rewrites the device file in place (as an editor without backup does).
    pub fn edit_devices(&self, json: &serde_json::Value) {
        std::fs::write(&self.devices_file, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    }
}

/// The kubelet stand-in: serves Registration on `<dir>/kubelet.sock` and hands over every
/// RegisterRequest.
pub struct Kubelet {
    pub socket: PathBuf,
    requests: mpsc::UnboundedReceiver<RegisterRequest>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

struct Registrar(mpsc::UnboundedSender<RegisterRequest>);

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(Empty {}))
    }
}

impl Kubelet {
    pub fn start(dir: &Path) -> Kubelet {
        let socket = dir.join("kubelet.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Registrar(tx)))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Kubelet {
            socket,
            requests,
            stop,
            task,
        }
    }

    pub async fn next_registration(&mut self, within: Duration) -> RegisterRequest {
        tokio::time::timeout(within, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no registration within {within:?}"))
            .expect("stand-in stopped")
    }

    /// Whether a registration arrives within `within`.
    pub async fn registered_within(&mut self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.requests.recv()).await,
            Ok(Some(_))
        )
    }

    /// Stops serving and removes kubelet.sock.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.socket);
    }

    /// What a kubelet restart does to the directory: its socket goes, every plugin socket is
    /// deleted, and a new kubelet.sock appears.
    pub async fn restart(self) -> Kubelet {
        let dir = self.socket.parent().unwrap().to_path_buf();
        self.stop().await;
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        Kubelet::start(&dir)
    }
}

/// The plugin process.
pub struct Plugin {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Plugin {
    /// Runs the binary with the file backend on `node` plus `args` (later flags win).
    pub fn spawn(node: &Node, args: &[&str]) -> Plugin {
        Plugin::spawn_raw(
            node,
            &[
                &["--backend", "file", "--devices-file"][..],
                &[node.devices_file.to_str().unwrap()],
                args,
            ]
            .concat(),
        )
    }

    /// Runs the binary with only the node's directories set.
    pub fn spawn_raw(node: &Node, args: &[&str]) -> Plugin {
        let config = node.dir.path().join("config.toml");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
        }
        let log = node.dir.path().join(format!(
            "plugin-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_device-plugin"));
        cmd.arg("--config")
            .arg(&config)
            .arg("--device-plugin-dir")
            .arg(&node.plugin_dir)
            .arg("--cdi-spec-dir")
            .arg(&node.cdi_dir)
            .args(args)
            .env("DP_LOG_LEVEL", "device_plugin=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("DP_") && k != "DP_LOG_LEVEL" {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().unwrap();
        let socket_name = args
            .iter()
            .position(|a| *a == "--socket-name")
            .map(|i| args[i + 1].to_string())
            .unwrap_or_else(|| {
                let resource = args
                    .iter()
                    .position(|a| *a == "--resource-name")
                    .map(|i| args[i + 1])
                    .unwrap_or("nvidia.com/gpu");
                format!("{}.sock", resource.replace('/', "-"))
            });
        Plugin {
            child,
            socket: node.plugin_dir.join(socket_name),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client of the plugin socket (waits for it to appear).
    pub async fn client(&self) -> DevicePluginClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.socket.exists()
                && let Ok(ch) = device_plugin::kubelet::channel(&self.socket).await
            {
                return DevicePluginClient::new(ch);
            }
            assert!(
                Instant::now() < deadline,
                "plugin socket {} not served; log:\n{}",
                self.socket.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "plugin still running after {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.wait_exit(Duration::from_secs(10)).await
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- plugin log ----\n{}", self.log());
        }
    }
}

/// A device entry of the device file.
pub fn device(id: &str, node: &Path, numa: i64, health: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "health": health,
        "numaNode": numa,
        "deviceNodes": [{"path": node, "containerPath": format!("/dev/{id}")}]
    })
}
