//! Pull benchmark: cri-server against containerd 1.6 (Debian's), both driven through the CRI
//! ImageService, from a local registry on 127.0.0.1, each round from a cold store.
//!
//! ```text
//! cargo run --release -p e2e --bin bench_pull -- [--rounds N] [--no-build]
//! ```
//!
//! Only the PullImage RPC is timed: starting the daemons, `sync(2)` before the pull (so one
//! round's dirty pages are not written back during the next one), the ImageStatus check and the
//! store's disk usage afterwards are not.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri::Clients;
use e2e::daemon::CriServer;
use e2e::images::{Compression, ImageSpec, Pusher, random_layer};
use e2e::registry::Registry;
use k8s_cri::v1::{ImageStatusRequest, PullImageRequest};

const REPO: &str = "bench/pull";
const TAG: &str = "v1";
const LAYERS: usize = 6;
const LAYER_MIB: usize = 20;
const DEFAULT_ROUNDS: usize = 3;
/// The target: cri-server's median pull time at most this fraction of containerd's.
const TARGET_RATIO: f64 = 0.7;
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

const USAGE: &str = "usage: bench_pull [--rounds N] [--no-build]

Pulls a 6 x 20 MiB gzip-layer image from a local registry with cri-server and with containerd
(/usr/bin/containerd, CRI plugin), each round from a cold store, and prints the times.

  --rounds N   rounds per runtime (default 3)
  --no-build   do not run `cargo build -p cri-server` first; use the binary next to this one
               (or $CRI_SERVER_BIN)";

struct Args {
    rounds: usize,
    build: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rounds: DEFAULT_ROUNDS,
        build: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" | "-n" => {
                let v = it.next().context("--rounds needs a value")?;
                args.rounds = v.parse().with_context(|| format!("bad --rounds {v:?}"))?;
            }
            s if s.starts_with("--rounds=") => {
                let v = &s["--rounds=".len()..];
                args.rounds = v.parse().with_context(|| format!("bad --rounds {v:?}"))?;
            }
            "--no-build" => args.build = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    Ok(args)
}

