//! What this host can really do, probed once at start by doing it: `Status` reports a feature
//! only when the probe succeeded, and requests needing a missing feature are refused with the
//! probe's reason.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use tracing::{info, warn};

use crate::mountapi;
use crate::runtime::Paths;
use crate::sandbox::userns::{Holder, IdMap, Userns};

#[derive(Debug, Clone)]
pub struct HostFeatures {
    /// Pod user namespaces with id-mapped image layers (overlay over id-mapped lower dirs).
    pub user_namespaces: Result<(), String>,
    /// Recursive read-only bind mounts (`mount_setattr` with `AT_RECURSIVE`).
    pub recursive_read_only: Result<(), String>,
}

impl HostFeatures {
    pub fn probe(paths: &Paths, image_root: &Path) -> HostFeatures {
        let features = HostFeatures {
            user_namespaces: probe_in(image_root, probe_userns),
            recursive_read_only: probe_in(&paths.mnt(), probe_rro),
        };
        for (name, r) in [
            ("user namespaces", &features.user_namespaces),
            ("recursive read-only mounts", &features.recursive_read_only),
        ] {
            match r {
                Ok(()) => info!(feature = name, "supported on this host"),
                Err(why) => warn!(feature = name, reason = %why, "not supported on this host"),
            }
        }
        features
    }
}

/// Runs `f` in a fresh scratch dir under `parent`, removed (and unmounted) afterwards.
fn probe_in(parent: &Path, f: fn(&Path) -> Result<(), String>) -> Result<(), String> {
    // A daemon killed mid-probe leaves its scratch dir (and maybe mounts): clear them all.
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".probe-") {
            let _ = mountapi::unmount_all_under(&e.path());
        }
    }
    let path = parent.join(format!(".probe-{}", std::process::id()));
    std::fs::create_dir_all(&path).map_err(|e| format!("scratch dir {}: {e}", path.display()))?;
    let result = f(&path);
    if let Err(e) = mountapi::unmount_all_under(&path) {
        warn!(dir = %path.display(), error = %e, "feature probe left mounts");
    }
    result
}

fn probe_rro(dir: &Path) -> Result<(), String> {
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=16k"),
    )
    .map_err(|e| format!("tmpfs: {e}"))?;
    let tree = mountapi::clone_tree(dir, true).map_err(|e| e.to_string())?;
    mountapi::set_readonly_recursive(&tree).map_err(|e| format!("mount_setattr: {e}"))
}

/// A file of a layer, seen through an overlay of id-mapped lower dirs, is owned by the
/// mapped id; and a write lands in the upper dir.
fn probe_userns(dir: &Path) -> Result<(), String> {
    const HOST: u32 = 3_000_000_000;
    let userns = Userns {
        uids: IdMap {
            container_id: 0,
            host_id: HOST,
            length: 65536,
        },
        gids: IdMap {
            container_id: 0,
            host_id: HOST,
            length: 65536,
        },
    };
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("{what}: {err}")
    };
    for d in ["layer", "empty", "l0", "l1", "upper", "work", "merged"] {
        std::fs::create_dir(dir.join(d)).map_err(e("mkdir"))?;
    }
    std::fs::write(dir.join("layer/f"), b"").map_err(e("write"))?;
    let holder = Holder::spawn(&userns, 0).map_err(e("user namespace"))?;
    let ns = holder.ns_path("user");
    mountapi::bind_idmapped(&dir.join("layer"), &dir.join("l0"), &ns, false, true)
        .map_err(e("id-mapped mount"))?;
    mountapi::bind_idmapped(&dir.join("empty"), &dir.join("l1"), &ns, false, true)
        .map_err(e("id-mapped mount"))?;
    // The same call CreateContainer makes for a rootfs.
    mountapi::mount_overlay(
        &dir.join("merged"),
        &[dir.join("l0"), dir.join("l1")],
        Some((&dir.join("upper"), &dir.join("work"))),
        false,
    )
    .map_err(|err| format!("overlay over id-mapped layers: {err}"))?;
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(dir.join("merged/f"))
        .map_err(e("stat"))?
        .uid();
    if uid != HOST {
        return Err(format!(
            "overlay over id-mapped layers shows uid {uid}, not {HOST}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_supports_user_namespaces_and_recursive_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
        };
        let f = HostFeatures::probe(&paths, dir.path());
        assert_eq!(f.user_namespaces, Ok(()));
        assert_eq!(f.recursive_read_only, Ok(()));
        assert!(crate::mountapi::mounts_under(dir.path()).is_empty());
    }
}
