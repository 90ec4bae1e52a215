//! ImageService end to end: the real cri-server binary over its unix socket, pulling from a
//! real docker-registry on 127.0.0.1 with images this project builds.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use e2e::cri::Clients;
use e2e::daemon::CriServer;
use e2e::images::{self, Pusher, StandardImages};
use e2e::registry::Registry;
use k8s_cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use nix::sys::signal::Signal;
use tonic::Code;

struct Env {
    registry: Registry,
    server: CriServer,
    c: Clients,
    images: StandardImages,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start().expect("start registry");
        let images = images::push_standard_images(&Pusher::for_registry(&registry).unwrap())
            .await
            .expect("push images");
        let server = CriServer::start(&format!(
            "[registry]\ninsecure_registries = [{:?}]\n",
            registry.addr()
        ))
        .expect("start cri-server");
        let c = server.clients().await.expect("connect");
        Env {
            registry,
            server,
            c,
            images,
        }
    }

    fn name(&self, r: &str) -> String {
        format!("{}/{r}", self.registry.addr())
    }

    async fn pull(&mut self, name: &str) -> Result<String, tonic::Status> {
        pull(&mut self.c, name, None).await
    }

    async fn status(&mut self, name: &str, verbose: bool) -> k8s_cri::v1::ImageStatusResponse {
        self.c
            .image
            .image_status(ImageStatusRequest {
                image: Some(spec(name)),
                verbose,
            })
            .await
            .expect("image status")
            .into_inner()
    }

    /// The unpacked layer dirs of an image, bottom first, from the verbose status.
    async fn layer_dirs(&mut self, name: &str) -> Vec<PathBuf> {
        let st = self.status(name, true).await;
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        info["chainIDs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                self.server
                    .root
                    .join("images/layers")
                    .join(c.as_str().unwrap().trim_start_matches("sha256:"))
            })
            .collect()
    }
}

fn spec(name: &str) -> ImageSpec {
    ImageSpec {
        image: name.to_string(),
        ..Default::default()
    }
}

