//! The monitor against real runc: logs, exit records, rotation, failures, survival.
//! Needs root, /usr/sbin/runc and /bin/busybox (busybox-static).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use common::{LogLine, Pod, Spec, pid_alive, read_log, vm_rss_kib, wait_for};
use cri_monitor::client::{Client, Error};
use cri_monitor::launch;

fn contents(lines: &[LogLine]) -> Vec<(&str, &str, &str)> {
    lines
        .iter()
        .map(|l| (l.stream.as_str(), l.tag.as_str(), l.content.as_str()))
        .collect()
}

#[test]
fn exit_code_and_output_lines_are_recorded() {
    let pod = Pod::start("exitcode");
    let script = "echo first; echo second; echo oops >&2; exit 3";
    let bundle = pod.run("c", &["sh", "-c", script], &Spec::default());

    let exit = pod.wait_exit(&bundle);
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert!(exit.exited_at_unix_nanos > 1_700_000_000_000_000_000);

    let lines = read_log(&pod.log_path("c"));
    let mut stdout: Vec<_> = contents(&lines)
        .into_iter()
        .filter(|l| l.0 == "stdout")
        .collect();
    stdout.sort();
    assert_eq!(
        stdout,
        [("stdout", "F", "first"), ("stdout", "F", "second")]
    );
    assert!(contents(&lines).contains(&("stderr", "F", "oops")));
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mode = fs::metadata(pod.log_path("c"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    let listed = pod.client().list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].exited);
    assert_eq!(listed[0].id, pod.cid("c"));
}

#[test]
fn run_detached_starts_at_once_and_records_an_exit_that_beats_the_runtime() {
    let pod = Pod::start("rundetach");
    // Exits at once: often before `runc run --detach` itself has returned, so before the
    // monitor knows the init's pid.
    let bundle = pod.bundle("c", &["sh", "-c", "echo up; exit 7"], &Spec::default());
    let mut request = pod.request("c", &bundle, &Spec::default());
    request.start = true;
    let pid = pod.create(request).expect("run container");
    assert!(pid > 0);
    let exit = pod.wait_exit(&bundle);
    assert_eq!(exit.exit_code, 7);
    let lines = read_log(&pod.log_path("c"));
    assert_eq!(contents(&lines), [("stdout", "F", "up")]);

    // A long-running one is running when the answer comes, without `runc start`.
    let bundle = pod.bundle("d", &["sleep", "1000"], &Spec::default());
    let mut request = pod.request("d", &bundle, &Spec::default());
    request.start = true;
    let pid = pod.create(request).expect("run container");
    let state = pod.runc(&["state", &pod.cid("d")]);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");
    assert_eq!(state["pid"], pid);

    // A failing run answers with the runtime's error and leaves no runtime container.
    let bundle = pod.bundle("e", &["/no/such/binary"], &Spec::default());
    let mut request = pod.request("e", &bundle, &Spec::default());
    request.start = true;
    let err = pod.create(request).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
    let listed = pod.runc(&["list", "-q"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.contains(&pod.cid("e")), "{listed}");
}

#[test]
fn sigkilled_container_records_137_and_signal_9() {
    let pod = Pod::start("sigkill");
    let bundle = pod.run("c", &["sleep", "1000"], &Spec::default());
    pod.runc_ok(&["kill", &pod.cid("c"), "KILL"]);

    let exit = pod.wait_exit(&bundle);
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.signal, Some(9));
    assert!(!exit.oom_killed);
}

#[test]
fn long_line_is_split_into_partial_pieces_then_a_full_one() {
    let pod = Pod::start("longline");
    // 40 KiB of 'a' then a newline, then a last line without newline.
    let script = "head -c 40960 /dev/zero | tr '\\0' a; echo; printf 'no newline'";
    let bundle = pod.run("c", &["sh", "-c", script], &Spec::default());
    assert_eq!(pod.wait_exit(&bundle).exit_code, 0);

    // The last partial line is written when the pipe reaches EOF, just after the exit.
    let lines = wait_for(Duration::from_secs(5), "4 log lines", || {
        let lines = read_log(&pod.log_path("c"));
        (lines.len() >= 4).then_some(lines)
    });
    let shape: Vec<_> = lines
        .iter()
        .map(|l| (l.tag.as_str(), l.content.len()))
        .collect();
    assert_eq!(shape, [("P", 16384), ("P", 16384), ("F", 8192), ("P", 10)]);
    assert!(
        lines[..3]
            .iter()
            .all(|l| l.content.bytes().all(|b| b == b'a'))
    );
    assert_eq!(lines[3].content, "no newline");
}

