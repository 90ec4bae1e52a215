//! Crash points for tests: when `FLEXVOLUME_DRIVER_FAULT` names a point, the process
//! dies there at once (`_exit(137)`, as if killed: no reply, no destructors, no record
//! written), so tests can check that a retry converges from every intermediate state.

/// Dies here if `FLEXVOLUME_DRIVER_FAULT` equals `point`.
pub fn crash_point(point: &str) {
    if std::env::var("FLEXVOLUME_DRIVER_FAULT").is_ok_and(|v| v == point) {
        tracing::warn!(point, "crash point reached: exiting as if killed");
        // SAFETY: _exit ends the process without running any Rust code afterwards.
        unsafe { libc::_exit(137) };
    }
}