async fn pull(
    c: &mut Clients,
    name: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    c.image
        .pull_image(PullImageRequest {
            image: Some(spec(name)),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// Everything below a directory, for "nothing was left behind" checks.
fn entries_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// A read-only overlay of `lowers` (top first) mounted for the test, unmounted on drop.
struct Overlay {
    target: tempfile::TempDir,
}

impl Overlay {
    fn mount(lowers_top_first: &[PathBuf]) -> Overlay {
        let target = tempfile::tempdir().unwrap();
        let lower = lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        nix::mount::mount(
            Some("overlay"),
            target.path(),
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={lower}").as_str()),
        )
        .expect("mount overlay of the image layers");
        Overlay { target }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.target.path().join(p)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.target.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_list_status_and_remove() {
    let mut env = Env::new().await;
    let busybox = env.name(images::BUSYBOX_REF);
    let id = env.pull(&busybox).await.expect("pull by tag");
    assert_eq!(
        id, env.images.busybox.config_digest,
        "image_ref is the config digest"
    );

    let st = env.status(&busybox, false).await;
    let img = st.image.expect("status of a pulled image");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![format!("{busybox}")]);
    let repo = busybox.rsplit_once(':').unwrap().0;
    assert_eq!(
        img.repo_digests,
        vec![format!("{repo}@{}", env.images.busybox.manifest_digest)]
    );
    assert!(img.size > 0);
    assert!(st.info.is_empty(), "info only when verbose");

    // The same image by id, short id, and digest reference.
    for name in [
        id.clone(),
        id.trim_start_matches("sha256:").to_string(),
        id[7..19].to_string(),
        img.repo_digests[0].clone(),
    ] {
        assert_eq!(
            env.status(&name, false).await.image.map(|i| i.id),
            Some(id.clone()),
            "lookup by {name}"
        );
    }
    let verbose = env.status(&busybox, true).await;
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["Cmd"],
        serde_json::json!(["sh"])
    );
    assert_eq!(
        info["imageSpec"]["config"]["Labels"]["org.example.e2e"],
        "busybox"
    );

    // Pull by digest.
    let ml = env.name(images::MULTILAYER_REF);
    let by_digest = format!(
        "{}@{}",
        ml.rsplit_once(':').unwrap().0,
        env.images.multilayer.manifest_digest
    );
    let ml_id = env.pull(&by_digest).await.expect("pull by digest");
    assert_eq!(ml_id, env.images.multilayer.config_digest);
    let st = env
        .status(&by_digest, false)
        .await
        .image
        .expect("by digest");
    assert!(
        st.repo_tags.is_empty(),
        "a digest pull adds no tag: {:?}",
        st.repo_tags
    );

    let list = env
        .c
        .image
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<_> = list.images.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    let mut want = vec![id.clone(), ml_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    let filtered = env
        .c
        .image
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(spec(&busybox)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.images.len(), 1);
    assert_eq!(filtered.images[0].id, id);

    let fs = env
        .c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(
        usage.used_bytes.as_ref().unwrap().value > 1_000_000,
        "busybox alone is over 1 MB"
    );
    assert!(usage.inodes_used.as_ref().unwrap().value > 10);

    env.c
        .image
        .remove_image(RemoveImageRequest {
            image: Some(spec(&busybox)),
        })
        .await
        .expect("remove");
    assert!(env.status(&busybox, false).await.image.is_none());
    env.c
        .image
        .remove_image(RemoveImageRequest {
            image: Some(spec(&busybox)),
        })
        .await
        .expect("removing an unknown image is not an error");
    // The multilayer image shares busybox's base layer: still complete.
    assert_eq!(
        env.layer_dirs(&by_digest)
            .await
            .iter()
            .filter(|d| d.is_dir())
            .count(),
        3
    );
    env.c
        .image
        .remove_image(RemoveImageRequest {
            image: Some(spec(&ml_id)),
        })
        .await
        .expect("remove by id");
    assert_eq!(
        entries_under(&env.server.root.join("images/layers")),
        Vec::<String>::new(),
        "no layer left"
    );
    assert_eq!(
        entries_under(&env.server.root.join("images/images")),
        Vec::<String>::new(),
        "no record left"
    );
}

#[tokio::test]
async fn multilayer_image_unpacks_into_a_usable_overlay() {
    let mut env = Env::new().await;
    let name = env.name(images::MULTILAYER_REF);
    env.pull(&name).await.expect("pull");
    let dirs = env.layer_dirs(&name).await;
    assert_eq!(dirs.len(), 3);

    // On disk: whiteouts as 0/0 char devices, opaque dirs by xattr.
    let wh = std::fs::symlink_metadata(dirs[2].join("data/gone")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);

    // Through overlayfs: what a container will see.
    let top_first: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
    let ov = Overlay::mount(&top_first);
    assert!(!ov.path("data/gone").exists(), "whited-out file is hidden");
    assert_eq!(
        std::fs::read_to_string(ov.path("data/keep")).unwrap(),
        "keep\n"
    );
    assert_eq!(
        std::fs::read_to_string(ov.path("data/dir/b")).unwrap(),
        "b\n"
    );
    assert!(
        !ov.path("opq/x").exists(),
        "opaque dir hides the lower content"
    );
    assert!(ov.path("opq/new").exists());
    assert!(ov.path("bin/busybox").is_file());
    let changes = images::multilayer_changes_entries();
    // Owner, mode, set-id bits, hardlinks and symlinks as the layer says.
    for e in &changes {
        match e {
            images::Entry::FileWithOwner {
                path,
                mode,
                uid,
                gid,
                ..
            } => {
                let m = std::fs::symlink_metadata(ov.path(path)).unwrap();
                assert_eq!(
                    (m.uid(), m.gid(), m.mode() & 0o7777),
                    (*uid as u32, *gid as u32, *mode),
                    "{path}"
                );
            }
            images::Entry::File { path, mode, .. } => {
                let m = std::fs::symlink_metadata(ov.path(path)).unwrap();
                assert_eq!(m.mode() & 0o7777, *mode, "{path}");
            }
            images::Entry::Hardlink { path, target } => {
                let a = std::fs::symlink_metadata(dirs[2].join(path)).unwrap();
                let b = std::fs::symlink_metadata(dirs[2].join(target)).unwrap();
                assert_eq!(a.ino(), b.ino(), "{path} is a hardlink of {target}");
            }
            images::Entry::Symlink { path, target } => {
                assert_eq!(
                    std::fs::read_link(ov.path(path)).unwrap(),
                    PathBuf::from(target)
                );
            }
            _ => {}
        }
    }
    assert!(
        changes
            .iter()
            .any(|e| matches!(e, images::Entry::FileWithOwner { .. }))
            && changes
                .iter()
                .any(|e| matches!(e, images::Entry::Hardlink { .. })),
        "the test image has owned files and hardlinks to check"
    );
}

#[tokio::test]
async fn zstd_uncompressed_and_index_images_pull_the_host_platform() {
    let mut env = Env::new().await;
    let zstd = env.name(images::ZSTD_REF);
    assert_eq!(
        env.pull(&zstd).await.expect("zstd"),
        env.images.zstd.config_digest
    );
    let dirs = env.layer_dirs(&zstd).await;
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("zstd-file")).unwrap(),
        "zstd\n"
    );

    let plain = env.name(images::UNCOMPRESSED_REF);
    assert_eq!(
        env.pull(&plain).await.expect("uncompressed"),
        env.images.uncompressed.config_digest
    );

    let arch = images::host_arch();
    for (reference, index, platforms) in [
        (
            images::MULTIARCH_REF,
            env.images.multiarch_index.clone(),
            env.images.multiarch.clone(),
        ),
        (
            images::DOCKERLIST_REF,
            env.images.dockerlist_index.clone(),
            env.images.dockerlist.clone(),
        ),
    ] {
        let name = env.name(reference);
        let id = env.pull(&name).await.expect("pull index");
        let ours = platforms
            .iter()
            .find(|p| p.arch == arch)
            .expect("host arch in the index");
        assert_eq!(
            id, ours.image.config_digest,
            "{reference}: the host-arch image"
        );
        let st = env.status(&name, false).await.image.unwrap();
        let repo = name.rsplit_once(':').unwrap().0;
        assert!(
            st.repo_digests.contains(&format!("{repo}@{index}")),
            "repo digest is the index digest: {:?}",
            st.repo_digests
        );
        let dirs = env.layer_dirs(&name).await;
        assert_eq!(
            std::fs::read_to_string(dirs.last().unwrap().join("arch"))
                .unwrap()
                .trim(),
            arch
        );
    }
}

#[tokio::test]
async fn basic_auth_registry_needs_the_right_credentials() {
    let registry = Registry::start_with_basic_auth("alice", "wonderland").unwrap();
    let pushed = images::push_standard_images(&Pusher::for_registry(&registry).unwrap())
        .await
        .unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let dc = docker_config.path().join("config.json");
    let server = CriServer::start(&format!(
        "[image]\ndocker_config = {dc:?}\n[registry]\ninsecure_registries = [{:?}]\n",
        registry.addr()
    ))
    .unwrap();
    let mut c = server.clients().await.unwrap();
    let name = format!("{}/{}", registry.addr(), images::BUSYBOX_REF);

    let anon = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated, "{anon:?}");
    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = pull(&mut c, &name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(entries_under(&server.root.join("images/images")).is_empty());

    let good = AuthConfig {
        username: "alice".into(),
        password: "wonderland".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &name, Some(good))
            .await
            .expect("pull with password"),
        pushed.busybox.config_digest
    );

    use base64_like::encode;
    let auth_field = AuthConfig {
        auth: encode("alice:wonderland"),
        ..Default::default()
    };
    let ml = format!("{}/{}", registry.addr(), images::MULTILAYER_REF);
    assert_eq!(
        pull(&mut c, &ml, Some(auth_field))
            .await
            .expect("pull with auth field"),
        pushed.multilayer.config_digest
    );

    // No request auth: the docker config.json answers for the host.
    std::fs::write(
        &dc,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            registry.addr(),
            encode("alice:wonderland")
        ),
    )
    .unwrap();
    let z = format!("{}/{}", registry.addr(), images::ZSTD_REF);
    assert_eq!(
        pull(&mut c, &z, None)
            .await
            .expect("pull with docker config"),
        pushed.zstd.config_digest
    );
}

