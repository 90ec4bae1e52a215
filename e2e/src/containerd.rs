//! Runs Debian's containerd (`/usr/bin/containerd`, 1.6.x) as a peer CRI runtime, e.g. for
//! comparisons: its own root, state, sockets, certs.d and config in a temp dir, its log in a file
//! there. Registries are reached only through `hosts.toml` files this module writes (loopback
//! only); every other host is pointed at a closed loopback port so nothing leaves 127.0.0.1.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::VersionRequest;
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";

/// `$CONTAINERD_BIN` if set, else [`CONTAINERD_BIN`].
pub fn containerd_bin() -> PathBuf {
    std::env::var_os("CONTAINERD_BIN").map_or_else(|| PathBuf::from(CONTAINERD_BIN), PathBuf::from)
}
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Plugins a CRI image pull does not need (and that would probe the host for nothing).
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
];

/// Where "any other registry" is sent: a loopback port nothing listens on (tcpmux, privileged).
const BLACKHOLE: &str = "http://127.0.0.1:1";

/// Settings of a [`Containerd`] instance.
#[derive(Clone, Debug, Default)]
pub struct ContainerdOptions {
    /// Plain-HTTP registries (`127.0.0.1:<port>`) to pull from.
    pub insecure_registries: Vec<String>,
    /// `max_concurrent_downloads` of the CRI plugin (containerd's default is 3).
    pub max_concurrent_downloads: Option<usize>,
    /// Extra `key = value` lines for the `[plugins."io.containerd.grpc.v1.cri"]` table.
    pub cri_extra: String,
    /// The CRI plugin's `sandbox_image` (the pause image every pod starts with), e.g. an image
    /// in a local registry. None: a loopback reference that cannot be pulled (no pods).
    pub sandbox_image: Option<String>,
    /// The CNI plugins' directory (e.g. `/usr/lib/cni`). None: an empty dir of the instance.
    pub cni_bin_dir: Option<PathBuf>,
    /// The CNI config directory. None: an empty dir of the instance (pods get no network).
    pub cni_conf_dir: Option<PathBuf>,
}

/// A running containerd. Dropping it stops the process (SIGTERM, then SIGKILL), deletes every
/// container left in its runc root, kills its shims, unmounts whatever it left mounted under its
/// temp dir and removes the dir.
///
/// Its runc v2 runtime keeps runc's state (`Root`) under the temp dir too, so what a run leaves
/// behind can be found; only the shims' sockets live where containerd 1.6 hard-codes them
/// (`/run/containerd/s/`), and libcni's cache (`/var/lib/cni/results`): Drop removes those of its
/// shims and sandboxes (and the dirs, when empty).
pub struct Containerd {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config_path: PathBuf,
    child: Option<Child>,
    // Option so that Drop can unmount before the TempDir removes the tree.
    dir: Option<tempfile::TempDir>,
}

