//! Network namespaces: run code inside one (on a thread of its own, so the caller's thread
//! never changes namespace), and pin new ones to files for tests and the benchmark.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Opens a network namespace file (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`).
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Runs `f` on a new thread that has entered `netns`. Netlink sockets and `/proc/sys/net`
/// files opened by `f` belong to that namespace.
pub fn run_in<T: Send>(netns: &File, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread inside the network namespace panicked"))?
    })
}

/// Runs `f` on the calling thread inside `netns`, then moves the thread back to the namespace
/// it was in. Cheaper than [`run_in`] (no thread), for short work such as opening a netlink
/// socket there (a socket stays in the namespace it was opened in). Fails, after `f` ran,
/// when the thread could not go back.
pub fn with_thread_in<T>(netns: &File, f: impl FnOnce() -> T) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let out = f();
    setns(&home, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("return to the original network namespace: {e}")))?;
    Ok(out)
}

static PIN_DIRS: Mutex<()> = Mutex::new(());

/// Makes `dir` a private mount point of its own, so namespaces bind-mounted under it neither
/// propagate to nor get shadowed by other mounts (see HOST-FACTS: `ip netns add` makes
/// `/run/netns` shared).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let _guard = PIN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(dir)?;
    let canonical = dir.canonicalize()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let target = canonical.to_string_lossy();
    let mounted = mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*target));
    if !mounted {
        mount(
            Some(&canonical),
            &canonical,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    mount(
        None::<&str>,
        &canonical,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// A new network namespace bind-mounted to a file; unmounted and removed on drop, which
/// destroys the namespace with every link, address, route and nftables table in it.
pub struct PinnedNetns {
    path: PathBuf,
}

impl PinnedNetns {
    /// Creates the namespace and pins it at `dir/name` (`dir` is made a private mount).
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        ensure_private_dir(dir)?;
        let path = dir.join(name);
        File::create(&path)?;
        let pinned = PinnedNetns { path };
        let target = pinned.path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))??;
        Ok(pinned)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(&self) -> io::Result<File> {
        File::open(&self.path)
    }

    /// Runs `f` inside this namespace (see [`run_in`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        run_in(&self.open()?, f)
    }
}

impl Drop for PinnedNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}
