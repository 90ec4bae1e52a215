//! Crash points for tests: with `CRI_SERVER_FAILPOINT=<name>` in its environment the daemon
//! aborts (as abruptly as a kill -9) when it reaches the point of that name, so recovery can
//! be tested at the worst moments. Without the variable a point costs one atomic load.

use std::sync::OnceLock;

static POINT: OnceLock<Option<String>> = OnceLock::new();

pub fn hit(name: &str) {
    let point = POINT.get_or_init(|| {
        std::env::var("CRI_SERVER_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if point.as_deref() == Some(name) {
        eprintln!("cri-server: failpoint {name} reached: aborting");
        std::process::abort();
    }
}
