//! UpdateContainerResources: new limits through the OCI runtime's `update` (or into the
//! bundle's spec, for a container not started yet), kept in the record.

use k8s_cri::v1::LinuxContainerResources;
use tracing::{info, instrument};

use super::record::ContainerPhase;
use super::spec;
use crate::runtime::{Runtime, RuntimeError, new_id};

impl Runtime {
    #[instrument(skip(self, resources))]
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), RuntimeError> {
        let rec = self
            .container(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        let lock = self.pod_lock(&rec.sandbox_id);
        let _g = lock.lock().await;
        let mut rec = self
            .refreshed(&rec.id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        if !matches!(rec.phase, ContainerPhase::Created | ContainerPhase::Running) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let Some(resources) = resources else {
            return Ok(());
        };
        let oci_resources = spec::resources_for_update(&resources);
        if rec.runtime_deferred {
            // Not handed to the runtime yet (the kubelet's CPU manager updates cpusets between
            // create and start): the new limits go into the bundle's spec.
            let path = rec.bundle.join("config.json");
            let mut oci_spec: oci_spec::runtime::Spec = crate::store::read_json(&path)
                .map_err(|e| RuntimeError::internal("read OCI bundle", e))?;
            spec::apply_update(&mut oci_spec, &oci_resources);
            let json = serde_json::to_vec_pretty(&oci_spec)
                .map_err(|e| RuntimeError::internal("encode OCI spec", e))?;
            crate::store::write_volatile(&path, &json)
                .map_err(|e| RuntimeError::internal("write OCI bundle", e))?;
        } else {
            let path = rec.bundle.join(format!("update-{}.json", &new_id()[..12]));
            let json = serde_json::to_vec(&oci_resources)
                .map_err(|e| RuntimeError::internal("encode resources", e))?;
            std::fs::write(&path, json)
                .map_err(|e| RuntimeError::internal("write resources", e))?;
            let result = self.oci(&rec.runtime_handler)?.update(&rec.id, &path).await;
            let _ = std::fs::remove_file(&path);
            result.map_err(|e| {
                RuntimeError::internal(format!("update resources of {}", rec.id), e)
            })?;
        }
        rec.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
        self.save_container(&rec)?;
        info!(container = %rec.id, "container resources updated");
        Ok(())
    }
}
