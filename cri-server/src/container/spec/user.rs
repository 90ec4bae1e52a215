//! The container's identity: uid, gid and supplementary groups, resolved against the image's
//! `/etc/passwd` and `/etc/group` the way containerd does.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use super::SpecError;

/// runc (and so containerd) accept ids up to `i32::MAX`.
const MAX_ID: i64 = i32::MAX as i64;

/// Resolves the container's uid, primary gid and the full `additionalGids` list.
///
/// The user comes from `run_as_username`, else `run_as_user` (each with `run_as_group` as
/// the group), else the image's USER (`name`, `uid`, `name:group`, `uid:gid`...), else root.
/// Names must exist in the image; a bare uid absent from `/etc/passwd` gets gid 0; without
/// the files only numeric ids work.
///
/// The additional gids always hold the primary gid (as containerd does since
/// CVE-2023-25173), plus `supplemental_groups`, plus, with the Merge policy (the default),
/// the groups `/etc/group` lists the user in. They come sorted and without duplicates.
pub fn resolve_user(
    rootfs: &Path,
    config: &ContainerConfig,
    image_user: &str,
) -> Result<(u32, u32, Vec<u32>), SpecError> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let user_str = match cri_user_string(sc)? {
        Some(s) => Some(s),
        None if !image_user.trim().is_empty() => Some(image_user.trim().to_string()),
        None => None,
    };
    let db = UserDb::load(rootfs)?;
    let (uid, gid) = match &user_str {
        Some(s) => db.resolve(s)?,
        None => (0, 0),
    };

    let mut gids = BTreeSet::from([gid]);
    let policy = sc.map(|s| s.supplemental_groups_policy).unwrap_or(0);
    match SupplementalGroupsPolicy::try_from(policy) {
        Ok(SupplementalGroupsPolicy::Merge) => {
            // containerd looks groups up by the user part alone, "0" when no user is set.
            let who = user_str
                .as_deref()
                .map(|s| s.split(':').next().unwrap_or(""))
                .unwrap_or("0");
            gids.extend(db.member_gids(who));
        }
        Ok(SupplementalGroupsPolicy::Strict) => {}
        Err(_) => {
            return Err(SpecError::invalid(format!(
                "unknown supplemental groups policy {policy}"
            )));
        }
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        gids.insert(checked_id(*g, "supplemental group")?);
    }
    Ok((uid, gid, gids.into_iter().collect()))
}

fn checked_id(v: i64, what: &str) -> Result<u32, SpecError> {
    if (0..=MAX_ID).contains(&v) {
        Ok(v as u32)
    } else {
        Err(SpecError::invalid(format!("{what} {v} out of range")))
    }
}

