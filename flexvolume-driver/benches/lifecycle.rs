//! Benchmark: per volume, the kubelet's bring-up (attach + mountdevice + mount) and
//! tear-down (unmount + unmountdevice + detach) through the real binary, for 20 volumes
//! of 64 MiB ext4, twice: a cold round (mountdevice makes the filesystem) and a warm
//! round (already formatted). Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p flexvolume-driver` (as root: real loop devices and mounts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flexvolume_driver::sys::{loopdev, mount};

const BIN: &str = env!("CARGO_BIN_EXE_flexvolume-driver");
const VOLUMES: usize = 20;

/// Unmounts and detaches whatever is left under the temp dir, even on panic.
struct Guard(tempfile::TempDir);

impl Drop for Guard {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.0.path()).unwrap();
        if let Ok(t) = mount::table() {
            for e in t.iter().rev().filter(|e| e.mount_point.starts_with(&root)) {
                let _ = nix::mount::umount2(&e.mount_point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for (dev, backing) in loopdev::list().unwrap_or_default() {
            if backing.starts_with(&root) {
                let _ = loopdev::detach(&dev);
            }
        }
    }
}

fn call(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env("FLEXVOLUME_DRIVER_STATE_DIR", dir.join("state"))
        .env("FLEXVOLUME_DRIVER_LOG", dir.join("driver.log"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

fn device(reply: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    v["device"].as_str().unwrap().to_string()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(label: &str, v: &[Duration]) {
    let mut s = v.to_vec();
    s.sort();
    let total: Duration = s.iter().sum();
    println!(
        "{label:<34} min {:6.1} ms  median {:6.1} ms  max {:6.1} ms  total {:6.1} ms",
        ms(s[0]),
        ms(s[s.len() / 2]),
        ms(s[s.len() - 1]),
        ms(total)
    );
}

fn round(dir: &Path, label: &str) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    println!("-- {label} round: {VOLUMES} volumes of 64 MiB ext4");
    println!("{:<10} {:>14} {:>14}", "volume", "up (ms)", "down (ms)");
    for i in 0..VOLUMES {
        let name = format!("bench-{i:02}");
        let json = serde_json::json!({
            "kubernetes.io/pvOrVolumeName": name,
            "kubernetes.io/fsType": "ext4",
            "kubernetes.io/readwrite": "rw",
            "size": "64Mi",
        })
        .to_string();
        let global: PathBuf = dir.join("global").join(&name);
        let pod: PathBuf = dir.join("pods").join(&name).join("vol");
        let (g, p) = (global.to_str().unwrap(), pod.to_str().unwrap());

        let t = Instant::now();
        let dev = device(&call(dir, &["attach", &json, "node-1"]));
        call(dir, &["mountdevice", g, &dev, &json]);
        call(dir, &["mount", p, &json]);
        let up = t.elapsed();

        let t = Instant::now();
        call(dir, &["unmount", p]);
        call(dir, &["unmountdevice", g]);
        call(dir, &["detach", &name, "node-1"]);
        let down = t.elapsed();
        println!("{name:<10} {:>14.1} {:>14.1}", ms(up), ms(down));
        ups.push(up);
        downs.push(down);
    }
    (ups, downs)
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("lifecycle bench needs root (loop devices and mounts); skipped");
        return;
    }
    let guard = Guard(
        tempfile::Builder::new()
            .prefix("fvbench.")
            .tempdir_in("/tmp")
            .unwrap(),
    );
    let dir = guard.0.path().to_path_buf();
    let (cold_up, cold_down) = round(&dir, "cold (mkfs on first mountdevice)");
    let (warm_up, warm_down) = round(&dir, "warm (already formatted)");
    println!("-- summary per volume (each step is one exec of the driver, as the kubelet does)");
    summary("cold attach+mountdevice+mount", &cold_up);
    summary("cold unmount+unmountdevice+detach", &cold_down);
    summary("warm attach+mountdevice+mount", &warm_up);
    summary("warm unmount+unmountdevice+detach", &warm_down);
    drop(guard);
}
