//! `build` end to end: a CRI request and an image config in, the spec's fields asserted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    Capability as CriCapability, ContainerConfig, ContainerMetadata, Device, HugepageLimit,
    ImageSpec, Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    MountPropagation, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    SecurityProfile, SupplementalGroupsPolicy, security_profile::ProfileType,
};
use oci_spec::runtime::{
    Capability, LinuxDeviceType, LinuxNamespaceType, LinuxSeccompAction, Mount as OciMount, Spec,
};

use super::host::HostFacts;
use super::*;
use crate::image::RunConfig;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:app\napp:x:1000:\nmedia:x:500:app\n";

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rootfs: PathBuf,
    sandbox: PodSandboxConfig,
    image: RunConfig,
    namespaces: SandboxNamespaces,
    etc: EtcFiles,
    can_lower: bool,
    seccomp_root: PathBuf,
    host: HostFacts,
    userns: Option<crate::sandbox::userns::Userns>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
        let pod = dir.join("pod");
        std::fs::create_dir_all(pod.join("shm")).unwrap();
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(pod.join(f), "x\n").unwrap();
        }
        let seccomp_root = dir.join("seccomp");
        std::fs::create_dir_all(&seccomp_root).unwrap();
        let mut caps = capabilities::from_mask(u64::MAX);
        caps.retain(|c| *c != Capability::SysResource);
        Env {
            _tmp: tmp,
            rootfs,
            sandbox: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: "web-pod".into(),
                ..Default::default()
            },
            image: RunConfig {
                env: vec!["PATH=/image/bin".into(), "LANG=C".into()],
                entrypoint: vec!["/entry".into()],
                cmd: vec!["serve".into()],
                ..Default::default()
            },
            namespaces: SandboxNamespaces {
                net: Some("/run/pins/net".into()),
                ipc: Some("/run/pins/ipc".into()),
                uts: Some("/run/pins/uts".into()),
                ..Default::default()
            },
            etc: EtcFiles {
                hosts: Some(pod.join("hosts")),
                hostname: Some(pod.join("hostname")),
                resolv_conf: Some(pod.join("resolv.conf")),
                shm: Some(pod.join("shm")),
            },
            dir,
            can_lower: true,
            seccomp_root,
            host: HostFacts {
                cgroup_unified: false,
                swap_available: true,
                hugetlb_available: true,
                current_caps: caps,
                kernel: (6, 1),
                arch: "x86_64",
                oom_score_adj: 0,
                hostname: "node-1".into(),
            },
            userns: None,
        }
    }

    fn build(&self, config: &ContainerConfig) -> Result<Spec, SpecError> {
        let input = SpecInput {
            container_id: "c1",
            sandbox_id: "s1",
            config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: &self.rootfs,
            namespaces: self.namespaces.clone(),
            etc_files: self.etc.clone(),
            cgroups_path: "/kubepods/poduid-1/c1".into(),
            can_lower_oom_score: self.can_lower,
            seccomp_profile_root: &self.seccomp_root,
            userns: self.userns,
        };
        build_with(&input, &self.host)
    }

    fn privileged_sandbox(&mut self) {
        self.sandbox.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
}

fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            resources: None,
        }),
        ..Default::default()
    }
}

fn with_resources(r: LinuxContainerResources) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: None,
            resources: Some(r),
        }),
        ..Default::default()
    }
}

fn process(s: &Spec) -> &oci_spec::runtime::Process {
    s.process().as_ref().unwrap()
}

fn linux(s: &Spec) -> &oci_spec::runtime::Linux {
    s.linux().as_ref().unwrap()
}

fn mounts(s: &Spec) -> &[OciMount] {
    s.mounts().as_deref().unwrap()
}

fn find_mount<'a>(s: &'a Spec, dest: &str) -> Option<&'a OciMount> {
    mounts(s)
        .iter()
        .find(|m| m.destination() == Path::new(dest))
}

fn options(m: &OciMount) -> Vec<&str> {
    m.options()
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect()
}

