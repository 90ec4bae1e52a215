//! The volume engine shared by the Flexvolume and CSI front ends: a volume is a backing
//! file (or block device) that is attached to a loop device, formatted once, mounted at
//! a global (staging) path and bind-mounted into pods.
//!
//! State: one JSON record per volume under `<state>/volumes/`, changed only under the
//! volume's flock (`<state>/locks/<id>.lock`), so calls for different volumes run in
//! parallel and calls for one volume serialize. The kernel (loop devices in sysfs, the
//! mount table) is the truth: every operation first reconciles the record with it, then
//! does only the steps still missing, so a retry after a crash at any point converges.
//! Each file beside this one is one verb: `attach.rs` (attach/detach), `stage.rs`
//! (mountdevice/unmountdevice), `publish.rs` (mount/unmount), `expand.rs`,
//! `provision.rs` (create/delete/list for the CSI controller).

mod attach;
mod expand;
pub mod fault;
mod lock;
mod provision;
mod publish;
mod record;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use provision::{MIN_SIZE, SizeRange};
pub use record::{Backing, Published, Staged, VolumeRecord};

use crate::sys::{loopdev, mount};
use crate::{Error, Result};
use lock::VolumeLock;

/// How to make a volume that does not exist yet (Flexvolume attach creates volumes on
/// first use; CSI CreateVolume creates them explicitly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Size of a new backing file; `None` means the configured default.
    pub size_bytes: Option<u64>,
    /// An existing file or block device to use instead of `<state>/volumes/<id>.img`.
    pub backing: Option<Backing>,
    /// Filesystem to make on first use; `None` means the configured default.
    pub fs_type: Option<String>,
    /// Extra mkfs arguments.
    pub mkfs_options: Vec<String>,
    /// CreateVolume parameters, kept to recognise a repeated CreateVolume.
    pub parameters: BTreeMap<String, String>,
    /// Another name the volume is known by (the Flexvolume `pvOrVolumeName` when the
    /// `volumeID` option chose the ID), so `detach <name>` finds it.
    pub alias: Option<String>,
}

/// Options of a mountdevice / NodeStageVolume.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Requested filesystem type; `None` takes the volume's.
    pub fs_type: Option<String>,
    /// Mount the global path read-only (and never format).
    pub read_only: bool,
    /// The device the caller believes is attached (checked, not trusted).
    pub device_hint: Option<PathBuf>,
    /// Extra mount options (`-o` data) for the filesystem mount.
    pub mount_options: Vec<String>,
    /// Raw block access: attach only, nothing is mounted (CSI block volumes).
    pub block: bool,
}

/// Options of a mount / NodePublishVolume.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub read_only: bool,
    /// Group that gets ownership of the volume's files (fsGroup / volume_mount_group).
    pub fs_group: Option<u32>,
}

/// The volume engine over one state directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    state_dir: PathBuf,
    default_size: u64,
    default_fs_type: String,
}

/// Checks a volume ID: it names files in the state dir, so only `[A-Za-z0-9._-]`, at
/// most 128 characters, starting with an alphanumeric.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "volume name {id:?} must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit"
        )))
    }
}

/// Parses a size: plain bytes or a Kubernetes quantity (`512Mi`, `1Gi`, `10G`, `1Ti`).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("bad size {text:?}")))?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        "T" => 1_000_000_000_000,
        "Ti" => 1 << 40,
        _ => return Err(Error::InvalidArgument(format!("bad size unit in {text:?}"))),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::InvalidArgument(format!("bad size {text:?}")))
}

/// Rounds a size up to a whole MiB (loop devices and filesystems like aligned sizes).
pub fn round_size(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20) * (1 << 20)
}

impl Volumes {
    /// The engine over `state_dir`, creating volumes of `default_size` bytes with
    /// `default_fs_type` unless told otherwise.
    pub fn new(state_dir: impl Into<PathBuf>, default_size: u64, default_fs_type: &str) -> Self {
        Volumes {
            state_dir: state_dir.into(),
            default_size,
            default_fs_type: default_fs_type.to_string(),
        }
    }

    /// The engine configured by `config`.
    pub fn from_config(config: &crate::Config) -> Self {
        Self::new(
            &config.state_dir,
            config.default_size,
            &config.default_fs_type,
        )
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }

    fn locks_dir(&self) -> PathBuf {
        self.state_dir.join("locks")
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.volumes_dir().join(format!("{id}.json"))
    }

