//! Where pulls run: a current-thread tokio runtime on a thread of its own that exists only
//! while a pull runs. When the last pull ends the runtime is dropped with everything a pull
//! left spawned on it (HTTP connection pools and their tasks, TLS configs) and the thread
//! exits, so an idle daemon keeps neither that memory nor the thread's stack.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct PullRuntime {
    running: Arc<Mutex<Option<Running>>>,
}

struct Running {
    handle: Handle,
    pulls: usize,
    stop: Option<oneshot::Sender<()>>,
}

impl PullRuntime {
    /// Runs `pull` on the pull runtime, starting one if none runs.
    pub fn spawn<F>(&self, pull: F) -> io::Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut running = self.running.lock().expect("pull runtime");
        if running.is_none() {
            *running = Some(start()?);
        }
        let r = running.as_mut().expect("just started");
        r.pulls += 1;
        let handle = r.handle.clone();
        drop(running);
        let done = Done(self.running.clone());
        Ok(handle.spawn(async move {
            let _done = done;
            pull.await
        }))
    }
}

/// Counts a pull out; the last one stops the runtime (a later pull starts a new one).
struct Done(Arc<Mutex<Option<Running>>>);

impl Drop for Done {
    fn drop(&mut self) {
        let mut running = self.0.lock().expect("pull runtime");
        if let Some(r) = running.as_mut() {
            r.pulls -= 1;
            if r.pulls == 0 {
                if let Some(stop) = r.stop.take() {
                    let _ = stop.send(());
                }
                *running = None;
            }
        }
    }
}

fn start() -> io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("cri-pull-blocking")
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("cri-pull".into())
        .spawn(move || {
            // Drives the pulls until the last one is done (its output is stored by then: this
            // future is polled only between tasks on this one thread).
            runtime.block_on(async {
                let _ = stopped.await;
            });
            drop(runtime);
            // Hand what the pulls and their clients freed back to the system.
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        })?;
    Ok(Running {
        handle,
        pulls: 0,
        stop: Some(stop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .count()
    }

    async fn until_no_pull_thread() {
        let hang_guard = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while threads_named("cri-pull") > 0 {
            assert!(
                std::time::Instant::now() < hang_guard,
                "the pull thread stays"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn pulls_run_on_a_thread_that_goes_when_the_last_one_ends() {
        let pulls = PullRuntime::default();
        let (release, wait) = oneshot::channel::<()>();
        let first = pulls
            .spawn(async move {
                let _ = wait.await;
                std::thread::current().name().map(str::to_string)
            })
            .unwrap();
        let second = pulls.spawn(async { 2 }).unwrap();
        assert_eq!(second.await.unwrap(), 2);
        // The first pull still runs: so does its thread.
        assert_eq!(threads_named("cri-pull"), 1);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().as_deref(), Some("cri-pull"));
        until_no_pull_thread().await;

        // A later pull gets a new runtime.
        let third = pulls
            .spawn(async {
                tokio::task::spawn_blocking(|| 3).await.unwrap()
                    + tokio::spawn(async { 4 }).await.unwrap()
            })
            .unwrap();
        assert_eq!(third.await.unwrap(), 7);
        until_no_pull_thread().await;
    }
}
