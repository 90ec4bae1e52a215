//! Pod features beyond containerd 1.6: user namespaces (`hostUsers: false`), recursive
//! read-only mounts and image volumes, end to end through the real cri-server and runc. Each
//! test runs in a node network namespace of its own on 10.235.x.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use e2e::images::{self, Entry, Pusher};
use e2e::node::*;
use k8s_cri::v1::*;
use tonic::Code;

fn node(subnet: u8) -> NodeOptions {
    NodeOptions {
        net: 235,
        subnet,
        ..Default::default()
    }
}

fn id_map(host: u32) -> Vec<IdMapping> {
    vec![IdMapping {
        host_id: host,
        container_id: 0,
        length: 65536,
    }]
}

/// The kubelet's pod config for `hostUsers: false` with the given mappings.
fn userns_pod(
    n: &Node,
    name: &str,
    uids: Vec<IdMapping>,
    gids: Vec<IdMapping>,
) -> PodSandboxConfig {
    let mut cfg = n.pod_config(name);
    let ns = cfg
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    ns.userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids,
        gids,
    });
    cfg
}

fn state_dir(n: &Node) -> PathBuf {
    n.server.dir.path().join("state")
}

/// Nothing of any pod or container is left in the daemon's dirs (pins, prepared mounts).
fn assert_nothing_left(n: &Node) {
    let state = state_dir(n);
    assert_eq!(count(&state.join("ns")), 0, "namespace pins left");
    assert_eq!(count(&state.join("pods")), 0, "pod dirs left");
    let mnt: Vec<_> = std::fs::read_dir(state.join("mnt"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(mnt.is_empty(), "prepared mounts left: {mnt:?}");
    assert_eq!(
        mounts_under(&state.join("mnt")).len(),
        1,
        "only the private mnt dir itself"
    );
    assert!(allocated_ips(&n.ipam_dir).is_empty(), "IPs left");
}

fn uid_of_process(marker: &str) -> u32 {
    let pids = pids_where(|c| String::from_utf8_lossy(c).contains(marker));
    let pid = pids
        .first()
        .unwrap_or_else(|| panic!("no process with {marker:?}"));
    std::fs::metadata(format!("/proc/{pid}")).unwrap().uid()
}

#[test]
fn status_reports_user_namespaces_and_recursive_read_only_as_supported() {
    in_node_opts(node(1), |mut n| async move {
        let st =
            n.c.runtime
                .status(StatusRequest { verbose: false })
                .await
                .unwrap_or_else(|e| panic!("{e:?}\n{}", n.server.log()))
                .into_inner();
        assert!(!st.runtime_handlers.is_empty());
        for h in st.runtime_handlers {
            let f = h.features.unwrap();
            assert!(f.user_namespaces, "handler {:?}", h.name);
            assert!(f.recursive_read_only_mounts, "handler {:?}", h.name);
        }
    });
}

#[test]
fn user_namespace_pod_is_root_inside_and_mapped_outside_with_idmapped_volumes() {
    in_node_opts(node(2), |mut n| async move {
        let vol = tempfile::tempdir().unwrap();
        std::fs::write(vol.path().join("owned-by-1000"), b"x").unwrap();
        std::os::unix::fs::chown(vol.path().join("owned-by-1000"), Some(1000), Some(1000)).unwrap();
        let mut cfg = userns_pod(&n, "userns", id_map(200_000), id_map(300_000));
        cfg.linux
            .as_mut()
            .unwrap()
            .sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        let pod = n.run_pod_with(cfg).await;
        let mut c = n.container_config("app", &["sh", "-c", "sleep 3600; : userns-marker-e2e"]);
        c.mounts.push(Mount {
            container_path: "/vol".into(),
            host_path: vol.path().display().to_string(),
            ..Default::default()
        });
        // A single file, as the kubelet mounts termination-log and etc-hosts.
        let log_file = vol.path().join("termination-log");
        std::fs::write(&log_file, b"").unwrap();
        c.mounts.push(Mount {
            container_path: "/dev/termination-log".into(),
            host_path: log_file.display().to_string(),
            ..Default::default()
        });
        let id = n.run_container_with(&pod, c).await;

        let (code, out, err) = n.sh(&id, "id -u; id -g; cat /proc/self/uid_map").await;
        assert_eq!(code, 0, "{err}");
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words, ["0", "0", "0", "200000", "65536"]);
        assert_eq!(
            uid_of_process("userns-marker-e2e"),
            200_000,
            "host sees the mapped uid"
        );

        // Hostname and sysctls were set in namespaces the user namespace owns.
        let (code, out, err) = n
            .sh(
                &id,
                "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
            )
            .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "userns\n0");

        // The image's files are root's inside; writes to the rootfs land as mapped ids.
        let (code, out, err) = n
            .sh(&id, "stat -c %u:%g /bin/busybox /home/app && echo data > /new-file && touch /by-1234 && chown 1234:1234 /by-1234")
            .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "0:0\n1000:1000");
        let upper = n.server.root.join("container-data").join(&id).join("upper");
        let meta = std::fs::metadata(upper.join("new-file")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (200_000, 300_000));
        let by = std::fs::metadata(upper.join("by-1234")).unwrap();
        assert_eq!((by.uid(), by.gid()), (201_234, 301_234));

        // The volume is id-mapped: owners on disk are the owners seen inside.
        let (code, out, err) = n
            .sh(
                &id,
                "stat -c %u /vol/owned-by-1000 && echo v > /vol/written && echo ok",
            )
            .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "1000\nok");
        let written = std::fs::metadata(vol.path().join("written")).unwrap();
        assert_eq!((written.uid(), written.gid()), (0, 0));

        // The pod's own files belong to its root.
        let (code, _, err) = n
            .sh(&id, "echo 10.0.0.1 extra >> /etc/hosts && touch /dev/shm/x")
            .await;
        assert_eq!(code, 0, "{err}");

        assert!(
            !n.server.log().contains("cri-exec could not run"),
            "ExecSync joined the user namespace itself"
        );
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
    });
}

