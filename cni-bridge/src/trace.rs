//! Per-phase timestamps for profiling: with `CNI_BRIDGE_TRACE=1` in its environment, the
//! plugin prints on stderr the microseconds since its start at each phase of a command.
//! Off by default; then a `mark` costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();

/// Turns tracing on when `CNI_BRIDGE_TRACE` is set and not `0`; call first thing in `main`.
pub fn init(var: impl Fn(&str) -> Option<String>) {
    if var("CNI_BRIDGE_TRACE").is_some_and(|v| !v.is_empty() && v != "0") {
        START.get_or_init(Instant::now);
        ENABLED.store(true, Ordering::Relaxed);
    }
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Prints `cni-bridge: trace <µs> <what>` when tracing is on.
pub fn mark(what: &str) {
    if !enabled() {
        return;
    }
    let us = START.get().map_or(0, |s| s.elapsed().as_micros());
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let faults = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    };
    eprintln!("cni-bridge: trace {us:>6}us {faults:>4}flt {what}");
}
