//! Wake-ups when named files in a directory are created, changed or removed (inotify, through
//! `notify`). Only a hint: the loops that use it also poll, so a lost watch (the directory
//! itself replaced) costs latency, never correctness.

use std::ffi::OsString;
use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::debug;

/// Keeps the watch alive; `wake` yields `()` after changes (coalesced).
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    pub wake: mpsc::Receiver<()>,
}

/// Watches `dir` for events on any of `names`. `None` (logged) if the watch cannot be set up,
/// e.g. because `dir` does not exist yet.
pub fn watch_dir(dir: &Path, names: Vec<OsString>) -> Option<DirWatch> {
    let (tx, wake) = mpsc::channel(1);
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let relevant = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names.iter().any(|want| want == n))
        });
        if relevant {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "no inotify watch; polling only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        debug!(dir = %dir.display(), error = %e, "no inotify watch; polling only");
        return None;
    }
    Some(DirWatch {
        _watcher: watcher,
        wake,
    })
}

impl DirWatch {
    /// Waits for the next wake-up; pending forever once the watcher is gone.
    pub async fn changed(&mut self) {
        if self.wake.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for a wake-up from `watch` if there is one, else forever.
pub async fn changed(watch: &mut Option<DirWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
