//! The one JSON object a Flexvolume call prints, and its exit code.

use serde::Serialize;

/// `capabilities` of the `init` reply.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub attach: bool,
    #[serde(rename = "selinuxRelabel")]
    pub selinux_relabel: bool,
    pub supports_metrics: bool,
    #[serde(rename = "fsGroup")]
    pub fs_group: bool,
    #[serde(rename = "requiresFSResize")]
    pub requires_fs_resize: bool,
}

/// The reply of one call, as the kubelet's `DriverStatus` reads it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reply {
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(rename = "volumeName", skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(rename = "volumeNewSize", skip_serializing_if = "Option::is_none")]
    pub volume_new_size: Option<u64>,
}

impl Reply {
    fn new(status: &'static str, message: impl Into<String>) -> Reply {
        Reply {
            status,
            message: message.into(),
            device: None,
            volume_name: None,
            attached: None,
            capabilities: None,
            volume_new_size: None,
        }
    }

    /// `{"status":"Success"}`.
    pub fn success(message: impl Into<String>) -> Reply {
        Self::new("Success", message)
    }

    /// `{"status":"Failure"}`: the call did not do what was asked.
    pub fn failure(message: impl Into<String>) -> Reply {
        Self::new("Failure", message)
    }

    /// `{"status":"Not supported"}`: the kubelet falls back to its default behaviour.
    pub fn not_supported(message: impl Into<String>) -> Reply {
        Self::new("Not supported", message)
    }

    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        self.status == "Success"
    }

    /// Exit code by the Flexvolume convention: 0 on success, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok() { 0 } else { 1 }
    }

    /// The single line printed on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"status":"Failure","message":"could not encode the reply"}"#.to_string()
        })
    }
}
