//! cri-exec refuses a pid that is not the named container's init, and reports that on its
//! status fd (3) as a setup failure, so cri-server falls back instead of running anything.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn a_pid_that_is_not_the_containers_init_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"process":{"user":{"uid":0,"gid":0},"cwd":"/"}}"#,
    )
    .unwrap();
    let marker = dir.path().join("ran");
    let (r, w) = nix::unistd::pipe().unwrap();
    let wfd = w.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cri-exec"));
    cmd.arg("--pid")
        .arg(std::process::id().to_string())
        .args(["--id", "not-this-one", "--config"])
        .arg(&config)
        .args(["--", "/bin/touch"])
        .arg(&marker);
    // SAFETY: dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::dup2(wfd, 3);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(w);
    let status =
        std::fs::read_to_string(format!("/proc/self/fd/{}", r.as_raw_fd())).unwrap_or_default();
    assert_eq!(out.status.code(), Some(255));
    assert!(status.starts_with("E "), "status line: {status:?}");
    assert!(
        status.contains("is not container not-this-one's init"),
        "{status}"
    );
    assert!(!marker.exists(), "nothing ran");
}