/// The security context's user as a USER string, or `None` when it sets none.
fn cri_user_string(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<Option<String>, SpecError> {
    let Some(sc) = sc else { return Ok(None) };
    let user = if !sc.run_as_username.is_empty() {
        Some(sc.run_as_username.clone())
    } else if let Some(u) = &sc.run_as_user {
        Some(checked_id(u.value, "run_as_user")?.to_string())
    } else {
        None
    };
    let group = match &sc.run_as_group {
        Some(g) => Some(checked_id(g.value, "run_as_group")?),
        None => None,
    };
    match (user, group) {
        (None, Some(g)) => Err(SpecError::invalid(format!(
            "run_as_group {g} without run_as_user or run_as_username"
        ))),
        (Some(u), Some(g)) => Ok(Some(format!("{u}:{g}"))),
        (u, None) => Ok(u),
    }
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The image's user and group files; `None` where the file is missing.
struct UserDb {
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl UserDb {
    fn load(rootfs: &Path) -> Result<UserDb, SpecError> {
        Ok(UserDb {
            passwd: read_in_root(rootfs, "etc/passwd")?.map(|s| parse_passwd(&s)),
            group: read_in_root(rootfs, "etc/group")?.map(|s| parse_group(&s)),
        })
    }

    fn user_by_name(&self, name: &str) -> Result<&PasswdEntry, SpecError> {
        let Some(passwd) = &self.passwd else {
            return Err(SpecError::UserNotFound {
                user: name.to_string(),
                reason: "the image has no /etc/passwd".into(),
            });
        };
        passwd
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| SpecError::UserNotFound {
                user: name.to_string(),
                reason: "no such user in /etc/passwd".into(),
            })
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|e| e.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Result<u32, SpecError> {
        let Some(group) = &self.group else {
            return Err(SpecError::GroupNotFound {
                group: name.to_string(),
                reason: "the image has no /etc/group".into(),
            });
        };
        group
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.gid)
            .ok_or_else(|| SpecError::GroupNotFound {
                group: name.to_string(),
                reason: "no such group in /etc/group".into(),
            })
    }

    /// uid and primary gid for a USER string.
    fn resolve(&self, user: &str) -> Result<(u32, u32), SpecError> {
        let parts: Vec<&str> = user.split(':').collect();
        match parts.as_slice() {
            [u] => match parse_id(u, "uid", user)? {
                Some(uid) => Ok((uid, self.user_by_uid(uid).map(|e| e.gid).unwrap_or(0))),
                None => {
                    let e = self.user_by_name(u)?;
                    Ok((e.uid, e.gid))
                }
            },
            [u, g] => {
                let uid = match parse_id(u, "uid", user)? {
                    Some(uid) => uid,
                    None => self.user_by_name(u)?.uid,
                };
                let gid = match parse_id(g, "gid", user)? {
                    Some(gid) => gid,
                    None => self.group_by_name(g)?,
                };
                Ok((uid, gid))
            }
            _ => Err(SpecError::invalid(format!("invalid user {user:?}"))),
        }
    }

    /// gids of the groups listing `who` (a name, or a uid looked up in /etc/passwd) as a
    /// member, leaving out a group named like the user, as containerd does.
    fn member_gids(&self, who: &str) -> Vec<u32> {
        let name = match who.parse::<u32>() {
            Ok(uid) => match self.user_by_uid(uid) {
                Some(e) => e.name.clone(),
                None => return Vec::new(),
            },
            Err(_) => who.to_string(),
        };
        self.group
            .iter()
            .flatten()
            .filter(|g| g.name != name && g.members.contains(&name))
            .map(|g| g.gid)
            .collect()
    }
}

/// `Some(id)` for a number in range, `None` for a name, an error for an out of range number.
fn parse_id(s: &str, what: &str, user: &str) -> Result<Option<u32>, SpecError> {
    if s.is_empty() {
        return Err(SpecError::invalid(format!(
            "invalid user {user:?}: empty {what}"
        )));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(v) if v <= MAX_ID => Ok(Some(v as u32)),
        _ => Err(SpecError::invalid(format!(
            "invalid user {user:?}: {what} out of range"
        ))),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `rel` inside `root`, following symlinks as if `root` were `/` (an image's
/// `/etc/passwd -> /nix/store/...` stays in the image; `../../..` stops at the root).
/// `None` when the file does not exist.
pub(crate) fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let Some(path) = resolve_in_root(root, rel)? else {
        return Ok(None);
    };
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(None),
        Err(e) => Err(SpecError::Io {
            what: "read",
            path,
            source: e,
        }),
    }
}

/// The host path of `rel` inside `root`, symlinks resolved within `root`; `None` if a
/// component is missing.
fn resolve_in_root(root: &Path, rel: &str) -> Result<Option<PathBuf>, SpecError> {
    const MAX_LINKS: usize = 40;
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = components(Path::new(rel));
    todo.reverse();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let host: PathBuf = done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(e) => {
                return Err(SpecError::Io {
                    what: "stat",
                    path: host,
                    source: e,
                });
            }
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(SpecError::invalid(format!(
                "too many symlinks resolving {rel} in {}",
                root.display()
            )));
        }
        let target = std::fs::read_link(&host).map_err(SpecError::io("read link", &host))?;
        done.pop();
        if target.is_absolute() {
            done.clear();
        }
        for c in components(&target).into_iter().rev() {
            todo.push(c);
        }
    }
    Ok(Some(done.iter().fold(root.to_path_buf(), |p, c| p.join(c))))
}

fn components(p: &Path) -> Vec<std::ffi::OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{Int64Value, LinuxContainerConfig};

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nogroup-user:x:1001:5000::/:/bin/false\n\
        broken:x:notanumber:1::/:\n";
    const GROUP: &str = "root:x:0:root\n\
        daemon:x:1:\n\
        wheel:x:10:root,app\n\
        audio:x:29:app\n\
        app:x:1000:app\n\
        video:x:44:other\n";

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(d.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(d.path().join("etc/group"), g).unwrap();
        }
        d
    }

    fn config(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_user_anywhere_is_root_with_roots_groups() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let got = resolve_user(r.path(), &ContainerConfig::default(), "").unwrap();
        assert_eq!(got, (0, 0, vec![0, 10]));
    }

    #[test]
    fn image_user_by_name_gets_primary_and_member_groups() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let got = resolve_user(r.path(), &ContainerConfig::default(), "app").unwrap();
        // "app" group (1000) is skipped as a member group but is the primary gid anyway.
        assert_eq!(got, (1000, 1000, vec![10, 29, 1000]));
    }

    #[test]
    fn image_user_by_uid_looks_up_gid_and_groups() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "1000").unwrap(),
            (1000, 1000, vec![10, 29, 1000])
        );
        // Unknown uid: gid 0, no groups.
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "4242").unwrap(),
            (4242, 0, vec![0])
        );
    }

    #[test]
    fn image_user_name_and_group() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "app:audio").unwrap(),
            (1000, 29, vec![10, 29])
        );
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "77:88").unwrap(),
            (77, 88, vec![88])
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        assert!(matches!(
            resolve_user(r.path(), &ContainerConfig::default(), "nobody-here"),
            Err(SpecError::UserNotFound { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), &ContainerConfig::default(), "app:nogroup"),
            Err(SpecError::GroupNotFound { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), &ContainerConfig::default(), "a:b:c"),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn missing_files_allow_numeric_ids_only() {
        let r = rootfs(None, None);
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "123").unwrap(),
            (123, 0, vec![0])
        );
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "123:456").unwrap(),
            (123, 456, vec![456])
        );
        assert!(matches!(
            resolve_user(r.path(), &ContainerConfig::default(), "app"),
            Err(SpecError::UserNotFound { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), &ContainerConfig::default(), "1:wheel"),
            Err(SpecError::GroupNotFound { .. })
        ));
    }

    #[test]
    fn cri_user_overrides_image_user() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let c = config(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1 }),
            ..Default::default()
        });
        assert_eq!(resolve_user(r.path(), &c, "app").unwrap(), (1, 1, vec![1]));

        let c = config(LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            run_as_user: Some(Int64Value { value: 1 }),
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        });
        assert_eq!(
            resolve_user(r.path(), &c, "").unwrap(),
            (1000, 7, vec![7, 10, 29])
        );
    }

    #[test]
    fn run_as_group_alone_is_invalid() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let c = config(LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        });
        assert!(matches!(
            resolve_user(r.path(), &c, "app"),
            Err(SpecError::InvalidArgument(_))
        ));
        let c = config(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..Default::default()
        });
        assert!(matches!(
            resolve_user(r.path(), &c, ""),
            Err(SpecError::InvalidArgument(_))
        ));
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let r = rootfs(Some(PASSWD), Some(GROUP));
        let merge = config(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![2000, 29],
            ..Default::default()
        });
        assert_eq!(
            resolve_user(r.path(), &merge, "").unwrap(),
            (1000, 1000, vec![10, 29, 1000, 2000])
        );
        let strict = config(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![2000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        });
        assert_eq!(
            resolve_user(r.path(), &strict, "").unwrap(),
            (1000, 1000, vec![1000, 2000])
        );
    }

    #[test]
    fn passwd_symlinks_stay_inside_the_rootfs() {
        let r = rootfs(None, None);
        std::fs::create_dir_all(r.path().join("nix/store")).unwrap();
        std::fs::write(r.path().join("nix/store/passwd"), "app:x:5:6::/:\n").unwrap();
        std::os::unix::fs::symlink("/nix/store/passwd", r.path().join("etc/passwd")).unwrap();
        // A relative link climbing above the root stops at the root.
        std::os::unix::fs::symlink(
            "../../../../../../nix/store/passwd",
            r.path().join("etc/group"),
        )
        .unwrap();
        assert_eq!(
            read_in_root(r.path(), "etc/passwd").unwrap().as_deref(),
            Some("app:x:5:6::/:\n")
        );
        assert!(read_in_root(r.path(), "etc/group").unwrap().is_some());
        assert_eq!(
            resolve_user(r.path(), &ContainerConfig::default(), "app").unwrap(),
            (5, 6, vec![6])
        );
        // A link to a host path that is absent inside the rootfs is "missing".
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/proc/self/status", r.path().join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(r.path(), "etc/passwd").unwrap(), None);
    }
}
