//! ExecSync: run a command in a running container, collect both streams (capped), kill it at
//! the timeout.

use std::time::Duration;

use tracing::instrument;

use super::record::ContainerPhase;
use crate::oci::ExecOutput;
use crate::runtime::{Runtime, RuntimeError, new_id};

impl Runtime {
    #[instrument(skip(self, cmd))]
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<ExecOutput, RuntimeError> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec needs a command".into()));
        }
        let rec = self
            .refreshed(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id}")))?;
        if rec.phase != ContainerPhase::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        // The exec'd process gets the container's own process settings with other args.
        let spec: serde_json::Value = std::fs::read(rec.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| RuntimeError::internal("read container spec", rec.bundle.display()))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(false);
        let tag = &new_id()[..12];
        let process_path = rec.bundle.join(format!("exec-{tag}.json"));
        let pid_path = rec.bundle.join(format!("exec-{tag}.pid"));
        std::fs::write(
            &process_path,
            serde_json::to_vec(&process).unwrap_or_default(),
        )
        .map_err(|e| RuntimeError::internal("write exec process", e))?;
        let oci = self.oci(&rec.runtime_handler)?;
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let result = oci.exec(&rec.id, &process_path, &pid_path, timeout).await;
        let _ = std::fs::remove_file(&process_path);
        let _ = std::fs::remove_file(&pid_path);
        let out = result.map_err(|e| RuntimeError::internal(format!("exec in {}", rec.id), e))?;
        if out.timed_out {
            return Err(RuntimeError::DeadlineExceeded(format!(
                "command {cmd:?} timed out after {timeout_secs}s"
            )));
        }
        Ok(out)
    }
}
