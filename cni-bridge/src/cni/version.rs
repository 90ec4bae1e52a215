//! Spec versions this plugin speaks.

use super::error::{Error, Result};

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

pub fn check_supported(v: &str) -> Result<()> {
    if SUPPORTED.contains(&v) {
        Ok(())
    } else if v.is_empty() {
        Err(Error::IncompatibleVersion(
            "(none: cniVersion is missing)".into(),
        ))
    } else {
        Err(Error::IncompatibleVersion(format!(
            "{v} (supported: {})",
            SUPPORTED.join(", ")
        )))
    }
}

/// (major, minor, patch) of a dotted version; unparsable parts count as 0.
pub fn parse(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

pub fn at_least(v: &str, min: &str) -> bool {
    parse(v) >= parse(min)
}