#[test]
fn reopen_log_sends_new_lines_to_a_new_file() {
    let pod = Pod::start("reopen");
    let script = "echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo after";
    let bundle = pod.run("c", &["sh", "-c", script], &Spec::default());
    let log = pod.log_path("c");
    wait_for(Duration::from_secs(10), "the first line", || {
        (!read_log(&log).is_empty()).then_some(())
    });

    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    pod.client().reopen_log(&pod.cid("c")).unwrap();
    fs::write(bundle.join("rootfs/tmp/go"), "").unwrap();
    assert_eq!(pod.wait_exit(&bundle).exit_code, 0);

    assert_eq!(contents(&read_log(&rotated)), [("stdout", "F", "before")]);
    assert_eq!(contents(&read_log(&log)), [("stdout", "F", "after")]);
    let unknown = pod.client().reopen_log("no-such-container");
    assert!(matches!(unknown, Err(Error::Monitor { .. })), "{unknown:?}");
}

#[test]
fn failed_create_reports_the_runtime_error_and_leaves_nothing() {
    let pod = Pod::start("badbundle");
    let bundle = pod.tmp().join("bundles/empty");
    fs::create_dir_all(&bundle).unwrap(); // no config.json, no rootfs
    let request = pod.request("bad", &bundle, &Spec::default());

    let response = pod
        .client()
        .call(&cri_monitor::protocol::Request::Create(request))
        .unwrap();
    assert!(!response.ok);
    let error = response.error.unwrap();
    assert!(error.contains("config.json"), "{error}");
    assert!(pod.client().list().unwrap().is_empty());
    assert!(!pod.log_path("bad").exists(), "an empty log file was left");
    assert!(pod.monitor_alive());

    // A runtime that does not exist fails the same way.
    let mut request = pod.request("bad2", &bundle, &Spec::default());
    request.runtime = "/nonexistent/runc".into();
    let error = pod.create(request).unwrap_err().to_string();
    assert!(error.contains("/nonexistent/runc"), "{error}");
    assert!(pod.client().list().unwrap().is_empty());
}

