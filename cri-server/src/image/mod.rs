//! Images: pulled from OCI registries, kept as a content store (manifests, configs) plus one
//! unpacked overlayfs lower dir per layer chain ID, and one JSON record per image.
//!
//! Layout under `<root>`: `content/sha256/<hex>`, `layers/<chain hex>/`, `images/<id hex>.json`,
//! `leases/<holder>.json` (layers a container still uses).

pub mod auth;
pub mod hosts;
mod pull;
pub mod pull_runtime;
pub mod reference;
pub mod unpack;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::store;

pub use pull::PullOptions;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("registry refused the credentials: {0}")]
    Unauthorized(String),
    #[error("credentials: {0}")]
    BadCredentials(String),
    #[error("registry config {path}: {reason}")]
    RegistryConfig { path: PathBuf, reason: String },
    #[error("registry: {0}")]
    Registry(String),
    #[error("{what}: content does not match its descriptor: {reason}")]
    Verification { what: String, reason: String },
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("unpack layer {digest}: {source}")]
    Unpack {
        digest: String,
        source: unpack::UnpackError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image} is in use as a volume by container {container}")]
    InUse { image: String, container: String },
}

impl ImageError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.to_path_buf();
        move |source| ImageError::Io { what, path, source }
    }
}

/// The parts of the image config that container creation needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    /// Digest and size of the blob as the registry served it.
    pub digest: String,
    pub size: u64,
    /// What the unpacked directory holds.
    pub unpacked_bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as containerd and CRI-O use it.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Config plus compressed layers, as the registry served them.
    pub size: u64,
    pub manifest_digest: String,
    /// The index (manifest list) the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    pub layers: Vec<LayerRecord>,
    pub config: RunConfig,
    pub pulled_at_unix_nanos: i64,
}