fn ns(s: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    linux(s)
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

fn caps_of(s: &Spec) -> std::collections::HashSet<Capability> {
    process(s)
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap()
}

#[test]
fn minimal_container_runs_the_image_command_as_root_with_defaults() {
    let env = Env::new();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    assert_eq!(spec.version(), oci_spec::runtime::VERSION);
    let p = process(&spec);
    assert_eq!(p.args().as_deref().unwrap(), ["/entry", "serve"]);
    assert_eq!(
        p.env().as_deref().unwrap(),
        ["PATH=/image/bin", "HOSTNAME=web-pod", "LANG=C"]
    );
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[0][..]));
    assert!(p.rlimits().is_none());
    assert_eq!(p.no_new_privileges(), Some(false));
    assert_eq!(p.oom_score_adj(), None);
    assert!(p.apparmor_profile().is_none());
    let caps = caps_of(&spec);
    assert_eq!(caps.len(), 14);
    assert!(caps.contains(&Capability::NetRaw) && !caps.contains(&Capability::SysAdmin));
    let pc = p.capabilities().as_ref().unwrap();
    assert_eq!(pc.effective(), pc.bounding());
    assert_eq!(pc.permitted(), pc.bounding());
    assert!(pc.ambient().is_none() && pc.inheritable().is_none());

    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), &env.rootfs);
    assert_eq!(root.readonly(), Some(false));
    assert_eq!(
        linux(&spec).cgroups_path().as_deref(),
        Some(Path::new("/kubepods/poduid-1/c1"))
    );
    assert!(linux(&spec).sysctl().is_none());
    // Joined pod UTS namespace: the hostname is already there.
    assert_eq!(spec.hostname(), &None);
}

#[test]
fn command_replaces_entrypoint_and_cmd_args_replace_cmd() {
    let env = Env::new();
    let c = ContainerConfig {
        command: vec!["/bin/sh".into(), "-c".into()],
        ..Default::default()
    };
    assert_eq!(
        process(&env.build(&c).unwrap()).args().as_deref().unwrap(),
        ["/bin/sh", "-c"]
    );
    let c = ContainerConfig {
        args: vec!["--port".into(), "80".into()],
        ..Default::default()
    };
    assert_eq!(
        process(&env.build(&c).unwrap()).args().as_deref().unwrap(),
        ["/entry", "--port", "80"]
    );
    let c = ContainerConfig {
        command: vec!["/bin/echo".into()],
        args: vec!["hi".into()],
        ..Default::default()
    };
    assert_eq!(
        process(&env.build(&c).unwrap()).args().as_deref().unwrap(),
        ["/bin/echo", "hi"]
    );
}

#[test]
fn no_command_anywhere_is_invalid_argument() {
    let mut env = Env::new();
    env.image.entrypoint.clear();
    env.image.cmd.clear();
    assert!(matches!(
        env.build(&ContainerConfig::default()),
        Err(SpecError::InvalidArgument(_))
    ));
}

#[test]
fn cri_envs_override_image_envs_in_place_and_path_defaults() {
    let mut env = Env::new();
    let c = ContainerConfig {
        envs: vec![
            KeyValue {
                key: "LANG".into(),
                value: "en_US.UTF-8".into(),
            },
            KeyValue {
                key: "EXTRA".into(),
                value: "a=b".into(),
            },
        ],
        tty: true,
        working_dir: "/srv".into(),
        ..Default::default()
    };
    let spec = env.build(&c).unwrap();
    let p = process(&spec);
    assert_eq!(
        p.env().as_deref().unwrap(),
        [
            "PATH=/image/bin",
            "TERM=xterm",
            "HOSTNAME=web-pod",
            "LANG=en_US.UTF-8",
            "EXTRA=a=b"
        ]
    );
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.cwd(), Path::new("/srv"));

    env.image.env.clear();
    env.image.working_dir = "/app".into();
    env.sandbox.hostname.clear();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    assert_eq!(
        process(&spec).env().as_deref().unwrap(),
        [process::DEFAULT_PATH, "HOSTNAME=node-1"]
    );
    assert_eq!(process(&spec).cwd(), Path::new("/app"));
}

