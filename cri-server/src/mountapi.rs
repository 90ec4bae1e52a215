//! The new mount API (`open_tree`, `mount_setattr`, `move_mount`) for what the OCI runtime
//! binary we drive (runc 1.1) cannot do itself: id-mapped mounts for user-namespaced pods and
//! recursive read-only mounts. We prepare such mounts under a private dir of ours and hand the
//! OCI runtime a plain bind of the result; a bind of a mount keeps its id-mapping and each
//! submount's read-only flag.
//!
//! Also: `resolve_in_root` (openat2 `RESOLVE_IN_ROOT`) to follow a path inside an image the
//! way the container would see it, and `unmount_all_under` for teardown.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` (linux/mount.h, MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

fn ctx(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let msg = format!("{what} {}", path.display());
    move |e| std::io::Error::new(e.kind(), format!("{msg}: {e}"))
}

/// A detached copy of the mount tree at `src` (its submounts too when `recursive`).
pub fn clone_tree(src: &Path, recursive: bool) -> std::io::Result<OwnedFd> {
    let c = cpath(src)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree with a valid NUL-terminated path; the fd returned is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).map_err(ctx("clone mount tree of", src));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn setattr(tree: &OwnedFd, attr: &MountAttr, recursive: bool) -> std::io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr on a descriptor we own with an empty path and a properly sized
    // struct that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every mount of the detached tree read-only.
pub fn set_readonly_recursive(tree: &OwnedFd) -> std::io::Result<()> {
    setattr(
        tree,
        &MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
        true,
    )
}

/// Id-maps the detached tree through the user namespace `userns` (a `/proc/<pid>/ns/user` or a
/// pin of one): files owned by id N on disk appear owned by the host id that N maps to.
pub fn set_idmap(tree: &OwnedFd, userns: &Path, recursive: bool) -> std::io::Result<()> {
    let ns = std::fs::File::open(userns).map_err(ctx("open user namespace", userns))?;
    setattr(
        tree,
        &MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: ns.as_raw_fd() as u64,
        },
        recursive,
    )
}

/// Attaches a detached tree at `target` (an existing file or directory).
pub fn attach(tree: OwnedFd, target: &Path) -> std::io::Result<()> {
    let c = cpath(target)?;
    // SAFETY: move_mount from our descriptor (empty path) to a NUL-terminated target path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).map_err(ctx("attach mount at", target));
    }
    Ok(())
}

/// `src` bind-mounted (with its submounts) at `target` with every mount read-only.
pub fn bind_recursive_readonly(src: &Path, target: &Path) -> std::io::Result<()> {
    let tree = clone_tree(src, true)?;
    set_readonly_recursive(&tree).map_err(ctx("make recursively read-only:", src))?;
    attach(tree, target)
}

/// `src` bind-mounted at `target`, id-mapped through `userns`, optionally read-only (every
/// submount too) and with its submounts when `recursive`.
pub fn bind_idmapped(
    src: &Path,
    target: &Path,
    userns: &Path,
    recursive: bool,
    readonly: bool,
) -> std::io::Result<()> {
    let tree = clone_tree(src, recursive)?;
    set_idmap(&tree, userns, recursive).map_err(|e| {
        let fs = nix::sys::statfs::statfs(src)
            .map(|s| format!("{:#x}", s.filesystem_type().0))
            .unwrap_or_else(|_| "?".into());
        std::io::Error::new(
            e.kind(),
            format!(
                "id-map {} (filesystem magic {fs}): {e}; its filesystem may not support id-mapped mounts",
                src.display()
            ),
        )
    })?;
    if readonly {
        set_readonly_recursive(&tree).map_err(ctx("make read-only:", src))?;
    }
    attach(tree, target)
}

/// An overlay at `target` of `lower` (top first), with `upper_work` as its upper and work dirs
/// or read-only without. Each layer is passed on its own (`lowerdir+`, kernel 6.8+), so the
/// number of layers is not limited by the one-page option string of mount(2); older kernels
/// get that string.
pub fn mount_overlay(
    target: &Path,
    lower: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    readonly: bool,
) -> std::io::Result<()> {
    match mount_overlay_fsconfig(target, lower, upper_work, readonly) {
        Err(e)
            if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            mount_overlay_legacy(target, lower, upper_work, readonly)
        }
        other => other,
    }
}

