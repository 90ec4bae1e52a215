//! Test sandbox: a temp dir holding the driver's state dir, log, global mounts and pod
//! dirs. Its Drop guard unmounts whatever is still mounted under it and detaches exactly
//! the loop devices whose backing file lies under it (only this test can have made
//! those), even when the test failed halfway.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flexvolume_driver::sys::{loopdev, mount};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_flexvolume-driver");

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Loop devices the test attached itself (not through the driver).
    pub own_loops: std::sync::Mutex<Vec<PathBuf>>,
}

/// One driver call's outcome.
#[derive(Debug)]
pub struct Call {
    pub json: Value,
    pub code: i32,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.code == 0 && self.json["status"] == "Success"
    }
    pub fn message(&self) -> String {
        self.json["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn device(&self) -> String {
        self.json["device"].as_str().unwrap_or_default().to_string()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("these tests need root (loop devices and mounts)");
        }
        let dir = tempfile::Builder::new()
            .prefix("fvtest.")
            .tempdir_in("/tmp")
            .unwrap();
        Sandbox {
            dir,
            own_loops: Default::default(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    pub fn log(&self) -> PathBuf {
        self.path("driver.log")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("FLEXVOLUME_DRIVER_STATE_DIR", self.state())
            .env("FLEXVOLUME_DRIVER_LOG", self.log())
            .env_remove("FLEXVOLUME_DRIVER_FAULT");
        c
    }

    /// Runs the driver with a crash point armed; returns the raw output.
    pub fn run_with_fault(&self, fault: &str, args: &[&str]) -> Output {
        self.command()
            .env("FLEXVOLUME_DRIVER_FAULT", fault)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs one Flexvolume call; checks that stdout is one JSON object and stderr is
    /// empty, whatever the outcome.
    pub fn call(&self, args: &[&str]) -> Call {
        let out = self.command().args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.stderr.is_empty(),
            "{args:?} wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 1, "{args:?} printed {stdout:?}");
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: bad JSON {stdout:?}: {e}"));
        Call {
            json,
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// Runs a call that must succeed.
    pub fn ok(&self, args: &[&str]) -> Call {
        let c = self.call(args);
        assert!(
            c.ok(),
            "{args:?} failed: {:?}\nlog:\n{}",
            c.json,
            self.log_text()
        );
        c
    }

    /// Runs a call that must fail with exit code 1 and a Failure.
    pub fn fails(&self, args: &[&str]) -> Call {
        let c = self.call(args);
        assert_eq!(c.code, 1, "{args:?} should fail: {:?}", c.json);
        assert_eq!(c.json["status"], "Failure", "{args:?}: {:?}", c.json);
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Mounts under the sandbox, deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let root = std::fs::canonicalize(self.dir.path()).unwrap();
        let mut v: Vec<PathBuf> = mount::table()
            .unwrap()
            .into_iter()
            .map(|e| e.mount_point)
            .filter(|p| p.starts_with(&root))
            .collect();
        v.reverse();
        v
    }

    /// Loop devices bound to files under the sandbox.
    pub fn loops(&self) -> Vec<PathBuf> {
        let root = std::fs::canonicalize(self.dir.path()).unwrap();
        loopdev::list()
            .unwrap()
            .into_iter()
            .filter(|(_, backing)| backing.starts_with(&root))
            .map(|(dev, _)| dev)
            .collect()
    }

    /// Attaches a loop device over a new temp file for the test's own use (a "block
    /// device" to hand the driver); detached by the guard.
    pub fn own_block_device(&self, name: &str, size: u64) -> PathBuf {
        let file = self.path(name);
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        let dev = loopdev::attach(&file, 0).unwrap();
        self.own_loops.lock().unwrap().push(dev.clone());
        dev
    }

    /// Nothing left behind: no mount, no loop device, no lock file.
    pub fn assert_clean(&self) {
        assert_eq!(self.mounts(), Vec::<PathBuf>::new(), "mounts left behind");
        let own = self.own_loops.lock().unwrap().clone();
        let loops: Vec<PathBuf> = self
            .loops()
            .into_iter()
            .filter(|d| !own.contains(d))
            .collect();
        assert_eq!(loops, Vec::<PathBuf>::new(), "loop devices left behind");
        let locks: Vec<PathBuf> = std::fs::read_dir(self.state().join("locks"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert_eq!(locks, Vec::<PathBuf>::new(), "lock files left behind");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for _ in 0..3 {
            for m in self.mounts() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for dev in self.loops() {
            let _ = loopdev::detach(&dev);
        }
        for dev in self.own_loops.lock().unwrap().iter() {
            let _ = loopdev::detach(dev);
        }
    }
}

/// The options JSON the kubelet would pass for volume `name`, plus `extra` pairs.
pub fn opts(name: &str, extra: &[(&str, &str)]) -> String {
    let mut m = serde_json::Map::new();
    m.insert("kubernetes.io/fsType".into(), "ext4".into());
    m.insert("kubernetes.io/readwrite".into(), "rw".into());
    m.insert("kubernetes.io/pvOrVolumeName".into(), name.into());
    m.insert("size".into(), "64Mi".into());
    for (k, v) in extra {
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Value::Object(m).to_string()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
