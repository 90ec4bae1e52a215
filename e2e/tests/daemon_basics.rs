//! The cri-server daemon itself: CLI, config errors, socket, RuntimeService basics.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use e2e::daemon::{CriServer, bin_path};
use k8s_cri::v1::{
    ExecRequest, RunPodSandboxRequest, RuntimeConfigRequest, StatusRequest, VersionRequest,
};
use tonic::Code;

fn cri_server(args: &[&str]) -> std::process::Output {
    Command::new(bin_path("cri-server"))
        .args(args)
        .output()
        .expect("run cri-server")
}

#[test]
fn config_default_prints_a_config_the_daemon_accepts() {
    let out = cri_server(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# ") && text.contains("listen = \"/run/cri-server/cri-server.sock\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let out = cri_server(&["--config", path.to_str().unwrap(), "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_explains_every_flag() {
    let out = cri_server(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--root",
        "--state-dir",
        "--log-format",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn bad_config_fails_at_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[image]\nmax_concurrent_downloads = \"many\"\n").unwrap();
    let out = cri_server(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("max_concurrent_downloads"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    std::fs::write(&path, "[registry]\nmirrors = 1\n").unwrap();
    let out = cri_server(&["--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("mirrors"), "{err}");

    let out = cri_server(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    let out = cri_server(&["--config", path.to_str().unwrap(), "--log-format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn socket_is_0660_and_runtime_basics_answer() {
    let server = CriServer::start("").unwrap();
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let mut c = server.clients().await.unwrap();
    let v = c
        .runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("cri-server", "v1")
    );
    let st = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    let runtime = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    let network = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(runtime.status);
    assert!(!network.status && !network.reason.is_empty());
    let rc = c
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(rc.linux.is_some());
    let err = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a sandbox needs a config"
    );
    // What has not landed yet says so, naming the RPC.
    let err = c
        .runtime
        .checkpoint_container(k8s_cri::v1::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"));
    // Exec has landed: it validates its request.
    let err = c.runtime.exec(ExecRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn second_server_on_a_live_socket_refuses_to_start() {
    let server = CriServer::start("").unwrap();
    let out = cri_server(&["--config", server.config_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // The first server still answers.
    assert!(std::os::unix::net::UnixStream::connect(&server.socket).is_ok());
}

#[tokio::test]
async fn metrics_endpoint_counts_calls_and_reports_pods_on_loopback() {
    let server = CriServer::start("").unwrap();
    let mut c = server.clients().await.unwrap();
    for _ in 0..3 {
        c.runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .unwrap();
    }
    let addr = std::fs::read_to_string(server.dir.path().join("state/metrics.addr"))
        .expect("metrics.addr");
    assert!(addr.starts_with("127.0.0.1:"), "loopback only: {addr}");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let text = get("/metrics");
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("cri_server_grpc_request_duration_seconds_count{method=\"/runtime.v1.RuntimeService/Version\"} 3"), "{text}");
    assert!(
        text.contains("cri_server_pods{state=\"ready\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("cri_server_containers{state=\"running\"} 0"),
        "{text}"
    );
    assert!(get("/other").contains(" 404 "));
}