#[test]
fn shared_pid_namespace_pod_with_user_namespace_sees_its_processes() {
    in_node_opts(node(3), |mut n| async move {
        let mut cfg = userns_pod(&n, "sharedpid", id_map(400_000), id_map(400_000));
        let ns = cfg
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap();
        ns.pid = NamespaceMode::Pod as i32;
        let pod = n.run_pod_with(cfg).await;
        let mut a = n.container_config("a", &["sleep", "3600"]);
        a.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Pod as i32,
                    userns_options: pod.1.linux.as_ref().and_then(|l| {
                        l.security_context
                            .as_ref()
                            .and_then(|s| s.namespace_options.as_ref())
                            .and_then(|o| o.userns_options.clone())
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut b = a.clone();
        b.metadata.as_mut().unwrap().name = "b".into();
        b.command = vec!["sleep".into(), "3601".into()];
        let ida = n.run_container_with(&pod, a).await;
        let _idb = n.run_container_with(&pod, b).await;
        n.wait_ps(&ida, "sleep 3601", true).await;
        let (code, out, err) = n.sh(&ida, "id -u; cat /proc/1/comm").await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "0\ncri-pause");
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
    });
}

#[test]
fn invalid_user_namespace_requests_are_refused_and_leave_nothing() {
    in_node_opts(node(4), |mut n| async move {
        let two = vec![
            IdMapping {
                host_id: 500_000,
                container_id: 0,
                length: 1000,
            },
            IdMapping {
                host_id: 600_000,
                container_id: 1000,
                length: 1000,
            },
        ];
        let no_root = vec![IdMapping {
            host_id: 500_000,
            container_id: 1,
            length: 65536,
        }];
        let mut cases: Vec<(&str, PodSandboxConfig)> = vec![
            ("two ranges", userns_pod(&n, "bad1", two, id_map(500_000))),
            (
                "root unmapped",
                userns_pod(&n, "bad2", id_map(500_000), no_root),
            ),
        ];
        for (name, mode) in [
            ("container", NamespaceMode::Container),
            ("target", NamespaceMode::Target),
        ] {
            let mut cfg = userns_pod(&n, name, id_map(500_000), id_map(500_000));
            let o = cfg
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            o.namespace_options
                .as_mut()
                .unwrap()
                .userns_options
                .as_mut()
                .unwrap()
                .mode = mode as i32;
            cases.push((name, cfg));
        }
        let mut hostnet = userns_pod(&n, "hostnet", id_map(500_000), id_map(500_000));
        let o = hostnet
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        o.namespace_options.as_mut().unwrap().network = NamespaceMode::Node as i32;
        cases.push(("host network", hostnet));
        for (name, cfg) in cases {
            let err =
                n.c.runtime
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(cfg),
                        runtime_handler: String::new(),
                    })
                    .await
                    .expect_err(name);
            assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        }
        let pods =
            n.c.runtime
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .items;
        assert!(pods.is_empty());
        assert_nothing_left(&n);

        // A container whose user namespace differs from its pod's is refused too.
        let pod = n
            .run_pod_with(userns_pod(&n, "good", id_map(500_000), id_map(500_000)))
            .await;
        let mut c = n.container_config("c", &["true"]);
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    userns_options: Some(UserNamespace {
                        mode: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = n
            .create(&pod, c)
            .await
            .expect_err("mismatched user namespace");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        // A volume whose filesystem cannot be id-mapped (sysfs) fails clearly, leaving nothing.
        let mut c = n.container_config("sysfs", &["true"]);
        c.mounts = vec![Mount {
            container_path: "/host-sys".into(),
            host_path: "/sys/kernel".into(),
            readonly: true,
            ..Default::default()
        }];
        let err = n
            .create(&pod, c)
            .await
            .expect_err("sysfs cannot be id-mapped");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("id-mapped"), "{err:?}");
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
    });
}

