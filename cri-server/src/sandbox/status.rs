//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandbox, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus,
};

use super::SandboxRecord;
use crate::runtime::{Phase, Runtime};

/// What ListPodSandbox may filter on.
#[derive(Debug, Default)]
pub struct SandboxFilter {
    pub id: Option<String>,
    pub state: Option<PodSandboxState>,
    pub labels: HashMap<String, String>,
}

impl SandboxRecord {
    pub fn cri_state(&self) -> PodSandboxState {
        if self.phase == Phase::Ready {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        }
    }

    pub fn to_status(&self) -> PodSandboxStatus {
        let network = self
            .network
            .as_ref()
            .filter(|_| self.phase == Phase::Ready)
            .map(|n| PodSandboxNetworkStatus {
                ip: n.ips.first().map(|i| i.to_string()).unwrap_or_default(),
                additional_ips: n
                    .ips
                    .iter()
                    .skip(1)
                    .map(|i| PodIp { ip: i.to_string() })
                    .collect(),
            });
        let options = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        PodSandboxStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            network,
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace { options }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    pub fn to_list_item(&self) -> PodSandbox {
        PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

impl Runtime {
    /// Sandboxes past creation matching `f` (id may be a unique prefix), oldest first.
    pub fn list_sandboxes(&self, f: &SandboxFilter) -> Vec<SandboxRecord> {
        let map = self.sandboxes.read().expect("sandboxes");
        let mut v: Vec<SandboxRecord> = map
            .values()
            .filter(|s| s.phase != Phase::Creating)
            .filter(|s| f.id.as_deref().is_none_or(|id| s.id.starts_with(id)))
            .filter(|s| f.state.is_none_or(|st| s.cri_state() == st))
            .filter(|s| {
                f.labels
                    .iter()
                    .all(|(k, v)| s.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_at);
        v
    }
}
