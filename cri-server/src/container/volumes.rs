//! Mounts we prepare before the OCI runtime sees the spec, under `<state>/mnt/<container>`:
//!
//! - image volumes (`Mount.image`): the image's layers as a read-only overlay, `image_sub_path`
//!   resolved inside it as the container would (symlinks stay in the image);
//! - recursive read-only volumes: a clone of the host path's mount tree made read-only
//!   throughout with `mount_setattr(AT_RECURSIVE)`;
//! - in pods with a user namespace, every volume id-mapped through it (files keep their on-disk
//!   owners as seen from inside), and the image layers id-mapped for the rootfs overlay.
//!
//! The spec builder then sees plain bind mounts of these paths. runc binds them into the
//! container; a bind keeps the id-mapping and each submount's read-only flag.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{Mount, MountPropagation};
use serde::{Deserialize, Serialize};

use super::record::ContainerRecord;
use crate::features::HostFeatures;
use crate::image::ImageRecord;
use crate::mountapi;
use crate::runtime::{Runtime, RuntimeError};
use crate::sandbox::userns::Userns;

/// An image mounted as a volume: which mount, and the image it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeImage {
    /// Index in the container config's mounts.
    pub index: usize,
    pub image_id: String,
    /// The digest reference (`repo@sha256:...`) ContainerStatus reports.
    pub image_ref: String,
}

/// The image store lease holder for the image volume at mount `index` of a container.
pub(crate) fn lease_holder(container_id: &str, index: usize) -> String {
    format!("{container_id}.vol{index}")
}

fn is_image(m: &Mount) -> bool {
    m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// Refuses mount combinations we do not make, before anything is made.
pub fn check(
    mounts: &[Mount],
    features: &HostFeatures,
    pod_userns: Option<&Userns>,
) -> Result<(), String> {
    let userns = pod_userns.is_some();
    for m in mounts {
        // Per-mount mappings: only the pod's own (what we apply to every volume anyway).
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            let same = pod_userns.is_some_and(|u| {
                m.uid_mappings == [u.uids.to_cri()] && m.gid_mappings == [u.gids.to_cri()]
            });
            if !same {
                return Err(format!(
                    "mount at {:?}: id mappings other than the pod's user namespace mappings are not supported",
                    m.container_path
                ));
            }
        }
        let at = &m.container_path;
        let propagation = MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate);
        if m.recursive_read_only {
            if !m.readonly {
                return Err(format!(
                    "mount at {at:?}: recursive_read_only needs readonly: true"
                ));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(format!(
                    "mount at {at:?}: recursive_read_only cannot be combined with propagation {}",
                    propagation.as_str_name()
                ));
            }
            if let Err(why) = &features.recursive_read_only {
                return Err(format!(
                    "mount at {at:?}: recursive read-only mounts are not supported on this host: {why}"
                ));
            }
        }
        if is_image(m) {
            if !m.readonly {
                return Err(format!(
                    "image volume at {at:?} must be read-only (readonly: true)"
                ));
            }
            if !m.host_path.is_empty() {
                return Err(format!(
                    "image volume at {at:?} has a host path too ({:?})",
                    m.host_path
                ));
            }
            let sub = &m.image_sub_path;
            if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                return Err(format!(
                    "image volume at {at:?}: sub path {sub:?} must be relative, without \"..\""
                ));
            }
        } else if !m.image_sub_path.is_empty() {
            return Err(format!("mount at {at:?}: image_sub_path without an image"));
        }
        if userns && !is_image(m) && propagation != MountPropagation::PropagationPrivate {
            return Err(format!(
                "mount at {at:?}: propagation {} is not supported in a pod with a user namespace",
                propagation.as_str_name()
            ));
        }
    }
    Ok(())
}

fn create_target(target: &Path, like: &Path) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if like.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        std::fs::File::create(target).map(drop)
    }
}

/// The host path as the spec builder resolves it (symlinks followed, missing refused).
fn resolve_host_path(m: &Mount) -> Result<PathBuf, RuntimeError> {
    super::spec::resolve_source(&m.host_path).map_err(|e| match e {
        super::spec::SpecError::InvalidArgument(msg) => RuntimeError::InvalidArgument(msg),
        other => RuntimeError::internal("resolve mount host path", other),
    })
}