/// A tmpfs mounted below `dir`, unmounted when dropped (also when the test fails).
struct Submount(PathBuf);

impl Submount {
    fn new(dir: &Path) -> Submount {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        Submount(dir.to_path_buf())
    }
}

impl Drop for Submount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn recursive_read_only_mount_makes_its_submounts_read_only_and_bad_combinations_are_refused() {
    in_node_opts(node(5), |mut n| async move {
        let vol = tempfile::tempdir().unwrap();
        let _sub = Submount::new(&vol.path().join("sub"));
        let pod = n.run_pod("rro").await;
        let mount = |path: &str, rro: bool| Mount {
            container_path: path.into(),
            host_path: vol.path().display().to_string(),
            readonly: true,
            recursive_read_only: rro,
            ..Default::default()
        };
        let mut c = n.container_config("app", &["sleep", "3600"]);
        c.mounts = vec![mount("/rro", true), mount("/ro", false)];
        let id = n.run_container_with(&pod, c).await;
        let (_, out, _) = n
            .sh(&id, "touch /rro/f 2>&1; touch /rro/sub/f 2>&1; touch /ro/sub/plain-ro && echo plain-ro-submount-writable")
            .await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("Read-only file system"), "{out}");
        assert!(lines[1].contains("Read-only file system"), "{out}");
        assert_eq!(lines[2], "plain-ro-submount-writable");
        assert!(!vol.path().join("sub/f").exists());

        // readonly: false, or propagation other than private: refused, nothing made.
        let before =
            n.c.runtime
                .list_containers(ListContainersRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .containers
                .len();
        for (i, (readonly, propagation)) in [
            (false, MountPropagation::PropagationPrivate),
            (true, MountPropagation::PropagationHostToContainer),
            (true, MountPropagation::PropagationBidirectional),
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = n.container_config(&format!("bad{i}"), &["true"]);
            c.mounts = vec![Mount {
                readonly,
                propagation: propagation as i32,
                ..mount("/rro", true)
            }];
            let err = n.create(&pod, c).await.expect_err("bad rro combination");
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        }
        let after =
            n.c.runtime
                .list_containers(ListContainersRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .containers
                .len();
        assert_eq!(before, after);
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
        std::fs::write(vol.path().join("sub/f"), b"x").expect("the host's submount stays writable");
    });
}

#[test]
fn image_volume_is_mounted_read_only_with_sub_path_digest_and_removal_guard() {
    in_node_opts(node(6), |mut n| async move {
        let pusher = Pusher::for_registry(&n._registry).unwrap();
        let layer = images::build_layer(
            &[
                Entry::dir("data", 0o755),
                Entry::file("data/hello.txt", 0o644, "hello from the image\n"),
                Entry::dir("data/sub", 0o755),
                Entry::file("data/sub/deep.txt", 0o644, "deep\n"),
                Entry::symlink("data/escape", "/etc"),
                Entry::file("data/plain", 0o644, "not a dir\n"),
            ],
            images::Compression::Gzip,
        )
        .unwrap();
        let second = images::build_layer(
            &[Entry::file("data/second.txt", 0o644, "layer two\n")],
            images::Compression::Gzip,
        )
        .unwrap();
        let pushed = pusher
            .push_image(
                "test/content",
                Some("v1"),
                &images::ImageSpec::new(vec![layer, second]),
            )
            .await
            .unwrap();
        let content = format!("{}/test/content:v1", pusher.addr());
        n.c.image
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: content.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let image_mount = |path: &str, sub: &str| Mount {
            container_path: path.into(),
            readonly: true,
            image: Some(ImageSpec {
                image: content.clone(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        };
        let pod = n.run_pod("imgvol").await;
        let mut c = n.container_config("app", &["sleep", "3600"]);
        c.mounts = vec![image_mount("/img", ""), image_mount("/sub", "data/sub")];
        let id = n.run_container_with(&pod, c).await;
        let (code, out, err) = n
            .sh(&id, "cat /img/data/hello.txt /img/data/second.txt /sub/deep.txt; ls /sub; touch /img/x 2>&1 || true")
            .await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            "hello from the image\nlayer two\ndeep\ndeep.txt\ntouch: /img/x: Read-only file system"
        );

        let st = n.status(&id).await;
        let img = st.mounts[0].image.as_ref().unwrap();
        assert!(
            img.image.ends_with(&pushed.manifest_digest) && img.image.contains('@'),
            "{img:?}"
        );
        assert_eq!(img.user_specified_image, content);
        assert_eq!(st.mounts[1].image_sub_path, "data/sub");

        // The image cannot be removed while mounted.
        let remove = |n: &mut Node| {
            let image = content.clone();
            let mut c = n.c.image.clone();
            async move {
                c.remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image,
                        ..Default::default()
                    }),
                })
                .await
            }
        };
        let err = remove(&mut n).await.expect_err("in use");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

        // Bad sub paths and writable image volumes are refused with nothing made.
        for (i, (m, want)) in [
            (image_mount("/x", "data/missing"), "does not exist"),
            (image_mount("/x", "data/plain"), "is not a directory"),
            (image_mount("/x", "../data"), "relative"),
            (
                Mount {
                    readonly: false,
                    ..image_mount("/x", "")
                },
                "read-only",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = n.container_config(&format!("bad{i}"), &["true"]);
            c.mounts = vec![m];
            let err = n.create(&pod, c).await.expect_err("bad image volume");
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(want), "{err:?}");
        }
        // An absolute symlink in the image resolves inside the image, never to the host.
        let mut c = n.container_config("escape", &["sleep", "3600"]);
        c.mounts = vec![image_mount("/esc", "data/escape")];
        let err = n
            .create(&pod, c)
            .await
            .expect_err("escape resolves inside the image");
        assert!(err.message().contains("does not exist"), "{err:?}");

        // Right after RemoveContainer (whose cleanup finishes in the background), the image
        // can go: RemoveImage waits for the container's leases.
        n.c.runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
        n.c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        remove(&mut n)
            .await
            .expect("removable once no container uses it");
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
    });
}