impl ImageRecord {
    /// uid or user name from the image's USER, as the kubelet wants them.
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self.config.user.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// The image store: records in memory, written through to disk.
pub struct ImageStore {
    root: PathBuf,
    records: RwLock<HashMap<String, ImageRecord>>,
    /// Chain IDs a running pull has unpacked but not yet recorded: GC keeps them.
    pending: Mutex<HashMap<String, usize>>,
    /// Serializes record changes and garbage collection.
    write: tokio::sync::Mutex<()>,
    /// Held (shared) by each container cleanup still to release its leases after
    /// RemoveContainer returned; RemoveImage takes it exclusively, so it sees those leases gone.
    cleanups: Arc<tokio::sync::RwLock<()>>,
    puller: pull::Puller,
}

impl ImageStore {
    /// Opens the store under `root`, clears what a crash left half-made, and loads the records.
    pub fn open(root: &Path, options: PullOptions) -> Result<Arc<ImageStore>, ImageError> {
        for dir in ["content/sha256", "layers", "images", "leases"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(ImageError::io("create directory", &p))?;
            store::remove_temp_files(&p).map_err(ImageError::io("clean temporary files in", &p))?;
        }
        let mut records = HashMap::new();
        let images = root.join("images");
        for entry in std::fs::read_dir(&images).map_err(ImageError::io("read", &images))? {
            let path = entry.map_err(ImageError::io("read", &images))?.path();
            match store::read_json::<ImageRecord>(&path) {
                Ok(r) => {
                    records.insert(r.id.clone(), r);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "dropping unreadable image record")
                }
            }
        }
        let store = Arc::new(ImageStore {
            root: root.to_path_buf(),
            records: RwLock::new(records),
            pending: Mutex::new(HashMap::new()),
            write: tokio::sync::Mutex::new(()),
            cleanups: Default::default(),
            puller: pull::Puller::new(options),
        });
        let removed = store.collect_garbage_now()?;
        info!(
            images = store.records.read().map(|r| r.len()).unwrap_or(0),
            removed, "image store open"
        );
        Ok(store)
    }

    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(chain_id))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", hex_of(id)))
    }

    pub fn content_path(&self, digest: &str) -> PathBuf {
        self.root.join("content/sha256").join(hex_of(digest))
    }

    /// All images, ordered by id.
    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<_> = self
            .records
            .read()
            .expect("image records lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Finds an image by id (with or without `sha256:`), unique id prefix, tag or digest
    /// reference, in normalized or short form.
    pub fn find(&self, name: &str) -> Option<ImageRecord> {
        let records = self.records.read().expect("image records lock");
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let as_id = if name.starts_with("sha256:") {
            name.to_string()
        } else {
            format!("sha256:{name}")
        };
        if let Some(r) = records.get(&as_id) {
            return Some(r.clone());
        }
        if let Ok(r) = reference::parse(name) {
            let found = match r.digest() {
                Some(d) => {
                    let want = reference::repo_digest(&r, d);
                    records.values().find(|i| i.repo_digests.contains(&want))
                }
                None => reference::repo_tag(&r)
                    .and_then(|t| records.values().find(|i| i.repo_tags.contains(&t))),
            };
            if let Some(f) = found {
                return Some(f.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = records.values().filter(|r| hex_of(&r.id).starts_with(hex));
            if let (Some(one), None) = (matches.next(), matches.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    /// The image's full config JSON from the content store.
    pub fn config_json(&self, id: &str) -> Option<Vec<u8>> {
        std::fs::read(self.content_path(id)).ok()
    }

    /// Removes an image with all its names. Unknown images are not an error.
    pub async fn remove(&self, name: &str) -> Result<(), ImageError> {
        let _cleanups = self.cleanups.write().await;
        let _w = self.write.lock().await;
        let Some(rec) = self.find(name) else {
            return Ok(());
        };
        if let Some(holder) = self.volume_holders(&rec.id).into_iter().next() {
            let container = holder.split('.').next().unwrap_or(&holder).to_string();
            return Err(ImageError::InUse {
                image: rec.id.clone(),
                container,
            });
        }
        let path = self.record_path(&rec.id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove image record", &path)(e)),
        }
        self.records
            .write()
            .expect("image records lock")
            .remove(&rec.id);
        info!(image = %rec.id, tags = ?rec.repo_tags, "image removed");
        self.collect_garbage_now()?;
        Ok(())
    }

    /// Records that `holder` (a container) uses the layers of `image_id`, so they outlive the
    /// image's removal until [`ImageStore::release`].
    pub async fn lease(&self, holder: &str, image_id: &str) -> Result<(), ImageError> {
        let _w = self.write.lock().await;
        self.lease_locked(holder, image_id)
    }

    /// A lease for an image mounted as a volume (`holder` is `<container id>.<name>`): besides
    /// its layers, the image itself cannot be removed until [`ImageStore::release`].
    pub async fn lease_volume(&self, holder: &str, image_id: &str) -> Result<(), ImageError> {
        let _w = self.write.lock().await;
        self.lease_locked(holder, image_id)?;
        let dir = self.root.join("volume-images");
        std::fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        let path = dir.join(holder);
        store::write_volatile(&path, image_id.as_bytes())
            .map_err(ImageError::io("write volume lease", &path))
    }

    /// Lease holders that mount `image_id` as a volume.
    fn volume_holders(&self, image_id: &str) -> Vec<String> {
        std::fs::read_dir(self.root.join("volume-images"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b == image_id.as_bytes()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn lease_locked(&self, holder: &str, image_id: &str) -> Result<(), ImageError> {
        let rec = self
            .find(image_id)
            .ok_or_else(|| ImageError::NotFound(image_id.into()))?;
        let chain: Vec<String> = rec.layers.iter().map(|l| l.chain_id.clone()).collect();
        let path = self.root.join("leases").join(format!("{holder}.json"));
        // Containers do not outlive a reboot: their leases need no disk flush either.
        store::write_json_volatile(&path, &chain).map_err(ImageError::io("write lease", &path))
    }

    /// Taken before a container's cleanup is left to run in the background and dropped when it
    /// has released the container's leases: RemoveImage waits for those.
    pub async fn cleanup_guard(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.cleanups.clone().read_owned().await
    }

    pub async fn release(&self, holder: &str) -> Result<(), ImageError> {
        let _w = self.write.lock().await;
        let _ = std::fs::remove_file(self.root.join("volume-images").join(holder));
        let path = self.root.join("leases").join(format!("{holder}.json"));
        let chain: Vec<String> = store::read_json(&path).unwrap_or_default();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("remove lease", &path)(e)),
        }
        // The usual case: the image is still there and holds every layer; nothing to collect
        // (and no directory scans on the container removal path).
        let still_held = {
            let records = self.records.read().expect("image records lock");
            !chain.is_empty()
                && chain.iter().all(|c| {
                    records
                        .values()
                        .any(|r| r.layers.iter().any(|l| &l.chain_id == c))
                })
        };
        if !still_held {
            self.collect_garbage_now()?;
        }
        Ok(())
    }

    /// Who holds leases (container ids, and `<container id>.<name>` for image volumes).
    pub fn lease_holders(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("leases"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect()
    }

    /// Bytes and inodes the image store holds, from the records (no tree walk).
    pub fn usage(&self) -> (u64, u64) {
        let records = self.records.read().expect("image records lock");
        let mut seen = HashSet::new();
        let (mut bytes, mut inodes) = (0, 0);
        for r in records.values() {
            // The config blob in the content store (manifests are small and not counted).
            bytes += r.size.saturating_sub(r.layers.iter().map(|l| l.size).sum());
            inodes += 1;
            for l in &r.layers {
                if seen.insert(&l.chain_id) {
                    bytes += l.unpacked_bytes;
                    inodes += l.inodes;
                }
            }
        }
        (bytes, inodes)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes layers and content no image, lease or running pull refers to. Returns how many
    /// entries it removed. Callers hold `write` (or are `open`, before anyone else can).
    fn collect_garbage_now(&self) -> Result<usize, ImageError> {
        let mut keep_layers: HashSet<String> = HashSet::new();
        let mut keep_content: HashSet<String> = HashSet::new();
        for r in self.records.read().expect("image records lock").values() {
            keep_content.insert(hex_of(&r.id).to_string());
            keep_content.insert(hex_of(&r.manifest_digest).to_string());
            if let Some(i) = &r.index_digest {
                keep_content.insert(hex_of(i).to_string());
            }
            keep_layers.extend(r.layers.iter().map(|l| hex_of(&l.chain_id).to_string()));
        }
        keep_layers.extend(
            self.pending
                .lock()
                .expect("pending lock")
                .keys()
                .map(|c| hex_of(c).to_string()),
        );
        let leases = self.root.join("leases");
        for entry in std::fs::read_dir(&leases)
            .map_err(ImageError::io("read", &leases))?
            .flatten()
        {
            match store::read_json::<Vec<String>>(&entry.path()) {
                Ok(chain) => keep_layers.extend(chain.iter().map(|c| hex_of(c).to_string())),
                Err(e) => {
                    warn!(path = %entry.path().display(), error = %e, "unreadable lease kept out of GC")
                }
            }
        }
        let mut removed = 0;
        for (dir, keep) in [("layers", &keep_layers), ("content/sha256", &keep_content)] {
            let dir = self.root.join(dir);
            for entry in std::fs::read_dir(&dir)
                .map_err(ImageError::io("read", &dir))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".json").unwrap_or(&name);
                if name.starts_with(".tmp-") || keep.contains(key) {
                    continue;
                }
                let p = entry.path();
                let res = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                res.map_err(ImageError::io("remove unused", &p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `sha256:abc` -> `abc`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The OCI chain IDs for a list of diff IDs (bottom layer first).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        use sha2::{Digest, Sha256};
        assert_eq!(
            ids[1],
            format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))))
        );
    }

    #[test]
    fn user_is_split_into_uid_or_name() {
        let mut r = ImageRecord {
            id: String::new(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 1,
            manifest_digest: String::new(),
            index_digest: None,
            layers: vec![],
            config: RunConfig::default(),
            pulled_at_unix_nanos: 0,
        };
        r.config.user = "1000:1000".into();
        assert_eq!(r.user(), (Some(1000), String::new()));
        r.config.user = "app".into();
        assert_eq!(r.user(), (None, "app".into()));
        r.config.user = String::new();
        assert_eq!(r.user(), (None, String::new()));
    }
}