#[test]
fn user_comes_from_the_security_context_or_the_image() {
    let mut env = Env::new();
    env.image.user = "app".into();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let u = process(&spec).user();
    assert_eq!((u.uid(), u.gid()), (1000, 1000));
    assert_eq!(u.additional_gids().as_deref(), Some(&[10, 500, 1000][..]));

    let c = with_sc(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        run_as_group: Some(Int64Value { value: 3000 }),
        supplemental_groups: vec![4000],
        supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    });
    let spec = env.build(&c).unwrap();
    let u = process(&spec).user();
    assert_eq!((u.uid(), u.gid()), (1000, 3000));
    assert_eq!(u.additional_gids().as_deref(), Some(&[3000, 4000][..]));

    let c = with_sc(LinuxContainerSecurityContext {
        run_as_username: "ghost".into(),
        ..Default::default()
    });
    assert!(matches!(env.build(&c), Err(SpecError::UserNotFound { .. })));
    env.image.user = "app:nogroup".into();
    assert!(matches!(
        env.build(&ContainerConfig::default()),
        Err(SpecError::GroupNotFound { .. })
    ));
}

#[test]
fn capabilities_add_and_drop_with_all_and_either_spelling() {
    let env = Env::new();
    let caps = |add: &[&str], drop: &[&str]| {
        let c = with_sc(LinuxContainerSecurityContext {
            capabilities: Some(CriCapability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        });
        env.build(&c).map(|s| caps_of(&s))
    };
    let c = caps(&["NET_ADMIN", "CAP_SYS_TIME"], &["net_raw", "CAP_MKNOD"]).unwrap();
    assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysTime));
    assert!(!c.contains(&Capability::NetRaw) && !c.contains(&Capability::Mknod));
    assert_eq!(c.len(), 14);

    let c = caps(&["NET_BIND_SERVICE"], &["ALL"]).unwrap();
    assert_eq!(c, [Capability::NetBindService].into_iter().collect());

    // ALL is what this host can grant: no SYS_RESOURCE here.
    let c = caps(&["ALL"], &["CHOWN"]).unwrap();
    assert_eq!(c.len(), 39);
    assert!(!c.contains(&Capability::Chown) && !c.contains(&Capability::SysResource));

    assert!(matches!(
        caps(&["TELEPORT"], &[]),
        Err(SpecError::InvalidArgument(_))
    ));
}

#[test]
fn privileged_container_gets_everything_and_needs_a_privileged_sandbox() {
    let mut env = Env::new();
    let c = with_sc(LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    });
    assert!(matches!(env.build(&c), Err(SpecError::InvalidArgument(_))));

    env.privileged_sandbox();
    env.host.cgroup_unified = true;
    let spec = env.build(&c).unwrap();
    assert_eq!(caps_of(&spec).len(), env.host.current_caps.len());
    let l = linux(&spec);
    assert!(l.masked_paths().is_none() && l.readonly_paths().is_none());
    assert!(l.seccomp().is_none());
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow() && rules[0].typ().is_none() && rules[0].major().is_none());
    assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    let devs = l.devices().as_ref().unwrap();
    assert!(devs.iter().any(|d| d.path() == Path::new("/dev/null")));
    assert!(options(find_mount(&spec, "/sys").unwrap()).contains(&"rw"));
    assert!(options(find_mount(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw"));
    // No cgroup namespace for privileged containers, even on cgroup v2.
    assert!(
        !ns(&spec)
            .iter()
            .any(|(t, _)| *t == LinuxNamespaceType::Cgroup)
    );
}

#[test]
fn default_mounts_then_pod_files_in_containerd_order() {
    let env = Env::new();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let dests: Vec<_> = mounts(&spec)
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm",
        ]
    );
    let sys = find_mount(&spec, "/sys").unwrap();
    assert_eq!(sys.typ().as_deref(), Some("sysfs"));
    assert_eq!(options(sys), ["nosuid", "noexec", "nodev", "ro"]);
    assert_eq!(
        options(find_mount(&spec, "/sys/fs/cgroup").unwrap()),
        ["nosuid", "noexec", "nodev", "relatime", "ro"]
    );
    let hosts = find_mount(&spec, "/etc/hosts").unwrap();
    assert_eq!(hosts.typ().as_deref(), Some("bind"));
    assert_eq!(
        hosts.source().as_deref(),
        Some(
            std::fs::canonicalize(env.etc.hosts.as_ref().unwrap())
                .unwrap()
                .as_path()
        )
    );
    assert_eq!(options(hosts), ["rbind", "rprivate", "rw"]);
    assert_eq!(
        options(find_mount(&spec, "/dev/shm").unwrap()),
        ["rbind", "rprivate", "rw"]
    );

    // A read-only rootfs makes the etc files read-only, not /dev/shm.
    let c = with_sc(LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    });
    let spec = env.build(&c).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    for f in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        assert_eq!(
            options(find_mount(&spec, f).unwrap()),
            ["rbind", "rprivate", "ro"]
        );
    }
    assert!(options(find_mount(&spec, "/dev/shm").unwrap()).contains(&"rw"));
}

