//! The monitor's own diagnostic log, `DIR/monitor.log`: one line per event, appended.
//! After detaching the daemon has no stdout/stderr, so this file is all it says.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

static LOG: OnceLock<(File, String)> = OnceLock::new();

/// Opens `path` for appending; every later [`diag!`] line goes there, tagged `sandbox`.
pub fn init(path: &Path, sandbox: &str) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let _ = LOG.set((file, sandbox.to_string()));
    Ok(())
}

/// Writes one line: `<timestamp> sandbox=<id> <message>`. Errors are dropped: there is
/// nowhere left to report them.
pub fn write(args: std::fmt::Arguments<'_>) {
    if let Some((mut file, sandbox)) = LOG.get().map(|(f, s)| (f, s)) {
        let ts = super::timestamp::format(super::timestamp::now_unix_nanos());
        let line = format!(
            "{} sandbox={sandbox} {args}\n",
            std::str::from_utf8(&ts).unwrap_or("?")
        );
        let _ = file.write_all(line.as_bytes());
    }
}

/// `diag!("container {id} exited")`: a line in `DIR/monitor.log`.
macro_rules! diag {
    ($($arg:tt)*) => {
        $crate::daemon::diag::write(format_args!($($arg)*))
    };
}
pub(crate) use diag;