/// Minimal base64 so the test does not need another crate.
mod base64_like {
    pub fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn mirror_serves_an_upstream_name_without_fallback() {
    let registry = Registry::start().unwrap();
    let p = Pusher::for_registry(&registry).unwrap();
    let layer = images::build_layer(
        &images::busybox_base_entries().unwrap(),
        images::Compression::Gzip,
    )
    .unwrap();
    let pushed = p
        .push_image("pause", Some("3.10"), &images::ImageSpec::new(vec![layer]))
        .await
        .unwrap();

    let certs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(certs.path().join("registry.k8s.io")).unwrap();
    std::fs::write(
        certs.path().join("registry.k8s.io/hosts.toml"),
        format!(
            "server = \"https://registry.k8s.io\"\nfallback = false\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.addr()
        ),
    )
    .unwrap();
    let server =
        CriServer::start(&format!("[registry]\nconfig_path = {:?}\n", certs.path())).unwrap();
    let mut c = server.clients().await.unwrap();
    let id = pull(&mut c, "registry.k8s.io/pause:3.10", None)
        .await
        .expect("pull through the mirror");
    assert_eq!(id, pushed.config_digest);
    let st = c
        .image
        .image_status(ImageStatusRequest {
            image: Some(spec("registry.k8s.io/pause:3.10")),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    let img = st.image.expect("stored under the upstream name");
    assert_eq!(
        img.repo_tags,
        vec!["registry.k8s.io/pause:3.10".to_string()]
    );
    assert_eq!(
        img.repo_digests,
        vec![format!("registry.k8s.io/pause@{}", pushed.manifest_digest)]
    );
    // A name the mirror lacks fails without reaching for the upstream.
    let err = pull(&mut c, "registry.k8s.io/pause:9.99", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn hostile_layers_are_rejected_and_nothing_is_written_outside() {
    let mut env = Env::new().await;
    let outside = [
        "/tmp/e2e-hostile-dotdot",
        images::HOSTILE_ABS_HOST_PATH,
        "/tmp/e2e-hostile-symlink",
    ];
    for p in outside {
        let _ = std::fs::remove_file(p);
    }
    let passwd_before = std::fs::metadata("/etc/passwd").unwrap();
    for r in [
        images::HOSTILE_DOTDOT_REF,
        images::HOSTILE_ABS_REF,
        images::HOSTILE_SYMLINK_REF,
        images::HOSTILE_HARDLINK_REF,
    ] {
        let name = env.name(r);
        let err = env.pull(&name).await.expect_err("hostile layer must fail");
        assert_eq!(err.code(), Code::DataLoss, "{r}: {err:?}");
        assert!(err.message().contains("escapes"), "{r}: {}", err.message());
        assert!(env.status(&name, false).await.image.is_none());
    }
    for p in outside {
        assert!(!Path::new(p).exists(), "{p} was written by a hostile layer");
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_before.nlink(),
        "no hardlink to /etc/passwd"
    );
    // Only the shared base layer (from a good image) may remain, no temp dirs; GC at the next
    // start removes it since no image holds it.
    let layers = env.server.root.join("images/layers");
    assert!(
        entries_under(&layers)
            .iter()
            .all(|n| !n.starts_with(".tmp-")),
        "{:?}",
        entries_under(&layers)
    );
    env.server.stop_with(Signal::SIGTERM).unwrap();
    env.server.spawn().unwrap();
    assert_eq!(entries_under(&layers), Vec::<String>::new());
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_not_stored() {
    let mut env = Env::new().await;
    let layer = env.images.zstd.layer_digests[1].clone();
    images::corrupt_blob_on_disk(&env.registry, &layer)
        .await
        .unwrap();
    let name = env.name(images::ZSTD_REF);
    let err = env.pull(&name).await.expect_err("corrupt blob");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains(&layer) || err.message().contains("digest"),
        "{}",
        err.message()
    );
    assert!(env.status(&name, false).await.image.is_none());
    let layers = env.server.root.join("images/layers");
    assert!(
        entries_under(&layers)
            .iter()
            .all(|n| !n.starts_with(".tmp-"))
    );
}

#[tokio::test]
async fn parallel_pulls_of_one_image_download_and_store_it_once() {
    let env = Env::new().await;
    let name = env.name(images::MULTILAYER_REF);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let mut c = env.server.clients().await.unwrap();
        let name = name.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &name, None).await }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().expect("parallel pull"),
            env.images.multilayer.config_digest
        );
    }
    let layer_dirs: Vec<_> = entries_under(&env.server.root.join("images/layers"))
        .into_iter()
        .filter(|n| !n.ends_with(".json"))
        .collect();
    assert_eq!(layer_dirs.len(), 3, "{layer_dirs:?}");
    assert_eq!(
        entries_under(&env.server.root.join("images/images")).len(),
        1
    );
    let unpacked = env.server.log().matches("layer unpacked").count();
    assert_eq!(unpacked, 3, "each layer downloaded and unpacked once");
}

#[tokio::test]
async fn images_survive_sigterm_and_kill_9() {
    let mut env = Env::new().await;
    let name = env.name(images::USER_REF);
    let id = env.pull(&name).await.unwrap();
    let st = env.status(&name, false).await.image.unwrap();
    assert_eq!(st.username, "app", "USER from the image config");
    assert_eq!(
        env.server.stop_with(Signal::SIGTERM).unwrap(),
        Some(0),
        "SIGTERM exits 0"
    );
    assert!(!env.server.socket.exists(), "socket removed at shutdown");
    env.server.spawn().unwrap();
    env.c = env.server.clients().await.unwrap();
    assert_eq!(
        env.status(&name, false).await.image.map(|i| i.id),
        Some(id.clone())
    );
    env.server.crash_and_restart().unwrap();
    env.c = env.server.clients().await.unwrap();
    let st = env.status(&name, false).await.image.expect("after kill -9");
    assert_eq!(st.id, id);
    assert_eq!(
        env.layer_dirs(&name)
            .await
            .iter()
            .filter(|d| d.is_dir())
            .count(),
        1
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let mut env = Env::new().await;
    let err = env.pull("").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = env.pull("Not A Reference!!").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let name = env.name("test/absent:v1");
    let err = env.pull(&name).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let bad_auth = AuthConfig {
        auth: "***".into(),
        ..Default::default()
    };
    let busybox = env.name(images::BUSYBOX_REF);
    let err = pull(&mut env.c, &busybox, Some(bad_auth))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A plain-HTTP registry not marked insecure is not reached over HTTP.
    let server2 = CriServer::start("").unwrap();
    let mut c2 = server2.clients().await.unwrap();
    let err = pull(&mut c2, &busybox, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
