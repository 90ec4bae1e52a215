//! The JSON options the kubelet passes, and the driver's own keys among them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::volume::{Backing, StageOptions, VolumeSpec, parse_size, validate_id};
use crate::{Error, Result};

/// Keys the kubelet sets (pkg/volume/flexvolume/driver-call.go).
pub const FS_TYPE: &str = "kubernetes.io/fsType";
pub const READ_WRITE: &str = "kubernetes.io/readwrite";
pub const PV_OR_VOLUME_NAME: &str = "kubernetes.io/pvOrVolumeName";
pub const FS_GROUP: &str = "kubernetes.io/mounterArgs.FsGroup";
pub const POD_NAME: &str = "kubernetes.io/pod.name";
pub const POD_NAMESPACE: &str = "kubernetes.io/pod.namespace";
pub const POD_UID: &str = "kubernetes.io/pod.uid";
pub const SERVICE_ACCOUNT: &str = "kubernetes.io/serviceAccount.name";
pub const SECRET_PREFIX: &str = "kubernetes.io/secret/";

/// The driver's own keys (from `flexVolume.options`).
pub const VOLUME_ID: &str = "volumeID";
pub const SIZE: &str = "size";
pub const BACKING_FILE: &str = "backingFile";
pub const BLOCK_DEVICE: &str = "blockDevice";
pub const MKFS_OPTIONS: &str = "mkfsOptions";
pub const MOUNT_OPTIONS: &str = "mountOptions";

/// The parsed options of one call.
#[derive(Debug, Clone, Default)]
pub struct Options(BTreeMap<String, String>);

impl Options {
    /// Parses the JSON object. Values are strings; numbers and booleans are accepted
    /// and taken as their text, anything else is an error.
    pub fn parse(json: &str) -> Result<Options> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::InvalidArgument(format!("options are not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(Error::InvalidArgument(
                "options must be a JSON object".into(),
            ));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "option {k:?} must be a string"
                    )));
                }
            };
            out.insert(k, text);
        }
        Ok(Options(out))
    }

    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The name the kubelet knows the volume by (`kubernetes.io/pvOrVolumeName`).
    pub fn volume_name(&self) -> Result<&str> {
        self.get(PV_OR_VOLUME_NAME)
            .ok_or_else(|| Error::InvalidArgument(format!("missing option {PV_OR_VOLUME_NAME:?}")))
    }

    /// The volume ID: `volumeID` if given, else the PV or volume name.
    pub fn volume_id(&self) -> Result<String> {
        let id = match self.get(VOLUME_ID) {
            Some(id) => id,
            None => self.volume_name()?,
        };
        validate_id(id)?;
        Ok(id.to_string())
    }

    /// `kubernetes.io/readwrite` is `ro`.
    pub fn read_only(&self) -> Result<bool> {
        match self.get(READ_WRITE) {
            None | Some("rw") => Ok(false),
            Some("ro") => Ok(true),
            Some(other) => Err(Error::InvalidArgument(format!(
                "{READ_WRITE} must be \"ro\" or \"rw\", got {other:?}"
            ))),
        }
    }

    /// `kubernetes.io/mounterArgs.FsGroup` as a GID.
    pub fn fs_group(&self) -> Result<Option<u32>> {
        self.get(FS_GROUP)
            .map(|g| {
                g.parse::<u32>().map_err(|_| {
                    Error::InvalidArgument(format!("{FS_GROUP} must be a group ID, got {g:?}"))
                })
            })
            .transpose()
    }

    fn words(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn absolute(&self, key: &str) -> Result<Option<PathBuf>> {
        match self.get(key) {
            None => Ok(None),
            Some(p) if p.starts_with('/') => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(Error::InvalidArgument(format!(
                "option {key:?} must be an absolute path, got {p:?}"
            ))),
        }
    }

    /// How to create the volume if it does not exist yet.
    pub fn spec(&self) -> Result<VolumeSpec> {
        let backing = match (self.absolute(BACKING_FILE)?, self.absolute(BLOCK_DEVICE)?) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "options {BACKING_FILE:?} and {BLOCK_DEVICE:?} exclude each other"
                )));
            }
            (Some(f), None) => Some(Backing::File(f)),
            (None, Some(d)) => Some(Backing::Device(d)),
            (None, None) => None,
        };
        Ok(VolumeSpec {
            size_bytes: self.get(SIZE).map(parse_size).transpose()?,
            backing,
            fs_type: self.get(FS_TYPE).map(str::to_string),
            mkfs_options: self.words(MKFS_OPTIONS),
            parameters: BTreeMap::new(),
            alias: self.get(PV_OR_VOLUME_NAME).map(str::to_string),
        })
    }

    /// Options of mountdevice.
    pub fn stage(&self, device_hint: Option<PathBuf>) -> Result<StageOptions> {
        Ok(StageOptions {
            fs_type: self.get(FS_TYPE).map(str::to_string),
            read_only: self.read_only()?,
            device_hint,
            mount_options: self
                .get(MOUNT_OPTIONS)
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            block: false,
        })
    }

    /// The options safe to log: secrets are replaced.
    pub fn redacted(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = if k.starts_with(SECRET_PREFIX) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_options() {
        let o = Options::parse(
            r#"{"kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"ro",
                "kubernetes.io/pvOrVolumeName":"pv-1","kubernetes.io/mounterArgs.FsGroup":"2000",
                "kubernetes.io/secret/password":"hunter2","size":"64Mi","mkfsOptions":"-m 0",
                "kubernetes.io/pod.name":"web-0"}"#,
        )
        .unwrap();
        assert_eq!(o.volume_id().unwrap(), "pv-1");
        assert!(o.read_only().unwrap());
        assert_eq!(o.fs_group().unwrap(), Some(2000));
        let spec = o.spec().unwrap();
        assert_eq!(spec.size_bytes, Some(64 << 20));
        assert_eq!(spec.fs_type.as_deref(), Some("xfs"));
        assert_eq!(spec.mkfs_options, ["-m", "0"]);
        assert_eq!(o.redacted()["kubernetes.io/secret/password"], "<redacted>");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Options::parse("{").is_err());
        assert!(Options::parse("[1]").is_err());
        assert!(Options::parse(r#"{"a":{"b":1}}"#).is_err());
        let o = Options::parse(r#"{"kubernetes.io/fsType":"ext4"}"#).unwrap();
        assert!(o.volume_id().is_err());
        let o = Options::parse(r#"{"kubernetes.io/pvOrVolumeName":"../etc"}"#).unwrap();
        assert!(o.volume_id().is_err());
        let o = Options::parse(r#"{"kubernetes.io/readwrite":"maybe"}"#).unwrap();
        assert!(o.read_only().is_err());
        let o = Options::parse(r#"{"backingFile":"rel/path"}"#).unwrap();
        assert!(o.spec().is_err());
        let o = Options::parse(r#"{"volumeID":"v1","kubernetes.io/pvOrVolumeName":"pv"}"#).unwrap();
        assert_eq!(o.volume_id().unwrap(), "v1");
        assert_eq!(o.spec().unwrap().alias.as_deref(), Some("pv"));
    }
}
