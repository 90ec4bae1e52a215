//! StartContainer, StopContainer, RemoveContainer, ReopenContainerLog.

use std::time::Duration;

use k8s_cri::v1::ContainerEventType;
use nix::mount::{MntFlags, umount2};
use tracing::{info, instrument, warn};

use super::record::{ContainerPhase, ContainerRecord};
use crate::runtime::{Runtime, RuntimeError, now_nanos};
use crate::sandbox::monitor;

/// After SIGKILL, how long to wait for the monitor to record the exit.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long [`Runtime::wait_exit`] polls every millisecond before it slows down.
const TIGHT_POLL: Duration = Duration::from_millis(100);

impl Runtime {
    /// The container's record with any exit the monitor recorded folded in (and saved).
    pub fn refreshed(&self, id: &str) -> Option<ContainerRecord> {
        let mut rec = self.container(id)?;
        let monitor_alive = self
            .sandbox(&rec.sandbox_id)
            .is_some_and(|sb| monitor::alive(&sb.dir));
        if rec.refresh(monitor_alive) {
            let _ = self.save_container(&rec);
            if rec.phase == ContainerPhase::Exited {
                self.emit(
                    &rec.id,
                    ContainerEventType::ContainerStoppedEvent,
                    &rec.sandbox_id,
                );
            }
        }
        Some(rec)
    }

