//! The mount table (`/proc/self/mountinfo`) and the mount syscalls the engine needs:
//! mount a filesystem, bind-mount, remount a bind read-only, unmount.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// Path inside the filesystem that is mounted (`/` for a whole-filesystem mount).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`...).
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 || fields.len() < sep + 3 {
                return None;
            }
            let (major, minor) = fields[2].split_once(':')?;
            Some(MountEntry {
                id: fields[0].parse().ok()?,
                parent: fields[1].parse().ok()?,
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                root: unescape(fields[3]),
                mount_point: PathBuf::from(unescape(fields[4])),
                options: fields[5].to_string(),
                fs_type: fields[sep + 1].to_string(),
                source: unescape(fields[sep + 2]),
            })
        })
        .collect()
}

/// The current mount table of this process's mount namespace.
pub fn table() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The canonical form of `path` as the mount table spells it; `None` if it does not exist.
pub fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// The top-most mount at `path` (the one a lookup of `path` sees), if any.
pub fn mount_at<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let path = canonical(path)?;
    table.iter().rev().find(|e| e.mount_point == path)
}

/// Every mount of the block device `major:minor`.
pub fn mounts_of(table: &[MountEntry], major: u32, minor: u32) -> Vec<&MountEntry> {
    table
        .iter()
        .filter(|e| e.major == major && e.minor == minor)
        .collect()
}

/// Splits mount options as mount(8) does: VFS flags (`ro`, `noatime`, `nosuid`...)
/// become mount flags, everything else is passed to the filesystem as data.
pub fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')) {
        match opt.trim() {
            "" | "rw" | "defaults" | "async" | "atime" | "suid" | "dev" | "exec" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

/// Mounts the filesystem on `device` at `target` with mount(8)-style `options`.
pub fn mount_fs(
    device: &Path,
    target: &Path,
    fs_type: &str,
    read_only: bool,
    options: &[String],
) -> crate::Result<()> {
    let (mut flags, data) = split_options(options);
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(device), target, Some(fs_type), flags, data)
        .map_err(|e| crate::Error::sys("mount", target, e))
}

/// Bind-mounts `source` on `target`, then makes the bind read-only if asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> crate::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| crate::Error::sys("bind-mount", target, e))?;
    if read_only {
        remount_bind(target, true)?;
    }
    Ok(())
}

/// Changes the read-only state of the bind mount at `target`.
pub fn remount_bind(target: &Path, read_only: bool) -> crate::Result<()> {
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| crate::Error::sys("remount", target, e))
}

/// Unmounts `target`. Not being a mount point (EINVAL) or not existing is success.
pub fn unmount(target: &Path) -> crate::Result<()> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(crate::Error::sys("unmount", target, e)),
    }
}

/// Unmounts every mount stacked at `target` (a crashed retry can leave two).
pub fn unmount_all(target: &Path) -> crate::Result<()> {
    for _ in 0..16 {
        let t = table().map_err(|e| crate::Error::io("read mount table", target, e))?;
        if mount_at(&t, target).is_none() {
            return Ok(());
        }
        unmount(target)?;
    }
    Err(crate::Error::FailedPrecondition(format!(
        "{} is still mounted after 16 unmounts",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
100 36 7:3 / /var/lib/kubelet/pods/a\\040b/vol ro,relatime shared:5 - ext4 /dev/loop3 ro
bad line
";
        let t = parse_mountinfo(text);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].root, "/mnt1");
        assert_eq!(t[0].fs_type, "ext3");
        assert!(!t[0].read_only());
        assert_eq!((t[1].major, t[1].minor), (7, 3));
        assert_eq!(
            t[1].mount_point,
            PathBuf::from("/var/lib/kubelet/pods/a b/vol")
        );
        assert_eq!(t[1].source, "/dev/loop3");
        assert!(t[1].read_only());
        assert_eq!(mounts_of(&t, 7, 3).len(), 1);
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = split_options(&[
            "noatime,discard".into(),
            "ro".into(),
            "errors=remount-ro".into(),
        ]);
        assert!(flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_RDONLY));
        assert_eq!(data, "discard,errors=remount-ro");
    }
}
