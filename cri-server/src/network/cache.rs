//! The attachment cache: one JSON record per sandbox at `<cache_dir>/<sandbox_id>.json`,
//! written atomically. It holds everything DEL and CHECK need without the config directory:
//! the config list as used, the per-call parameters and the chain's final result.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CniError, NetworkStatus};

/// The `kind` of a record in this format.
pub const CACHE_KIND: &str = "criServerCniCacheV1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    pub kind: String,
    pub sandbox_id: String,
    pub network_name: String,
    pub cni_version: String,
    /// The file the config was read from at ADD time (for people; DEL uses `config`).
    pub config_source: PathBuf,
    /// The network configuration list as used by ADD (a `.conf` already wrapped into a list).
    pub config: Value,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments offered to plugins (filtered per plugin by `capabilities`).
    pub capability_args: Map<String, Value>,
    /// The final result of the ADD chain; `null` while ADD runs, or after an ADD whose failure
    /// could not be undone (DEL then runs without `prevResult`).
    pub result: Option<Value>,
    /// What the result says about the pod, as returned by ADD.
    pub status: Option<NetworkStatus>,
}

pub fn record_path(cache_dir: &Path, sandbox_id: &str) -> PathBuf {
    cache_dir.join(format!("{sandbox_id}.json"))
}

/// The record of a sandbox; `None` when there is none.
pub fn read(cache_dir: &Path, sandbox_id: &str) -> Result<Option<CacheRecord>, CniError> {
    let path = record_path(cache_dir, sandbox_id);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CniError::io("read CNI cache record", path, e)),
    };
    let rec: CacheRecord = serde_json::from_slice(&data).map_err(|e| CniError::Cache {
        path: path.clone(),
        reason: format!("not a valid record: {e}"),
    })?;
    if rec.kind != CACHE_KIND || rec.sandbox_id != sandbox_id {
        return Err(CniError::Cache {
            path,
            reason: format!(
                "kind {:?} / sandbox {:?} is not a {CACHE_KIND} record of {sandbox_id}",
                rec.kind, rec.sandbox_id
            ),
        });
    }
    Ok(Some(rec))
}

/// Writes (or replaces) a record atomically: temp file, fsync, rename.
pub fn write(cache_dir: &Path, rec: &CacheRecord) -> Result<(), CniError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(|e| CniError::io("create CNI cache directory", cache_dir, e))?;
    let path = record_path(cache_dir, &rec.sandbox_id);
    crate::store::write_json(&path, rec)
        .map_err(|e| CniError::io("write CNI cache record", path, e))
}

/// Removes a record; a missing one is fine.
pub fn remove(cache_dir: &Path, sandbox_id: &str) -> Result<(), CniError> {
    let path = record_path(cache_dir, sandbox_id);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io("remove CNI cache record", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str) -> CacheRecord {
        CacheRecord {
            kind: CACHE_KIND.into(),
            sandbox_id: id.into(),
            network_name: "net".into(),
            cni_version: "1.0.0".into(),
            config_source: "/etc/cni/net.d/10-net.conflist".into(),
            config: json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]}),
            netns: "/var/run/pods/x/net".into(),
            ifname: "eth0".into(),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion": "1.0.0", "ips": []})),
            status: None,
        }
    }

    #[test]
    fn records_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(read(&cache, "abc").unwrap(), None);
        let rec = record("abc");
        write(&cache, &rec).unwrap();
        assert_eq!(read(&cache, "abc").unwrap(), Some(rec));
        let on_disk: Value =
            serde_json::from_slice(&fs::read(cache.join("abc.json")).unwrap()).unwrap();
        assert_eq!(on_disk["kind"], CACHE_KIND);
        assert_eq!(on_disk["cniArgs"], json!([["IgnoreUnknown", "1"]]));
        remove(&cache, "abc").unwrap();
        remove(&cache, "abc").unwrap();
        assert_eq!(read(&cache, "abc").unwrap(), None);
    }

    #[test]
    fn a_foreign_or_broken_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), "{").unwrap();
        assert!(matches!(read(dir.path(), "a"), Err(CniError::Cache { .. })));
        write(dir.path(), &record("b")).unwrap();
        fs::rename(dir.path().join("b.json"), dir.path().join("c.json")).unwrap();
        assert!(matches!(read(dir.path(), "c"), Err(CniError::Cache { .. })));
    }
}