impl Runtime {
    /// Id-mapped read-only views of `layers` (top first) under `<mnt>/<container>/<key>/`, for
    /// an overlay's lowerdir. Detach them with [`mountapi::unmount_all_under`] once the
    /// overlay is mounted: the overlay holds its own references.
    pub(crate) fn idmapped_layers(
        &self,
        container_id: &str,
        key: &str,
        layers: &[PathBuf],
        userns: &Path,
    ) -> Result<Vec<PathBuf>, RuntimeError> {
        let dir = self.paths.container_mnt(container_id).join(key);
        let mut out = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let target = dir.join(i.to_string());
            std::fs::create_dir_all(&target)
                .map_err(|e| RuntimeError::internal("create layer mount point", e))?;
            mountapi::bind_idmapped(layer, &target, userns, false, true).map_err(|e| {
                RuntimeError::FailedPrecondition(format!("id-map image layer: {e}"))
            })?;
            out.push(target);
        }
        Ok(out)
    }

    /// The image's layers as a read-only overlay at `target`.
    fn mount_image(
        &self,
        container_id: &str,
        key: &str,
        image: &ImageRecord,
        target: &Path,
        userns: Option<&Path>,
    ) -> Result<(), RuntimeError> {
        let mut lower: Vec<PathBuf> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.images.layer_path(&l.chain_id))
            .collect();
        let staged = match userns {
            Some(ns) => {
                lower = self.idmapped_layers(container_id, &format!("{key}-layers"), &lower, ns)?;
                Some(
                    self.paths
                        .container_mnt(container_id)
                        .join(format!("{key}-layers")),
                )
            }
            None => None,
        };
        // An overlay without an upper dir needs two lower dirs: an empty one goes last.
        let empty = self.paths.mnt().join(".empty");
        std::fs::create_dir_all(&empty)
            .and_then(|()| std::fs::create_dir_all(target))
            .map_err(|e| RuntimeError::internal("create image volume dirs", e))?;
        lower.push(empty);
        let mounted = mountapi::mount_overlay(target, &lower, None, true);
        if let Some(staged) = staged {
            let _ = mountapi::unmount_all_under(&staged);
        }
        mounted.map_err(|e| RuntimeError::internal("mount image volume (overlay)", e))
    }

    /// Turns the container's CRI mounts into plain bind mounts of prepared paths (see the
    /// module docs), leasing image volumes. Records which images it mounted in `rec`.
    pub(crate) async fn prepare_mounts(
        &self,
        rec: &mut ContainerRecord,
        userns: Option<&Path>,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let mnt = self.paths.container_mnt(&rec.id);
        let mut out = Vec::with_capacity(rec.config.mounts.len());
        for (i, m) in rec.config.mounts.clone().into_iter().enumerate() {
            if is_image(&m) {
                let name = m
                    .image
                    .as_ref()
                    .map(|s| s.image.clone())
                    .unwrap_or_default();
                let image = self.images.find(&name).ok_or_else(|| {
                    RuntimeError::NotFound(format!(
                        "image {name:?} for the volume at {:?} is not present",
                        m.container_path
                    ))
                })?;
                self.images
                    .lease_volume(&lease_holder(&rec.id, i), &image.id)
                    .await
                    .map_err(|e| RuntimeError::internal("hold image volume", e))?;
                // Recorded as soon as leased: a failure below still releases the lease.
                rec.volume_images.push(VolumeImage {
                    index: i,
                    image_id: image.id.clone(),
                    image_ref: image
                        .repo_digests
                        .first()
                        .cloned()
                        .unwrap_or_else(|| image.id.clone()),
                });
                let root = mnt.join(format!("img{i}"));
                self.mount_image(&rec.id, &format!("img{i}"), &image, &root, userns)?;
                let source = if m.image_sub_path.is_empty() {
                    root
                } else {
                    mountapi::resolve_in_root(&root, &m.image_sub_path).map_err(|e| {
                        let why = match e.raw_os_error() {
                            Some(libc::ENOENT) => "does not exist".to_string(),
                            Some(libc::ENOTDIR) => "is not a directory".to_string(),
                            _ => e.to_string(),
                        };
                        RuntimeError::InvalidArgument(format!(
                            "image volume at {:?}: sub path {:?} {why} in image {name}",
                            m.container_path, m.image_sub_path
                        ))
                    })?
                };
                out.push(Mount {
                    container_path: m.container_path.clone(),
                    host_path: source.display().to_string(),
                    readonly: true,
                    ..Default::default()
                });
            } else if let Some(ns) = userns {
                let source = resolve_host_path(&m)?;
                let target = mnt.join(format!("vol{i}"));
                create_target(&target, &source)
                    .map_err(|e| RuntimeError::internal("create volume mount point", e))?;
                let readonly = m.readonly || m.recursive_read_only;
                mountapi::bind_idmapped(&source, &target, ns, true, readonly).map_err(|e| {
                    RuntimeError::FailedPrecondition(format!(
                        "volume at {:?} in a pod with a user namespace: {e}",
                        m.container_path
                    ))
                })?;
                out.push(Mount {
                    host_path: target.display().to_string(),
                    recursive_read_only: false,
                    uid_mappings: Vec::new(),
                    gid_mappings: Vec::new(),
                    ..m
                });
            } else if m.recursive_read_only {
                let source = resolve_host_path(&m)?;
                let target = mnt.join(format!("vol{i}"));
                create_target(&target, &source)
                    .map_err(|e| RuntimeError::internal("create volume mount point", e))?;
                mountapi::bind_recursive_readonly(&source, &target).map_err(|e| {
                    RuntimeError::internal(
                        format!("recursive read-only mount at {:?}", m.container_path),
                        e,
                    )
                })?;
                out.push(Mount {
                    host_path: target.display().to_string(),
                    recursive_read_only: false,
                    readonly: true,
                    ..m
                });
            } else {
                out.push(m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::ImageSpec;

    fn features(ok: bool) -> HostFeatures {
        let r = if ok { Ok(()) } else { Err("no".to_string()) };
        HostFeatures {
            user_namespaces: r.clone(),
            recursive_read_only: r,
        }
    }

    fn image_mount(sub: &str, readonly: bool) -> Mount {
        Mount {
            container_path: "/data".into(),
            readonly,
            image: Some(ImageSpec {
                image: "img".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn recursive_read_only_needs_readonly_private_and_host_support() {
        let rro = |readonly: bool, propagation: MountPropagation| Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..Default::default()
        };
        let on = features(true);
        assert!(
            check(
                &[rro(true, MountPropagation::PropagationPrivate)],
                &on,
                None
            )
            .is_ok()
        );
        assert!(
            check(
                &[rro(false, MountPropagation::PropagationPrivate)],
                &on,
                None
            )
            .is_err()
        );
        assert!(
            check(
                &[rro(true, MountPropagation::PropagationHostToContainer)],
                &on,
                None
            )
            .is_err()
        );
        assert!(
            check(
                &[rro(true, MountPropagation::PropagationBidirectional)],
                &on,
                None
            )
            .is_err()
        );
        assert!(
            check(
                &[rro(true, MountPropagation::PropagationPrivate)],
                &features(false),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn image_volumes_must_be_read_only_with_a_relative_sub_path() {
        let on = features(true);
        assert!(check(&[image_mount("", true)], &on, None).is_ok());
        assert!(check(&[image_mount("etc/app", true)], &on, Some(&USERNS)).is_ok());
        assert!(check(&[image_mount("", false)], &on, None).is_err());
        assert!(check(&[image_mount("/etc", true)], &on, None).is_err());
        assert!(check(&[image_mount("a/../../b", true)], &on, None).is_err());
        let stray = Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            image_sub_path: "x".into(),
            ..Default::default()
        };
        assert!(check(&[stray], &on, None).is_err());
    }

    const USERNS: Userns = Userns {
        uids: crate::sandbox::userns::IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
        gids: crate::sandbox::userns::IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
    };

    #[test]
    fn per_mount_mappings_must_be_the_pods() {
        let on = features(true);
        let mapped = |host: u32| Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            uid_mappings: vec![k8s_cri::v1::IdMapping {
                host_id: host,
                container_id: 0,
                length: 65536,
            }],
            gid_mappings: vec![USERNS.gids.to_cri()],
            ..Default::default()
        };
        assert!(check(&[mapped(65536)], &on, Some(&USERNS)).is_ok());
        assert!(check(&[mapped(70000)], &on, Some(&USERNS)).is_err());
        assert!(check(&[mapped(65536)], &on, None).is_err());
    }

    #[test]
    fn user_namespace_pods_refuse_propagating_volumes() {
        let m = Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        };
        assert!(check(std::slice::from_ref(&m), &features(true), None).is_ok());
        assert!(check(&[m], &features(true), Some(&USERNS)).is_err());
    }
}
