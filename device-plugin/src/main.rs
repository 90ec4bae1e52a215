//! device-plugin: a kubelet device plugin (v1beta1) for NVIDIA GPUs and for devices described
//! in a JSON file. Configuration: a TOML file, overridden by environment variables, overridden
//! by flags (`device-plugin --help`, `device-plugin config default`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use device_plugin::config::{
    Backend, Config, DEFAULT_CONFIG, LogFormat, OnMissingDriver, Strategy,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "device-plugin",
    version,
    about = "Kubelet device plugin (v1beta1) for NVIDIA GPUs and file-described devices"
)]
struct Cli {
    /// Config file (TOML). Default: /etc/device-plugin/config.toml if it exists.
    #[arg(long, env = "DP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The kubelet's device plugin directory (holds kubelet.sock).
    #[arg(long, env = "DP_DEVICE_PLUGIN_DIR", value_name = "DIR")]
    device_plugin_dir: Option<PathBuf>,
    /// The plugin's socket file name in that directory.
    #[arg(long, env = "DP_SOCKET_NAME", value_name = "NAME")]
    socket_name: Option<String>,
    /// The extended resource name, e.g. nvidia.com/gpu.
    #[arg(long, env = "DP_RESOURCE_NAME", value_name = "NAME")]
    resource_name: Option<String>,
    /// Discovery backend.
    #[arg(long, env = "DP_BACKEND", value_enum)]
    backend: Option<Backend>,
    /// Device file of the file backend (JSON).
    #[arg(long, env = "DP_DEVICES_FILE", value_name = "FILE")]
    devices_file: Option<PathBuf>,
    /// What the nvml backend does without a driver.
    #[arg(long, env = "DP_ON_MISSING_DRIVER", value_enum)]
    on_missing_driver: Option<OnMissingDriver>,
    /// The NVML library (name or path).
    #[arg(long, env = "DP_NVML_LIBRARY", value_name = "LIB")]
    nvml_library: Option<String>,
    /// XIDs that leave a GPU healthy (besides 13,31,43,45,68,109), or "all".
    #[arg(long, env = "DP_DISABLE_HEALTHCHECKS", value_name = "LIST")]
    disable_health_checks: Option<String>,
    /// Where the host's / is seen (device nodes and driver root are looked up under it).
    #[arg(long, env = "DP_HOST_ROOT", value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// Ask the kubelet to call PreStartContainer.
    #[arg(long, env = "DP_PRE_START_REQUIRED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pre_start_required: Option<bool>,
    /// Offer GetPreferredAllocation.
    #[arg(long, env = "DP_GET_PREFERRED_ALLOCATION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    get_preferred_allocation_available: Option<bool>,
    /// What Allocate returns (comma-separated).
    #[arg(
        long,
        env = "DP_DEVICE_LIST_STRATEGY",
        value_enum,
        value_delimiter = ','
    )]
    device_list_strategy: Option<Vec<Strategy>>,
    /// Return device nodes in Allocate.
    #[arg(long, env = "DP_PASS_DEVICE_SPECS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pass_device_specs: Option<bool>,
    /// The variable listing the allocated device IDs.
    #[arg(long, env = "DP_VISIBLE_DEVICES_ENV", value_name = "NAME")]
    visible_devices_env: Option<String>,
    /// Host directory with the driver's lib64/ and bin/, mounted read-only.
    #[arg(long, env = "DP_DRIVER_ROOT", value_name = "DIR")]
    driver_root: Option<String>,
    /// Where the driver directories appear in containers.
    #[arg(long, env = "DP_DRIVER_CONTAINER_ROOT", value_name = "DIR")]
    driver_container_root: Option<PathBuf>,
    /// Directory the CDI spec is written to.
    #[arg(long, env = "DP_CDI_SPEC_DIR", value_name = "DIR")]
    cdi_spec_dir: Option<PathBuf>,
    /// CDI kind (vendor.com/class); default: the resource name.
    #[arg(long, env = "DP_CDI_KIND", value_name = "KIND")]
    cdi_kind: Option<String>,
    /// Prefix of the CDI annotation keys.
    #[arg(long, env = "DP_CDI_ANNOTATION_PREFIX", value_name = "PREFIX")]
    cdi_annotation_prefix: Option<String>,
    /// Time-slicing replicas per device.
    #[arg(long, env = "DP_REPLICAS", value_name = "N")]
    replicas: Option<u32>,
    /// Log format.
    #[arg(long, env = "DP_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter such as info or device_plugin=debug.
    #[arg(long, env = "DP_LOG_LEVEL", value_name = "FILTER")]
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
    /// Load the configuration (file, environment, flags), check it, print it.
    Check,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut c = Config::load(cli.config.as_deref())?;
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = &cli.$field {
                c.$field = v.clone();
            }
        )*};
    }
    set!(
        device_plugin_dir,
        socket_name,
        resource_name,
        backend,
        devices_file,
        on_missing_driver,
        nvml_library,
        disable_health_checks,
        host_root,
        pre_start_required,
        get_preferred_allocation_available,
        device_list_strategy,
        pass_device_specs,
        visible_devices_env,
        driver_root,
        driver_container_root,
        cdi_spec_dir,
        cdi_kind,
        cdi_annotation_prefix,
        replicas
    );
    if let Some(f) = cli.log_format {
        c.log.format = f;
    }
    if let Some(l) = &cli.log_level {
        c.log.level = l.clone();
    }
    c.validate()?;
    Ok(c)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called (inside
/// the runtime), not when the future is first polled, so an early SIGTERM is not fatal.
fn terminated() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
    })
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
            eprintln!("device-plugin: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        what: ConfigCommand::Check,
    }) = &cli.command
    {
        match toml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("device-plugin: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        resource = %config.resource_name,
        backend = ?config.backend,
        "device-plugin starting"
    );
    let result = runtime.block_on(async {
        let shutdown = match terminated() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers");
                return Err(None);
            }
        };
        device_plugin::daemon::run(config, shutdown)
            .await
            .map_err(Some)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(None) => ExitCode::FAILURE,
        Err(Some(e)) => {
            error!(error = %e, "device-plugin failed");
            ExitCode::FAILURE
        }
    }
}
