//! The same volume lifecycle through the CSI gRPC API of `flexvolume-driver serve`, on a
//! unix socket, with real loop devices and mounts (needs root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, Sandbox};
use flexvolume_driver::csi::proto::controller_client::ControllerClient;
use flexvolume_driver::csi::proto::identity_client::IdentityClient;
use flexvolume_driver::csi::proto::node_client::NodeClient;
use flexvolume_driver::csi::proto::volume_capability::access_mode::Mode;
use flexvolume_driver::csi::proto::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume,
};
use flexvolume_driver::csi::proto::*;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// A `flexvolume-driver serve` process; killed on drop.
struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(sb: &Sandbox, fault: Option<&str>) -> Server {
        let socket = sb.path("csi/csi.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env("CSI_ENDPOINT", format!("unix://{}", socket.display()))
            .env("FLEXVOLUME_DRIVER_STATE_DIR", sb.state())
            .env("FLEXVOLUME_DRIVER_LOG", sb.log())
            .env("NODE_ID", "node-1")
            .env_remove("FLEXVOLUME_DRIVER_FAULT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(f) = fault {
            cmd.env("FLEXVOLUME_DRIVER_FAULT", f);
        }
        let child = cmd.spawn().unwrap();
        // Listening, not just bound: the file exists a moment before connect() is accepted.
        let listening = || std::os::unix::net::UnixStream::connect(&socket).is_ok();
        for _ in 0..500 {
            if listening() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(listening(), "server did not listen on {}", socket.display());
        Server { child, socket }
    }

    async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Clients {
    identity: IdentityClient<Channel>,
    node: NodeClient<Channel>,
    controller: ControllerClient<Channel>,
}

async fn clients(server: &Server) -> Clients {
    let ch = server.channel().await;
    Clients {
        identity: IdentityClient::new(ch.clone()),
        node: NodeClient::new(ch.clone()),
        controller: ControllerClient::new(ch),
    }
}

fn mount_cap(fs: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create_req(name: &str, bytes: i64, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

fn stage_req(id: &str, staging: &Path, cap: VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

fn publish_req(
    id: &str,
    staging: &Path,
    target: &Path,
    cap: VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

fn unpublish_req(id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
    }
}

fn unstage_req(id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.display().to_string(),
    }
}

#[tokio::test]
async fn csi_identity_node_and_controller_describe_themselves() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    let info = c
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "loop.csi.node-rs.io");
    assert!(!info.vendor_version.is_empty());
    let caps = c
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 3);
    let probe = c
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let node = c
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.node_id, "node-1");
    assert_eq!(
        node.accessible_topology.unwrap().segments["topology.loop.csi.node-rs.io/node"],
        "node-1"
    );
    let ncaps = c
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ncaps.capabilities.len(), 4);
    let ccaps = c
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ccaps.capabilities.len(), 4);
    let cap = c
        .controller
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0);
}

