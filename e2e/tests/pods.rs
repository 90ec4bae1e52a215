//! Pods and containers end to end: the real cri-server binary with real runc, pinned
//! namespaces, Debian's reference CNI plugins and the per-pod monitor. Every test runs inside
//! a node network namespace of its own (registry, daemon and CNI bridge live there), on a
//! 10.x subnet of its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::node::*;
use k8s_cri::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;

/// The mounts a daemon with no pods keeps: its private namespace pin dir and the private dir
/// for the mounts it prepares for containers.
fn daemon_mount_dirs(state: &std::path::Path) -> Vec<String> {
    ["ns", "mnt"]
        .iter()
        .map(|d| state.join(d).display().to_string())
        .collect()
}

/// The containers runc knows under the daemon's state dir, one id per line.
fn runc_containers(state: &std::path::Path) -> String {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state.join("runc/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn container_logs_in_cri_format_and_reports_its_exit_code() {
    in_node(11, |mut n| async move {
        let pod = n.run_pod("logger").await;
        let id = n
            .run_container(
                &pod,
                "main",
                &["sh", "-c", "echo hello; echo oops >&2; echo world; exit 3"],
            )
            .await;
        let st = n.wait_exited(&id, Duration::from_secs(20)).await;
        assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"));
        assert!(
            st.finished_at >= st.started_at && st.started_at >= st.created_at && st.created_at > 0
        );
        assert_eq!(
            st.log_path,
            n.logs
                .path()
                .join("logger/main/0.log")
                .display()
                .to_string()
        );
        // Logs are flushed by the monitor shortly after exit.
        let mut lines = Vec::new();
        for _ in 0..50 {
            lines = parse_log(&n.log_of("logger", "main"));
            if lines.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut stdout: Vec<_> = lines
            .iter()
            .filter(|l| l.0 == "stdout")
            .map(|l| (l.1.as_str(), l.2.as_str()))
            .collect();
        stdout.sort();
        assert_eq!(stdout, vec![("F", "hello"), ("F", "world")]);
        assert!(
            lines.contains(&("stderr".into(), "F".into(), "oops".into())),
            "{lines:?}"
        );

        let ok = n.run_container(&pod, "ok", &["true"]).await;
        let st = n.wait_exited(&ok, Duration::from_secs(20)).await;
        assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn pods_get_ips_talk_over_localhost_and_to_each_other() {
    in_node(12, |mut n| async move {
        let a = n.run_pod("pod-a").await;
        let b = n.run_pod("pod-b").await;
        let ip_a = n.pod_ip(&a.0).await;
        let ip_b = n.pod_ip(&b.0).await;
        assert!(
            ip_a.starts_with(&n.subnet_prefix)
                && ip_b.starts_with(&n.subnet_prefix)
                && ip_a != ip_b,
            "{ip_a} {ip_b}"
        );
        n.run_container(&a, "web", &["sh", "-c", "mkdir -p /tmp/www && echo hi-from-a > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]).await;
        let side = n.run_container(&a, "side", &["sleep", "3600"]).await;
        let other = n.run_container(&b, "client", &["sleep", "3600"]).await;
        // Two containers of one pod share the network namespace: localhost.
        let mut got = String::new();
        for _ in 0..50 {
            let r = n
                .exec(&side, &["wget", "-qO-", "http://127.0.0.1:8080/"], 5)
                .await
                .unwrap();
            got = String::from_utf8_lossy(&r.stdout).into_owned();
            if r.exit_code == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got.trim(), "hi-from-a");
        // Another pod reaches it at its IP.
        let r = n
            .exec(
                &other,
                &["wget", "-qO-", &format!("http://{ip_a}:8080/")],
                5,
            )
            .await
            .unwrap();
        assert_eq!(
            (r.exit_code, String::from_utf8_lossy(&r.stdout).trim()),
            (0, "hi-from-a")
        );
        // The pod's hostname.
        let r = n.exec(&other, &["hostname"], 5).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "pod-b");
        n.remove_pod(&a.0).await;
        n.remove_pod(&b.0).await;
    });
}

#[test]
fn exec_sync_returns_both_streams_and_exit_code_and_kills_at_timeout() {
    in_node(13, |mut n| async move {
        let pod = n.run_pod("exec").await;
        let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
        let r = n
            .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
            .await
            .unwrap();
        assert_eq!(
            (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
            (7, &b"out\n"[..], &b"err\n"[..])
        );
        let started = Instant::now();
        let err = n.exec(&id, &["sleep", "30"], 1).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(15));
        // The timed-out process is gone.
        let r = n.exec(&id, &["ps"], 5).await.unwrap();
        let ps = String::from_utf8_lossy(&r.stdout).into_owned();
        assert_eq!(r.exit_code, 0, "{ps}");
        assert!(
            ps.contains("sleep 3600") && !ps.contains("sleep 30\n"),
            "{ps}"
        );
        let err = n.exec("nope", &["true"], 1).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        n.remove_pod(&pod.0).await;
    });
}

/// The host pid of the process whose command line is exactly `cmdline` (NUL-separated).
fn pid_of(cmdline: &[u8]) -> Option<i32> {
    pids_where(|c| c == cmdline).first().copied()
}

/// A process's seccomp filter (classic BPF, 8 bytes an instruction), read with ptrace.
fn seccomp_filter(pid: i32) -> Vec<u64> {
    let p = nix::unistd::Pid::from_raw(pid);
    // SAFETY: attaching to a process of the test's own container.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    assert_eq!(rc, 0, "ptrace attach: {}", std::io::Error::last_os_error());
    nix::sys::wait::waitpid(p, None).expect("wait for the stop");
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    // SAFETY: ptrace requests on a process we attached; the buffer holds `n` instructions.
    let program = unsafe {
        let n = libc::ptrace(
            PTRACE_SECCOMP_GET_FILTER,
            pid,
            0,
            std::ptr::null_mut::<u64>(),
        );
        assert!(n > 0, "no seccomp filter on {pid}");
        let mut buf = vec![0u64; n as usize];
        let got = libc::ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, buf.as_mut_ptr());
        assert_eq!(got, n);
        buf
    };
    // SAFETY: detaching from the process attached above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    program
}

/// Runs a seccomp stub (classic BPF: loads, jumps, returns) on one (arch, syscall number):
/// `Some(ret)` if it returns, `None` if it falls through to the filter after it.
fn run_stub(stub: &[u64], arch: u32, nr: u32) -> Option<u32> {
    let (mut pc, mut acc) = (0usize, 0u32);
    while pc < stub.len() {
        let i = stub[pc];
        let (code, jt, jf, k) = (i as u16, (i >> 16) as u8, (i >> 24) as u8, (i >> 32) as u32);
        let jump = |taken: bool| if taken { jt as usize } else { jf as usize };
        pc += 1 + match code {
            0x20 => {
                acc = if k == 4 { arch } else { nr };
                0
            }
            0x05 => k as usize,
            0x15 => jump(acc == k),
            0x25 => jump(acc > k),
            0x35 => jump(acc >= k),
            0x45 => jump(acc & k != 0),
            0x06 => return Some(k),
            other => panic!("unexpected BPF op {other:#x} in the stub"),
        };
    }
    None
}

#[test]
fn exec_sync_process_matches_the_container_init_in_identity_capabilities_seccomp_and_cgroups() {
    in_node(31, |mut n| async move {
        let pod = n.run_pod("parity").await;
        for (name, nnp, init) in [("nnp", true, "3623"), ("privesc", false, "3624")] {
            let mut cfg = n.container_config(name, &["sleep", init]);
            cfg.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_user: Some(Int64Value { value: 1000 }),
                    run_as_group: Some(Int64Value { value: 1000 }),
                    supplemental_groups: vec![2000, 3000],
                    no_new_privs: nnp,
                    capabilities: Some(Capability {
                        add_capabilities: vec!["SYS_TIME".into()],
                        drop_capabilities: vec!["NET_RAW".into(), "CHOWN".into()],
                        ..Default::default()
                    }),
                    seccomp: Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = n.create(&pod, cfg).await.expect("create");
            n.start(&id).await;

            // What the kernel says about PID 1 (runc made it) and about the exec'd process.
            let fields = "Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp";
            let (code, init_view, err) = n
                .sh(&id, &format!("grep -E '^({fields})' /proc/1/status; cat /proc/1/cgroup; for ns in /proc/1/ns/*; do readlink $ns; done"))
                .await;
            assert_eq!(code, 0, "{err}");
            let (code, exec_view, err) = n
                .sh(&id, &format!("grep -E '^({fields})' /proc/$$/status; cat /proc/$$/cgroup; for ns in /proc/$$/ns/*; do readlink $ns; done"))
                .await;
            assert_eq!(code, 0, "{err}");
            assert!(init_view.contains("Seccomp:\t2"), "{init_view}");
            assert!(init_view.contains("Groups:\t1000 2000 3000"), "{init_view}");
            assert_eq!(
                exec_view, init_view,
                "{name}: exec'd process differs from the init"
            );

            // The exec'd process carries the same seccomp program as the init: the libseccomp
            // part instruction for instruction, the ENOSYS stub as long and with the same
            // instructions (runc orders its architectures at random).
            let marker = format!("sleep 4{init}");
            let exec = {
                let mut rt = n.c.runtime.clone();
                let id = id.clone();
                let cmd = marker.clone();
                tokio::spawn(async move {
                    rt.exec_sync(ExecSyncRequest {
                        container_id: id,
                        cmd: cmd.split(' ').map(str::to_string).collect(),
                        timeout: 60,
                    })
                    .await
                })
            };
            let cmdline =
                |s: &str| -> Vec<u8> { s.split(' ').flat_map(|w| w.bytes().chain([0])).collect() };
            let deadline = Instant::now() + Duration::from_secs(10);
            let exec_pid = loop {
                if let Some(p) = pid_of(&cmdline(&marker)) {
                    break p;
                }
                assert!(Instant::now() < deadline, "exec'd process never showed up");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let init_pid = pid_of(&cmdline(&format!("sleep {init}"))).expect("init pid");
            // The same program (busybox sleep) in both: signal dispositions and mask match too
            // (nothing ignored that the init does not ignore, SIGPIPE included).
            let signals = |pid: i32| -> Vec<String> {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap()
                    .lines()
                    .filter(|l| l.starts_with("SigIgn") || l.starts_with("SigBlk"))
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(signals(exec_pid), signals(init_pid), "{name}: signal state");
            let (a, b) = (seccomp_filter(init_pid), seccomp_filter(exec_pid));
            let is_ld_arch =
                |i: &u64| i.to_ne_bytes()[..2] == 0x20u16.to_ne_bytes() && (i >> 32) as u32 == 4;
            let body = |p: &[u64]| {
                p.iter()
                    .enumerate()
                    .filter(|(_, i)| is_ld_arch(i))
                    .nth(1)
                    .map(|(k, _)| k)
                    .expect("stub then filter")
            };
            let (sa, sb) = (body(&a), body(&b));
            if let Ok(dir) = std::env::var("E2E_DUMP_SECCOMP") {
                let dump = |p: &[u64]| {
                    p.iter()
                        .map(|i| {
                            format!(
                                "{:04x} {:3} {:3} {:#x}\n",
                                *i as u16,
                                (*i >> 16) as u8,
                                (*i >> 24) as u8,
                                (*i >> 32) as u32
                            )
                        })
                        .collect::<String>()
                };
                std::fs::write(format!("{dir}/{name}-init.txt"), dump(&a)).unwrap();
                std::fs::write(format!("{dir}/{name}-exec.txt"), dump(&b)).unwrap();
            }
            assert_eq!(a[sa..], b[sb..], "{name}: the libseccomp program differs");
            // The stubs decide alike for every architecture and syscall number around the
            // limits they hold (their layout depends on the order of architectures).
            let mut probes = vec![(0xC000_003Eu32, 0u32), (0x4000_0003, 0), (0xDEAD, 5)];
            for insn in a[..sa].iter().chain(&b[..sb]) {
                let k = (insn >> 32) as u32;
                for arch in [0xC000_003E, 0x4000_0003] {
                    for nr in [k.wrapping_sub(1), k, k.wrapping_add(1), k | 0x4000_0000] {
                        probes.push((arch, nr));
                    }
                }
            }
            for (arch, nr) in probes {
                assert_eq!(
                    run_stub(&a[..sa], arch, nr),
                    run_stub(&b[..sb], arch, nr),
                    "{name}: the ENOSYS stubs disagree on arch {arch:#x} syscall {nr:#x}"
                );
            }
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec_pid), Signal::SIGKILL).unwrap();
            let r = exec.await.unwrap().unwrap().into_inner();
            assert_eq!(r.exit_code, 137);
        }
        assert!(
            !n.server.log().contains("cri-exec could not run"),
            "every exec went through cri-exec"
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn an_image_of_a_hundred_layers_runs_as_the_rootfs_and_as_an_image_volume() {
    in_node(32, |mut n| async move {
        use e2e::images::{self, Entry};
        let mut layers = vec![
            images::build_layer(
                &images::busybox_base_entries().unwrap(),
                images::Compression::Gzip,
            )
            .unwrap(),
        ];
        for i in 1..100 {
            let mut entries = vec![Entry::dir("layers", 0o755)];
            entries.push(Entry::file(
                &format!("layers/{i:03}"),
                0o644,
                format!("{i}\n"),
            ));
            layers.push(images::build_layer(&entries, images::Compression::Gzip).unwrap());
        }
        let pusher = images::Pusher::for_registry(&n._registry).unwrap();
        pusher
            .push_image("test/tall", Some("v1"), &images::ImageSpec::new(layers))
            .await
            .unwrap();
        let tall = format!("{}/test/tall:v1", pusher.addr());
        n.c.image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: tall.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull the 100-layer image");
        let pod = n.run_pod("tall").await;
        let mut c = n.container_config("app", &["sleep", "3600"]);
        c.image = Some(ImageSpec {
            image: tall.clone(),
            ..Default::default()
        });
        c.mounts = vec![Mount {
            container_path: "/vol".into(),
            readonly: true,
            image: Some(ImageSpec {
                image: tall.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let id = n.run_container_with(&pod, c).await;
        let (code, out, err) = n
            .sh(&id, "ls /layers; cat /layers/001 /vol/layers/099")
            .await;
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 99 + 2, "{out}");
        assert_eq!(&lines[99..], ["1", "99"]);
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn exec_sync_through_the_oci_runtime_when_direct_exec_is_off() {
    in_node_opts(
        NodeOptions {
            subnet: 33,
            extra_config: "[runtime]\ndirect_exec = false\n".into(),
            ..Default::default()
        },
        |mut n| async move {
            let pod = n.run_pod("viarunc").await;
            let id = n.run_container(&pod, "main", &["sleep", "3600"]).await;
            let r = n
                .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 10)
                .await
                .unwrap();
            assert_eq!(
                (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
                (5, &b"out\n"[..], &b"err\n"[..])
            );
            // While an exec runs, the OCI runtime's `exec` is what runs it, not cri-exec.
            let pending = {
                let mut rt = n.c.runtime.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    rt.exec_sync(ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["sleep".into(), "31".into()],
                        timeout: 3,
                    })
                    .await
                })
            };
            let has = |needles: &[&str]| {
                !pids_where(|c| {
                    let c = String::from_utf8_lossy(c);
                    needles.iter().all(|n| c.contains(n))
                })
                .is_empty()
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            while !has(&["exec\0--process\0"]) {
                assert!(Instant::now() < deadline, "no runtime exec seen");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                !has(&["cri-exec\0", &id]),
                "cri-exec ran although direct_exec is off"
            );
            let err = pending.await.unwrap().unwrap_err();
            assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
            n.wait_ps(&id, "sleep 31", false).await;
            n.remove_pod(&pod.0).await;
        },
    );
}

#[test]
fn stop_sends_the_signal_then_kills_and_remove_leaves_nothing_behind() {
    in_node(14, |mut n| async move {
        let pod = n.run_pod("stopper").await;
        // Ignores SIGTERM: StopContainer must SIGKILL after the timeout.
        let stubborn = n
            .run_container(
                &pod,
                "stubborn",
                &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
            )
            .await;
        // PID 1 of a container has no default signal actions: it must handle TERM itself.
        let polite = n
            .run_container(
                &pod,
                "polite",
                &[
                    "sh",
                    "-c",
                    "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done",
                ],
            )
            .await;
        // The trap must be in place before the signal comes (PID 1 ignores TERM without one).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !n.log_of("stopper", "polite").contains("ready") {
            assert!(
                Instant::now() < deadline,
                "polite container never got ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        n.c.runtime
            .stop_container(StopContainerRequest {
                container_id: polite.clone(),
                timeout: 10,
            })
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "sleep dies on SIGTERM at once"
        );
        assert_eq!(n.status(&polite).await.exit_code, 143);
        n.c.runtime
            .stop_container(StopContainerRequest {
                container_id: stubborn.clone(),
                timeout: 1,
            })
            .await
            .unwrap();
        assert_eq!(n.status(&stubborn).await.exit_code, 137);
        // Idempotent, and unknown ids are not errors.
        n.c.runtime
            .stop_container(StopContainerRequest {
                container_id: stubborn.clone(),
                timeout: 1,
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: polite.clone(),
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: polite.clone(),
            })
            .await
            .unwrap();
        n.c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: "unknown".into(),
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: "unknown".into(),
            })
            .await
            .unwrap();

        let ip = n.pod_ip(&pod.0).await;
        assert!(
            allocated_ips(&n.ipam_dir).contains(&ip),
            "{ip} held while the pod runs"
        );
        n.c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        let st =
            n.c.runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.0.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            st.status.unwrap().state,
            PodSandboxState::SandboxNotready as i32
        );
        n.c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();

        // Nothing of the pod remains: records, mounts, pins, bundles, IP, monitor.
        let state = n.server.dir.path().join("state");
        assert_eq!(
            mounts_under(n.server.dir.path()),
            daemon_mount_dirs(&state),
            "only the daemon's private pin and mount dirs"
        );
        for d in ["pods", "bundles"] {
            assert_eq!(std::fs::read_dir(state.join(d)).unwrap().count(), 0, "{d}");
        }
        assert_eq!(
            std::fs::read_dir(state.join("ns")).unwrap().count(),
            0,
            "pins"
        );
        for d in ["pods", "containers", "container-data", "cni-cache"] {
            assert_eq!(
                std::fs::read_dir(n.server.root.join(d)).unwrap().count(),
                0,
                "{d}"
            );
        }
        assert_eq!(
            allocated_ips(&n.ipam_dir),
            Vec::<String>::new(),
            "the pod's IP is released"
        );
        let list =
            n.c.runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
                .unwrap()
                .into_inner();
        assert!(list.items.is_empty());
        assert_eq!(
            processes_mentioning(&pod.0),
            0,
            "no process of the pod is left"
        );
    });
}

#[test]
fn containers_outlive_a_kill_9_of_the_server_and_exits_are_recorded_meanwhile() {
    in_node(15, |mut n| async move {
        let pod = n.run_pod("survivor").await;
        let long = n
            .run_container(
                &pod,
                "long",
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
                ],
            )
            .await;
        let short = n
            .run_container(&pod, "short", &["sh", "-c", "sleep 1; exit 42"])
            .await;
        n.server.stop_with(Signal::SIGKILL).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ticks_before = n.log_of("survivor", "long").lines().count();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            n.log_of("survivor", "long").lines().count() > ticks_before,
            "logs keep flowing while the server is down"
        );
        n.server.spawn().unwrap();
        n.c = n.server.clients().await.unwrap();
        assert_eq!(
            n.status(&long).await.state,
            ContainerState::ContainerRunning as i32
        );
        let st = n.status(&short).await;
        assert_eq!(
            (st.state, st.exit_code),
            (ContainerState::ContainerExited as i32, 42)
        );
        let pods =
            n.c.runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(pods.items.len(), 1);
        assert_eq!(pods.items[0].state, PodSandboxState::SandboxReady as i32);
        let list =
            n.c.runtime
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: pod.0.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(list.containers.len(), 2);
        // Teardown after the restart still works (CNI DEL from the cache).
        n.remove_pod(&pod.0).await;
        assert_eq!(
            std::fs::read_dir(n.server.root.join("cni-cache"))
                .unwrap()
                .count(),
            0
        );
    });
}

#[test]
fn tiny_memory_limit_ends_in_oomkilled() {
    in_node(16, |mut n| async move {
        let pod = n.run_pod("oom").await;
        let mut cfg = n.container_config("hog", &["sh", "-c", "tail /dev/zero"]);
        cfg.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = n.create(&pod, cfg).await.unwrap();
        n.start(&id).await;
        let st = n.wait_exited(&id, Duration::from_secs(60)).await;
        assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137));
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn bad_requests_are_refused_and_leave_nothing() {
    in_node(17, |mut n| async move {
        let err =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(PodSandboxConfig::default()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let cfg = n.pod_config("badhandler");
        let err =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg),
                    runtime_handler: "nosuch".into(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut cfg = n.pod_config("badsysctl");
        cfg.linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert("kernel.pid_max".into(), "100".into());
        let err =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let pod = n.run_pod("dup").await;
        let err =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(n.pod_config("dup")),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        let mut cfg = n.container_config("noimage", &["true"]);
        cfg.image = Some(ImageSpec {
            image: "127.0.0.1:1/absent:v1".into(),
            ..Default::default()
        });
        assert_eq!(
            n.create(&pod, cfg).await.unwrap_err().code(),
            Code::NotFound
        );
        let cfg = n.container_config("nocmd", &[]);
        let mut cfg2 = cfg.clone();
        cfg2.image = None;
        assert!(n.create(&pod, cfg2).await.is_err());
        let err = n
            .create(
                &("nosuchpod".into(), pod.1.clone()),
                n.container_config("x", &["true"]),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        n.remove_pod(&pod.0).await;
        let state = n.server.dir.path().join("state");
        assert_eq!(
            std::fs::read_dir(state.join("ns")).unwrap().count(),
            0,
            "no pin left by failed RunPodSandbox"
        );
        assert_eq!(std::fs::read_dir(state.join("pods")).unwrap().count(), 0);
        assert_eq!(
            mounts_under(n.server.dir.path()),
            daemon_mount_dirs(&state),
            "only the daemon's private pin and mount dirs"
        );
    });
}

#[test]
fn crash_inside_run_pod_sandbox_leaves_nothing_after_restart() {
    in_node(18, |mut n| async move {
        for point in [
            "sandbox-after-namespaces",
            "sandbox-before-cni",
            "sandbox-after-cni",
        ] {
            n.server.env = vec![("CRI_SERVER_FAILPOINT".into(), point.into())];
            n.server.stop_with(Signal::SIGTERM).unwrap();
            n.server.spawn().unwrap();
            n.c = n.server.clients().await.unwrap();
            let cfg = n.pod_config(&format!("crash-{point}"));
            let err =
                n.c.runtime
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(cfg),
                        runtime_handler: String::new(),
                    })
                    .await;
            assert!(err.is_err(), "{point}: the daemon died mid-call");
            assert!(!n.server.wait_exit().unwrap().success(), "{point}: aborted");
            n.server.env.clear();
            n.server.spawn().unwrap();
            n.c = n.server.clients().await.unwrap();
            let state = n.server.dir.path().join("state");
            let pods =
                n.c.runtime
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                    .await
                    .unwrap()
                    .into_inner();
            assert!(pods.items.is_empty(), "{point}: {:?}", pods.items);
            assert_eq!(count(&state.join("ns")), 0, "{point}: pins");
            assert_eq!(count(&state.join("pods")), 0, "{point}: pod dirs");
            assert_eq!(count(&n.server.root.join("pods")), 0, "{point}: records");
            assert_eq!(
                count(&n.server.root.join("cni-cache")),
                0,
                "{point}: CNI cache"
            );
            assert_eq!(
                allocated_ips(&n.ipam_dir),
                Vec::<String>::new(),
                "{point}: IPs"
            );
            assert_eq!(
                mounts_under(n.server.dir.path()),
                daemon_mount_dirs(&state),
                "{point}: mounts"
            );
            assert_eq!(
                processes_mentioning(&state.join("pods").display().to_string()),
                0,
                "{point}: monitors"
            );
        }
    });
}

#[test]
fn crash_inside_create_container_leaves_nothing_after_restart() {
    in_node(19, |mut n| async move {
        let pod = n.run_pod("crashc").await;
        let vol = tempfile::tempdir().unwrap();
        for point in [
            "container-after-rootfs",
            "container-after-volumes",
            "container-after-bundle",
        ] {
            n.server.env = vec![("CRI_SERVER_FAILPOINT".into(), point.into())];
            n.server.stop_with(Signal::SIGTERM).unwrap();
            n.server.spawn().unwrap();
            n.c = n.server.clients().await.unwrap();
            let mut cfg = n.container_config("victim", &["sleep", "3600"]);
            // Mounts the daemon prepares itself: a recursive read-only volume, an image volume.
            cfg.mounts = vec![
                Mount {
                    container_path: "/rro".into(),
                    host_path: vol.path().display().to_string(),
                    readonly: true,
                    recursive_read_only: true,
                    ..Default::default()
                },
                Mount {
                    container_path: "/img".into(),
                    readonly: true,
                    image: Some(ImageSpec {
                        image: n.busybox.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ];
            assert!(
                n.create(&pod, cfg).await.is_err(),
                "{point}: the daemon died mid-call"
            );
            assert!(!n.server.wait_exit().unwrap().success());
            n.server.env.clear();
            n.server.spawn().unwrap();
            n.c = n.server.clients().await.unwrap();
            let state = n.server.dir.path().join("state");
            let list =
                n.c.runtime
                    .list_containers(ListContainersRequest { filter: None })
                    .await
                    .unwrap()
                    .into_inner();
            assert!(list.containers.is_empty(), "{point}");
            assert_eq!(count(&state.join("bundles")), 0, "{point}: bundles");
            assert_eq!(
                count(&n.server.root.join("container-data")),
                0,
                "{point}: container data"
            );
            assert_eq!(
                count(&n.server.root.join("images/leases")),
                0,
                "{point}: leases"
            );
            assert_eq!(
                count(&n.server.root.join("images/volume-images")),
                0,
                "{point}: image volume leases"
            );
            assert_eq!(runc_containers(&state), "", "{point}: runc containers");
            // Only the daemon's dirs and the pod's own mounts stay (pin dir, mnt dir, its three
            // pins, its shm): no rootfs, no prepared volume.
            let mounts = mounts_under(n.server.dir.path());
            assert!(
                mounts.iter().all(|m| m.contains("/state/ns")
                    || m.ends_with("/state/mnt")
                    || m.ends_with("/shm")),
                "{point}: {mounts:?}"
            );
            assert_eq!(mounts.len(), 6, "{point}: {mounts:?}");
            // The pod itself is untouched and still usable.
            let st =
                n.c.runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: pod.0.clone(),
                        verbose: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
            assert_eq!(
                st.status.unwrap().state,
                PodSandboxState::SandboxReady as i32
            );
        }
        let id = n.run_container(&pod, "after", &["true"]).await;
        assert_eq!(
            n.wait_exited(&id, Duration::from_secs(20)).await.exit_code,
            0
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn host_port_reaches_the_pod_through_portmap_on_loopback() {
    in_node(20, |mut n| async move {
        let mut cfg = n.pod_config("hostport");
        cfg.port_mappings = vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 8080,
            host_port: 18080,
            host_ip: String::new(),
        }];
        let id =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id;
        let pod = (id, cfg);
        n.run_container(&pod, "web", &["sh", "-c", "mkdir -p /tmp/www && echo via-hostport > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]).await;
        // This thread is in the node netns: 127.0.0.1 is the node's loopback.
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:18080") {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let _ = s.read_to_string(&mut body);
                if body.contains("via-hostport") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(body.contains("via-hostport"), "{body:?}");
        n.remove_pod(&pod.0).await;
        let nat = n.node.run("iptables-save", &["-t", "nat"]).unwrap();
        assert!(
            !String::from_utf8_lossy(&nat.stdout).contains("18080"),
            "hostPort rules removed with the pod"
        );
    });
}

#[test]
fn security_context_user_readonly_rootfs_capabilities_and_mounts_apply() {
    in_node(21, |mut n| async move {
        let pod = n.run_pod("secure").await;
        let host_dir = tempfile::tempdir().unwrap();
        std::fs::write(host_dir.path().join("data.txt"), "from-host\n").unwrap();
        let link = n.logs.path().join("link-to-data");
        std::os::unix::fs::symlink(host_dir.path(), &link).unwrap();
        let mut cfg = n.container_config("locked", &["sleep", "3600"]);
        cfg.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path: link.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        cfg.envs = vec![KeyValue {
            key: "GREETING".into(),
            value: "hi".into(),
        }];
        cfg.working_dir = "/tmp".into();
        cfg.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 1000 }),
                readonly_rootfs: true,
                no_new_privs: true,
                capabilities: Some(Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = n.create(&pod, cfg).await.expect("create");
        n.start(&id).await;
        assert_eq!(n.sh(&id, "id -u; id -g").await.1, "1000\n1000");
        let user = n
            .status(&id)
            .await
            .user
            .and_then(|u| u.linux)
            .expect("ContainerStatus.user");
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert!(user.supplemental_groups.contains(&1000), "{user:?}");
        assert_eq!(n.sh(&id, "pwd; echo $GREETING").await.1, "/tmp\nhi");
        assert_eq!(
            n.sh(&id, "cat /data/data.txt").await.1,
            "from-host",
            "symlinked host path resolved"
        );
        assert_ne!(
            n.sh(&id, "echo x > /data/new").await.0,
            0,
            "read-only mount"
        );
        assert_ne!(
            n.sh(&id, "echo x > /rootfs-write").await.0,
            0,
            "read-only rootfs"
        );
        assert_eq!(
            n.sh(&id, "grep CapEff /proc/self/status").await.1,
            "CapEff:\t0000000000000000"
        );
        assert_eq!(
            n.sh(&id, "grep NoNewPrivs /proc/self/status").await.1,
            "NoNewPrivs:\t1"
        );
        assert_eq!(
            n.sh(&id, "grep Seccomp: /proc/self/status").await.1,
            "Seccomp:\t2",
            "seccomp filter on"
        );
        assert_eq!(n.sh(&id, "cat /etc/hostname").await.1, "secure");
        assert_ne!(
            n.sh(&id, "cat /proc/kcore > /dev/null").await.0,
            0,
            "masked path"
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn reopen_container_log_moves_new_lines_to_a_fresh_file() {
    in_node(22, |mut n| async move {
        let pod = n.run_pod("rotate").await;
        let id = n
            .run_container(
                &pod,
                "ticker",
                &[
                    "sh",
                    "-c",
                    "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done",
                ],
            )
            .await;
        let log = n.logs.path().join("rotate/ticker/0.log");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rotated = log.with_extension("log.1");
        std::fs::rename(&log, &rotated).unwrap();
        n.c.runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .expect("reopen");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old_len = std::fs::read_to_string(&rotated).unwrap().lines().count();
        let fresh = std::fs::read_to_string(&log).expect("a new log file");
        assert!(
            old_len > 0 && fresh.lines().count() > 0,
            "{old_len} {fresh:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            old_len,
            "the rotated file no longer grows"
        );
        let err =
            n.c.runtime
                .reopen_container_log(ReopenContainerLogRequest {
                    container_id: "nope".into(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // Filters: by label and state.
        let list =
            n.c.runtime
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: HashMap::from([("app".into(), "rotate".into())]),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(list.items.len(), 1);
        let none =
            n.c.runtime
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: HashMap::from([("app".into(), "other".into())]),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
        assert!(none.items.is_empty());
        let running =
            n.c.runtime
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        state: Some(ContainerStateValue {
                            state: ContainerState::ContainerRunning as i32,
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            running
                .containers
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>(),
            vec![id.clone()]
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn shared_process_namespace_pod_sees_all_its_processes_and_stop_ends_them() {
    in_node(23, |mut n| async move {
        let mut cfg = n.pod_config("sharepid");
        cfg.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .pid = NamespaceMode::Pod as i32;
        let id =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id;
        let pod = (id, cfg);
        // The kubelet marks each container of such a pod as joining the pod's PID namespace.
        let mut ids = Vec::new();
        for (name, arg) in [("a", "3601"), ("b", "3602")] {
            let mut c = n.container_config(name, &["sleep", arg]);
            c.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let id = n.create(&pod, c).await.expect("create");
            n.start(&id).await;
            ids.push(id);
        }
        let b = ids[1].clone();
        let (code, ps, _) = n.sh(&b, "ps -o pid,args").await;
        assert_eq!(code, 0);
        assert!(
            ps.contains("sleep 3601") && ps.contains("sleep 3602"),
            "one PID namespace: {ps}"
        );
        let pid1 = ps
            .lines()
            .find(|l| l.split_whitespace().next() == Some("1"))
            .unwrap_or_default()
            .to_string();
        assert!(
            pid1.contains("cri-monitor pause"),
            "PID 1 is the pod's infra process: {ps}"
        );
        // A pod without sharing keeps its containers apart.
        let solo = n.run_pod("solo").await;
        let c = n.run_container(&solo, "c", &["sleep", "3603"]).await;
        n.run_container(&solo, "d", &["sleep", "3604"]).await;
        let (_, ps, _) = n.sh(&c, "ps -o args").await;
        assert!(
            ps.contains("sleep 3603") && !ps.contains("sleep 3604"),
            "{ps}"
        );
        n.remove_pod(&pod.0).await;
        n.remove_pod(&solo.0).await;
        assert_eq!(
            processes_mentioning("pause --pid-file"),
            0,
            "the infra process is gone"
        );
        assert_eq!(processes_mentioning("sleep 360"), 0);
    });
}

#[test]
fn pods_network_through_our_cni_bridge_unchanged() {
    in_node_with(24, true, |mut n| async move {
        let a = n.run_pod("br-a").await;
        let b = n.run_pod("br-b").await;
        let ip_a = n.pod_ip(&a.0).await;
        assert!(ip_a.starts_with(&n.subnet_prefix), "{ip_a}");
        n.run_container(&a, "web", &["sh", "-c", "mkdir -p /tmp/www && echo via-cni-bridge > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]).await;
        let client = n.run_container(&b, "client", &["sleep", "3600"]).await;
        let mut got = (1, String::new(), String::new());
        for _ in 0..50 {
            got = n
                .sh(&client, &format!("wget -qO- http://{ip_a}:8080/"))
                .await;
            if got.0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!((got.0, got.1.as_str()), (0, "via-cni-bridge"), "{got:?}");
        n.remove_pod(&a.0).await;
        n.remove_pod(&b.0).await;
        assert_eq!(
            allocated_ips(&n.ipam_dir),
            Vec::<String>::new(),
            "IPs released through our plugin"
        );
    });
}

#[test]
fn runtime_handler_crun_runs_its_pods_containers_with_crun() {
    in_node(25, |mut n| async move {
        let st =
            n.c.runtime
                .status(StatusRequest { verbose: false })
                .await
                .unwrap()
                .into_inner();
        let names: Vec<_> = st
            .runtime_handlers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, vec!["", "crun", "runc"]);
        let cfg = n.pod_config("crunpod");
        let id =
            n.c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(cfg.clone()),
                    runtime_handler: "crun".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id;
        let pod = (id, cfg);
        let status =
            n.c.runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.0.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(status.status.unwrap().runtime_handler, "crun");
        let cfg = n.container_config("c", &["sleep", "3600"]);
        // The runtime first runs at StartContainer (`crun run --detach`).
        let cid = n.create(&pod, cfg).await.expect("CreateContainer");
        let started =
            n.c.runtime
                .start_container(StartContainerRequest {
                    container_id: cid.clone(),
                })
                .await;
        match started {
            Ok(_) => {
                // A cgroup v2 host: crun runs it.
                assert_eq!(n.sh(&cid, "echo ok").await.1, "ok");
                let crun_root = n.server.dir.path().join("state/runc/crun");
                let out = std::process::Command::new("crun")
                    .arg("--root")
                    .arg(&crun_root)
                    .arg("list")
                    .output()
                    .unwrap();
                assert!(
                    String::from_utf8_lossy(&out.stdout).contains(&cid),
                    "crun knows the container"
                );
            }
            Err(e) => {
                // Hybrid cgroups (as on our CI machines): crun itself refuses, which shows it
                // was crun that the monitor ran.
                assert!(
                    e.message().contains("crun") && e.message().contains("hybrid"),
                    "{e:?}"
                );
                let st = n.status(&cid).await;
                assert_eq!(st.state, ContainerState::ContainerExited as i32);
                assert_eq!(st.reason, "StartError");
            }
        }
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn devices_reach_the_container_from_the_device_list_and_through_cdi() {
    in_node(26, |mut n| async move {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let devdir = tempfile::tempdir().unwrap();
        let null_like = devdir.path().join("fake-null");
        let zero_like = devdir.path().join("fake-zero");
        mknod(
            &null_like,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        mknod(
            &zero_like,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 5),
        )
        .unwrap();
        std::fs::write(devdir.path().join("info.txt"), "fake driver 1.0\n").unwrap();
        std::fs::create_dir_all(&n.cdi_dir).unwrap();
        let spec = serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "example.com/fake",
            "devices": [{
                "name": "zero0",
                "containerEdits": {
                    "env": ["FAKE_DEVICE=zero0"],
                    "deviceNodes": [{ "path": "/dev/fake-zero", "hostPath": zero_like }],
                    "mounts": [{ "hostPath": devdir.path().join("info.txt"), "containerPath": "/etc/fake-info", "options": ["ro", "bind"] }]
                }
            }]
        });
        std::fs::write(
            n.cdi_dir.join("fake.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let pod = n.run_pod("devices").await;

        let mut cfg = n.container_config("gpu-ish", &["sleep", "3600"]);
        cfg.devices = vec![Device {
            container_path: "/dev/plain-null".into(),
            host_path: null_like.display().to_string(),
            permissions: "rwm".into(),
        }];
        cfg.cdi_devices = vec![CdiDevice {
            name: "example.com/fake=zero0".into(),
        }];
        let id = n.create(&pod, cfg).await.expect("create with devices");
        n.start(&id).await;
        assert_eq!(
            n.sh(&id, "echo hi > /dev/plain-null && echo written")
                .await
                .1,
            "written",
            "device list node usable"
        );
        assert_eq!(
            n.sh(&id, "head -c 5 /dev/fake-zero | wc -c").await.1,
            "5",
            "CDI device node usable"
        );
        assert_eq!(
            n.sh(&id, "echo $FAKE_DEVICE; cat /etc/fake-info").await.1,
            "zero0\nfake driver 1.0"
        );

        // The device plugin's annotation form.
        let mut cfg = n.container_config("annotated", &["sleep", "3600"]);
        cfg.annotations.insert(
            "cdi.k8s.io/fake-plugin".into(),
            "example.com/fake=zero0".into(),
        );
        let id2 = n
            .create(&pod, cfg)
            .await
            .expect("create with a CDI annotation");
        n.start(&id2).await;
        assert_eq!(n.sh(&id2, "echo $FAKE_DEVICE").await.1, "zero0");

        // An unknown name fails the create clearly and leaves nothing.
        let bundles_before = count(&n.server.dir.path().join("state/bundles"));
        let mut cfg = n.container_config("unknown", &["true"]);
        cfg.cdi_devices = vec![CdiDevice {
            name: "example.com/fake=nope".into(),
        }];
        let err = n.create(&pod, cfg).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("example.com/fake=nope"),
            "{}",
            err.message()
        );
        assert_eq!(
            count(&n.server.dir.path().join("state/bundles")),
            bundles_before
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn update_container_resources_changes_the_cgroup() {
    in_node(27, |mut n| async move {
        let pod = n.run_pod("resize").await;
        let mut cfg = n.container_config("c", &["sleep", "3600"]);
        cfg.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = n.create(&pod, cfg).await.unwrap();
        n.start(&id).await;
        let cgroup_parent = n.cgroup_parent.clone();
        let cg_of = move |id: &str, ctrl: &str, file: &str| -> String {
            std::fs::read_to_string(
                std::path::Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join(cgroup_parent.trim_start_matches('/'))
                    .join(id)
                    .join(file),
            )
            .unwrap_or_default()
            .trim()
            .to_string()
        };
        let cg = |ctrl: &str, file: &str| cg_of(&id, ctrl, file);
        let (mem, quota) = if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
            ("memory.limit_in_bytes", ("cpu", "cpu.cfs_quota_us"))
        } else {
            ("memory.max", ("", "cpu.max"))
        };
        let mem_ctrl = if mem == "memory.max" { "" } else { "memory" };
        assert_eq!(cg(mem_ctrl, mem), (64u64 << 20).to_string());
        n.c.runtime
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 128 << 20,
                    cpu_quota: 50_000,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("UpdateContainerResources");
        assert_eq!(cg(mem_ctrl, mem), (128u64 << 20).to_string());
        assert!(
            cg(quota.0, quota.1).starts_with("50000"),
            "{}",
            cg(quota.0, quota.1)
        );
        let st = n.status(&id).await;
        assert_eq!(
            st.resources
                .and_then(|r| r.linux)
                .map(|l| l.memory_limit_in_bytes),
            Some(128 << 20)
        );
        let err =
            n.c.runtime
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: "nope".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        // Between create and start (where the kubelet's CPU manager sets cpusets) the update
        // lands in what the container starts with.
        let early = n
            .create(&pod, n.container_config("early", &["sleep", "3600"]))
            .await
            .unwrap();
        n.c.runtime
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: early.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 96 << 20,
                    cpu_quota: 30_000,
                    cpu_period: 100_000,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("UpdateContainerResources before start");
        n.start(&early).await;
        assert_eq!(cg_of(&early, mem_ctrl, mem), (96u64 << 20).to_string());
        assert!(
            cg_of(&early, quota.0, quota.1).starts_with("30000"),
            "{}",
            cg_of(&early, quota.0, quota.1)
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn a_created_container_runs_nothing_until_started_and_survives_restart_and_stop() {
    in_node(34, |mut n| async move {
        let pod = n.run_pod("deferred").await;
        let id = n
            .create(&pod, n.container_config("later", &["sleep", "3600"]))
            .await
            .unwrap();
        let state = n.server.dir.path().join("state");
        let runc_list = || runc_containers(&state);
        // Nothing is made in the runtime before StartContainer.
        assert_eq!(runc_list(), "");
        assert_eq!(
            n.status(&id).await.state,
            ContainerState::ContainerCreated as i32
        );
        // Still created, and startable, after a kill -9 of the daemon.
        n.server.crash_and_restart().unwrap();
        n.c = n.server.clients().await.unwrap();
        assert_eq!(
            n.status(&id).await.state,
            ContainerState::ContainerCreated as i32
        );
        // No process to stop: it stays created, as with containerd, and starts afterwards.
        n.c.runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .expect("StopContainer");
        assert_eq!(
            n.status(&id).await.state,
            ContainerState::ContainerCreated as i32
        );
        n.start(&id).await;
        assert_eq!(runc_list(), id);
        let st = n.status(&id).await;
        assert_eq!(st.state, ContainerState::ContainerRunning as i32);
        assert!(st.started_at >= st.created_at);

        // Once the pod is stopped, a created container can no longer start.
        let other = n
            .create(&pod, n.container_config("never", &["sleep", "3600"]))
            .await
            .unwrap();
        n.c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .expect("StopPodSandbox");
        let err =
            n.c.runtime
                .start_container(StartContainerRequest {
                    container_id: other.clone(),
                })
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert_eq!(
            n.status(&other).await.state,
            ContainerState::ContainerCreated as i32
        );
        n.remove_pod(&pod.0).await;
        assert_eq!(runc_list(), "");
    });
}

#[test]
fn crash_inside_start_container_reports_a_start_error_and_leaves_no_process() {
    in_node(35, |mut n| async move {
        let pod = n.run_pod("crashs").await;
        let id = n
            .create(&pod, n.container_config("victim", &["sleep", "3600"]))
            .await
            .unwrap();
        n.server.env = vec![(
            "CRI_SERVER_FAILPOINT".into(),
            "container-after-runtime-run".into(),
        )];
        n.server.stop_with(Signal::SIGTERM).unwrap();
        n.server.spawn().unwrap();
        n.c = n.server.clients().await.unwrap();
        let died =
            n.c.runtime
                .start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await;
        assert!(died.is_err(), "the daemon died mid-call");
        assert!(!n.server.wait_exit().unwrap().success());
        n.server.env.clear();
        n.server.spawn().unwrap();
        n.c = n.server.clients().await.unwrap();

        let st = n.status(&id).await;
        assert_eq!(st.state, ContainerState::ContainerExited as i32);
        assert_eq!(st.reason, "StartError");
        let state = n.server.dir.path().join("state");
        assert_eq!(runc_containers(&state), "");
        let procs = std::path::Path::new("/sys/fs/cgroup/pids")
            .join(n.cgroup_parent.trim_start_matches('/'))
            .join(&id)
            .join("cgroup.procs");
        assert_eq!(
            std::fs::read_to_string(&procs).unwrap_or_default().trim(),
            "",
            "the started process is gone"
        );
        n.c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer");
        // The pod goes on.
        let next = n.run_container(&pod, "next", &["true"]).await;
        assert_eq!(
            n.wait_exited(&next, Duration::from_secs(20))
                .await
                .exit_code,
            0
        );
        n.remove_pod(&pod.0).await;
        assert_eq!(count(&state.join("bundles")), 0);
    });
}

#[test]
fn stats_move_when_a_container_burns_cpu_memory_and_disk() {
    in_node(28, |mut n| async move {
        let pod = n.run_pod("stats").await;
        let id = n
            .run_container(
                &pod,
                "burner",
                &[
                    "sh",
                    "-c",
                    "x=$(head -c 30000000 /dev/zero | tr '\\0' a); while true; do :; done",
                ],
            )
            .await;
        n.sh(&id, "head -c 3000000 /dev/zero > /big").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let stats = loop {
            let s =
                n.c.runtime
                    .container_stats(ContainerStatsRequest {
                        container_id: id.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .unwrap();
            let cpu = s
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value)
                .unwrap_or(0);
            let rate = s
                .cpu
                .as_ref()
                .and_then(|c| c.usage_nano_cores)
                .map(|v| v.value)
                .unwrap_or(0);
            let ws = s
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value)
                .unwrap_or(0);
            let disk = s
                .writable_layer
                .as_ref()
                .and_then(|w| w.used_bytes)
                .map(|v| v.value)
                .unwrap_or(0);
            if cpu > 200_000_000 && rate > 100_000_000 && ws > 25_000_000 && disk >= 3_000_000 {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "stats did not move: cpu {cpu} rate {rate} ws {ws} disk {disk}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(stats.attributes.unwrap().id, id);
        let list =
            n.c.runtime
                .list_container_stats(ListContainerStatsRequest {
                    filter: Some(ContainerStatsFilter {
                        pod_sandbox_id: pod.0.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(list.stats.len(), 1);
        let ps =
            n.c.runtime
                .pod_sandbox_stats(PodSandboxStatsRequest {
                    pod_sandbox_id: pod.0.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap();
        let linux = ps.linux.unwrap();
        assert_eq!(
            linux
                .network
                .and_then(|n| n.default_interface)
                .map(|i| i.name),
            Some("eth0".to_string())
        );
        assert!(
            linux
                .process
                .and_then(|p| p.process_count)
                .map(|c| c.value)
                .unwrap_or(0)
                >= 1
        );
        assert_eq!(linux.containers.len(), 1);
        let all =
            n.c.runtime
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(all.stats.len(), 1);
        let descriptors =
            n.c.runtime
                .list_metric_descriptors(ListMetricDescriptorsRequest {})
                .await
                .unwrap()
                .into_inner()
                .descriptors;
        assert!(
            descriptors
                .iter()
                .any(|d| d.name == "container_cpu_usage_seconds_total")
        );
        let metrics =
            n.c.runtime
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
                .await
                .unwrap()
                .into_inner()
                .pod_metrics;
        let mine = metrics
            .iter()
            .find(|m| m.pod_sandbox_id == pod.0)
            .expect("pod metrics");
        let cpu = mine.container_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert!(cpu.value.as_ref().unwrap().value > 0);
        assert!(
            mine.metrics
                .iter()
                .any(|m| m.name == "container_network_receive_bytes_total"
                    && m.label_values[0] == "eth0")
        );
        n.remove_pod(&pod.0).await;
    });
}

#[test]
fn container_and_sandbox_events_arrive_in_order() {
    in_node(29, |mut n| async move {
        let mut stream =
            n.c.runtime
                .get_container_events(GetEventsRequest {})
                .await
                .unwrap()
                .into_inner();
        let pod = n.run_pod("events").await;
        let id = n
            .run_container(&pod, "short", &["sh", "-c", "sleep 0.5"])
            .await;
        n.wait_exited(&id, Duration::from_secs(20)).await;
        n.c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        n.remove_pod(&pod.0).await;
        let mut seen: Vec<(String, i32)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.contains(&(
            pod.0.clone(),
            ContainerEventType::ContainerDeletedEvent as i32,
        )) {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = tokio::time::timeout(left, stream.message())
                .await
                .expect("events in time")
                .unwrap()
                .unwrap();
            seen.push((e.container_id.clone(), e.container_event_type));
        }
        let of = |who: &str| {
            seen.iter()
                .filter(|(i, _)| i == who)
                .map(|(_, t)| *t)
                .collect::<Vec<_>>()
        };
        use ContainerEventType::*;
        let order = vec![
            ContainerCreatedEvent as i32,
            ContainerStartedEvent as i32,
            ContainerStoppedEvent as i32,
            ContainerDeletedEvent as i32,
        ];
        assert_eq!(of(&id), order, "container events");
        assert_eq!(of(&pod.0), order, "sandbox events");
    });
}

#[test]
fn removing_an_image_a_container_uses_keeps_its_layers_until_the_container_goes() {
    in_node(30, |mut n| async move {
        let pod = n.run_pod("imgrm").await;
        let id = n.run_container(&pod, "user", &["sleep", "3600"]).await;
        let layers = n.server.root.join("images/layers");
        let before: Vec<_> = std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(!before.is_empty());
        n.c.image
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: n.busybox.clone(),
                    ..Default::default()
                }),
            })
            .await
            .expect("RemoveImage");
        let st =
            n.c.image
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: n.busybox.clone(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
        assert!(st.image.is_none(), "the image itself is gone");
        let after: Vec<_> = std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(before, after, "layers a container uses are kept");
        assert_eq!(n.sh(&id, "echo still-running").await.1, "still-running");
        n.remove_pod(&pod.0).await;
        assert_eq!(
            std::fs::read_dir(&layers).unwrap().count(),
            0,
            "released with the container"
        );
    });
}

/// The kubelet's side of device plugin registration, for the test: records each Register.
struct KubeletStandIn(tokio::sync::mpsc::UnboundedSender<device_plugin::v1beta1::RegisterRequest>);

#[tonic::async_trait]
impl device_plugin::v1beta1::registration_server::Registration for KubeletStandIn {
    async fn register(
        &self,
        req: tonic::Request<device_plugin::v1beta1::RegisterRequest>,
    ) -> Result<tonic::Response<device_plugin::v1beta1::Empty>, tonic::Status> {
        let _ = self.0.send(req.into_inner());
        Ok(tonic::Response::new(device_plugin::v1beta1::Empty {}))
    }
}

#[test]
fn device_plugin_allocation_reaches_the_container_as_device_nodes_and_cdi() {
    in_node(31, |mut n| async move {
        use device_plugin::v1beta1::{
            AllocateRequest, ContainerAllocateRequest, device_plugin_client::DevicePluginClient,
            registration_server::RegistrationServer,
        };
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        // The node: device nodes made for the test, the plugin dir with kubelet.sock.
        let node_dir = tempfile::tempdir().unwrap();
        let plugin_dir = node_dir.path().join("device-plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let dev = node_dir.path().join("accel0");
        mknod(
            &dev,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 5),
        )
        .unwrap();
        let devices = node_dir.path().join("devices.json");
        std::fs::write(&devices, serde_json::to_vec(&serde_json::json!({"devices": [{"id": "accel0", "health": "Healthy", "deviceNodes": [{"path": dev, "containerPath": "/dev/accel0"}]}]})).unwrap()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::net::UnixListener::bind(plugin_dir.join("kubelet.sock")).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(KubeletStandIn(tx)))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        // Killed on drop, also when an assertion fails.
        let plugin = Kill(
            std::process::Command::new(e2e::daemon::bin_path("device-plugin"))
                .args([
                    "--backend",
                    "file",
                    "--resource-name",
                    "example.com/accel",
                    "--device-list-strategy",
                    "envvar,cdi-cri",
                ])
                .arg("--devices-file")
                .arg(&devices)
                .arg("--device-plugin-dir")
                .arg(&plugin_dir)
                .arg("--cdi-spec-dir")
                .arg(&n.cdi_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let reg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("registration")
            .unwrap();
        assert_eq!(reg.resource_name, "example.com/accel");
        let channel = e2e::cri::channel(&plugin_dir.join(&reg.endpoint))
            .await
            .unwrap();
        let mut client = DevicePluginClient::new(channel);
        let resp = client
            .allocate(AllocateRequest {
                container_requests: vec![ContainerAllocateRequest {
                    devices_ids: vec!["accel0".into()],
                }],
            })
            .await
            .expect("Allocate")
            .into_inner();
        let alloc = &resp.container_responses[0];
        drop(plugin);
        server.abort();

        // What the kubelet does with the answer: devices, envs and CDI names into CreateContainer.
        let pod = n.run_pod("accel").await;
        let mut cfg = n.container_config("user", &["sleep", "3600"]);
        cfg.devices = alloc
            .devices
            .iter()
            .map(|d| Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect();
        cfg.envs = alloc
            .envs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        cfg.cdi_devices = alloc
            .cdi_devices
            .iter()
            .map(|c| CdiDevice {
                name: c.name.clone(),
            })
            .collect();
        assert!(!cfg.cdi_devices.is_empty(), "the plugin answered CDI names");
        let id = n
            .create(&pod, cfg)
            .await
            .expect("create with the allocation");
        n.start(&id).await;
        assert_eq!(
            n.sh(&id, "head -c 4 /dev/accel0 | wc -c").await.1,
            "4",
            "the allocated device works in the container"
        );
        assert!(
            n.sh(&id, "env").await.1.contains("accel0"),
            "the visible-devices env carries the id"
        );
        n.remove_pod(&pod.0).await;
    });
}
