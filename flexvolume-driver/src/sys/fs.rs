//! Filesystems on a block device: what is there (superblock magic, then `blkid`), making
//! one (`mkfs.ext4` / `mkfs.xfs`, never forced over an existing signature), growing one
//! (`resize2fs` / `xfs_growfs`), fsGroup ownership, and usage figures.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// What the first blocks of a device hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Nothing recognisable: safe to format.
    Empty,
    /// A filesystem of this type (`ext2`/`ext3`/`ext4`, `xfs`, or what blkid names).
    Filesystem(String),
    /// Something that is not a filesystem (a partition table, swap, RAID member...).
    Other(String),
}

/// Filesystems this driver formats and grows.
pub const SUPPORTED: &[&str] = &["ext4", "ext3", "ext2", "xfs"];

/// The family a filesystem type belongs to: ext2/3/4 are one family (the ext4 driver
/// mounts them all), everything else is its own.
pub fn family(fs_type: &str) -> &str {
    match fs_type {
        "ext2" | "ext3" | "ext4" => "ext",
        other => other,
    }
}

/// Looks at the superblock magic of ext* (0xEF53 at 1080) and XFS ("XFSB" at 0).
pub fn probe_magic(head: &[u8]) -> Option<String> {
    if head.len() >= 4 && &head[..4] == b"XFSB" {
        return Some("xfs".into());
    }
    if head.len() >= 1024 + 104 && head[1080] == 0x53 && head[1081] == 0xEF {
        let le = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
        let compat = le(1024 + 92);
        let incompat = le(1024 + 96);
        // extents, 64bit, flex_bg, huge files...: ext4 features.
        let kind = if incompat & (0x40 | 0x80 | 0x200 | 0x400) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some(kind.into());
    }
    None
}

/// Finds what `device` holds: the superblock magic first (no process), then
/// `blkid -p` (low-level probe, no cache) for every other signature.
pub fn detect(device: &Path) -> Result<Content> {
    let mut head = vec![0u8; 4096];
    let mut file = std::fs::File::open(device).map_err(|e| Error::io("open", device, e))?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::io("read superblock of", device, e)),
        }
    }
    head.truncate(read);
    if let Some(fs) = probe_magic(&head) {
        return Ok(Content::Filesystem(fs));
    }
    let out = Command::new(tool("blkid"))
        .args(["-p", "-o", "export"])
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run blkid on", device, e))?;
    match out.status.code() {
        Some(0) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key).map(str::to_string))
            };
            if let Some(t) = get("TYPE=") {
                if get("USAGE=").is_some_and(|u| u != "filesystem") {
                    return Ok(Content::Other(t));
                }
                return Ok(Content::Filesystem(t));
            }
            if let Some(pt) = get("PTTYPE=") {
                return Ok(Content::Other(format!("{pt} partition table")));
            }
            Ok(Content::Other("unknown signature".into()))
        }
        Some(2) => Ok(Content::Empty),
        _ => Err(Error::Command {
            cmd: format!("blkid -p {}", device.display()),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// Path of a system tool: the kubelet may run us with a PATH lacking /usr/sbin.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn run(name: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(tool(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            cmd: name.to_string(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(Error::Command {
        cmd: format!(
            "{name} {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        detail: format!("{} ({detail})", out.status),
    })
}

/// Makes a `fs_type` filesystem on `device`. Neither mkfs is forced: both refuse a
/// device that already carries a signature, a second guard behind [`detect`].
pub fn mkfs(device: &Path, fs_type: &str, extra: &[String]) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    let name = match fs_type {
        "ext2" | "ext3" | "ext4" => {
            args.extend(
                ["-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"].map(std::ffi::OsStr::new),
            );
            format!("mkfs.{fs_type}")
        }
        "xfs" => {
            args.push("-q".as_ref());
            "mkfs.xfs".to_string()
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "filesystem type {other:?} is not supported (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
    };
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(s.as_str())));
    args.push(device.as_os_str());
    run(&name, &args)
}

/// Grows the filesystem on `device`, mounted at `mount_point`, to fill the device.
pub fn grow(fs_type: &str, device: &Path, mount_point: &Path) -> Result<()> {
    match family(fs_type) {
        "ext" => run("resize2fs", &[device.as_os_str()]),
        "xfs" => run("xfs_growfs", &["-d".as_ref(), mount_point.as_os_str()]),
        other => Err(Error::InvalidArgument(format!(
            "cannot grow a {other} filesystem"
        ))),
    }
}