    /// Where the backing file of a volume created without one lives.
    pub fn default_backing(&self, id: &str) -> PathBuf {
        self.volumes_dir().join(format!("{id}.img"))
    }

    fn lock(&self, id: &str) -> Result<VolumeLock> {
        validate_id(id)?;
        VolumeLock::acquire(&self.locks_dir(), id, self.record_path(id))
    }

    /// The record of volume `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<VolumeRecord>> {
        validate_id(id)?;
        record::load(&self.record_path(id))
    }

    fn save(&self, rec: &VolumeRecord) -> Result<()> {
        record::save(&self.volumes_dir(), &self.record_path(&rec.id), rec)
    }

    /// All volume records, sorted by ID.
    pub fn list(&self) -> Result<Vec<VolumeRecord>> {
        record::load_all(&self.volumes_dir())
    }

    /// The loop device the kernel has bound to the volume's backing, if any.
    fn kernel_device(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>> {
        let path = rec.backing.path();
        let found = loopdev::find_by_backing(path)
            .map_err(|e| Error::io("look up loop devices of", path, e))?;
        Ok(found.into_iter().next())
    }

    /// Brings the record's runtime fields in line with the kernel: the attached device,
    /// the staging mount and the pod mounts that really exist.
    fn reconcile(&self, rec: &mut VolumeRecord) -> Result<()> {
        rec.device = self.kernel_device(rec)?;
        let table = mount_table()?;
        let numbers = match &rec.device {
            Some(d) => Some(crate::sys::device_numbers(d).map_err(|e| Error::io("stat", d, e))?),
            None => None,
        };
        let holds = |path: &Path, block: bool| -> bool {
            match mount::mount_at(&table, path) {
                None => false,
                // A bind of a device node shows the numbers of /dev, not the device.
                Some(_) if block => rec.device.is_some(),
                Some(e) => numbers == Some((e.major, e.minor)),
            }
        };
        if let Some(staged) = &rec.staged
            && !(staged.block && rec.device.is_some())
            && !holds(&staged.path, false)
        {
            rec.staged = None;
        }
        let block = rec.staged.as_ref().is_some_and(|s| s.block);
        let published = std::mem::take(&mut rec.published);
        rec.published = published
            .into_iter()
            .filter(|p| holds(&p.path, p.block || block))
            .collect();
        Ok(())
    }

    /// Finds the volume whose loop device is mounted at `path`, or whose record names
    /// `path` as its staging path or a pod mount.
    fn volume_at(&self, path: &Path) -> Result<Option<String>> {
        let table = mount_table()?;
        let records = self.list()?;
        if let Some(entry) = mount::mount_at(&table, path)
            && let Some(device) = loopdev::by_numbers(entry.major, entry.minor)
            && let Some(backing) = loopdev::backing_file(&device)
            && let Some(rec) = records.iter().find(|r| {
                let b = r.backing.path();
                b == backing || mount::canonical(b).as_deref() == Some(backing.as_path())
            })
        {
            return Ok(Some(rec.id.clone()));
        }
        let canonical = mount::canonical(path);
        let same =
            |p: &Path| p == path || (canonical.is_some() && mount::canonical(p) == canonical);
        Ok(records
            .iter()
            .find(|r| {
                r.staged.as_ref().is_some_and(|s| same(&s.path))
                    || r.published.iter().any(|p| same(&p.path))
            })
            .map(|r| r.id.clone()))
    }
}

fn mount_table() -> Result<Vec<mount::MountEntry>> {
    mount::table().map_err(|e| Error::io("read", "/proc/self/mountinfo", e))
}

/// Creates `path` and its parents if missing.
fn make_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))
}

/// Removes `path` if it is an empty directory or a plain file left by us; anything
/// else (a non-empty directory, a mount point in use) is left alone.
fn remove_quietly(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir(path);
        }
        Ok(m) if m.is_file() && m.len() == 0 => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_kubernetes_quantities() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Qi").is_err());
        assert!(parse_size("-5").is_err());
        assert_eq!(round_size(1), 1 << 20);
        assert_eq!(round_size(1 << 20), 1 << 20);
    }

    #[test]
    fn ids_are_safe_file_names() {
        validate_id("pvc-0a1b2c3d-1111").unwrap();
        validate_id("vol.1_a").unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
