//! The cri-server daemon's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cri_server::config::{Config, DEFAULT_CONFIG, LogFormat};

#[derive(Parser)]
#[command(
    name = "cri-server",
    version,
    about = "CRI v1 runtime and image service for the kubelet"
)]
struct Cli {
    /// Config file (TOML). Default: /etc/cri-server/config.toml if it exists, else built-in
    /// defaults (see `cri-server config default`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to listen on (overrides `listen`).
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Directory for persistent data: images, layers, records (overrides `root`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for volatile runtime state (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log format, text or json (overrides `log.format`).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter such as info or cri_server=debug (overrides `log.level`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, commented.
    Default,
    /// Load and validate the configuration, then print it as the daemon would use it.
    Check,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(p) = &cli.listen {
        config.listen = p.clone();
    }
    if let Some(p) = &cli.root {
        config.root = p.clone();
    }
    if let Some(p) = &cli.state_dir {
        config.state_dir = p.clone();
    }
    if let Some(f) = &cli.log_format {
        config.log.format = match f.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => anyhow::bail!("--log-format: {other:?} is not text or json"),
        };
    }
    if let Some(l) = &cli.log_level {
        config.log.level = l.clone();
    }
    // Flags are checked as strictly as the file.
    let text = toml::to_string(&config)?;
    Ok(Config::parse(
        &text,
        std::path::Path::new("<command line>"),
    )?)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config {
        what: ConfigCommand::Default,
    }) = &cli.command
    {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-server: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        what: ConfigCommand::Check,
    }) = &cli.command
    {
        print!("{}", toml::to_string(&config).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    // Few malloc arenas: a daemon that mostly waits should not keep one per thread that once
    // buffered a pull.
    // SAFETY: mallopt only sets allocator tunables, before any other thread exists.
    // A fixed mmap threshold: large buffers (layer unpacking, gRPC messages) are mapped and
    // unmapped instead of growing the heap for good (glibc's adaptive threshold would
    // otherwise climb after the first pull).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cri-server: start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cri_server::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cri-server failed");
            ExitCode::FAILURE
        }
    }
}
