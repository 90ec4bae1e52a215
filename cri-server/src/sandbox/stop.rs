//! StopPodSandbox and RemovePodSandbox: both idempotent, unknown ids are not errors.

use tracing::{info, instrument, warn};

use super::namespaces;
use crate::runtime::{Phase, Runtime, RuntimeError};

impl Runtime {
    /// Stops the pod's containers, tears its network down (CNI DEL) and releases its network
    /// namespace. The record stays (NotReady) until RemovePodSandbox.
    #[instrument(skip(self))]
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(rec) = self.sandbox(id) else {
            return Ok(());
        };
        let lock = self.pod_lock(&rec.id);
        let _g = lock.lock().await;
        let Some(mut rec) = self.sandbox(&rec.id) else {
            return Ok(());
        };
        for c in self.containers_of(&rec.id) {
            if let Err(e) = self.stop_container_locked(&c.id, 0).await {
                warn!(container = %c.id, error = %e, "stopping container of a stopped pod");
            }
        }
        if rec.pins.net.is_some() || rec.network.is_some() {
            self.cni
                .del(&rec.id, rec.pins.net.as_deref())
                .await
                .map_err(|e| RuntimeError::internal("tear down pod network (CNI DEL)", e))?;
        }
        namespaces::remove(&rec.pins);
        crate::sandbox::monitor::kill_pause(&rec.dir, rec.infra_pid);
        if rec.phase != Phase::NotReady {
            rec.phase = Phase::NotReady;
            self.save_sandbox(&rec)?;
            self.emit(
                &rec.id,
                k8s_cri::v1::ContainerEventType::ContainerStoppedEvent,
                &rec.id,
            );
            info!(pod = %rec.id, "pod sandbox stopped");
        }
        Ok(())
    }

    #[instrument(skip(self))]
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(rec) = self.sandbox(id) else {
            return Ok(());
        };
        let lock = self.pod_lock(&rec.id);
        let _g = lock.lock().await;
        let Some(rec) = self.sandbox(&rec.id) else {
            return Ok(());
        };
        self.destroy_sandbox(&rec).await;
        info!(pod = %rec.id, "pod sandbox removed");
        Ok(())
    }
}
