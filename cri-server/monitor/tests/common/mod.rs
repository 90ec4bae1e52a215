//! Test fixture: a fake pod (state dir, runc root, bundles, logs in one temp dir) with a real
//! monitor and real runc containers, all removed on drop, even when the test fails.

#![allow(dead_code)]

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use cri_monitor::client::Client;
use cri_monitor::launch::{self, MonitorConfig};
use cri_monitor::protocol::{CreateRequest, ExitRecord, SOCKET_NAME};

pub const RUNC: &str = "/usr/sbin/runc";
pub const BUSYBOX: &str = "/bin/busybox";
const CGROUP_PARENT: &str = "cri-monitor-test";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tr", "tail", "printf", "touch", "test", "[",
];

/// What a test container looks like, beyond its command.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub tty: bool,
    /// `linux.resources.memory.limit` (and swap, equal, on cgroup v1).
    pub memory_limit: Option<i64>,
}

pub struct Pod {
    pub name: String,
    /// The pod state dir given to the monitor.
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    pub monitor_pid: i32,
    /// Container ids to delete with runc when the test ends.
    created: RefCell<Vec<String>>,
    // Dropped last: everything above lives in it.
    tmp: TempDir,
}

pub fn require_tools() {
    assert!(
        Path::new(RUNC).exists() && Path::new(BUSYBOX).exists(),
        "these tests need {RUNC} (Debian runc) and {BUSYBOX} (Debian busybox-static), and root"
    );
}

impl Pod {
    /// Starts a monitor for a new fake pod named after the test.
    pub fn start(name: &str) -> Pod {
        Self::start_in(name, None)
    }

    /// Same, with the state dir at `relative` inside the temp dir (for long paths).
    pub fn start_in(name: &str, relative: Option<&str>) -> Pod {
        require_tools();
        let tmp = tempfile::Builder::new()
            .prefix("crimon-")
            .tempdir()
            .expect("make temp dir");
        let dir = tmp.path().join(relative.unwrap_or("pod"));
        fs::create_dir_all(&dir).unwrap();
        let runtime_root = tmp.path().join("runc");
        let mut pod = Pod {
            name: format!("{name}-{}", std::process::id()),
            dir,
            runtime_root,
            monitor_pid: 0,
            created: RefCell::new(Vec::new()),
            tmp,
        };
        let started = launch::start(&pod.monitor_config()).expect("start monitor");
        pod.monitor_pid = started.pid;
        pod
    }

    pub fn monitor_config(&self) -> MonitorConfig {
        MonitorConfig {
            program: PathBuf::from(env!("CARGO_BIN_EXE_cri-monitor")),
            sandbox_id: self.name.clone(),
            dir: self.dir.clone(),
            runtime_root: self.runtime_root.clone(),
        }
    }

    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_NAME)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.socket()).expect("connect to monitor")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.tmp.path().join("logs").join(format!("{id}.log"))
    }

    /// The container's full id as given to runc (unique across concurrent test runs).
    pub fn cid(&self, id: &str) -> String {
        format!("{}-{id}", self.name)
    }

    pub fn cgroup_path(&self, id: &str) -> String {
        format!("/{CGROUP_PARENT}/{}", self.cid(id))
    }

    /// The container's memory cgroup: v1 (hybrid, as here) or unified v2.
    pub fn memory_cgroup_dir(&self, id: &str) -> PathBuf {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let root = if v1.is_dir() {
            v1
        } else {
            Path::new("/sys/fs/cgroup")
        };
        root.join(self.cgroup_path(id).trim_start_matches('/'))
    }

    /// Makes a bundle running `args` with busybox as its whole rootfs.
    pub fn bundle(&self, id: &str, args: &[&str], spec: &Spec) -> PathBuf {
        let bundle = self.tmp.path().join("bundles").join(id);
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(bundle.join("rootfs/tmp")).unwrap();
        fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let mut linux = json!({
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"}
            ],
            "cgroupsPath": self.cgroup_path(id),
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        });
        if let Some(limit) = spec.memory_limit {
            linux["resources"] = json!({"memory": {"limit": limit, "swap": limit}});
        }
        let caps = json!(["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"]);
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": spec.tty,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "noNewPrivileges": true,
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps
                }
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=1024k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": linux,
        });
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        bundle
    }

    pub fn request(&self, id: &str, bundle: &Path, spec: &Spec) -> CreateRequest {
        CreateRequest {
            id: self.cid(id),
            runtime: PathBuf::from(RUNC),
            bundle: bundle.to_path_buf(),
            log_path: self.log_path(id),
            tty: spec.tty,
            stdin: false,
            stdin_once: false,
            cgroup_memory_dir: Some(self.memory_cgroup_dir(id)),
            start: false,
        }
    }

    /// Creates the container through the monitor (and remembers it for cleanup).
    pub fn create(&self, request: CreateRequest) -> Result<i32, cri_monitor::client::Error> {
        self.created.borrow_mut().push(request.id.clone());
        self.client().create(request)
    }

    /// Makes a bundle, creates and starts the container; returns its bundle.
    pub fn run(&self, id: &str, args: &[&str], spec: &Spec) -> PathBuf {
        let bundle = self.bundle(id, args, spec);
        self.create(self.request(id, &bundle, spec))
            .expect("create container");
        self.runc_ok(&["start", &self.cid(id)]);
        bundle
    }

    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(&self.runtime_root)
            .args(args)
            .output()
            .expect("run runc")
    }

    pub fn runc_ok(&self, args: &[&str]) {
        let out = self.runc(args);
        assert!(
            out.status.success(),
            "runc {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn wait_exit(&self, bundle: &Path) -> ExitRecord {
        wait_for(Duration::from_secs(20), "exit.json", || {
            ExitRecord::read(bundle).expect("read exit.json")
        })
    }

    pub fn monitor_alive(&self) -> bool {
        pid_alive(self.monitor_pid)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for id in self.created.borrow().iter() {
            let _ = self.runc(&["delete", "--force", id]);
            for controller in cgroup_controllers() {
                let _ = fs::remove_dir(controller.join(CGROUP_PARENT).join(id));
            }
        }
        for controller in cgroup_controllers() {
            // Fails while another test still has a container there: fine.
            let _ = fs::remove_dir(controller.join(CGROUP_PARENT));
        }
        if self.monitor_pid > 0 && pid_alive(self.monitor_pid) {
            if let Ok(mut c) = Client::connect(self.socket()) {
                let _ = c.shutdown();
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while pid_alive(self.monitor_pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(self.monitor_pid) {
                // SAFETY: kill(2) on the monitor this fixture started.
                unsafe { libc::kill(self.monitor_pid, libc::SIGKILL) };
            }
        }
    }
}

fn cgroup_controllers() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes (then panics naming `what`).
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    pub tag: String,
    pub content: String,
}

/// Reads a CRI log file, checking each line's shape.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let l = LogLine {
                timestamp: f.next().unwrap().to_string(),
                stream: f.next().expect("stream").to_string(),
                tag: f.next().expect("tag").to_string(),
                content: f.next().expect("content").to_string(),
            };
            let ts = l.timestamp.as_bytes();
            assert!(
                ts.len() == 30
                    && ts[4] == b'-'
                    && ts[10] == b'T'
                    && ts[19] == b'.'
                    && ts[29] == b'Z',
                "bad timestamp in {line:?}"
            );
            assert!(l.stream == "stdout" || l.stream == "stderr", "{line:?}");
            assert!(l.tag == "F" || l.tag == "P", "{line:?}");
            l
        })
        .collect()
}

/// VmRSS of `pid` in KiB.
pub fn vm_rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

pub fn json_of(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}