fn main() -> ExitCode {
    match bench_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_pull: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn bench_main() -> Result<()> {
    let args = parse_args()?;
    let bin = e2e::daemon::daemon_binaries(args.build)?;
    // SAFETY: no other thread exists yet (the tokio runtime is built below); CriServer reads
    // this to find the binary.
    unsafe { std::env::set_var("CRI_SERVER_BIN", &bin) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // On a signal the benchmark future is dropped, and with it (Drop guards) every daemon,
        // the registry and containerd's mounts.
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

#[derive(Clone, Copy)]
enum Runtime {
    CriServer { downloads: Option<usize> },
    Containerd,
}

struct Row {
    label: String,
    runtime: Runtime,
    times: Vec<Duration>,
    disk: Vec<u64>,
}

struct Bench {
    registry_addr: String,
    reference: String,
    config_digest: String,
}

async fn run(args: &Args) -> Result<()> {
    let registry = Registry::start().context("cannot start the local registry")?;
    let bench = Bench {
        registry_addr: registry.addr().to_string(),
        reference: format!("{}/{REPO}:{TAG}", registry.addr()),
        config_digest: String::new(),
    };
    eprintln!("registry on {}", registry.url());

    // Probe containerd once up front: fail fast (and name its version in the table).
    let containerd_version = {
        let c = Containerd::start(&containerd_options(&bench))
            .await
            .context("cannot start containerd")?;
        let v = c.version().await?;
        ensure!(
            v.runtime_name == "containerd",
            "the peer says it is {:?}, not containerd",
            v.runtime_name
        );
        v.runtime_version
            .split('~')
            .next()
            .unwrap_or_default()
            .to_string()
    };

    let (config_digest, image_bytes) = push_image(&registry).await?;
    let bench = Bench {
        config_digest,
        ..bench
    };

    let mut rows = vec![
        Row::new(
            "cri-server (6 parallel)",
            Runtime::CriServer { downloads: None },
        ),
        Row::new(
            "cri-server (3 parallel)",
            Runtime::CriServer { downloads: Some(3) },
        ),
        Row::new(
            &format!("containerd {containerd_version} (3)"),
            Runtime::Containerd,
        ),
    ];

    // Rounds interleave the runtimes so that drift (page cache, writeback, other load) spreads
    // over all of them.
    for round in 1..=args.rounds {
        for row in &mut rows {
            let (t, disk) = pull_once(&bench, row.runtime)
                .await
                .with_context(|| format!("{} round {round}", row.label))?;
            eprintln!(
                "round {round}: {:<28} {:>6.2}s  store {}",
                row.label,
                t.as_secs_f64(),
                mb(disk)
            );
            row.times.push(t);
            row.disk.push(disk);
        }
    }

    println!();
    println!(
        "pull {LAYERS} x {LAYER_MIB} MiB gzip layers (~{:.0} MB) from 127.0.0.1 registry, cold store, {} rounds",
        image_bytes as f64 / 1e6,
        args.rounds
    );
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(0) + 2;
    for row in &rows {
        let times: Vec<String> = row
            .times
            .iter()
            .map(|t| format!("{:.2}s", t.as_secs_f64()))
            .collect();
        let med = row.median();
        println!(
            "{:<width$}{}  median {:.2}s  ({:.0} MB/s)  store {}",
            row.label,
            times.join(" "),
            med.as_secs_f64(),
            image_bytes as f64 / 1e6 / med.as_secs_f64(),
            mb(*row.disk.iter().max().unwrap_or(&0)),
        );
    }
    let containerd = rows[2].median().as_secs_f64();
    for (row, name) in [(&rows[0], "cri-server(6)"), (&rows[1], "cri-server(3)")] {
        let ratio = row.median().as_secs_f64() / containerd;
        println!(
            "ratio {name}/containerd (median): {ratio:.2}  (target <= {TARGET_RATIO:.2}: {})",
            if ratio <= TARGET_RATIO {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!(
        "store = disk usage (du) of the runtime's root after the pull; containerd keeps the \
         compressed blobs in its content store besides the unpacked snapshots"
    );
    drop(registry);
    Ok(())
}

impl Row {
    fn new(label: &str, runtime: Runtime) -> Row {
        Row {
            label: label.to_string(),
            runtime,
            times: Vec::new(),
            disk: Vec::new(),
        }
    }

    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn containerd_options(bench: &Bench) -> ContainerdOptions {
    ContainerdOptions {
        insecure_registries: vec![bench.registry_addr.clone()],
        // containerd's default, spelled out.
        max_concurrent_downloads: Some(3),
        ..Default::default()
    }
}

/// Builds and pushes the image; returns its config digest and the compressed size of its layers.
async fn push_image(registry: &Registry) -> Result<(String, u64)> {
    let t = Instant::now();
    let layers = tokio::task::spawn_blocking(|| {
        (0..LAYERS)
            .map(|i| random_layer(LAYER_MIB << 20, 0xbe7c_0000 + i as u64, Compression::Gzip))
            .collect::<Result<Vec<_>>>()
    })
    .await??;
    let bytes = layers.iter().map(|l| l.size).sum();
    let pushed = Pusher::for_registry(registry)?
        .push_image(REPO, Some(TAG), &ImageSpec::new(layers))
        .await
        .context("push the benchmark image")?;
    eprintln!(
        "pushed {}/{REPO}:{TAG} ({} bytes of layers) in {:.1}s",
        registry.addr(),
        bytes,
        t.elapsed().as_secs_f64()
    );
    Ok((pushed.config_digest, bytes))
}

/// One cold pull: a fresh daemon, `sync`, the timed PullImage, a check with ImageStatus, the
/// store's disk usage. The daemon is gone (and, for containerd, unmounted) when this returns.
async fn pull_once(bench: &Bench, runtime: Runtime) -> Result<(Duration, u64)> {
    match runtime {
        Runtime::CriServer { downloads } => {
            let mut extra = format!(
                "[registry]\ninsecure_registries = [\"{}\"]\n",
                bench.registry_addr
            );
            if let Some(n) = downloads {
                extra.push_str(&format!("[image]\nmax_concurrent_downloads = {n}\n"));
            }
            let server = CriServer::start(&extra).context("cannot start cri-server")?;
            let clients = server.clients().await?;
            let r = timed_pull(bench, clients, &server.root).await;
            if r.is_err() {
                eprintln!(
                    "---- cri-server log (tail) ----\n{}",
                    tail(&server.log(), 40)
                );
            }
            r
        }
        Runtime::Containerd => {
            let c = Containerd::start(&containerd_options(bench))
                .await
                .context("cannot start containerd")?;
            let clients = c.clients().await?;
            let r = timed_pull(bench, clients, &c.root).await;
            if r.is_err() {
                eprintln!("---- containerd log (tail) ----\n{}", c.log_tail(40));
            }
            r
        }
    }
}

async fn timed_pull(bench: &Bench, mut clients: Clients, root: &Path) -> Result<(Duration, u64)> {
    let spec = || k8s_cri::v1::ImageSpec {
        image: bench.reference.clone(),
        ..Default::default()
    };
    // Make sure the image is not there (a cold store), and flush earlier rounds' writes.
    let before = clients
        .image
        .image_status(ImageStatusRequest {
            image: Some(spec()),
            verbose: false,
        })
        .await?
        .into_inner();
    ensure!(
        before.image.is_none(),
        "store not cold: image already present"
    );
    tokio::task::spawn_blocking(nix::unistd::sync).await?;

    let start = Instant::now();
    let resp = tokio::time::timeout(
        PULL_TIMEOUT,
        clients.image.pull_image(PullImageRequest {
            image: Some(spec()),
            auth: None,
            sandbox_config: None,
        }),
    )
    .await
    .context("PullImage timed out")?
    .context("PullImage")?
    .into_inner();
    let elapsed = start.elapsed();

    let status = clients
        .image
        .image_status(ImageStatusRequest {
            image: Some(spec()),
            verbose: false,
        })
        .await?
        .into_inner();
    let image = status
        .image
        .context("ImageStatus after the pull: no image")?;
    ensure!(
        image.id == bench.config_digest,
        "ImageStatus id {} != pushed config digest {}",
        image.id,
        bench.config_digest
    );
    ensure!(
        !resp.image_ref.is_empty(),
        "PullImage returned no image_ref"
    );
    let root = root.to_path_buf();
    let disk = tokio::task::spawn_blocking(move || disk_usage(&root)).await??;
    Ok((elapsed, disk))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `du -s --one-file-system`: allocated bytes under `root`, hard links counted once, not
/// descending into other mounts.
fn disk_usage(root: &Path) -> Result<u64> {
    let dev = std::fs::symlink_metadata(root)
        .with_context(|| format!("stat {}", root.display()))?
        .dev();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.dev() != dev {
            continue;
        }
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(total)
}
