//! A container's record, and its exit as the pod monitor wrote it (`<bundle>/exit.json`).

use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, ContainerState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Creating,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub runtime_handler: String,
    /// Image id (config digest) and the reference the kubelet should see (a repo digest).
    pub image_id: String,
    pub image_ref: String,
    pub stop_signal: String,
    pub phase: ContainerPhase,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    pub bundle: PathBuf,
    /// Upper and work dirs of the rootfs overlay.
    pub data_dir: PathBuf,
    pub log_path: Option<PathBuf>,
    /// The identity the init process runs with (uid, gid, all groups), for ContainerStatus.
    #[serde(default)]
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// Images mounted as volumes, leased as `<id>.vol<index>`.
    #[serde(default)]
    pub volume_images: Vec<super::volumes::VolumeImage>,
    /// The OCI runtime has not been asked for this container yet. CreateContainer prepares
    /// the bundle only; StartContainer creates and starts in one runtime process (`run
    /// --detach`), and clears this (saved) before it does. Records of older versions lack it:
    /// their created containers were made with `<runtime> create`.
    #[serde(default)]
    pub runtime_deferred: bool,
}

impl ContainerRecord {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    pub fn cri_state(&self) -> ContainerState {
        match self.phase {
            ContainerPhase::Creating | ContainerPhase::Created => ContainerState::ContainerCreated,
            ContainerPhase::Running => ContainerState::ContainerRunning,
            ContainerPhase::Exited => ContainerState::ContainerExited,
        }
    }

    /// The container never ran: the OCI runtime refused it, or the daemon stopped mid-start.
    pub fn fail_start(&mut self, message: String) {
        self.phase = ContainerPhase::Exited;
        self.exit_code = 128;
        self.finished_at = crate::runtime::now_nanos();
        self.reason = "StartError".into();
        self.message = message;
    }

    /// Folds in an exit the monitor recorded, or notices an init that vanished without one (its
    /// monitor is gone too, or the node rebooted). Returns true when the record changed.
    pub fn refresh(&mut self, monitor_alive: bool) -> bool {
        if !matches!(
            self.phase,
            ContainerPhase::Created | ContainerPhase::Running
        ) {
            return false;
        }
        if let Ok(Some(exit)) = cri_monitor::protocol::ExitRecord::read(&self.bundle) {
            self.phase = ContainerPhase::Exited;
            self.exit_code = exit.exit_code;
            self.finished_at = exit.exited_at_unix_nanos;
            self.reason = if exit.oom_killed {
                "OOMKilled".into()
            } else if exit.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
            return true;
        }
        let alive = self.pid > 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), None).is_ok();
        // A live monitor writes the exit file right after it reaps the init: wait for it.
        if !alive && self.pid > 0 && !monitor_alive {
            self.phase = ContainerPhase::Exited;
            self.exit_code = 255;
            self.finished_at = crate::runtime::now_nanos();
            self.reason = "Unknown".into();
            self.message = "the container's process is gone and no exit status was recorded".into();
            return true;
        }
        false
    }
}
