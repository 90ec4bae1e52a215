//! What an operator installs from deploy/ is checked against the real binaries.

use std::path::PathBuf;
use std::process::Command;

use e2e::daemon::bin_path;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn deploy_config_is_the_printed_default_config() {
    let out = Command::new(bin_path("cri-server"))
        .args(["config", "default"])
        .output()
        .unwrap();
    let shipped = std::fs::read_to_string(repo_file("deploy/config.toml")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        shipped,
        "regenerate with `cri-server config default > deploy/config.toml`"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    // Verify needs ExecStart to exist: point it at the freshly built binary.
    let unit = std::fs::read_to_string(repo_file("deploy/cri-server.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/cri-server --config /etc/cri-server/config.toml")
    );
    let unit = unit.replace(
        "/usr/local/bin/cri-server",
        bin_path("cri-server").to_str().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cri-server.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("cri-server.service:"),
        "{stderr}"
    );
}
