//! The per-volume record on disk, written atomically (temp file, fsync, rename, fsync
//! of the directory) so a crash leaves the old record or the new one, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a volume's data lives on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "path")]
pub enum Backing {
    /// A (sparse) regular file.
    File(PathBuf),
    /// An existing block device.
    Device(PathBuf),
}

impl Backing {
    /// The file or device path.
    pub fn path(&self) -> &Path {
        match self {
            Backing::File(p) | Backing::Device(p) => p,
        }
    }
}

/// Where and how the volume is mounted globally (mountdevice / NodeStageVolume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    pub path: PathBuf,
    pub read_only: bool,
    /// Raw block access: nothing is mounted at `path`.
    #[serde(default)]
    pub block: bool,
}

/// One pod mount (mount / NodePublishVolume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub path: PathBuf,
    pub read_only: bool,
    /// The device node itself is bind-mounted on a file at `path`.
    #[serde(default)]
    pub block: bool,
}

/// Everything the driver knows about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub id: String,
    pub backing: Backing,
    /// The driver created the backing file (so DeleteVolume may remove it).
    pub owned_backing: bool,
    pub size_bytes: u64,
    /// The filesystem the volume has (once `formatted`) or will get.
    pub fs_type: String,
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A filesystem was made or found: from now on, finding none is an error, never a
    /// reason to format.
    #[serde(default)]
    pub formatted: bool,
    /// The loop device, while attached.
    #[serde(default)]
    pub device: Option<PathBuf>,
    #[serde(default)]
    pub staged: Option<Staged>,
    #[serde(default)]
    pub published: Vec<Published>,
    /// The backing grew and the filesystem has not followed yet: the next staging grows
    /// it (offline for ext4, which cannot grow online without CAP_SYS_RESOURCE).
    #[serde(default)]
    pub grow_pending: bool,
}

/// Reads the record at `path`; `None` if there is none.
pub fn load(path: &Path) -> Result<Option<VolumeRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Reads every record in `dir`, sorted by ID.
pub fn load_all(dir: &Path) -> Result<Vec<VolumeRecord>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("list", dir, e))?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(rec) = load(&path)?
        {
            out.push(rec);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Writes `rec` to `path` atomically.
pub fn save(dir: &Path, path: &Path, rec: &VolumeRecord) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::State {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// Removes the record at `path` (missing is fine).
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |id: &str| VolumeRecord {
            id: id.into(),
            backing: Backing::File(dir.path().join(format!("{id}.img"))),
            owned_backing: true,
            size_bytes: 1 << 20,
            fs_type: "ext4".into(),
            mkfs_options: vec![],
            parameters: BTreeMap::new(),
            aliases: vec![],
            formatted: false,
            device: None,
            staged: None,
            published: vec![],
            grow_pending: false,
        };
        for id in ["b", "a"] {
            save(dir.path(), &dir.path().join(format!("{id}.json")), &mk(id)).unwrap();
        }
        let all = load_all(dir.path()).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(load(&dir.path().join("a.json")).unwrap(), Some(mk("a")));
        assert_eq!(load(&dir.path().join("zz.json")).unwrap(), None);
        remove(&dir.path().join("a.json")).unwrap();
        remove(&dir.path().join("a.json")).unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{").unwrap();
        assert!(matches!(load_all(dir.path()), Err(Error::State { .. })));
    }
}
