//! A test-made "node" network namespace. A test thread enters it before starting anything, so
//! the registry, cri-server and the CNI bridge it creates all live there, never in the
//! machine's own network namespace. Dropping it removes the namespace with everything in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

pub struct NodeNetns {
    dir: tempfile::TempDir,
    pin: PathBuf,
}

impl NodeNetns {
    /// Creates a namespace with `lo` up, pinned in a private temp dir.
    pub fn new() -> Result<NodeNetns> {
        let dir = tempfile::Builder::new().prefix("e2e-node-ns-").tempdir()?;
        let pin = dir.path().join("net");
        std::fs::File::create(&pin)?;
        let pin2 = pin.clone();
        std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare netns")?;
            // Children inherit the spawning thread's namespaces.
            let st = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()?;
            if !st.success() {
                bail!("ip link set lo up failed");
            }
            mount(
                Some("/proc/thread-self/ns/net"),
                &pin2,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context("pin netns")?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
        Ok(NodeNetns { dir, pin })
    }

    pub fn path(&self) -> &Path {
        &self.pin
    }

    /// Moves the calling thread into the namespace (its later threads and children follow).
    pub fn enter(&self) -> Result<()> {
        let f = std::fs::File::open(&self.pin)?;
        setns(f, CloneFlags::CLONE_NEWNET).context("setns into the node netns")?;
        Ok(())
    }

    /// Runs a command inside the namespace (from a fresh thread that entered it).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        let pin = self.pin.clone();
        let program = program.to_string();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || -> Result<std::process::Output> {
            setns(std::fs::File::open(&pin)?, CloneFlags::CLONE_NEWNET)?;
            Ok(Command::new(&program).args(&args).output()?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.pin, MntFlags::MNT_DETACH);
        let _ = &self.dir;
    }
}

/// Writes a conflist for Debian's reference plugins (bridge + host-local + portmap) into
/// `conf_dir`, on `subnet` (a 10.x /24 chosen by the test), bridge `bridge`.
pub fn write_reference_conflist(
    conf_dir: &Path,
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "e2e-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    std::fs::write(
        conf_dir.join("10-e2e.conflist"),
        serde_json::to_vec_pretty(&conf)?,
    )?;
    Ok(())
}
