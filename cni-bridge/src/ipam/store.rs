//! The allocation store on disk, in `host-local`'s layout so either plugin can read it:
//! `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, and
//! `last_reserved_ip.<rangeset>` the last address handed out. Every change happens under an
//! exclusive `flock` of the directory (as `host-local` takes it); callers hold the lock only
//! for the file work, never across netlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub struct Store {
    dir: PathBuf,
}

/// The held lock; released on drop.
pub struct Locked<'a> {
    store: &'a Store,
    _lock: Flock<File>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    fn parse(text: &str) -> Owner {
        let mut lines = text.lines();
        Owner {
            container_id: lines.next().unwrap_or_default().trim().to_string(),
            ifname: lines.next().unwrap_or_default().trim().to_string(),
        }
    }

    /// Old host-local files hold only the container ID; they match any ifname.
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && (self.ifname.is_empty() || self.ifname == ifname)
    }
}

impl Store {
    pub fn new(data_dir: &Path, network: &str) -> Store {
        Store {
            dir: data_dir.join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory if needed and takes the exclusive lock.
    pub fn lock(&self) -> io::Result<Locked<'_>> {
        let dir = match File::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                File::open(&self.dir)?
            }
            Err(e) => return Err(e),
        };
        let lock =
            Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        Ok(Locked {
            store: self,
            _lock: lock,
        })
    }
}

impl Locked<'_> {
    fn path(&self, ip: IpAddr) -> PathBuf {
        self.store.dir.join(ip.to_string())
    }

    /// Records `ip` for the attachment; `false` when another attachment holds it.
    pub fn reserve(&self, ip: IpAddr, container_id: &str, ifname: &str) -> io::Result<bool> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(ip))
        {
            Ok(mut f) => {
                f.write_all(format!("{container_id}\r\n{ifname}").as_bytes())?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Ok(self.owner(ip)?.is_some_and(|o| o.is(container_id, ifname)))
            }
            Err(e) => Err(e),
        }
    }

    pub fn owner(&self, ip: IpAddr) -> io::Result<Option<Owner>> {
        match fs::read_to_string(self.path(ip)) {
            Ok(t) => Ok(Some(Owner::parse(&t))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(&self, ip: IpAddr) -> io::Result<()> {
        match fs::remove_file(self.path(ip)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let p = self.store.dir.join(format!("last_reserved_ip.{set}"));
        fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// Rewrites `last_reserved_ip.<set>` in place. Not with `O_TRUNC`: on ext4, truncating a
    /// file to zero and rewriting it forces its data out at close (`auto_da_alloc`), which
    /// costs up to milliseconds, under the store lock. The file is shortened only when the
    /// new address is shorter than the old one.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = ip.to_string();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.store.dir.join(format!("last_reserved_ip.{set}")))?;
        f.write_all_at(text.as_bytes(), 0)?;
        if f.metadata()?.len() > text.len() as u64 {
            f.set_len(text.len() as u64)?;
        }
        Ok(())
    }

    /// Every recorded allocation.
    pub fn all(&self) -> io::Result<Vec<(IpAddr, Owner)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.store.dir)? {
            let entry = entry?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(t) => out.push((ip, Owner::parse(&t))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes every allocation of the attachment and returns the freed addresses.
    pub fn release(&self, container_id: &str, ifname: &str) -> io::Result<Vec<IpAddr>> {
        self.release_where(|o| o.is(container_id, ifname))
    }

    /// Removes every allocation for which `stale` holds and returns the freed addresses.
    pub fn release_where(&self, stale: impl Fn(&Owner) -> bool) -> io::Result<Vec<IpAddr>> {
        let mut freed = Vec::new();
        for (ip, owner) in self.all()? {
            if stale(&owner) {
                self.remove(ip)?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_reserved_is_rewritten_in_place_and_shortened_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path(), "n");
        let locked = store.lock().unwrap();
        let file = d.path().join("n/last_reserved_ip.0");
        for ip in ["10.9.0.100", "10.9.0.7", "10.9.0.255", "fd00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            locked.set_last_reserved(0, ip).unwrap();
            // Exactly the address: host-local parses the whole file.
            assert_eq!(fs::read_to_string(&file).unwrap(), ip.to_string());
            assert_eq!(locked.last_reserved(0), Some(ip));
        }
    }
}