#[test]
fn shm_is_a_private_tmpfs_without_a_pod_dir_and_the_hosts_with_host_ipc() {
    let mut env = Env::new();
    env.etc.shm = None;
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let shm = find_mount(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
    assert_eq!(
        options(shm),
        ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
    );

    env.namespaces.host_ipc = true;
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let shm = find_mount(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
}

fn bind(container: &str, host: &Path, readonly: bool) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

#[test]
fn cri_mounts_are_resolved_sorted_and_replace_defaults() {
    let env = Env::new();
    let data = env.dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let link = env.dir.join("data-link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let my_hosts = env.dir.join("my-hosts");
    std::fs::write(&my_hosts, "127.0.0.1 me\n").unwrap();
    let c = ContainerConfig {
        mounts: vec![
            bind("/data/sub/", &data.join("sub"), false),
            bind("/data", &link, true),
            bind("/etc/hosts", &my_hosts, true),
        ],
        ..Default::default()
    };
    let spec = env.build(&c).unwrap();
    let binds: Vec<_> = mounts(&spec)
        .iter()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .map(|m| m.destination().display().to_string())
        .collect();
    // Sorted by depth (parents first), stable; the CRI /etc/hosts replaces the pod's.
    assert_eq!(
        binds,
        [
            "/data",
            "/data/sub",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/shm"
        ]
    );
    let d = find_mount(&spec, "/data").unwrap();
    assert_eq!(
        d.source().as_deref(),
        Some(std::fs::canonicalize(&data).unwrap().as_path())
    );
    assert_eq!(options(d), ["rbind", "rprivate", "ro"]);
    let h = find_mount(&spec, "/etc/hosts").unwrap();
    assert_eq!(
        h.source().as_deref(),
        Some(std::fs::canonicalize(&my_hosts).unwrap().as_path())
    );
    assert_eq!(
        mounts(&spec)
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .count(),
        1
    );
    assert!(linux(&spec).rootfs_propagation().is_none());

    // A CRI /dev drops every default mount under /dev.
    let c = ContainerConfig {
        mounts: vec![bind("/dev", Path::new("/dev"), false)],
        ..Default::default()
    };
    let spec = env.build(&c).unwrap();
    assert!(find_mount(&spec, "/dev/pts").is_none());
    assert!(find_mount(&spec, "/dev/mqueue").is_none());
    assert_eq!(
        find_mount(&spec, "/dev").unwrap().typ().as_deref(),
        Some("bind")
    );
}

#[test]
fn unusable_mounts_are_invalid_arguments() {
    let env = Env::new();
    let bad = |m: Mount| {
        let c = ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        matches!(env.build(&c), Err(SpecError::InvalidArgument(_)))
    };
    assert!(bad(bind("/x", &env.dir.join("missing"), false)));
    assert!(bad(bind("relative", &env.dir, false)));
    assert!(bad(Mount {
        recursive_read_only: true,
        ..bind("/x", &env.dir, true)
    }));
    assert!(bad(Mount {
        container_path: "/img".into(),
        image: Some(ImageSpec {
            image: "sha256:abc".into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
}

#[test]
fn propagation_maps_to_rslave_and_rshared_on_suitable_sources() {
    let env = Env::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let src = std::fs::canonicalize(&env.dir).unwrap();
    for (prop, opt, shared) in [
        (
            MountPropagation::PropagationHostToContainer,
            "rslave",
            false,
        ),
        (MountPropagation::PropagationBidirectional, "rshared", true),
    ] {
        let c = ContainerConfig {
            mounts: vec![Mount {
                propagation: prop as i32,
                ..bind("/x", &env.dir, false)
            }],
            ..Default::default()
        };
        let got = env.build(&c);
        // Whether it may depends on how this host mounts the temp dir.
        if mounts::check_propagation(&src, shared, &mountinfo).is_ok() {
            let spec = got.unwrap();
            assert_eq!(
                options(find_mount(&spec, "/x").unwrap()),
                ["rbind", opt, "rw"]
            );
            assert_eq!(linux(&spec).rootfs_propagation().as_deref(), Some(opt));
        } else {
            assert!(matches!(got, Err(SpecError::InvalidArgument(_))));
        }
    }
}

#[test]
fn devices_get_nodes_and_allow_rules_after_deny_all() {
    let env = Env::new();
    let c = ContainerConfig {
        devices: vec![Device {
            host_path: "/dev/null".into(),
            container_path: "/dev/xnull".into(),
            permissions: "rw".into(),
        }],
        ..Default::default()
    };
    let spec = env.build(&c).unwrap();
    let l = linux(&spec);
    let devs = l.devices().as_ref().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].path(), Path::new("/dev/xnull"));
    assert_eq!(devs[0].typ(), LinuxDeviceType::C);
    assert_eq!((devs[0].major(), devs[0].minor()), (1, 3));
    let rules = l.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert_eq!(rules.len(), 2);
    assert!(!rules[0].allow() && rules[0].major().is_none());
    assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    assert!(rules[1].allow());
    assert_eq!((rules[1].major(), rules[1].minor()), (Some(1), Some(3)));
    assert_eq!(rules[1].typ(), Some(LinuxDeviceType::C));
    assert_eq!(rules[1].access().as_deref(), Some("rw"));

    let spec = env.build(&ContainerConfig::default()).unwrap();
    assert!(linux(&spec).devices().is_none());
}

#[test]
fn namespaces_join_the_pod_and_honour_host_modes() {
    use LinuxNamespaceType as T;
    let mut env = Env::new();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    assert_eq!(
        ns(&spec),
        [
            (T::Pid, None),
            (T::Ipc, Some("/run/pins/ipc".into())),
            (T::Uts, Some("/run/pins/uts".into())),
            (T::Mount, None),
            (T::Network, Some("/run/pins/net".into())),
        ]
    );

    // Shared pid namespace, cgroup v2 host.
    env.namespaces.pid = Some("/proc/42/ns/pid".into());
    env.host.cgroup_unified = true;
    let pod_pid = with_sc(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = env.build(&pod_pid).unwrap();
    assert_eq!(ns(&spec)[0], (T::Pid, Some("/proc/42/ns/pid".into())));
    assert_eq!(ns(&spec).last().unwrap(), &(T::Cgroup, None));
    let own_pid = with_sc(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(ns(&env.build(&own_pid).unwrap())[0], (T::Pid, None));

    // Host network, IPC and PID: none of those namespaces, no hostname.
    env.namespaces = SandboxNamespaces {
        host_network: true,
        host_ipc: true,
        host_pid: true,
        ..Default::default()
    };
    env.host.cgroup_unified = false;
    let spec = env.build(&pod_pid).unwrap();
    assert_eq!(ns(&spec), [(T::Mount, None)]);
    assert_eq!(spec.hostname(), &None);
    // HOSTNAME still comes from the sandbox (the kubelet sends the node's name).
    assert!(
        process(&spec)
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=web-pod".to_string())
    );
}

#[test]
fn hostname_is_set_only_for_a_private_uts_namespace() {
    let mut env = Env::new();
    env.namespaces.uts = None;
    let spec = env.build(&ContainerConfig::default()).unwrap();
    assert_eq!(spec.hostname().as_deref(), Some("web-pod"));
    assert!(ns(&spec).contains(&(LinuxNamespaceType::Uts, None)));
}

#[test]
fn user_namespace_pods_join_the_pinned_namespace_with_its_mappings() {
    use crate::sandbox::userns::{IdMap, Userns};
    let mut env = Env::new();
    env.namespaces.user = Some(PathBuf::from("/run/pins/p-user"));
    env.userns = Some(Userns {
        uids: IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
        gids: IdMap {
            container_id: 0,
            host_id: 131072,
            length: 65536,
        },
    });
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let l = linux(&spec);
    let ns = l.namespaces().as_ref().unwrap();
    assert_eq!(ns[0].typ(), LinuxNamespaceType::User);
    assert_eq!(ns[0].path().as_deref(), Some(Path::new("/run/pins/p-user")));
    let u = &l.uid_mappings().as_ref().unwrap()[0];
    let g = &l.gid_mappings().as_ref().unwrap()[0];
    assert_eq!((u.container_id(), u.host_id(), u.size()), (0, 65536, 65536));
    assert_eq!(g.host_id(), 131072);

    // Privileged containers keep host users only.
    env.privileged_sandbox();
    let c = with_sc(LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    });
    assert!(matches!(env.build(&c), Err(SpecError::InvalidArgument(_))));
}

#[test]
fn resources_map_to_cgroup_settings() {
    let mut env = Env::new();
    let r = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 256 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 21,
        }],
        unified: HashMap::from([("memory.high".to_string(), "1000000".to_string())]),
        ..Default::default()
    };
    let spec = env.build(&with_resources(r.clone())).unwrap();
    let res = linux(&spec).resources().as_ref().unwrap();
    let cpu = res.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.period(), cpu.quota(), cpu.shares()),
        (Some(100_000), Some(50_000), Some(512))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let mem = res.memory().as_ref().unwrap();
    assert_eq!(
        (mem.limit(), mem.swap()),
        (Some(256 << 20), Some(256 << 20))
    );
    let huge = res.hugepage_limits().as_ref().unwrap();
    assert_eq!(
        (huge[0].page_size().as_str(), huge[0].limit()),
        ("2MB", 4 << 21)
    );
    assert_eq!(
        res.unified()
            .as_ref()
            .unwrap()
            .get("memory.high")
            .map(String::as_str),
        Some("1000000")
    );

    // An explicit swap limit; hosts without swap or hugetlb control get neither.
    let spec = env
        .build(&with_resources(LinuxContainerResources {
            memory_swap_limit_in_bytes: 512 << 20,
            ..r.clone()
        }))
        .unwrap();
    let mem = *linux(&spec)
        .resources()
        .as_ref()
        .unwrap()
        .memory()
        .as_ref()
        .unwrap();
    assert_eq!(mem.swap(), Some(512 << 20));
    env.host.swap_available = false;
    env.host.hugetlb_available = false;
    let spec = env.build(&with_resources(r)).unwrap();
    let res = linux(&spec).resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().swap(), None);
    assert!(res.hugepage_limits().is_none());

    // Nothing asked, nothing set.
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let res = linux(&spec).resources().as_ref().unwrap();
    assert!(res.cpu().is_none() && res.memory().is_none());
}

#[test]
fn oom_score_adj_never_goes_below_ours_without_cap_sys_resource() {
    let mut env = Env::new();
    let r = LinuxContainerResources {
        oom_score_adj: -998,
        ..Default::default()
    };
    let spec = env.build(&with_resources(r.clone())).unwrap();
    assert_eq!(process(&spec).oom_score_adj(), Some(-998));
    env.can_lower = false;
    env.host.oom_score_adj = -500;
    let spec = env.build(&with_resources(r)).unwrap();
    assert_eq!(process(&spec).oom_score_adj(), Some(-500));
    let spec = env
        .build(&with_resources(LinuxContainerResources {
            oom_score_adj: 1000,
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(process(&spec).oom_score_adj(), Some(1000));
}

#[test]
fn masked_and_readonly_paths_default_unless_the_kubelet_sends_them() {
    let env = Env::new();
    let spec = env.build(&ContainerConfig::default()).unwrap();
    let l = linux(&spec);
    assert_eq!(l.masked_paths().as_deref().unwrap(), DEFAULT_MASKED_PATHS);
    assert_eq!(
        l.readonly_paths().as_deref().unwrap(),
        DEFAULT_READONLY_PATHS
    );

    let c = with_sc(LinuxContainerSecurityContext {
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        ..Default::default()
    });
    let spec = env.build(&c).unwrap();
    assert_eq!(
        linux(&spec).masked_paths().as_deref().unwrap(),
        ["/proc/kcore"]
    );
    assert_eq!(
        linux(&spec).readonly_paths().as_deref().unwrap(),
        ["/proc/sys"]
    );
}

#[test]
fn seccomp_profiles_default_unconfined_and_localhost() {
    let env = Env::new();
    let profile = |t: ProfileType, r: &str| {
        with_sc(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        })
    };
    let seccomp = |c: &ContainerConfig| env.build(c).map(|s| linux(&s).seccomp().clone());

    let d = seccomp(&profile(ProfileType::RuntimeDefault, ""))
        .unwrap()
        .unwrap();
    assert_eq!(d.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert!(!d.syscalls().as_ref().unwrap().is_empty());
    assert!(
        seccomp(&profile(ProfileType::Unconfined, ""))
            .unwrap()
            .is_none()
    );
    // No profile at all: unconfined, as containerd.
    assert!(seccomp(&ContainerConfig::default()).unwrap().is_none());

    std::fs::create_dir_all(env.seccomp_root.join("profiles")).unwrap();
    std::fs::write(
        env.seccomp_root.join("profiles/audit.json"),
        r#"{"defaultAction":"SCMP_ACT_LOG"}"#,
    )
    .unwrap();
    let l = seccomp(&profile(ProfileType::Localhost, "profiles/audit.json"))
        .unwrap()
        .unwrap();
    assert_eq!(l.default_action(), LinuxSeccompAction::ScmpActLog);
    let abs = env.seccomp_root.join("profiles/audit.json");
    let l = seccomp(&profile(ProfileType::Localhost, &abs.display().to_string()))
        .unwrap()
        .unwrap();
    assert_eq!(l.default_action(), LinuxSeccompAction::ScmpActLog);

    let missing = seccomp(&profile(ProfileType::Localhost, "profiles/none.json"));
    assert!(
        matches!(&missing, Err(SpecError::Seccomp { reason, .. }) if reason.contains("no such file")),
        "{missing:?}"
    );
    std::fs::write(env.seccomp_root.join("bad.json"), "{not json").unwrap();
    assert!(matches!(
        seccomp(&profile(ProfileType::Localhost, "bad.json")),
        Err(SpecError::Seccomp { .. })
    ));

    // The deprecated string field.
    #[allow(deprecated)]
    let old = with_sc(LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    });
    assert!(seccomp(&old).unwrap().is_some());
    #[allow(deprecated)]
    let old = with_sc(LinuxContainerSecurityContext {
        seccomp_profile_path: format!("localhost/{}", abs.display()),
        ..Default::default()
    });
    assert_eq!(
        seccomp(&old).unwrap().unwrap().default_action(),
        LinuxSeccompAction::ScmpActLog
    );
}

#[test]
fn no_new_privileges_follows_the_security_context() {
    let env = Env::new();
    let c = with_sc(LinuxContainerSecurityContext {
        no_new_privs: true,
        ..Default::default()
    });
    assert_eq!(
        process(&env.build(&c).unwrap()).no_new_privileges(),
        Some(true)
    );
}

#[test]
fn annotations_carry_the_cri_ones_and_the_pod_identity() {
    let env = Env::new();
    let c = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "nginx".into(),
            attempt: 1,
        }),
        image: Some(ImageSpec {
            image: "docker.io/library/nginx:1".into(),
            ..Default::default()
        }),
        annotations: HashMap::from([
            ("team".to_string(), "web".to_string()),
            (ANNOTATION_SANDBOX_ID.to_string(), "spoofed".to_string()),
        ]),
        ..Default::default()
    };
    let spec = env.build(&c).unwrap();
    let a = spec.annotations().as_ref().unwrap();
    let get = |k: &str| a.get(k).map(String::as_str);
    assert_eq!(get("team"), Some("web"));
    assert_eq!(get(ANNOTATION_CONTAINER_TYPE), Some("container"));
    assert_eq!(get(ANNOTATION_CONTAINER_NAME), Some("nginx"));
    assert_eq!(get(ANNOTATION_SANDBOX_ID), Some("s1"));
    assert_eq!(get(ANNOTATION_SANDBOX_NAME), Some("web"));
    assert_eq!(get(ANNOTATION_SANDBOX_NAMESPACE), Some("default"));
    assert_eq!(get(ANNOTATION_SANDBOX_UID), Some("uid-1"));
    assert_eq!(
        get(ANNOTATION_IMAGE_NAME),
        Some("docker.io/library/nginx:1")
    );
}

#[test]
fn spec_serializes_to_the_json_runc_reads() {
    let env = Env::new();
    let c = with_sc(LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    });
    let spec = env.build(&c).unwrap();
    let v: serde_json::Value = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["ociVersion"], "1.1.0");
    assert_eq!(v["process"]["args"], serde_json::json!(["/entry", "serve"]));
    assert_eq!(v["process"]["user"]["uid"], 0);
    assert_eq!(
        v["process"]["user"]["additionalGids"],
        serde_json::json!([0])
    );
    assert_eq!(v["process"]["cwd"], "/");
    assert_eq!(v["process"]["noNewPrivileges"], false);
    let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert!(caps.contains(&serde_json::json!("CAP_CHOWN")));
    assert_eq!(v["root"]["path"], env.rootfs.display().to_string());
    let nss = v["linux"]["namespaces"].as_array().unwrap();
    assert_eq!(nss[0], serde_json::json!({"type": "pid"}));
    assert_eq!(
        nss[4],
        serde_json::json!({"type": "network", "path": "/run/pins/net"})
    );
    assert!(nss.iter().any(|n| n["type"] == "mount"));
    assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/poduid-1/c1");
    assert_eq!(
        v["linux"]["resources"]["devices"][0],
        serde_json::json!({"allow": false, "access": "rwm"})
    );
    assert_eq!(v["linux"]["maskedPaths"][0], "/proc/asound");
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["linux"]["seccomp"]["defaultErrnoRet"], 1);
    assert_eq!(
        v["linux"]["seccomp"]["architectures"][0],
        "SCMP_ARCH_X86_64"
    );
    assert_eq!(v["mounts"][0]["destination"], "/proc");
    assert_eq!(v["mounts"][0]["type"], "proc");
    assert!(v["process"].get("rlimits").is_none());
    assert!(v.get("hostname").is_none());
    // And it reads back as the same spec.
    let back: Spec = serde_json::from_value(v).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn an_update_before_start_replaces_what_it_sets_and_keeps_device_rules() {
    let mut spec = Spec::default();
    let mut res = LinuxResources::default();
    res.set_devices(Some(vec![devices::deny_all()]));
    let mut mem = oci_spec::runtime::LinuxMemory::default();
    mem.set_limit(Some(64 << 20));
    res.set_memory(Some(mem));
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));

    let update = resources_for_update(&k8s_cri::v1::LinuxContainerResources {
        cpu_shares: 512,
        cpuset_cpus: "0".into(),
        ..Default::default()
    });
    apply_update(&mut spec, &update);
    let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
    let cpu = res.cpu().as_ref().unwrap();
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.cpus().as_deref(), Some("0"));
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(res.devices().as_ref().unwrap().len(), 1);
}
