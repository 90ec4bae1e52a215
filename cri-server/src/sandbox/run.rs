//! RunPodSandbox.

use k8s_cri::v1::{ContainerEventType, NamespaceMode, PodSandboxConfig};
use tracing::{info, instrument, warn};

use super::{SandboxRecord, cgroupfs_parent, files, namespaces};
use crate::network::{Attachment, PortMapping};
use crate::runtime::{Phase, Runtime, RuntimeError, new_id, now_nanos};

impl Runtime {
    #[instrument(skip_all, fields(pod))]
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<String, RuntimeError> {
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("sandbox config has no metadata".into())
        })?;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "sandbox metadata needs name, namespace and uid".into(),
            ));
        }
        let handler = if handler.is_empty() {
            self.default_handler.clone()
        } else {
            handler.to_string()
        };
        self.oci(&handler)?;
        let ns = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let host_network = ns.network == NamespaceMode::Node as i32;
        let host_ipc = ns.ipc == NamespaceMode::Node as i32;
        let host_pid = ns.pid == NamespaceMode::Node as i32;
        let userns =
            super::userns::from_request(Some(&ns)).map_err(RuntimeError::InvalidArgument)?;
        if userns.is_some()
            && let Err(why) = &self.features.user_namespaces
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "user namespaces are not supported on this host: {why}"
            )));
        }
        let id = new_id();
        tracing::Span::current().record("pod", format!("{}/{}", meta.namespace, meta.name));
        let mut rec = SandboxRecord {
            id: id.clone(),
            runtime_handler: handler,
            phase: Phase::Creating,
            created_at: now_nanos(),
            pins: Default::default(),
            network: None,
            dir: self.paths.pod_dir(&id),
            cgroup_parent: cgroupfs_parent(
                config
                    .linux
                    .as_ref()
                    .map(|l| l.cgroup_parent.as_str())
                    .unwrap_or(""),
            ),
            host_network,
            host_ipc,
            host_pid,
            infra_pid: None,
            userns,
            config,
        };
        let lock = self.pod_lock(&id);
        let _g = lock.lock().await;
        {
            let taken = self
                .sandboxes
                .read()
                .expect("sandboxes")
                .values()
                .any(|s| s.name() == rec.name());
            if taken {
                return Err(RuntimeError::AlreadyExists(format!(
                    "pod sandbox name {:?} is in use",
                    rec.name()
                )));
            }
        }
        // The record comes first: if we crash below, the next start tears down what exists.
        self.save_sandbox(&rec)?;
        if let Err(e) = self.setup_sandbox(&mut rec).await {
            warn!(pod = %id, error = %e, "RunPodSandbox failed: cleaning up");
            self.destroy_sandbox(&rec).await;
            return Err(e);
        }
        rec.phase = Phase::Ready;
        self.save_sandbox(&rec)?;
        self.emit(&id, ContainerEventType::ContainerCreatedEvent, &id);
        self.emit(&id, ContainerEventType::ContainerStartedEvent, &id);
        info!(pod = %id, name = %rec.name(), ips = ?rec.network.as_ref().map(|n| &n.ips), "pod sandbox ready");
        Ok(id)
    }

    async fn setup_sandbox(&self, rec: &mut SandboxRecord) -> Result<(), RuntimeError> {
        let internal = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| RuntimeError::internal(what, e)
        };
        std::fs::create_dir_all(&rec.dir).map_err(internal("create pod dir"))?;
        let hostname = rec.config.hostname.clone();
        let linux = rec.config.linux.clone().unwrap_or_default();
        files::write_etc(
            &rec.dir,
            &hostname,
            rec.config.dns_config.as_ref(),
            rec.host_network,
        )
        .map_err(internal("write pod etc files"))?;
        if !rec.host_ipc {
            files::mount_shm(&rec.dir).map_err(internal("mount pod /dev/shm"))?;
        }
        if let Some(userns) = &rec.userns {
            // The container's root owns what it may write: etc files and /dev/shm.
            let (uid, gid) = userns.root();
            let shm = (!rec.host_ipc).then(|| rec.dir.join("shm"));
            for f in ["hosts", "hostname", "resolv.conf"]
                .iter()
                .map(|f| rec.dir.join(f))
                .chain(shm)
            {
                if f.exists() {
                    std::os::unix::fs::chown(&f, Some(uid), Some(gid))
                        .map_err(internal("chown pod files to the user namespace root"))?;
                }
            }
        }
        let req = namespaces::NsRequest {
            net: !rec.host_network,
            ipc: !rec.host_ipc,
            uts: !rec.host_network,
            hostname: if rec.host_network {
                String::new()
            } else {
                hostname
            },
            sysctls: linux
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            userns: rec.userns,
        };
        namespaces::check_sysctls(&req)
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let pin_dir = self.paths.pins();
        let id = rec.id.clone();
        rec.pins = tokio::task::spawn_blocking(move || namespaces::create(&pin_dir, &id, &req))
            .await
            .map_err(|e| RuntimeError::internal("namespace task", e))?
            .map_err(|e| RuntimeError::internal("create pod namespaces", e))?;
        self.save_sandbox(rec)?;
        crate::failpoint::hit("sandbox-after-namespaces");

        // A pod-wide PID namespace gets a PID 1 of ours to hold it.
        let pid_mode = rec
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map(|o| o.pid)
            .unwrap_or_default();
        if pid_mode == NamespaceMode::Pod as i32 {
            let pid = crate::sandbox::monitor::start_pause(
                &self.monitor_binary,
                &rec.dir,
                rec.pins.user.as_deref(),
            )
            .await
            .map_err(|e| RuntimeError::internal("start the pod's PID 1", e))?;
            rec.infra_pid = Some(pid);
            self.save_sandbox(rec)?;
        }
        // The monitor and the pod network are independent: set them up at the same time.
        let runtime_root = self.paths.runtime_root().join(&rec.runtime_handler);
        let monitor =
            crate::sandbox::monitor::start(&self.monitor_binary, &rec.id, &rec.dir, &runtime_root);
        let network = async {
            let Some(netns) = rec.pins.net.clone() else {
                return Ok(None);
            };
            let meta = rec.config.metadata.clone().unwrap_or_default();
            let attachment = Attachment {
                sandbox_id: rec.id.clone(),
                netns,
                ifname: "eth0".into(),
                pod_name: meta.name,
                pod_namespace: meta.namespace,
                pod_uid: meta.uid,
                port_mappings: rec
                    .config
                    .port_mappings
                    .iter()
                    .filter(|p| p.host_port > 0)
                    .map(|p| PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: match p.protocol {
                            1 => "udp".into(),
                            2 => "sctp".into(),
                            _ => "tcp".into(),
                        },
                        host_ip: p.host_ip.clone(),
                    })
                    .collect(),
                cgroup_parent: rec.cgroup_parent.clone(),
                pod_cidr: self.pod_cidr.read().expect("pod cidr").clone(),
            };
            crate::failpoint::hit("sandbox-before-cni");
            let status = self
                .cni
                .add(&attachment)
                .await
                .map_err(|e| RuntimeError::internal("set up pod network (CNI ADD)", e))?;
            crate::failpoint::hit("sandbox-after-cni");
            Ok::<_, RuntimeError>(Some(status))
        };
        let (monitor, network) = tokio::join!(monitor, network);
        rec.network = network?;
        monitor.map_err(|e| RuntimeError::internal("start pod monitor", e))?;
        Ok(())
    }

    /// Tears down everything a sandbox may have (best effort, idempotent) and drops its record.
    pub(crate) async fn destroy_sandbox(&self, rec: &SandboxRecord) {
        for c in self.containers_of(&rec.id) {
            self.destroy_container(&c).await;
        }
        self.finish_cleanups(&rec.id).await;
        if (rec.pins.net.is_some() || rec.network.is_some())
            && let Err(e) = self.cni.del(&rec.id, rec.pins.net.as_deref()).await
        {
            warn!(pod = %rec.id, error = %e, "CNI DEL failed during teardown");
        }
        namespaces::remove(&rec.pins);
        crate::sandbox::monitor::kill_pause(&rec.dir, rec.infra_pid);
        crate::sandbox::monitor::shutdown(&rec.dir).await;
        files::unmount_shm(&rec.dir);
        let _ = std::fs::remove_dir_all(&rec.dir);
        self.drop_sandbox_record(&rec.id);
        if rec.phase != Phase::Creating {
            self.emit(&rec.id, ContainerEventType::ContainerDeletedEvent, &rec.id);
        }
    }
}