    #[instrument(skip(self))]
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let lock = self.pod_lock(&rec.sandbox_id);
        let _g = lock.lock().await;
        let mut rec = self
            .refreshed(&rec.id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        if rec.phase != ContainerPhase::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                rec.id, rec.phase
            )));
        }
        // A container the runtime has not made yet runs in its pod's namespaces: those must
        // still be there.
        let sandbox = if rec.runtime_deferred {
            let sb = self
                .sandbox(&rec.sandbox_id)
                .filter(|sb| sb.phase == crate::runtime::Phase::Ready)
                .ok_or_else(|| {
                    RuntimeError::FailedPrecondition(format!(
                        "pod sandbox {} of container {} is not ready",
                        rec.sandbox_id, rec.id
                    ))
                })?;
            Some(sb)
        } else {
            None
        };
        // Taken before the start: a container can exit before `start` returns.
        let started_at = now_nanos();
        let started = if let Some(sb) = sandbox {
            self.run_deferred(&sb, &mut rec).await
        } else {
            // Made by `<runtime> create` (a record of an older version): start it.
            let oci = self.oci(&rec.runtime_handler)?;
            oci.start(&rec.id).await.map_err(|e| e.to_string())
        };
        if let Err(e) = started {
            rec.fail_start(e.clone());
            self.save_container(&rec)?;
            return Err(RuntimeError::internal(
                format!("start container {}", rec.id),
                e,
            ));
        }
        rec.phase = ContainerPhase::Running;
        rec.started_at = started_at;
        self.save_container(&rec)?;
        self.emit(
            &rec.id,
            ContainerEventType::ContainerStartedEvent,
            &rec.sandbox_id,
        );
        info!(container = %rec.id, "container started");
        Ok(())
    }

    /// Has the pod monitor create and start the container in one OCI runtime process. The
    /// record says the runtime was asked (saved first), so that a crash in between is noticed.
    async fn run_deferred(
        &self,
        sb: &crate::sandbox::SandboxRecord,
        rec: &mut ContainerRecord,
    ) -> Result<(), String> {
        let request = self
            .runtime_request(sb, rec, true)
            .map_err(|e| e.to_string())?;
        rec.runtime_deferred = false;
        self.save_container(rec).map_err(|e| e.to_string())?;
        let runtime = request.runtime.display().to_string();
        // The runtime moves the init into its cgroups in a moment.
        self.cgroup_warmer.warm();
        rec.pid = monitor::create(&sb.dir, request)
            .await
            .map_err(|e| format!("{runtime} run: {e}"))?;
        crate::failpoint::hit("container-after-runtime-run");
        Ok(())
    }

    #[instrument(skip(self))]
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), RuntimeError> {
        let Some(rec) = self.container(id) else {
            return Ok(());
        };
        let lock = self.pod_lock(&rec.sandbox_id);
        let _g = lock.lock().await;
        self.stop_container_locked(&rec.id, timeout_secs).await
    }

    /// Sends the stop signal, waits `timeout_secs`, then SIGKILL. Idempotent.
    pub(crate) async fn stop_container_locked(
        &self,
        id: &str,
        timeout_secs: i64,
    ) -> Result<(), RuntimeError> {
        let Some(rec) = self.refreshed(id) else {
            return Ok(());
        };
        if !matches!(rec.phase, ContainerPhase::Running | ContainerPhase::Created) {
            return Ok(());
        }
        // Never started: no process to stop (it stays created, as with containerd).
        if rec.runtime_deferred {
            return Ok(());
        }
        let oci = self.oci(&rec.runtime_handler)?;
        if timeout_secs > 0 {
            let signal = if rec.stop_signal.is_empty() {
                "SIGTERM".to_string()
            } else {
                rec.stop_signal.clone()
            };
            let signal = signal.trim_start_matches("SIG").to_string();
            if let Err(e) = self.signal_init(&rec, &oci, &signal).await {
                warn!(container = %rec.id, error = %e, "stop signal not delivered");
            }
            if self
                .wait_exit(&rec.id, Duration::from_secs(timeout_secs as u64))
                .await
            {
                return Ok(());
            }
        }
        if let Err(e) = self.signal_init(&rec, &oci, "KILL").await {
            warn!(container = %rec.id, error = %e, "SIGKILL not delivered");
        }
        if !self.wait_exit(&rec.id, KILL_GRACE).await {
            return Err(RuntimeError::DeadlineExceeded(format!(
                "container {} did not exit after SIGKILL",
                rec.id
            )));
        }
        info!(container = %rec.id, "container stopped");
        Ok(())
    }

    /// Signals the container's init. A started container's init is the monitor's child
    /// until the monitor reaps it and records the exit, so while no exit is recorded and the
    /// monitor lives its pid cannot have been reused: signal it directly and save the OCI
    /// runtime's exec. Otherwise (created, not started; monitor gone) ask the runtime.
    async fn signal_init(
        &self,
        rec: &ContainerRecord,
        oci: &crate::oci::OciRuntime,
        signal: &str,
    ) -> Result<(), String> {
        let direct = rec.phase == ContainerPhase::Running
            && rec.pid > 0
            && self
                .sandbox(&rec.sandbox_id)
                .is_some_and(|sb| monitor::alive(&sb.dir))
            && !cri_monitor::protocol::ExitRecord::read(&rec.bundle).is_ok_and(|e| e.is_some());
        if direct && let Ok(sig) = format!("SIG{signal}").parse::<nix::sys::signal::Signal>() {
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.pid as i32), sig)
                .map_err(|e| e.to_string());
        }
        oci.kill(&rec.id, signal, false)
            .await
            .map_err(|e| e.to_string())
    }

    async fn wait_exit(&self, id: &str, within: Duration) -> bool {
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        loop {
            match self.refreshed(id) {
                Some(r) if r.phase == ContainerPhase::Exited => return true,
                None => return true,
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // The monitor records an exit within a millisecond or so of it (a SIGKILLed init
            // is gone at once): poll every millisecond at first, then every 5.
            let pause = if start.elapsed() < TIGHT_POLL {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            tokio::time::sleep(pause).await;
        }
    }

    #[instrument(skip(self))]
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(rec) = self.container(id) else {
            return Ok(());
        };
        let lock = self.pod_lock(&rec.sandbox_id);
        let _g = lock.lock().await;
        // Refreshed: an exit the monitor recorded lets the runtime delete run in the background.
        let Some(rec) = self.refreshed(&rec.id) else {
            return Ok(());
        };
        self.destroy_container(&rec).await;
        info!(container = %rec.id, "container removed");
        Ok(())
    }

    /// Removes everything of a container (best effort, idempotent) and drops its record.
    ///
    /// For a container whose init has exited, the record goes at once and the rest (the
    /// runtime's delete: only state and cgroups are left; the rootfs unmount, whose overlay
    /// syncs its upper filesystem; the bundle and data dirs; the leases) runs on after the call
    /// returns, as containerd leaves snapshot removal to its garbage collector. The pod's
    /// removal waits for it, RemoveImage waits for its leases, and a crash before it ends leaves
    /// orphans the start-up sweep removes.
    pub(crate) async fn destroy_container(&self, rec: &ContainerRecord) {
        let cleanup = self.container_cleanup(rec);
        if rec.phase == ContainerPhase::Exited {
            let leases = self.images.cleanup_guard().await;
            let handle = tokio::spawn(async move {
                cleanup.await;
                drop(leases);
            });
            {
                let mut pending = self.cleanups.lock().expect("cleanups");
                pending.retain(|(_, h)| !h.is_finished());
                pending.push((rec.sandbox_id.clone(), handle));
            }
            self.drop_container_record(&rec.id);
        } else {
            cleanup.await;
            self.drop_container_record(&rec.id);
        }
        self.emit(
            &rec.id,
            ContainerEventType::ContainerDeletedEvent,
            &rec.sandbox_id,
        );
    }

    /// What removing a container does besides dropping its record, as a task of its own.
    fn container_cleanup(
        &self,
        rec: &ContainerRecord,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let oci = if rec.runtime_deferred {
            None
        } else {
            self.oci(&rec.runtime_handler).ok()
        };
        let monitor_dir = self.sandbox(&rec.sandbox_id).map(|sb| sb.dir);
        let volumes = self.paths.container_mnt(&rec.id);
        let images = self.images.clone();
        let rec = rec.clone();
        async move {
            if let Some(oci) = oci
                && let Err(e) = oci.delete(&rec.id).await
            {
                warn!(container = %rec.id, error = %e, "OCI runtime delete failed");
            }
            if let Some(dir) = monitor_dir {
                monitor::forget(&dir, &rec.id).await;
            }
            let _ = umount2(&rec.rootfs(), MntFlags::MNT_DETACH);
            if let Err(e) = crate::mountapi::unmount_all_under(&volumes) {
                warn!(container = %rec.id, error = %e, "unmounting prepared volumes");
            }
            let _ = std::fs::remove_dir_all(&rec.bundle);
            let _ = std::fs::remove_dir_all(&rec.data_dir);
            // The rootfs lease and one per image volume: named from the record, no lease dir
            // scan.
            let holders = std::iter::once(rec.id.clone()).chain(
                rec.volume_images
                    .iter()
                    .map(|v| super::volumes::lease_holder(&rec.id, v.index)),
            );
            for holder in holders {
                if let Err(e) = images.release(&holder).await {
                    warn!(container = %rec.id, error = %e, "releasing image layers");
                }
            }
        }
    }

    /// Waits for the background cleanups of the pod's removed containers.
    pub(crate) async fn finish_cleanups(&self, sandbox_id: &str) {
        let handles: Vec<_> = {
            let mut pending = self.cleanups.lock().expect("cleanups");
            let (mine, rest) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|(sb, _)| sb == sandbox_id);
            *pending = rest;
            mine
        };
        for (_, handle) in handles {
            let _ = handle.await;
        }
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self
            .refreshed(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        if rec.phase != ContainerPhase::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let sb = self
            .sandbox(&rec.sandbox_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {}", rec.sandbox_id)))?;
        monitor::reopen_log(&sb.dir, &rec.id)
            .await
            .map_err(|e| RuntimeError::internal("reopen container log", e))
    }
}