#[test]
fn image_volume_in_a_user_namespace_pod_shows_the_image_files_as_root() {
    in_node_opts(node(7), |mut n| async move {
        let cfg = userns_pod(&n, "uimg", id_map(700_000), id_map(700_000));
        let pod = n.run_pod_with(cfg).await;
        let mut c = n.container_config("app", &["sleep", "3600"]);
        c.mounts = vec![Mount {
            container_path: "/img".into(),
            readonly: true,
            image: Some(ImageSpec {
                image: n.busybox.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let id = n.run_container_with(&pod, c).await;
        let (code, out, err) = n.sh(&id, "stat -c %u /img/bin/busybox").await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "0");
        // A bad sub path fails after the id-mapped layers were made: they go with the error.
        let mut bad = n.container_config("bad", &["true"]);
        bad.mounts = vec![Mount {
            container_path: "/img".into(),
            readonly: true,
            image: Some(ImageSpec {
                image: n.busybox.clone(),
                ..Default::default()
            }),
            image_sub_path: "no/such/dir".into(),
            ..Default::default()
        }];
        let before = mounts_under(&state_dir(&n).join("mnt")).len();
        let err = n.create(&pod, bad).await.expect_err("bad sub path");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(mounts_under(&state_dir(&n).join("mnt")).len(), before);
        n.remove_pod(&pod.0).await;
        assert_nothing_left(&n);
    });
}
