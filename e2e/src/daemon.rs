//! Runs the real `cri-server` binary for a test: its own socket, root, state dir and config in
//! a temp dir, its log in a file there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where the workspace's built binaries are: `CRI_SERVER_BIN`'s directory if set, else the
/// target dir this test binary runs from (`target/<profile>/deps/..`).
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var("CRI_SERVER_BIN")
        && name == "cri-server"
    {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join(name)
}

pub struct CriServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub config_path: PathBuf,
    /// Extra environment for the next `spawn` (e.g. `CRI_SERVER_FAILPOINT`).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl CriServer {
    /// Starts a daemon whose config is the test's paths plus `extra` (TOML appended to the
    /// file: `[image]`, `[registry]` tables...). Waits for the socket.
    pub fn start(extra: &str) -> Result<CriServer> {
        let dir = tempfile::Builder::new().prefix("cri-e2e-").tempdir()?;
        let root = dir.path().join("root");
        let socket = dir.path().join("cri.sock");
        let config_path = dir.path().join("config.toml");
        let mut config = format!(
            "listen = {socket:?}\nroot = {root:?}\nstate_dir = {state:?}\n[log]\nlevel = \"cri_server=debug,info\"\n{extra}\n",
            state = dir.path().join("state"),
        );
        // Never the machine's own CNI config: an empty dir of the test's unless it names one.
        // Tests run side by side: a free port each for the metrics endpoint.
        if !extra.contains("[metrics]") {
            config.push_str("[metrics]\naddress = \"127.0.0.1:0\"\n");
        }
        if !extra.contains("[cni]") {
            config.push_str(&format!(
                "[cni]\nconf_dir = {:?}\n",
                dir.path().join("net.d")
            ));
        }
        std::fs::write(&config_path, config)?;
        let mut server = CriServer {
            dir,
            socket,
            root,
            config_path,
            env: Vec::new(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("cri-server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the binary again with the same config (after a stop or kill).
    pub fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(bin_path("cri-server"))
            .arg("--config")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin_path("cri-server").display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("cri-server exited with {status} at start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("cri-server did not listen within 20s:\n{}", self.log())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `sig` and waits for the exit; returns the exit code (None if killed by a signal).
    pub fn stop_with(&mut self, sig: Signal) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            bail!("not running")
        };
        kill(Pid::from_raw(child.id() as i32), sig)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("cri-server ignored {sig} for 20s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit by itself (after a failpoint aborted it).
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("not running")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("cri-server did not exit within 20s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 and start again.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.stop_with(Signal::SIGKILL)?;
        self.spawn()
    }

    pub async fn clients(&self) -> Result<crate::cri::Clients> {
        crate::cri::connect(&self.socket).await
    }
}

impl Drop for CriServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Containers and monitors a failed test left running: delete them with the runtime,
        // then stop their monitors, so no process outlives the test.
        let runtime_roots = std::fs::read_dir(self.dir.path().join("state/runc"))
            .into_iter()
            .flatten()
            .flatten();
        for root in runtime_roots {
            let root = root.path();
            let list = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output();
            for id in list
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
        kill_processes_mentioning(self.dir.path());
        // What the daemon leaves mounted by design (its namespace pin dir) or by a failed
        // test: unmount it all, deepest first, before the temp dir goes.
        for m in crate::containerd::mounts_under(self.dir.path())
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            eprintln!("---- cri-server log ----\n{}", self.log());
        }
    }
}

/// SIGKILLs every process whose command line mentions `dir` (a test's monitors).
pub fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Finds (and, run under cargo, first builds in this binary's profile) cri-server and the
/// cri-monitor it runs from its own directory. `cargo run -p e2e` builds only e2e's targets,
/// so without this stale or missing daemons would be measured.
pub fn daemon_binaries(build: bool) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("CRI_SERVER_BIN") {
        let p = PathBuf::from(p);
        ensure!(p.is_file(), "CRI_SERVER_BIN={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("exe without a directory")?;
    let bin = profile_dir.join("cri-server");
    if build && let Some(cargo) = std::env::var_os("CARGO") {
        let profile = profile_dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("debug");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "cri-server", "-p", "cri-monitor"]);
        if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        eprintln!("building cri-server and cri-monitor ({profile})...");
        let status = cmd.status().context("run cargo build -p cri-server")?;
        ensure!(
            status.success(),
            "cargo build -p cri-server -p cri-monitor failed ({status}); pass --no-build to use {}",
            bin.display()
        );
    }
    ensure!(
        bin.is_file(),
        "{} not found: run `cargo build --release -p cri-server -p cri-monitor` (or set \
         CRI_SERVER_BIN)",
        bin.display()
    );
    let monitor = bin.with_file_name("cri-monitor");
    ensure!(
        monitor.is_file(),
        "{} not found next to cri-server: run `cargo build --release -p cri-monitor`",
        monitor.display()
    );
    Ok(bin)
}