fn mount_overlay_legacy(
    target: &Path,
    lower: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    readonly: bool,
) -> std::io::Result<()> {
    let mut opts = format!(
        "lowerdir={}",
        lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    if let Some((upper, work)) = upper_work {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    let mut flags = nix::mount::MsFlags::empty();
    if readonly {
        flags |= nix::mount::MsFlags::MS_RDONLY
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOSUID;
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(std::io::Error::from)
}

fn mount_overlay_fsconfig(
    target: &Path,
    lower: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    readonly: bool,
) -> std::io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    // SAFETY: fsopen with a static name; the descriptor is owned below.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |key: &std::ffi::CStr, value: &Path| -> std::io::Result<()> {
        let v = cpath(value)?;
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    for l in lower {
        set(c"lowerdir+", l)?;
    }
    if let Some((upper, work)) = upper_work {
        set(c"upperdir", upper)?;
        set(c"workdir", work)?;
    }
    // SAFETY: as above, creating the superblock.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // The kernel's reason, when it left one in the context.
        let mut buf = [0u8; 256];
        // SAFETY: reading the fs context's message log into our buffer.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let why = if n > 0 {
            String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_string()
        } else {
            String::new()
        };
        return Err(std::io::Error::new(
            e.kind(),
            format!("overlay: {e} {why}").trim().to_string(),
        ));
    }
    let attrs = if readonly {
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    } else {
        0
    };
    // SAFETY: fsmount of our configured context.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if mnt < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    attach(mnt, target)
}

/// Resolves `sub` (relative) inside `root` as a process chrooted at `root` would: `..` and
/// absolute symlinks stay inside. Returns the real host path, which must be a directory.
pub fn resolve_in_root(root: &Path, sub: &str) -> std::io::Result<PathBuf> {
    let dir = std::fs::File::open(root).map_err(ctx("open", root))?;
    let rel = sub.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let c = CString::new(rel)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a directory fd we own, a NUL-terminated path and a sized struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mount points at or below `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// Detaches every mount at or below `dir` and, once none is left, removes `dir`. A dir that
/// still has a mount is never removed: a recursive delete would go into the mounted volume.
pub fn unmount_all_under(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for _ in 0..4 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    Err(std::io::Error::other(format!(
        "mounts remain under {}",
        dir.display()
    )))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{MntFlags, MsFlags, mount, umount2};

    #[test]
    fn recursive_readonly_bind_makes_submounts_readonly() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let sub = src.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        bind_recursive_readonly(&src, &target).unwrap();
        let top = std::fs::write(target.join("f"), b"x").unwrap_err();
        let below = std::fs::write(target.join("sub/f"), b"x").unwrap_err();
        assert_eq!(top.raw_os_error(), Some(libc::EROFS));
        assert_eq!(below.raw_os_error(), Some(libc::EROFS));
        std::fs::write(sub.join("f"), b"x").expect("the source stays writable");
        unmount_all_under(&target).unwrap();
        assert!(!target.exists());
        umount2(&sub, MntFlags::MNT_DETACH).unwrap();
    }

    #[test]
    fn overlays_take_more_layers_than_a_mount_option_page_holds() {
        let dir = tempfile::tempdir().unwrap();
        // 80 layers with long names: about 12 KiB of lowerdir, three times a page.
        let long = "l".repeat(120);
        let lower: Vec<PathBuf> = (0..80)
            .map(|i| {
                let d = dir.path().join(format!("{long}-{i:03}"));
                std::fs::create_dir(&d).unwrap();
                std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
                d
            })
            .collect();
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        mount_overlay(&merged, &lower, Some((&upper, &work)), false).unwrap();
        assert_eq!(std::fs::read_to_string(merged.join("f0")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(merged.join("f79")).unwrap(), "79");
        std::fs::write(merged.join("new"), b"x").unwrap();
        assert!(upper.join("new").exists());
        unmount_all_under(&merged).unwrap();

        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        mount_overlay(&ro, &lower, None, true).unwrap();
        assert_eq!(
            std::fs::write(ro.join("x"), b"x")
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EROFS)
        );
        unmount_all_under(&ro).unwrap();
    }

    #[test]
    fn resolve_in_root_keeps_symlinks_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/inner")).unwrap();
        std::os::unix::fs::symlink("/data", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("data/up")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let real = root.canonicalize().unwrap();
        assert_eq!(
            resolve_in_root(root, "abs/inner").unwrap(),
            real.join("data/inner")
        );
        assert_eq!(resolve_in_root(root, "data/up").unwrap(), real);
        assert_eq!(resolve_in_root(root, "../..").unwrap(), real);
        assert_eq!(
            resolve_in_root(root, "missing").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(
            resolve_in_root(root, "file").unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
    }
}