#[tokio::test]
async fn csi_lifecycle_stage_publish_unpublish_unstage_delete_leaves_nothing() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let vol = c
        .controller
        .create_volume(create_req("pvc-life", 64 << 20, cap.clone()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(vol.capacity_bytes, 64 << 20);
    assert_eq!(
        vol.accessible_topology[0].segments["topology.loop.csi.node-rs.io/node"],
        "node-1"
    );
    let id = vol.volume_id.clone();
    let staging = sb.path("kubelet/plugins/csi/pv/pvc-life/globalmount");
    std::fs::create_dir_all(&staging).unwrap();
    c.node
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    c.node
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();

    let (t1, t2) = (
        sb.path("kubelet/pods/p1/mount"),
        sb.path("kubelet/pods/p2/mount"),
    );
    let mut with_group = cap.clone();
    if let Some(AccessType::Mount(m)) = &mut with_group.access_type {
        m.volume_mount_group = "3000".into();
    }
    c.node
        .node_publish_volume(publish_req(&id, &staging, &t1, with_group.clone(), false))
        .await
        .unwrap();
    c.node
        .node_publish_volume(publish_req(&id, &staging, &t1, with_group, false))
        .await
        .unwrap();
    c.node
        .node_publish_volume(publish_req(&id, &staging, &t2, cap.clone(), true))
        .await
        .unwrap();
    std::fs::write(t1.join("f"), "csi").unwrap();
    assert_eq!(std::fs::read_to_string(t2.join("f")).unwrap(), "csi");
    assert_eq!(
        std::fs::metadata(t1.join("f"))
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
            .unwrap(),
        3000
    );
    assert_eq!(
        std::fs::write(t2.join("g"), "x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(sb.mounts().len(), 3);

    let stats = c
        .node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: t1.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 2);
    assert!(stats.usage[0].total > 40 << 20 && stats.usage[0].total <= 64 << 20);
    assert!(!stats.volume_condition.unwrap().abnormal);

    // Busy: DeleteVolume is refused.
    let err = c
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    for t in [&t1, &t2, &t2] {
        c.node
            .node_unpublish_volume(unpublish_req(&id, t))
            .await
            .unwrap();
    }
    assert!(!t1.exists() && !t2.exists());
    c.node
        .node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    c.node
        .node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    sb.assert_clean();
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!sb.state().join("volumes/pvc-life.img").exists());
    assert!(!sb.state().join("volumes/pvc-life.json").exists());
}

#[tokio::test]
async fn csi_block_volume_is_published_as_a_device_node() {
    use std::os::unix::fs::FileTypeExt;
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    let id = c
        .controller
        .create_volume(create_req("pvc-block", 32 << 20, block_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let staging = sb.path("kubelet/staging/pvc-block");
    std::fs::create_dir_all(&staging).unwrap();
    c.node
        .node_stage_volume(stage_req(&id, &staging, block_cap()))
        .await
        .unwrap();
    let target = sb.path("kubelet/pods/p1/volumeDevices/pvc-block");
    c.node
        .node_publish_volume(publish_req(&id, &staging, &target, block_cap(), false))
        .await
        .unwrap();
    assert!(
        std::fs::metadata(&target)
            .unwrap()
            .file_type()
            .is_block_device()
    );
    let stats = c
        .node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage[0].total, 32 << 20);
    c.node
        .node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    assert!(!target.exists());
    c.node
        .node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    sb.assert_clean();
}

#[tokio::test]
async fn csi_create_volume_is_idempotent_by_name_and_lists_in_pages() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let first = c
        .controller
        .create_volume(create_req("pvc-a", 20 << 20, cap.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .controller
        .create_volume(create_req("pvc-a", 20 << 20, cap.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let err = c
        .controller
        .create_volume(create_req("pvc-a", 40 << 20, cap.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut other_params = create_req("pvc-a", 20 << 20, cap.clone());
    other_params
        .parameters
        .insert("mkfsOptions".into(), "-m 0".into());
    let err = c.controller.create_volume(other_params).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = c
        .controller
        .create_volume(create_req(
            "pvc-a",
            20 << 20,
            mount_cap("xfs", Mode::SingleNodeWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    for n in ["pvc-b", "pvc-c", "pvc-d", "pvc-e"] {
        c.controller
            .create_volume(create_req(n, 16 << 20, cap.clone()))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .controller
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"]);
    let err = c
        .controller
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            starting_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    let v = c
        .controller
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-a".into(),
            volume_capabilities: vec![cap.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.confirmed.is_some());
    let v = c
        .controller
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-a".into(),
            volume_capabilities: vec![mount_cap("ext4", Mode::MultiNodeMultiWriter)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.confirmed.is_none() && !v.message.is_empty());
    let err = c
        .controller
        .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-zzz".into(),
            volume_capabilities: vec![cap.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for n in ["pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"] {
        c.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: n.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let all = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.entries.is_empty());
    sb.assert_clean();
}

#[tokio::test]
async fn csi_online_expansion_of_a_published_volume() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    // XFS grows online with the capabilities this driver has on any host.
    let cap = mount_cap("xfs", Mode::SingleNodeWriter);
    let id = c
        .controller
        .create_volume(create_req("pvc-grow", 320 << 20, cap.clone()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let staging = sb.path("staging/pvc-grow");
    std::fs::create_dir_all(&staging).unwrap();
    c.node
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    let target = sb.path("pods/p/mount");
    c.node
        .node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
        .await
        .unwrap();
    std::fs::write(target.join("keep"), "me").unwrap();
    let before = flexvolume_driver::sys::fs::usage(&target)
        .unwrap()
        .total_bytes;

    let grown = c
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 400 << 20,
                limit_bytes: 0,
            }),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 400 << 20);
    assert!(grown.node_expansion_required);
    let node = c
        .node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 400 << 20,
                limit_bytes: 0,
            }),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.capacity_bytes, 400 << 20);
    let after = flexvolume_driver::sys::fs::usage(&target)
        .unwrap()
        .total_bytes;
    assert!(
        after > before + (60 << 20),
        "not grown: {before} -> {after}"
    );
    assert_eq!(std::fs::read_to_string(target.join("keep")).unwrap(), "me");
    let listed = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.entries[0].volume.as_ref().unwrap().capacity_bytes,
        400 << 20
    );

    let err = c
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "pvc-nope".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.node
        .node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    c.node
        .node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    sb.assert_clean();
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.unwrap_err().code()
}

#[tokio::test]
async fn csi_errors_use_the_codes_of_the_spec() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let staging = sb.path("staging/x");

    assert_eq!(
        code(
            c.controller
                .create_volume(create_req("", 1 << 20, cap.clone()))
                .await
        ),
        Code::InvalidArgument
    );
    let mut no_caps = create_req("pvc-x", 1 << 20, cap.clone());
    no_caps.volume_capabilities.clear();
    assert_eq!(
        code(c.controller.create_volume(no_caps).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.controller
                .create_volume(create_req(
                    "pvc-x",
                    1 << 20,
                    mount_cap("ext4", Mode::MultiNodeMultiWriter)
                ))
                .await
        ),
        Code::InvalidArgument
    );
    let mut tight = create_req("pvc-x", (100 << 20) + 1, cap.clone());
    tight.capacity_range.as_mut().unwrap().limit_bytes = (101 << 20) - 1;
    assert_eq!(
        code(c.controller.create_volume(tight).await),
        Code::OutOfRange
    );

    assert_eq!(
        code(
            c.node
                .node_stage_volume(stage_req("", &staging, cap.clone()))
                .await
        ),
        Code::InvalidArgument
    );
    let mut no_cap = stage_req("pvc-x", &staging, cap.clone());
    no_cap.volume_capability = None;
    assert_eq!(
        code(c.node.node_stage_volume(no_cap).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.node
                .node_stage_volume(stage_req("pvc-unknown", &staging, cap.clone()))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.node
                .node_unstage_volume(unstage_req("pvc-unknown", &staging))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.node
                .node_publish_volume(publish_req(
                    "pvc-unknown",
                    &staging,
                    &sb.path("t"),
                    cap.clone(),
                    false
                ))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.node
                .node_unpublish_volume(unpublish_req("pvc-unknown", &sb.path("t")))
                .await
        ),
        Code::NotFound
    );

    // Known volume, not staged: publishing is a failed precondition; unpublishing a
    // path that was never published is fine.
    c.controller
        .create_volume(create_req("pvc-y", 16 << 20, cap.clone()))
        .await
        .unwrap();
    assert_eq!(
        code(
            c.node
                .node_publish_volume(publish_req(
                    "pvc-y",
                    &staging,
                    &sb.path("t"),
                    cap.clone(),
                    false
                ))
                .await
        ),
        Code::FailedPrecondition
    );
    c.node
        .node_unpublish_volume(unpublish_req("pvc-y", &sb.path("t")))
        .await
        .unwrap();
    assert_eq!(
        code(
            c.node
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: "pvc-y".into(),
                    volume_path: sb.path("nowhere").display().to_string(),
                    staging_target_path: String::new(),
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.controller
                .controller_publish_volume(ControllerPublishVolumeRequest::default())
                .await
        ),
        Code::Unimplemented
    );
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: "pvc-never".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: "pvc-y".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    sb.assert_clean();
}

#[tokio::test]
async fn csi_server_crash_mid_stage_then_retry_converges() {
    let sb = Sandbox::new();
    let cap = mount_cap("ext4", Mode::SingleNodeWriter);
    let staging = sb.path("staging/pvc-crash");
    std::fs::create_dir_all(&staging).unwrap();
    {
        let server = Server::start(&sb, Some("mountdevice:after-mount"));
        let mut c = clients(&server).await;
        c.controller
            .create_volume(create_req("pvc-crash", 32 << 20, cap.clone()))
            .await
            .unwrap();
        // The server dies inside NodeStageVolume, after mounting, before recording it.
        assert!(
            c.node
                .node_stage_volume(stage_req("pvc-crash", &staging, cap.clone()))
                .await
                .is_err()
        );
    }
    assert_eq!(sb.mounts().len(), 1);
    let server = Server::start(&sb, None);
    let mut c = clients(&server).await;
    c.node
        .node_stage_volume(stage_req("pvc-crash", &staging, cap.clone()))
        .await
        .unwrap();
    assert_eq!(sb.mounts().len(), 1, "the retry reused the mount");
    let target = sb.path("pods/p/mount");
    c.node
        .node_publish_volume(publish_req(
            "pvc-crash",
            &staging,
            &target,
            cap.clone(),
            false,
        ))
        .await
        .unwrap();
    c.node
        .node_unpublish_volume(unpublish_req("pvc-crash", &target))
        .await
        .unwrap();
    c.node
        .node_unstage_volume(unstage_req("pvc-crash", &staging))
        .await
        .unwrap();
    sb.assert_clean();
}
