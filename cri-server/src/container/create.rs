//! CreateContainer: lease the image, mount the overlay rootfs and build the OCI bundle. The OCI
//! runtime is not run here: StartContainer has the pod monitor create and start the container
//! in one runtime process (`<runtime> run --detach`), one Go start-up of runc fewer than
//! `create` + `start`. containerd's CRI plugin also makes the runtime container only at start.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use tracing::{info, instrument, warn};

use super::record::{ContainerPhase, ContainerRecord};
use super::spec::{self, EtcFiles, SandboxNamespaces, SpecInput};
use crate::runtime::{Phase, Runtime, RuntimeError, new_id, now_nanos};
use crate::sandbox::SandboxRecord;

/// Where the kubelet keeps seccomp profiles (Localhost profiles are relative to it).
const SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";

impl Runtime {
    #[instrument(skip_all, fields(pod = %sandbox_id, container))]
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, RuntimeError> {
        let sb = self
            .sandbox(sandbox_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {sandbox_id}")))?;
        let lock = self.pod_lock(&sb.id);
        let _g = lock.lock().await;
        let sb = self
            .sandbox(&sb.id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {sandbox_id}")))?;
        if sb.phase != Phase::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sb.id
            )));
        }
        let meta = config.metadata.clone().ok_or_else(|| {
            RuntimeError::InvalidArgument("container config has no metadata".into())
        })?;
        if meta.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container metadata has no name".into(),
            ));
        }
        tracing::Span::current().record("container", meta.name.as_str());
        let security = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref());
        if let Some(ns) = security.and_then(|s| s.namespace_options.as_ref())
            && ns.userns_options.is_some()
        {
            let wanted = crate::sandbox::userns::from_request(Some(ns))
                .map_err(RuntimeError::InvalidArgument)?;
            if wanted != sb.userns {
                return Err(RuntimeError::InvalidArgument(
                    "the container's user namespace options differ from its pod's".into(),
                ));
            }
        }
        super::volumes::check(&config.mounts, &self.features, sb.userns.as_ref())
            .map_err(RuntimeError::InvalidArgument)?;
        let taken = self.containers_of(&sb.id).iter().any(|c| {
            c.config
                .metadata
                .as_ref()
                .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        });
        if taken {
            return Err(RuntimeError::AlreadyExists(format!(
                "container {:?} attempt {} already exists in pod {}",
                meta.name, meta.attempt, sb.id
            )));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self
            .images
            .find(&image_name)
            .ok_or_else(|| RuntimeError::NotFound(format!("image {image_name:?}")))?;
        let id = new_id();
        let log_path = match (sb.config.log_directory.as_str(), config.log_path.as_str()) {
            ("", _) | (_, "") => None,
            (dir, rel) => Some(Path::new(dir).join(rel)),
        };
        let mut rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sb.id.clone(),
            runtime_handler: sb.runtime_handler.clone(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            stop_signal: image.config.stop_signal.clone(),
            phase: ContainerPhase::Creating,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            bundle: self.paths.bundle(&id),
            data_dir: self.paths.container_data(&id),
            log_path,
            user: None,
            volume_images: Vec::new(),
            runtime_deferred: true,
            config,
        };
        self.save_container(&rec)?;
        let sandbox_config = sandbox_config.unwrap_or_else(|| sb.config.clone());
        if let Err(e) = self
            .setup_container(&sb, &sandbox_config, &mut rec, &image)
            .await
        {
            warn!(container = %id, error = %e, "CreateContainer failed: cleaning up");
            self.destroy_container(&rec).await;
            return Err(e);
        }
        rec.phase = ContainerPhase::Created;
        self.save_container(&rec)?;
        self.emit(
            &id,
            k8s_cri::v1::ContainerEventType::ContainerCreatedEvent,
            &sb.id,
        );
        info!(container = %id, name = %meta.name, image = %image_name, "container created");
        Ok(id)
    }

    async fn setup_container(
        &self,
        sb: &SandboxRecord,
        sandbox_config: &PodSandboxConfig,
        rec: &mut ContainerRecord,
        image: &crate::image::ImageRecord,
    ) -> Result<(), RuntimeError> {
        let internal =
            |what: &'static str| move |e: std::io::Error| RuntimeError::internal(what, e);
        self.images
            .lease(&rec.id, &image.id)
            .await
            .map_err(|e| RuntimeError::internal("hold image layers", e))?;
        if image.layers.is_empty() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "image {} has no layers",
                image.id
            )));
        }
        let upper = rec.data_dir.join("upper");
        let work = rec.data_dir.join("work");
        let rootfs = rec.rootfs();
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(internal("create container dirs"))?;
        }
        let mut lower: Vec<PathBuf> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_path(&l.chain_id))
            .collect();
        let userns_pin = match (&sb.userns, sb.pins.user.as_deref()) {
            (None, _) => None,
            (Some(_), Some(pin)) if crate::sandbox::namespaces::is_pinned(pin) => Some(pin),
            // Never a host-users container in a pod that asked for its own user namespace.
            (Some(_), _) => {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "pod sandbox {}'s user namespace is gone",
                    sb.id
                )));
            }
        };
        if let (Some(userns), Some(pin)) = (&sb.userns, userns_pin) {
            // Layers seen through the pod's mapping (image root is the container's root);
            // the upper dir belongs to the container's root, so its writes land as mapped ids.
            let (uid, gid) = userns.root();
            std::os::unix::fs::chown(&upper, Some(uid), Some(gid))
                .map_err(internal("chown the rootfs upper dir"))?;
            lower = self.idmapped_layers(&rec.id, "rootfs-layers", &lower, pin)?;
        }
        let mounted = crate::mountapi::mount_overlay(&rootfs, &lower, Some((&upper, &work)), false);
        if userns_pin.is_some() {
            let _ = crate::mountapi::unmount_all_under(
                &self.paths.container_mnt(&rec.id).join("rootfs-layers"),
            );
        }
        mounted.map_err(|e| RuntimeError::internal("mount container rootfs (overlay)", e))?;
        crate::failpoint::hit("container-after-rootfs");
        if let Some(log) = &rec.log_path
            && let Some(dir) = log.parent()
        {
            std::fs::create_dir_all(dir).map_err(internal("create log dir"))?;
        }

        let mut spec_config = rec.config.clone();
        spec_config.mounts = self.prepare_mounts(rec, userns_pin).await?;
        crate::failpoint::hit("container-after-volumes");

        let input = SpecInput {
            container_id: &rec.id,
            sandbox_id: &sb.id,
            config: &spec_config,
            sandbox: sandbox_config,
            image: &image.config,
            rootfs: &rootfs,
            namespaces: SandboxNamespaces {
                net: sb.pins.net.clone(),
                ipc: sb.pins.ipc.clone(),
                uts: sb.pins.uts.clone(),
                pid: sb.pid_namespace(),
                host_network: sb.host_network,
                host_ipc: sb.host_ipc,
                host_pid: sb.host_pid,
                user: userns_pin.map(Path::to_path_buf),
            },
            etc_files: EtcFiles {
                hosts: Some(sb.dir.join("hosts")),
                hostname: Some(sb.dir.join("hostname")),
                resolv_conf: Some(sb.dir.join("resolv.conf")),
                shm: if sb.host_ipc {
                    Some(PathBuf::from("/dev/shm"))
                } else {
                    Some(sb.dir.join("shm"))
                },
            },
            cgroups_path: cgroups_path(sb, &rec.id),
            can_lower_oom_score: self.can_lower_oom_score,
            seccomp_profile_root: Path::new(SECCOMP_ROOT),
            userns: sb.userns,
        };
        let spec_error = |e: spec::SpecError| match e {
            spec::SpecError::InvalidArgument(m) => RuntimeError::InvalidArgument(m),
            other => RuntimeError::InvalidArgument(other.to_string()),
        };
        let mut spec = spec::build(&input).map_err(spec_error)?;
        // Devices named through CDI (device plugins, DRA) bring their own edits.
        let cdi_names = spec::cdi::requested_names(&rec.config);
        let edits = spec::cdi::resolve(&self.cdi_dirs, &cdi_names).map_err(spec_error)?;
        spec::cdi::apply(&mut spec, &edits).map_err(spec_error)?;
        if let Some(u) = spec.process().as_ref().map(|p| p.user()) {
            rec.user = Some((
                u.uid(),
                u.gid(),
                u.additional_gids().clone().unwrap_or_default(),
            ));
        }
        let config_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| RuntimeError::internal("encode OCI spec", e))?;
        crate::store::write_volatile(&rec.bundle.join("config.json"), &config_json)
            .map_err(internal("write OCI bundle"))?;
        crate::failpoint::hit("container-after-bundle");

        Ok(())
    }

    /// What the pod monitor needs to have the OCI runtime create the container (`start`:
    /// and start it, in the same runtime process).
    pub(crate) fn runtime_request(
        &self,
        sb: &SandboxRecord,
        rec: &ContainerRecord,
        start: bool,
    ) -> Result<cri_monitor::protocol::CreateRequest, RuntimeError> {
        let oci = self.oci(&rec.runtime_handler)?;
        let memory_dir = self.cgroups.memory_dir(&cgroups_path(sb, &rec.id));
        Ok(cri_monitor::protocol::CreateRequest {
            id: rec.id.clone(),
            runtime: oci.binary.clone(),
            bundle: rec.bundle.clone(),
            log_path: rec
                .log_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/null")),
            tty: rec.config.tty,
            stdin: rec.config.stdin,
            stdin_once: rec.config.stdin_once,
            cgroup_memory_dir: Some(memory_dir),
            start,
        })
    }
}

/// The container's cgroup: under its pod's parent, named by its id.
fn cgroups_path(sb: &SandboxRecord, id: &str) -> String {
    format!("{}/{id}", sb.cgroup_parent.trim_end_matches('/'))
}
