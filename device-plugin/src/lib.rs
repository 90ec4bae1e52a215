//! A kubelet device plugin (API `v1beta1`) for NVIDIA GPUs (through NVML, loaded at run time)
//! and for devices described in a JSON file. The binary (`src/main.rs`) reads the
//! [`config::Config`] and hands it to [`daemon::run`].

/// Generated messages plus the `Registration` and `DevicePlugin` clients and servers.
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

pub mod allocation;
pub mod cdi;
pub mod config;
pub mod daemon;
pub mod device;
pub mod discovery;
pub mod error;
pub mod fswatch;
pub mod kubelet;
pub mod preferred;
pub mod service;
pub mod sharing;

pub use error::Error;

#[cfg(test)]
mod tests {
    use super::v1beta1::{
        AllocateResponse, CdiDevice, ContainerAllocateResponse, Device, DeviceSpec, Mount,
    };
    use prost::Message;
    use std::collections::HashMap;

    /// A length-delimited field (wire type 2) with a single-byte tag and length.
    fn len_field(field: u8, payload: &[u8]) -> Vec<u8> {
        assert!(field < 16 && payload.len() < 128);
        let mut out = vec![(field << 3) | 2, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn allocate_response_round_trips() {
        let container = ContainerAllocateResponse {
            envs: HashMap::from([("GPU_VISIBLE".to_string(), "0,1".to_string())]),
            mounts: vec![Mount {
                container_path: "/usr/lib/gpu".into(),
                host_path: "/opt/gpu/lib".into(),
                read_only: true,
            }],
            devices: vec![DeviceSpec {
                container_path: "/dev/gpu0".into(),
                host_path: "/dev/gpu0".into(),
                permissions: "rw".into(),
            }],
            annotations: HashMap::from([("vendor.example/gpu".to_string(), "0".to_string())]),
            cdi_devices: vec![CdiDevice {
                name: "vendor.example/gpu=gpu0".into(),
            }],
        };
        let response = AllocateResponse {
            container_responses: vec![container],
        };
        let bytes = response.encode_to_vec();
        let decoded = AllocateResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, response);
    }

    #[test]
    fn field_numbers_match_upstream() {
        // Device { ID = 1, health = 2 }
        let mut raw = len_field(1, b"gpu-0");
        raw.extend(len_field(2, b"Healthy"));
        let device = Device::decode(raw.as_slice()).unwrap();
        assert_eq!(device.id, "gpu-0");
        assert_eq!(device.health, "Healthy");
        assert_eq!(device.encode_to_vec(), raw);

        // DeviceSpec { container_path = 1, host_path = 2, permissions = 3 }
        let mut raw = len_field(1, b"/dev/c");
        raw.extend(len_field(2, b"/dev/h"));
        raw.extend(len_field(3, b"rwm"));
        let spec = DeviceSpec::decode(raw.as_slice()).unwrap();
        assert_eq!(spec.container_path, "/dev/c");
        assert_eq!(spec.host_path, "/dev/h");
        assert_eq!(spec.permissions, "rwm");

        // ContainerAllocateResponse { annotations = 4 (map entry: key = 1,
        // value = 2), cdi_devices = 5 (CDIDevice.name = 1) }
        let mut entry = len_field(1, b"k");
        entry.extend(len_field(2, b"v"));
        let mut raw = len_field(4, &entry);
        raw.extend(len_field(5, &len_field(1, b"vendor.example/gpu=0")));
        let container = ContainerAllocateResponse::decode(raw.as_slice()).unwrap();
        assert_eq!(
            container.annotations.get("k").map(String::as_str),
            Some("v")
        );
        assert!(container.envs.is_empty());
        assert_eq!(container.cdi_devices.len(), 1);
        assert_eq!(container.cdi_devices[0].name, "vendor.example/gpu=0");

        // Mount { read_only = 3 } is a varint (wire type 0).
        let mount = Mount::decode([3u8 << 3, 1].as_slice()).unwrap();
        assert!(mount.read_only);
    }
}
