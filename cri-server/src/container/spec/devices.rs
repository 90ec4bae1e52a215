//! Device nodes: the CRI `devices` (with their cgroup allow rules), or all of the host's for
//! privileged containers.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1::Device;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;

/// `makedev` inverses (glibc's encoding).
fn major(dev: u64) -> i64 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as i64
}

fn minor(dev: u64) -> i64 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as i64
}

/// The device node at `host` (not following a final symlink), shown at `container` path;
/// `None` when it is not a char, block or fifo node.
fn device_at(host: &Path, container: &Path) -> Result<Option<LinuxDevice>, SpecError> {
    let meta = std::fs::symlink_metadata(host).map_err(SpecError::io("stat device", host))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Ok(None);
    };
    let mut d = LinuxDevice::default();
    d.set_path(container.to_path_buf());
    d.set_typ(typ);
    d.set_major(major(meta.rdev()));
    d.set_minor(minor(meta.rdev()));
    d.set_file_mode(Some(meta.mode() & 0o777));
    d.set_uid(Some(meta.uid()));
    d.set_gid(Some(meta.gid()));
    Ok(Some(d))
}

fn rule(allow: bool, dev: Option<&LinuxDevice>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(dev.map(|d| d.typ()));
    r.set_major(dev.map(|d| d.major()));
    r.set_minor(dev.map(|d| d.minor()));
    r.set_access(Some(access.to_string()));
    r
}

/// The first cgroup rule of every unprivileged container: deny everything (runc then allows
/// its default devices, /dev/null and friends, by itself).
pub(crate) fn deny_all() -> LinuxDeviceCgroup {
    rule(false, None, "rwm")
}

/// The only cgroup rule of a privileged container.
pub(crate) fn allow_all() -> LinuxDeviceCgroup {
    rule(true, None, "rwm")
}

fn check_permissions(p: &str) -> Result<String, SpecError> {
    if p.is_empty() {
        return Ok("rwm".into());
    }
    if p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        Ok(p.to_string())
    } else {
        Err(SpecError::invalid(format!(
            "invalid device permissions {p:?}"
        )))
    }
}

/// The CRI devices: symlinks on the host path resolved, directories expanded to the device
/// nodes below them, each with an allow rule carrying the requested permissions.
pub(crate) fn cri_devices(
    devices: &[Device],
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    for d in devices {
        if d.host_path.is_empty() || !d.container_path.starts_with('/') {
            return Err(SpecError::invalid(format!(
                "device {:?} -> {:?}: host path and an absolute container path are required",
                d.host_path, d.container_path
            )));
        }
        let access = check_permissions(&d.permissions)?;
        let host = match std::fs::canonicalize(&d.host_path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpecError::invalid(format!(
                    "device {:?} does not exist on the host",
                    d.host_path
                )));
            }
            Err(e) => {
                return Err(SpecError::Io {
                    what: "resolve device",
                    path: PathBuf::from(&d.host_path),
                    source: e,
                });
            }
        };
        let found = if host.is_dir() {
            let mut v = Vec::new();
            walk(&host, Path::new(&d.container_path), &[], &mut v)?;
            v
        } else {
            match device_at(&host, Path::new(&d.container_path))? {
                Some(dev) => vec![dev],
                None => {
                    return Err(SpecError::invalid(format!(
                        "{:?} is not a device node",
                        d.host_path
                    )));
                }
            }
        };
        for dev in found {
            rules.push(rule(true, Some(&dev), &access));
            devs.push(dev);
        }
    }
    Ok((devs, rules))
}

/// Device nodes under `dir` (recursively, skipping `skip_dirs` and fifos), mapped under
/// `to`.
fn walk(
    dir: &Path,
    to: &Path,
    skip_dirs: &[&str],
    out: &mut Vec<LinuxDevice>,
) -> Result<(), SpecError> {
    let entries = std::fs::read_dir(dir).map_err(SpecError::io("read directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(SpecError::io("read directory", dir))?;
        let name = entry.file_name();
        let host = entry.path();
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(_) => continue,
        };
        if ft.is_dir() {
            if skip_dirs.iter().any(|s| name == *s) {
                continue;
            }
            walk(&host, &to.join(&name), skip_dirs, out)?;
            continue;
        }
        match device_at(&host, &to.join(&name)) {
            Ok(Some(d)) if d.typ() != LinuxDeviceType::P => out.push(d),
            Ok(_) => {}
            // Devices come and go under /dev: a vanished node is no error.
            Err(SpecError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every device node of the host's /dev, as containerd's `WithHostDevices` (and runc's
/// `HostDevices`) list them: pts, shm, fd, mqueue and the lxc/udev dirs skipped, and
/// /dev/console left to the runtime.
pub(crate) fn host_devices() -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    walk(
        Path::new("/dev"),
        Path::new("/dev"),
        &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"],
        &mut out,
    )?;
    out.retain(|d| d.path() != Path::new("/dev/console"));
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_split() {
        // makedev(1, 3), and makedev(259, 70000) as glibc encodes it.
        assert_eq!((major(0x103), minor(0x103)), (1, 3));
        let (ma, mi): (u64, u64) = (259, 70000);
        let dev = ((ma & 0xfff) << 8) | ((ma >> 12) << 44) | (mi & 0xff) | ((mi >> 8) << 20);
        assert_eq!((major(dev), minor(dev)), (259, 70000));
    }

    #[test]
    fn dev_null_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let (devs, rules) = cri_devices(&[Device {
            host_path: link.display().to_string(),
            container_path: "/dev/mynull".into(),
            permissions: "rw".into(),
        }])
        .unwrap();
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].path(), Path::new("/dev/mynull"));
        assert_eq!(devs[0].typ(), LinuxDeviceType::C);
        assert_eq!((devs[0].major(), devs[0].minor()), (1, 3));
        assert_eq!(rules[0].access().as_deref(), Some("rw"));
        assert!(rules[0].allow());

        let missing = cri_devices(&[Device {
            host_path: "/dev/does-not-exist".into(),
            container_path: "/dev/x".into(),
            permissions: "rwm".into(),
        }]);
        assert!(matches!(missing, Err(SpecError::InvalidArgument(_))));
        std::fs::create_dir(t.path().join("empty")).unwrap();
        let empty_dir = cri_devices(&[Device {
            host_path: t.path().join("empty").display().to_string(),
            container_path: "/dev/x".into(),
            permissions: "rwm".into(),
        }]);
        // A directory without device nodes expands to nothing.
        assert!(empty_dir.unwrap().0.is_empty());
        std::fs::write(t.path().join("file"), "").unwrap();
        let not_dev = cri_devices(&[Device {
            host_path: t.path().join("file").display().to_string(),
            container_path: "/dev/x".into(),
            permissions: "rwm".into(),
        }]);
        assert!(matches!(not_dev, Err(SpecError::InvalidArgument(_))));
        let bad_perm = cri_devices(&[Device {
            host_path: "/dev/null".into(),
            container_path: "/dev/null".into(),
            permissions: "rwx".into(),
        }]);
        assert!(matches!(bad_perm, Err(SpecError::InvalidArgument(_))));
    }

    #[test]
    fn host_devices_include_dev_null() {
        let devs = host_devices().unwrap();
        assert!(devs.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!devs.iter().any(|d| d.path().starts_with("/dev/pts")));
    }
}