#[test]
fn monitor_outlives_the_process_that_started_it() {
    let pod = Pod::start("survive");
    // A second pod dir, started through a shell that exits right after: the stand-in for a
    // cri-server that goes away.
    let dir = pod.tmp().join("pod2");
    fs::create_dir_all(&dir).unwrap();
    let mut config = pod.monitor_config();
    config.dir = dir.clone();
    let starter = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" --sandbox-id survive2 --dir "$1" --runtime-root "$2" && echo $$"#)
        .arg(&config.program)
        .arg(&dir)
        .arg(&config.runtime_root)
        .output()
        .unwrap();
    assert!(starter.status.success(), "{starter:?}");
    let starter_pid: i32 = String::from_utf8(starter.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_alive(starter_pid));

    let pid = launch::read_pid(&dir).unwrap();
    let _guard = KillOnDrop(pid);
    assert!(pid_alive(pid));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let (ppid, sid): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(ppid, starter_pid);
    assert_eq!(sid, pid, "the daemon leads its own session");

    let socket = dir.join("monitor.sock");
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut client = Client::connect(&socket).unwrap();
    assert!(client.list().unwrap().is_empty());
    assert!(
        client.list().unwrap().is_empty(),
        "a second request on one connection"
    );
    client.shutdown().unwrap();
    wait_for(Duration::from_secs(5), "the monitor to exit", || {
        (!pid_alive(pid)).then_some(())
    });
    assert!(!socket.exists() && !dir.join("monitor.pid").exists());
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            // SAFETY: kill(2) on a monitor this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

#[test]
fn stale_socket_is_replaced_but_a_live_monitor_is_not() {
    let pod = Pod::start("stale");
    // A second monitor on the same dir must refuse: the first one listens.
    let err = launch::start(&pod.monitor_config())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another monitor"), "{err}");
    assert!(pod.monitor_alive());

    // A socket file nobody listens on is taken over.
    let dir = pod.tmp().join("stale");
    fs::create_dir_all(&dir).unwrap();
    drop(UnixListener::bind(dir.join("monitor.sock")).unwrap());
    let mut config = pod.monitor_config();
    config.dir = dir.clone();
    let started = launch::start(&config).expect("start over a stale socket");
    let _guard = KillOnDrop(started.pid);
    assert!(
        Client::connect(&started.socket)
            .unwrap()
            .list()
            .unwrap()
            .is_empty()
    );

    // SIGTERM with no container: it exits by itself.
    // SAFETY: kill(2) on the monitor started above.
    unsafe { libc::kill(started.pid, libc::SIGTERM) };
    wait_for(
        Duration::from_secs(5),
        "the monitor to exit on SIGTERM",
        || (!pid_alive(started.pid)).then_some(()),
    );
}

#[test]
fn sigterm_is_ignored_while_a_container_runs() {
    let pod = Pod::start("sigterm");
    let bundle = pod.run("c", &["sleep", "1000"], &Spec::default());
    // SAFETY: kill(2) on the monitor of this pod.
    unsafe { libc::kill(pod.monitor_pid, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    assert!(pod.monitor_alive());
    let listed = pod.client().list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].exited);

    pod.runc_ok(&["kill", &pod.cid("c"), "KILL"]);
    assert_eq!(pod.wait_exit(&bundle).exit_code, 137);
    pod.client().forget(&pod.cid("c")).unwrap();
    pod.client().forget("never-existed").unwrap();
    assert!(pod.client().list().unwrap().is_empty());
}

#[test]
fn oom_killed_container_is_reported() {
    let pod = Pod::start("oom");
    let spec = Spec {
        memory_limit: Some(8 * 1024 * 1024),
        ..Spec::default()
    };
    // tail keeps the whole "line" of an endless /dev/zero in memory.
    let bundle = pod.run("c", &["tail", "/dev/zero"], &spec);
    let exit = pod.wait_exit(&bundle);
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn tty_output_is_logged_as_stdout() {
    let pod = Pod::start("tty");
    let spec = Spec {
        tty: true,
        ..Spec::default()
    };
    let bundle = pod.run("c", &["sh", "-c", "echo hello tty; echo err >&2"], &spec);
    assert_eq!(pod.wait_exit(&bundle).exit_code, 0);
    let lines = wait_for(Duration::from_secs(5), "2 log lines", || {
        let lines = read_log(&pod.log_path("c"));
        (lines.len() >= 2).then_some(lines)
    });
    assert_eq!(
        contents(&lines),
        [("stdout", "F", "hello tty"), ("stdout", "F", "err")]
    );
}

#[test]
fn state_dir_longer_than_sun_path_still_serves() {
    let deep = format!(
        "var/lib/cri-server/sandboxes/{}",
        "0123456789abcdef".repeat(5)
    );
    let pod = Pod::start_in("deep", Some(&deep));
    assert!(pod.socket().as_os_str().len() > 108);
    // The tty's console socket lives in the same long dir.
    let spec = Spec {
        tty: true,
        ..Spec::default()
    };
    let bundle = pod.run("c", &["echo", "deep"], &spec);
    assert_eq!(pod.wait_exit(&bundle).exit_code, 0);
    wait_for(Duration::from_secs(5), "the log line", || {
        (contents(&read_log(&pod.log_path("c"))) == [("stdout", "F", "deep")]).then_some(())
    });
}

#[test]
fn monitor_stays_small_with_two_running_containers() {
    let pod = Pod::start("rss");
    let script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.01; done";
    pod.run("a", &["sh", "-c", script], &Spec::default());
    pod.run("b", &["sh", "-c", script], &Spec::default());
    wait_for(Duration::from_secs(10), "both containers to log", || {
        (read_log(&pod.log_path("a")).len() > 20 && read_log(&pod.log_path("b")).len() > 20)
            .then_some(())
    });
    let listed = pod.client().list().unwrap();
    assert_eq!(listed.iter().filter(|c| !c.exited).count(), 2);
    let rss = vm_rss_kib(pod.monitor_pid);
    let status = fs::read_to_string(format!("/proc/{}/status", pod.monitor_pid)).unwrap();
    let detail: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("Rss") || l.starts_with("VmHWM"))
        .collect();
    eprintln!("monitor with 2 running containers: {}", detail.join(", "));
    // The target (release build) is 2 MiB; a debug build gets some slack.
    let limit = if cfg!(debug_assertions) { 4096 } else { 2048 };
    assert!(rss <= limit, "monitor VmRSS {rss} KiB > {limit} KiB");
}

#[test]
fn attach_forwards_stdin_and_output_and_ends_with_the_container() {
    use cri_monitor::protocol::attach;
    use std::io::{Read, Write};

    let pod = Pod::start("attach");
    let script = "read line; echo \"got $line\"; echo err >&2";
    let bundle = pod.bundle("c", &["sh", "-c", script], &Spec::default());
    let mut request = pod.request("c", &bundle, &Spec::default());
    request.stdin = true;
    pod.create(request).expect("create");
    let (tty, mut stream, mut buf) = pod.client().attach(&pod.cid("c")).expect("attach");
    assert!(!tty);
    pod.runc_ok(&["start", &pod.cid("c")]);
    stream
        .write_all(&attach::frame(attach::STDIN, b"hello\n"))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut rest = buf.as_slice();
    while let Some(Ok((kind, payload, used))) = attach::parse(rest) {
        match kind {
            attach::STDOUT => out.extend_from_slice(payload),
            attach::STDERR => err.extend_from_slice(payload),
            other => panic!("frame kind {other}"),
        }
        rest = &rest[used..];
    }
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"got hello\n"[..], &b"err\n"[..])
    );
    assert_eq!(pod.wait_exit(&bundle).exit_code, 0);
    // The log has it too; an exited container cannot be attached.
    assert!(contents(&read_log(&pod.log_path("c"))).contains(&("stdout", "F", "got hello")));
    let err = pod.client().attach(&pod.cid("c")).unwrap_err();
    assert!(matches!(err, Error::Monitor { .. }), "{err}");
}