impl Containerd {
    /// Writes the config and `hosts.toml` files, starts containerd and waits until its CRI
    /// plugin answers `Version`.
    pub async fn start(opts: &ContainerdOptions) -> Result<Containerd> {
        let bin = containerd_bin();
        ensure!(
            bin.exists(),
            "{} not found (apt-get install containerd)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("containerd-e2e-")
            .tempdir()?;
        // Canonical, so that paths compare equal to /proc/self/mountinfo's.
        let base = dir.path().canonicalize()?;
        let root = base.join("root");
        let state = base.join("state");
        let socket = base.join("containerd.sock");
        let config_path = base.join("config.toml");
        let certs = base.join("certs.d");
        for d in ["tmp", "opt", "cni/net.d", "cni/bin", "certs.d"] {
            std::fs::create_dir_all(base.join(d))?;
        }
        write_hosts(&certs, &opts.insecure_registries)?;
        std::fs::write(&config_path, config_toml(&base, opts))?;

        let mut c = Containerd {
            socket,
            root,
            state,
            config_path,
            child: None,
            dir: Some(dir),
        };
        c.spawn()?;
        c.wait_ready().await?;
        Ok(c)
    }

    fn base(&self) -> &Path {
        self.config_path.parent().expect("config in temp dir")
    }

    pub fn log_path(&self) -> PathBuf {
        self.base().join("containerd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The instance's temp dir (canonical): root, state, sockets, config, log.
    pub fn dir(&self) -> &Path {
        self.base()
    }

    /// runc's `--root` for the CRI namespace (`k8s.io`) of this instance's shims.
    pub fn runc_root(&self) -> PathBuf {
        self.base().join("runc").join("k8s.io")
    }

    /// Pids of this instance's `containerd-shim-runc-v2` processes (their command line names
    /// the instance's socket). They outlive containerd by design.
    pub fn shim_pids(&self) -> Vec<u32> {
        shim_pids_mentioning(self.base())
    }

    /// What containers and shims outlive containerd: `runc delete --force` of every container
    /// in the instance's runc root, SIGKILL to its shims (waiting for them to go), and removal
    /// of the shims' sockets. Call it after [`Containerd::stop`]; Drop does.
    pub fn kill_tasks(&self) -> Result<()> {
        let mut problems = Vec::new();
        // The shims' socket addresses (`unix:///run/containerd/s/<hash>`), read before the
        // shims go: a killed shim leaves its socket file behind.
        let sockets = self.shim_sockets();
        let root = self.runc_root();
        if root.is_dir() {
            let list = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-q"])
                .output()
                .context("runc list")?;
            for id in String::from_utf8_lossy(&list.stdout).lines() {
                let out = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output()
                    .context("runc delete")?;
                if !out.status.success() {
                    problems.push(format!(
                        "runc delete --force {id}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let pids = self.shim_pids();
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!("shims still alive after SIGKILL: {pids:?}"));
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for s in sockets {
            let _ = std::fs::remove_file(&s);
        }
        self.remove_cni_cache();
        // The socket dir is containerd's, not ours; leave it only if something else uses it.
        for d in [SHIM_SOCKET_DIR, "/run/containerd"] {
            let _ = std::fs::remove_dir(d);
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    }

    /// libcni caches each attachment in `/var/lib/cni/results/<network>-<sandbox>-<ifname>`
    /// (containerd 1.6 has no setting for that dir); CNI DEL removes it. Removes what is left
    /// for this instance's sandboxes, then the dirs if they are empty.
    fn remove_cni_cache(&self) {
        let mut ids = Vec::new();
        for dir in [&self.root, &self.state] {
            let sandboxes = dir.join("io.containerd.grpc.v1.cri").join("sandboxes");
            for e in std::fs::read_dir(sandboxes).into_iter().flatten().flatten() {
                ids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let results = Path::new(CNI_CACHE_DIR).join("results");
        for e in std::fs::read_dir(&results).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Only when empty: another runtime may use them.
        let _ = std::fs::remove_dir(&results);
        let _ = std::fs::remove_dir(CNI_CACHE_DIR);
    }

    /// Socket files of this instance's shims, from `<state>/io.containerd.runtime.v2.task/
    /// <namespace>/<id>/address`; only paths under [`SHIM_SOCKET_DIR`].
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let tasks = self.state.join("io.containerd.runtime.v2.task");
        let mut out = Vec::new();
        for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let Ok(addr) = std::fs::read_to_string(task.path().join("address")) else {
                    continue;
                };
                let path = PathBuf::from(addr.trim().trim_start_matches("unix://"));
                if path.parent() == Some(Path::new(SHIM_SOCKET_DIR)) {
                    out.push(path);
                }
            }
        }
        out
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.log_path())?;
        let bin = containerd_bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--log-level")
            .arg("info")
            .current_dir(self.base())
            .env("TMPDIR", self.base().join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Proxies must not divert the loopback pulls anywhere.
        for key in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(key);
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!(
                "containerd exited with {status} at start; log tail:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_err = String::from("socket not there");
        while Instant::now() < deadline {
            self.check_alive()?;
            if self.socket.exists() {
                // The socket serves before the CRI plugin is initialized; until then its RPCs
                // fail with "server is not initialized yet".
                match self.version().await {
                    Ok(_) => return Ok(()),
                    Err(e) => last_err = format!("{e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "containerd's CRI plugin not ready within {READY_TIMEOUT:?} ({last_err}); log tail:\n{}",
            self.log_tail(40)
        )
    }

    /// CRI `Version` of the running daemon.
    pub async fn version(&self) -> Result<k8s_cri::v1::VersionResponse> {
        let mut clients = crate::cri::connect(&self.socket).await?;
        let v = clients
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner();
        Ok(v)
    }

    pub async fn clients(&self) -> Result<crate::cri::Clients> {
        crate::cri::connect(&self.socket).await
    }

    /// SIGTERM, then SIGKILL after a timeout; waits for the exit.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    child.wait()?;
                    bail!("containerd ignored SIGTERM for {STOP_TIMEOUT:?}; killed");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Unmounts (lazily, deepest first) every mount point under the temp dir.
    pub fn unmount_all(&self) -> Result<()> {
        let base = self.base();
        let mut failed = Vec::new();
        // A mount may be stacked several times; repeat until none is left (bounded).
        for _ in 0..8 {
            let mut points = mounts_under(base)?;
            if points.is_empty() {
                break;
            }
            points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            failed.clear();
            for p in points {
                if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                    failed.push(format!("{}: {e}", p.display()));
                }
            }
        }
        let left = mounts_under(base)?;
        if !left.is_empty() {
            bail!(
                "mounts left under {}: {left:?} ({failed:?})",
                base.display()
            );
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("containerd: {e:#}");
        }
        if let Err(e) = self.kill_tasks() {
            eprintln!("containerd: {e:#}");
        }
        if std::thread::panicking() {
            eprintln!("---- containerd log (tail) ----\n{}", self.log_tail(100));
        }
        if let Err(e) = self.unmount_all() {
            // Removing the tree under a live mount would delete the mounted content; keep it.
            eprintln!("containerd: {e:#}; keeping {}", self.base().display());
            if let Some(d) = self.dir.take() {
                let _ = d.keep();
            }
            return;
        }
        if let Some(d) = self.dir.take()
            && let Err(e) = d.close()
        {
            eprintln!("containerd: removing temp dir: {e}");
        }
    }
}

/// Where containerd 1.6 puts its shims' sockets, whatever its state dir.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// libcni's default cache dir.
const CNI_CACHE_DIR: &str = "/var/lib/cni";

/// Pids of `containerd-shim-runc-v2` processes whose command line mentions `dir`.
fn shim_pids_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let argv0 = String::from_utf8_lossy(args.next()?).into_owned();
            let is_shim = Path::new(&argv0)
                .file_name()
                .is_some_and(|n| n == "containerd-shim-runc-v2");
            (is_shim && args.any(|a| String::from_utf8_lossy(a).contains(&needle))).then_some(pid)
        })
        .collect()
}

/// Mount points at or below `base`, from /proc/self/mountinfo.
pub fn mounts_under(base: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(base))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_loopback_hostport(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// `certs.d/<host:port>/hosts.toml` for each registry, plus a `_default` that sends every other
/// host to a closed loopback port. containerd 1.6 ignores a `hosts.toml` without a
/// `[host."<url>"]` table (it fails to decode silently) and falls back to the public registry, so
/// the table is always written.
fn write_hosts(certs: &Path, registries: &[String]) -> Result<()> {
    let mut hosts: HashMap<String, String> = HashMap::new();
    for r in registries {
        ensure!(
            is_loopback_hostport(r),
            "refusing non-loopback registry {r}"
        );
        hosts.insert(r.clone(), format!("http://{r}"));
    }
    hosts.insert("_default".into(), BLACKHOLE.into());
    for (dir, url) in hosts {
        let d = certs.join(dir);
        std::fs::create_dir_all(&d)?;
        std::fs::write(
            d.join("hosts.toml"),
            format!(
                "server = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            ),
        )?;
    }
    Ok(())
}

fn toml_str(p: &Path) -> String {
    // Debug formatting of a str is a valid TOML basic string for the paths we create.
    format!("{:?}", p.display().to_string())
}

fn config_toml(base: &Path, opts: &ContainerdOptions) -> String {
    // Debug formatting of a str is a valid TOML basic string for image references.
    let sandbox_image = format!(
        "{:?}",
        opts.sandbox_image
            .as_deref()
            .unwrap_or("127.0.0.1:1/pause:none")
    );
    let cni_bin = opts
        .cni_bin_dir
        .clone()
        .unwrap_or_else(|| base.join("cni/bin"));
    let cni_conf = opts
        .cni_conf_dir
        .clone()
        .unwrap_or_else(|| base.join("cni/net.d"));
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| format!("{p:?}")).collect();
    let mut cri = String::new();
    if let Some(n) = opts.max_concurrent_downloads {
        let _ = writeln!(cri, "  max_concurrent_downloads = {n}");
    }
    for line in opts.cri_extra.lines() {
        let _ = writeln!(cri, "  {line}");
    }
    format!(
        r#"version = 2
root = {root}
state = {state}
temp = {tmp}
oom_score = 0
disabled_plugins = [{disabled}]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}

  [plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  sandbox_image = {sandbox_image}
{cri}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = {runc_root}

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {certs}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
"#,
        root = toml_str(&base.join("root")),
        state = toml_str(&base.join("state")),
        tmp = toml_str(&base.join("tmp")),
        disabled = disabled.join(", "),
        grpc = toml_str(&base.join("containerd.sock")),
        ttrpc = toml_str(&base.join("containerd.ttrpc.sock")),
        opt = toml_str(&base.join("opt")),
        certs = toml_str(&base.join("certs.d")),
        runc_root = toml_str(&base.join("runc")),
        cni_bin = toml_str(&cni_bin),
        cni_conf = toml_str(&cni_conf),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain\04"), r"/plain\04");
    }

    #[test]
    fn hosts_toml_always_has_host_table() {
        let d = tempfile::tempdir().unwrap();
        write_hosts(d.path(), &["127.0.0.1:5000".into()]).unwrap();
        let t = std::fs::read_to_string(d.path().join("127.0.0.1:5000/hosts.toml")).unwrap();
        assert!(t.contains("server = \"http://127.0.0.1:5000\""));
        assert!(t.contains("[host.\"http://127.0.0.1:5000\"]"));
        let t = std::fs::read_to_string(d.path().join("_default/hosts.toml")).unwrap();
        assert!(t.contains("[host.\"http://127.0.0.1:1\"]"));
        assert!(write_hosts(d.path(), &["registry-1.docker.io".into()]).is_err());
    }

    #[test]
    fn config_names_sandbox_image_cni_dirs_and_a_private_runc_root() {
        let base = Path::new("/tmp/containerd-e2e-x");
        let t = config_toml(base, &ContainerdOptions::default());
        assert!(
            t.contains("sandbox_image = \"127.0.0.1:1/pause:none\""),
            "{t}"
        );
        assert!(
            t.contains("bin_dir = \"/tmp/containerd-e2e-x/cni/bin\""),
            "{t}"
        );
        assert!(t.contains("Root = \"/tmp/containerd-e2e-x/runc\""), "{t}");
        assert!(t.contains("SystemdCgroup = false"), "{t}");
        let t = config_toml(
            base,
            &ContainerdOptions {
                sandbox_image: Some("127.0.0.1:5000/bench/pause:1".into()),
                cni_bin_dir: Some("/usr/lib/cni".into()),
                cni_conf_dir: Some("/tmp/conf".into()),
                ..Default::default()
            },
        );
        assert!(
            t.contains("sandbox_image = \"127.0.0.1:5000/bench/pause:1\""),
            "{t}"
        );
        assert!(t.contains("bin_dir = \"/usr/lib/cni\""), "{t}");
        assert!(t.contains("conf_dir = \"/tmp/conf\""), "{t}");
    }

    /// Another host than the configured ones goes to the closed loopback port, never out; and
    /// Drop unmounts what is left under the temp dir and removes it.
    #[tokio::test]
    async fn other_registries_blackholed_and_drop_cleans_up() {
        if !containerd_bin().exists() || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root and {}", containerd_bin().display());
            return;
        }
        let c = Containerd::start(&ContainerdOptions::default())
            .await
            .unwrap();
        let mut clients = c.clients().await.unwrap();
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            clients.image.pull_image(k8s_cri::v1::PullImageRequest {
                image: Some(k8s_cri::v1::ImageSpec {
                    image: "docker.io/library/busybox:latest".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await
        .expect("pull of a foreign image must fail fast")
        .unwrap_err();
        eprintln!("foreign pull: {}", err.message());
        assert!(err.message().contains("127.0.0.1:1"), "{err:?}");

        let base = c.base().to_path_buf();
        let mnt = c.root.join("leftover");
        std::fs::create_dir_all(&mnt).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        assert_eq!(mounts_under(&base).unwrap(), vec![mnt]);
        let pid = c.pid().unwrap();
        drop(c);
        assert!(mounts_under(&base).unwrap().is_empty());
        assert!(!base.exists());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
