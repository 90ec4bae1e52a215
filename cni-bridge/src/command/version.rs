//! VERSION: the spec versions we speak.

use serde_json::{Value, json};

use crate::cni::version::{LATEST, SUPPORTED};

pub fn version(requested: Option<&str>) -> Value {
    let v = requested
        .filter(|v| SUPPORTED.contains(v))
        .unwrap_or(LATEST);
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED })
}