/// capability(7) number of CAP_SYS_RESOURCE.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether a mounted `fs_type` filesystem can grow here: XFS needs CAP_SYS_ADMIN (as
/// does mounting at all); ext4 online resize also needs CAP_SYS_RESOURCE, which some
/// hosts (and containers) drop from the bounding set.
pub fn can_grow_online(fs_type: &str) -> bool {
    family(fs_type) != "ext" || has_capability(CAP_SYS_RESOURCE)
}

/// Whether this process has capability `cap` in its effective set.
pub fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1u64 << cap) != 0)
}

/// Grows an unmounted ext2/3/4 filesystem to fill `device`: `e2fsck -f -p` (resize2fs
/// insists on a freshly checked filesystem), then `resize2fs`.
pub fn grow_ext_offline(device: &Path) -> Result<()> {
    let out = Command::new(tool("e2fsck"))
        .args(["-f", "-p"])
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run e2fsck on", device, e))?;
    // 0: clean, 1: errors corrected. Anything else needs a human.
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(Error::Command {
            cmd: format!("e2fsck -f -p {}", device.display()),
            detail: format!(
                "{} ({})",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    run("resize2fs", &[device.as_os_str()])
}

/// Gives group `gid` to everything under `root` (without crossing into other mounts),
/// as the kubelet does for fsGroup: group read/write on files, and read/write/search
/// plus setgid on directories, so new files inherit the group. Idempotent: only what
/// differs is changed.
pub fn apply_fs_group(root: &Path, gid: u32) -> Result<()> {
    let dev = std::fs::metadata(root)
        .map_err(|e| Error::io("stat", root, e))?
        .dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        if meta.dev() != dev {
            continue;
        }
        if meta.gid() != gid {
            std::os::unix::fs::lchown(&path, None, Some(gid))
                .map_err(|e| Error::io("chown", &path, e))?;
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        let want = if meta.is_dir() {
            mode | 0o2770
        } else {
            mode | 0o660
        };
        if want != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                .map_err(|e| Error::io("chmod", &path, e))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io("list", &path, e))? {
                let entry = entry.map_err(|e| Error::io("list", &path, e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Usage of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// statvfs(2) of `path`.
pub fn usage(path: &Path) -> Result<Usage> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| Error::sys("statvfs", path, e))?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let free = st.blocks_free() as u64 * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    let files = st.files() as u64;
    let ffree = st.files_free() as u64;
    Ok(Usage {
        total_bytes: total,
        available_bytes: avail,
        used_bytes: total.saturating_sub(free),
        total_inodes: files,
        free_inodes: ffree,
        used_inodes: files.saturating_sub(ffree),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_tells_ext_generations_and_xfs_apart() {
        let mut head = vec![0u8; 4096];
        assert_eq!(probe_magic(&head), None);
        head[1080] = 0x53;
        head[1081] = 0xEF;
        assert_eq!(probe_magic(&head).as_deref(), Some("ext2"));
        head[1024 + 92] = 0x4; // has_journal
        assert_eq!(probe_magic(&head).as_deref(), Some("ext3"));
        head[1024 + 96] = 0x40; // extents
        assert_eq!(probe_magic(&head).as_deref(), Some("ext4"));
        let mut xfs = vec![0u8; 512];
        xfs[..4].copy_from_slice(b"XFSB");
        assert_eq!(probe_magic(&xfs).as_deref(), Some("xfs"));
    }

    #[test]
    fn families() {
        assert_eq!(family("ext3"), family("ext4"));
        assert_ne!(family("xfs"), family("ext4"));
    }

    #[test]
    fn detect_and_mkfs_on_a_plain_file() {
        // mkfs and blkid work on regular files too: no device, no root needed.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        assert_eq!(detect(&img).unwrap(), Content::Empty);
        mkfs(&img, "ext4", &["-F".to_string()]).unwrap();
        assert_eq!(detect(&img).unwrap(), Content::Filesystem("ext4".into()));
        assert!(matches!(
            mkfs(&img, "btrfs", &[]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
