//! ContainerStatus and ListContainers.

use std::collections::HashMap;

use k8s_cri::v1::{Container, ContainerState, ContainerStatus, ImageSpec};

use super::record::{ContainerPhase, ContainerRecord};
use crate::runtime::Runtime;

#[derive(Debug, Default)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: HashMap<String, String>,
}

impl ContainerRecord {
    fn image_spec(&self) -> ImageSpec {
        ImageSpec {
            image: self.image_id.clone(),
            annotations: self
                .config
                .image
                .as_ref()
                .map(|i| i.annotations.clone())
                .unwrap_or_default(),
            user_specified_image: self
                .config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            runtime_handler: String::new(),
        }
    }

    /// The requested mounts; image volumes name the image by its digest reference, keeping
    /// the name the kubelet asked for as `user_specified_image`.
    fn status_mounts(&self) -> Vec<k8s_cri::v1::Mount> {
        let mut mounts = self.config.mounts.clone();
        for v in &self.volume_images {
            if let Some(m) = mounts.get_mut(v.index)
                && let Some(spec) = m.image.as_mut()
            {
                if spec.user_specified_image.is_empty() {
                    spec.user_specified_image = spec.image.clone();
                }
                spec.image = v.image_ref.clone();
            }
        }
        mounts
    }

    pub fn to_status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.status_mounts(),
            log_path: self
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            resources: self
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| k8s_cri::v1::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: self.image_id.clone(),
            user: self
                .user
                .as_ref()
                .map(|(uid, gid, groups)| k8s_cri::v1::ContainerUser {
                    linux: Some(k8s_cri::v1::LinuxContainerUser {
                        uid: *uid as i64,
                        gid: *gid as i64,
                        supplemental_groups: groups.iter().map(|g| *g as i64).collect(),
                    }),
                }),
        }
    }

    pub fn to_list_item(&self) -> Container {
        Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }
}

impl Runtime {
    /// Containers matching `f`, from memory: the kubelet relists every second, so no
    /// per-container syscalls here; the exit watcher folds exits in within 500 ms.
    pub fn list_containers(&self, f: &ContainerFilter) -> Vec<ContainerRecord> {
        let mut v: Vec<ContainerRecord> = self
            .containers
            .read()
            .expect("containers")
            .values()
            .filter(|c| c.phase != ContainerPhase::Creating)
            .filter(|c| f.id.as_deref().is_none_or(|id| c.id.starts_with(id)))
            .filter(|c| {
                f.sandbox_id
                    .as_deref()
                    .is_none_or(|s| c.sandbox_id.starts_with(s))
            })
            .filter(|c| f.state.is_none_or(|s| c.cri_state() == s))
            .filter(|c| {
                f.labels
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        v.sort_by_key(|c| c.created_at);
        v
    }
}
