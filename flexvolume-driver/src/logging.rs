//! Logging set-up. In Flexvolume mode nothing may reach stderr (the kubelet parses
//! stdout and stderr together), so logs go to a file or nowhere.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("FLEXVOLUME_DRIVER_LOG_LEVEL")
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Sends logs to `path` (appending). If the file cannot be opened, logs are dropped:
/// stderr is never used. Also routes panics to the log instead of stderr.
pub fn init_file(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init();
        }
        Err(_) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::sink)
                .try_init();
        }
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "flexvolume-driver panicked");
    }));
}

/// Sends logs to stderr (the CSI daemon's normal place for logs).
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .try_init();
}
