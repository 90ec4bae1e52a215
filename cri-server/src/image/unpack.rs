//! Unpacks one layer tar into a directory usable as an overlayfs lower dir.
//!
//! Whiteouts (`.wh.<name>`) become 0/0 character devices, opaque markers (`.wh..wh..opq`)
//! become the `trusted.overlay.opaque` xattr. Ownership, modes, xattrs, hardlinks, device nodes
//! and mtimes are kept. An entry that would land outside the target (`..`, absolute names,
//! writing through a symlink, hardlinks to outside) fails the whole layer.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} escapes the layer root: {reason}")]
    Escape { entry: String, reason: &'static str },
    #[error("layer entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("read layer: {0}")]
    Read(io::Error),
    #[error("layer entry {entry:?} has unsupported type {kind:?}")]
    Unsupported { entry: String, kind: char },
}

/// What an unpacked layer holds, and the digest of its uncompressed tar (the diff ID).
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub diff_id: String,
    pub bytes: u64,
    pub inodes: u64,
}

/// Decompresses (gzip, zstd or none, told apart by magic bytes) and unpacks `input` into
/// `dest`, which must exist and be empty. Reads `input` to its end.
pub fn unpack_layer(input: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut input = io::BufReader::with_capacity(256 * 1024, input);
    let magic = {
        use io::BufRead;
        input
            .fill_buf()
            .map_err(UnpackError::Read)?
            .get(..4)
            .map(|m| m.to_vec())
            .unwrap_or_default()
    };
    let decompressed: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(UnpackError::Read)?)
    } else {
        Box::new(input)
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    let (bytes, inodes) = unpack_tar(&mut hashing, dest)?;
    // The tar ends before its trailing padding; the diff ID covers every byte.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        bytes,
        inodes,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks a tar name and returns it relative to the root: no absolute names, no `..`.
fn clean_relative(name: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape {
                    entry: entry.into(),
                    reason: "`..` in path",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Escape {
                    entry: entry.into(),
                    reason: "absolute path",
                });
            }
        }
    }
    Ok(out)
}

/// Makes sure every parent directory of `rel` inside `root` is a real directory (creating
/// missing ones), so nothing is written through a symlink.
fn ensure_parents(root: &Path, rel: &Path, entry: &str) -> Result<(), UnpackError> {
    let mut cur = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Escape {
                    entry: entry.into(),
                    reason: "path goes through a symlink",
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::Entry {
                    entry: entry.into(),
                    source: io::Error::other(format!("{} is not a directory", cur.display())),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|source| UnpackError::Entry {
                    entry: entry.into(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(UnpackError::Entry {
                    entry: entry.into(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Removes whatever is at `path` unless it is a directory and `keep_dir` is set.
fn clear(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn copy_data(from: &mut impl Read, to: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn unpack_tar(input: &mut impl Read, root: &Path) -> Result<(u64, u64), UnpackError> {
    let mut archive = tar::Archive::new(input);
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let rel = clean_relative(Path::new(std::ffi::OsStr::from_bytes(&raw_name)), &name)?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let err = |source: io::Error| UnpackError::Entry {
            entry: name.clone(),
            source,
        };
        ensure_parents(root, &rel, &name)?;
        let file_name = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = root.join(rel.parent().unwrap_or(Path::new("")));

        if file_name == OPAQUE_MARKER {
            set_xattr(&parent, "trusted.overlay.opaque", b"y").map_err(err)?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Escape {
                    entry: name,
                    reason: "bad whiteout name",
                });
            }
            let target = parent.join(hidden);
            clear(&target, false).map_err(err)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| err(e.into()))?;
            inodes += 1;
            continue;
        }

        let path = root.join(&rel);
        let header = entry.header().clone();
        let mode = header.mode().map_err(err)? & 0o7777;
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                clear(&path, true).map_err(err)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(err)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&path, false).map_err(err)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(err)?;
                let size = header.size().map_err(err)?;
                let copied = copy_data(&mut entry, &mut f).map_err(err)?;
                if copied != size {
                    return Err(err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file data cut short",
                    )));
                }
                bytes += copied;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| err(io::Error::other("symlink without target")))?;
                clear(&path, false).map_err(err)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(err)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| err(io::Error::other("hardlink without target")))?;
                let target_rel =
                    clean_relative(Path::new(std::ffi::OsStr::from_bytes(&target)), &name)?;
                ensure_parents(root, &target_rel, &name)?;
                let target_path = root.join(&target_rel);
                if target_path == path {
                    continue;
                }
                clear(&path, false).map_err(err)?;
                fs::hard_link(&target_path, &path).map_err(err)?;
                inodes += 1;
                continue; // the link shares the target's owner, mode and times
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, true),
                    tar::EntryType::Block => (SFlag::S_IFBLK, true),
                    _ => (SFlag::S_IFIFO, false),
                };
                let rdev = if dev {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    makedev(major.into(), minor.into())
                } else {
                    0
                };
                clear(&path, false).map_err(err)?;
                mknod(&path, sflag, Mode::from_bits_truncate(0o600), rdev)
                    .map_err(|e| err(e.into()))?;
            }
            tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: other.as_byte() as char,
                });
            }
        }
        inodes += 1;

        let uid = header.uid().map_err(err)? as u32;
        let gid = header.gid().map_err(err)? as u32;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(err)?;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(key) = ext.key()
                    && let Some(xattr) = key.strip_prefix("SCHILY.xattr.")
                {
                    set_xattr(&path, xattr, ext.value_bytes()).map_err(err)?;
                }
            }
        }
        if kind != tar::EntryType::Symlink {
            // After chown: chown clears set-id bits.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(err)?;
        }
        let mtime = header.mtime().unwrap_or(0) as i64;
        if kind == tar::EntryType::Directory {
            dir_times.push((path, mtime));
        } else {
            set_mtime(&path, mtime).map_err(err)?;
        }
    }
    // Children change their directory's mtime: set directories last, deepest first.
    for (path, mtime) in dir_times.into_iter().rev() {
        set_mtime(&path, mtime).map_err(|source| UnpackError::Entry {
            entry: path.display().to_string(),
            source,
        })?;
    }
    Ok((bytes, inodes))
}

fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32, uid: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    /// A header whose name is written raw, past the tar crate's own checks.
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn files_modes_owners_links_and_whiteouts_are_kept() {
        let data = tar_with(|b| {
            file(b, "etc/app.conf", b"x=1", 0o640, 1000);
            file(b, "bin/suid", b"#!", 0o4755, 0);
            file(b, ".wh.gone", b"", 0o644, 0);
            file(b, "opq/.wh..wh..opq", b"", 0o644, 0);
            raw(b, "bin/link", tar::EntryType::Link, "bin/suid", b"");
            raw(b, "bin/sym", tar::EntryType::Symlink, "/bin/suid", b"");
        });
        let dir = tempfile::tempdir().unwrap();
        let out = unpack_layer(&data[..], dir.path()).unwrap();
        let root = dir.path();
        let m = fs::metadata(root.join("etc/app.conf")).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            (0o640, 1000, 1000, 1_000_000)
        );
        assert_eq!(
            fs::metadata(root.join("bin/suid")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::metadata(root.join("bin/link")).unwrap().ino(),
            fs::metadata(root.join("bin/suid")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(root.join("bin/sym")).unwrap(),
            Path::new("/bin/suid")
        );
        let w = fs::symlink_metadata(root.join("gone")).unwrap();
        assert!(w.file_type().is_char_device() && w.rdev() == 0);
        let mut v = [0u8; 4];
        let p = CString::new(root.join("opq").as_os_str().as_bytes()).unwrap();
        let n = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                v.as_mut_ptr().cast(),
                4,
            )
        };
        assert_eq!(&v[..n as usize], b"y");
        assert_eq!(
            out.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
    }

    #[test]
    fn gzip_and_zstd_give_the_same_tree_and_diff_id() {
        let data = tar_with(|b| file(b, "a", b"hello", 0o644, 0));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for blob in [gz, zs] {
            let dir = tempfile::tempdir().unwrap();
            let out = unpack_layer(&blob[..], dir.path()).unwrap();
            assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"hello");
            assert_eq!(
                out.diff_id,
                format!("sha256:{}", hex::encode(Sha256::digest(&data)))
            );
        }
    }

    fn assert_escape(data: Vec<u8>) {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("layer");
        fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&data[..], &dest).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
        // Nothing landed beside the layer directory.
        let names: Vec<_> = fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("layer")]);
    }

    #[test]
    fn dotdot_entries_are_rejected() {
        assert_escape(tar_with(|b| {
            raw(b, "../escaped", tar::EntryType::Regular, "", b"x")
        }));
        assert_escape(tar_with(|b| {
            raw(b, "a/../../escaped", tar::EntryType::Regular, "", b"x")
        }));
    }

    #[test]
    fn absolute_entries_are_rejected() {
        assert_escape(tar_with(|b| {
            raw(b, "/tmp/escaped", tar::EntryType::Regular, "", b"x")
        }));
    }

    #[test]
    fn writing_through_a_symlink_is_rejected() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().display().to_string();
        assert_escape(tar_with(|b| {
            raw(b, "evil", tar::EntryType::Symlink, &target, b"");
            raw(b, "evil/owned", tar::EntryType::Regular, "", b"x");
        }));
        assert_escape(tar_with(|b| {
            raw(b, "up", tar::EntryType::Symlink, "..", b"");
            raw(b, "up/owned", tar::EntryType::Regular, "", b"x");
        }));
    }

    #[test]
    fn hardlinks_to_outside_are_rejected() {
        assert_escape(tar_with(|b| {
            raw(b, "pw", tar::EntryType::Link, "../../etc/passwd", b"")
        }));
        assert_escape(tar_with(|b| {
            raw(b, "pw", tar::EntryType::Link, "/etc/passwd", b"")
        }));
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let data = tar_with(|b| file(b, "big", &[7u8; 5000], 0o644, 0));
        let dir = tempfile::tempdir().unwrap();
        assert!(unpack_layer(&data[..1000], dir.path()).is_err());
    }
}
