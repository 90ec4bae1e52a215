//! Sanity tests of the e2e support library against a real local `docker-registry`.

use std::io::Read;

use e2e::images::{self, Compression, Entry, EntryType, Pusher, StandardImages};
use e2e::registry::Registry;
use reqwest::StatusCode;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// GETs `/v2/<repo>/manifests/<reference>` and checks the served digest against `expected`.
async fn assert_manifest_served(reg: &Registry, repo: &str, reference: &str, expected: &str) {
    let resp = client()
        .get(format!("{}/v2/{repo}/manifests/{reference}", reg.url()))
        .header("Accept", images::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{reference}");
    let header = resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.bytes().await.unwrap();
    assert_eq!(header, expected, "digest header of {repo}:{reference}");
    assert_eq!(
        images::sha256_digest(&body),
        expected,
        "body digest of {repo}:{reference}"
    );
}

async fn get_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let resp = client()
        .get(format!("{}/v2/{repo}/blobs/{digest}", reg.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}@{digest}");
    resp.bytes().await.unwrap().to_vec()
}

fn repo_tag(reference: &str) -> (&str, &str) {
    reference.rsplit_once(':').unwrap()
}

#[tokio::test]
async fn standard_images_are_served_back_with_matching_digests() {
    let reg = Registry::start().unwrap();
    let pusher = Pusher::for_registry(&reg).unwrap();
    let std: StandardImages = images::push_standard_images(&pusher).await.unwrap();

    let tagged = [
        (images::BUSYBOX_REF, &std.busybox),
        (images::MULTILAYER_REF, &std.multilayer),
        (images::ZSTD_REF, &std.zstd),
        (images::UNCOMPRESSED_REF, &std.uncompressed),
        (images::HOSTILE_DOTDOT_REF, &std.hostile_dotdot),
        (images::HOSTILE_ABS_REF, &std.hostile_abs),
        (images::HOSTILE_SYMLINK_REF, &std.hostile_symlink),
        (images::HOSTILE_HARDLINK_REF, &std.hostile_hardlink),
        (images::USER_REF, &std.user),
    ];
    for (reference, image) in tagged {
        let (repo, tag) = repo_tag(reference);
        assert_manifest_served(&reg, repo, tag, &image.manifest_digest).await;
        assert_manifest_served(&reg, repo, &image.manifest_digest, &image.manifest_digest).await;
        let config = get_blob(&reg, repo, &image.config_digest).await;
        assert_eq!(config, image.config_bytes);
    }

    for (reference, index, children) in [
        (images::MULTIARCH_REF, &std.multiarch_index, &std.multiarch),
        (
            images::DOCKERLIST_REF,
            &std.dockerlist_index,
            &std.dockerlist,
        ),
    ] {
        let (repo, tag) = repo_tag(reference);
        assert_manifest_served(&reg, repo, tag, index).await;
        assert!(children.iter().any(|c| c.arch == images::host_arch()));
        for child in children {
            let digest = &child.image.manifest_digest;
            assert_manifest_served(&reg, repo, digest, digest).await;
        }
    }
    let platforms: Vec<_> = std
        .multiarch
        .iter()
        .map(|c| (c.arch.as_str(), c.variant.as_deref()))
        .collect();
    for expected in [("amd64", None), ("arm64", None), ("arm", Some("v7"))] {
        assert!(
            platforms.contains(&expected),
            "{expected:?} missing from {platforms:?}"
        );
    }
    assert!(
        std.dockerlist
            .iter()
            .all(|c| c.image.manifest_media_type == images::DOCKER_MANIFEST)
    );
}

#[tokio::test]
async fn config_json_carries_the_image_settings() {
    let spec = images::ImageSpec {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        workdir: Some("/tmp".into()),
        user: Some("app".into()),
        stop_signal: Some("SIGINT".into()),
        volumes: vec!["/data".into()],
        labels: [("k".to_string(), "v".to_string())].into(),
        ..images::ImageSpec::new(vec![
            images::random_layer(1000, 1, Compression::Gzip).unwrap(),
        ])
    };
    let config: serde_json::Value = serde_json::from_slice(&spec.config_json().unwrap()).unwrap();
    assert_eq!(config["architecture"], images::host_arch());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Entrypoint"][1], "-c");
    assert_eq!(config["config"]["Cmd"][0], "echo hi");
    assert_eq!(config["config"]["WorkingDir"], "/tmp");
    assert_eq!(config["config"]["User"], "app");
    assert_eq!(config["config"]["StopSignal"], "SIGINT");
    assert!(config["config"]["Volumes"]["/data"].is_object());
    assert_eq!(config["config"]["Labels"]["k"], "v");
    assert_eq!(config["config"]["Env"][0], images::DEFAULT_PATH);
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"][0], spec.layers[0].diff_id);
}

#[tokio::test]
async fn basic_auth_registry_refuses_anonymous_and_accepts_credentials() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret").unwrap();
    let v2 = format!("{}/v2/", reg.url());

    let anonymous = client().get(&v2).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic"), "{challenge}");

    let wrong = client()
        .get(&v2)
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let right = client()
        .get(&v2)
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);

    let anonymous_push = Pusher::new(reg.addr(), None).unwrap();
    let layer = images::random_layer(4096, 7, Compression::Gzip).unwrap();
    let spec = images::ImageSpec::new(vec![layer]);
    assert!(
        anonymous_push
            .push_image("auth/img", Some("v1"), &spec)
            .await
            .is_err()
    );

    let pusher = Pusher::for_registry(&reg).unwrap();
    let pushed = pusher
        .push_image("auth/img", Some("v1"), &spec)
        .await
        .unwrap();
    let resp = client()
        .get(format!("{}/v2/auth/img/manifests/v1", reg.url()))
        .basic_auth("alice", Some("s3cret"))
        .header("Accept", images::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["docker-content-digest"],
        pushed.manifest_digest.as_str()
    );
}

#[tokio::test]
async fn corrupted_blob_is_served_with_a_different_sha256() {
    let reg = Registry::start().unwrap();
    let pusher = Pusher::for_registry(&reg).unwrap();
    let layer = images::random_layer(64 * 1024, 3, Compression::Gzip).unwrap();
    let image = pusher
        .push_image(
            "corrupt/img",
            Some("v1"),
            &images::ImageSpec::new(vec![layer.clone()]),
        )
        .await
        .unwrap();

    let before = get_blob(&reg, "corrupt/img", &image.layer_digests[0]).await;
    assert_eq!(images::sha256_digest(&before), layer.digest);

    images::corrupt_blob_on_disk(&reg, &layer.digest)
        .await
        .unwrap();
    let after = get_blob(&reg, "corrupt/img", &layer.digest).await;
    assert_eq!(after.len(), before.len());
    assert_ne!(images::sha256_digest(&after), layer.digest);
}

#[tokio::test]
async fn deleted_blob_is_no_longer_served() {
    let reg = Registry::start().unwrap();
    let pusher = Pusher::for_registry(&reg).unwrap();
    let layer = images::random_layer(1024, 5, Compression::Gzip).unwrap();
    let spec = images::ImageSpec::new(vec![layer.clone()]);
    let image = pusher
        .push_image("gone/img", Some("v1"), &spec)
        .await
        .unwrap();
    pusher.delete_blob("gone/img", &layer.digest).await.unwrap();
    let resp = client()
        .get(format!("{}/v2/gone/img/blobs/{}", reg.url(), layer.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The manifest still references it.
    assert_manifest_served(&reg, "gone/img", "v1", &image.manifest_digest).await;
}

#[tokio::test]
async fn zstd_and_uncompressed_layers_round_trip_to_their_diff_ids() {
    let reg = Registry::start().unwrap();
    let pusher = Pusher::for_registry(&reg).unwrap();
    let entries = [Entry::file("hello", 0o644, "hello\n")];
    for c in [Compression::Zstd, Compression::None, Compression::Gzip] {
        let layer = images::build_layer(&entries, c).unwrap();
        let image = pusher
            .push_image(
                "roundtrip/img",
                None,
                &images::ImageSpec::new(vec![layer.clone()]),
            )
            .await
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest_bytes).unwrap();
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            layer.media_type.as_str()
        );
        let blob = get_blob(&reg, "roundtrip/img", &layer.digest).await;
        let tar = match c {
            Compression::Zstd => zstd::decode_all(blob.as_slice()).unwrap(),
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(blob.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            Compression::None => blob,
        };
        assert_eq!(images::sha256_digest(&tar), layer.diff_id, "{c:?}");
    }
}

/// Reads back (name, link name, kind, mode, uid) of every entry of an uncompressed layer.
fn list(layer: &images::LayerBlob) -> Vec<(String, Option<String>, EntryType, u32, u64)> {
    let mut archive = tar::Archive::new(layer.bytes.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let link = h
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (
                name,
                link,
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
            )
        })
        .collect()
}

#[test]
fn multilayer_changes_layer_has_whiteout_opaque_links_owner_and_setuid() {
    let layer =
        images::build_layer(&images::multilayer_changes_entries(), Compression::None).unwrap();
    let entries = list(&layer);
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} in {entries:?}"))
    };
    assert_eq!(find("data/.wh.gone").2, EntryType::Regular);
    assert_eq!(find("opq/.wh..wh..opq").2, EntryType::Regular);
    assert_eq!(find("data/hardlink").2, EntryType::Link);
    assert_eq!(find("data/hardlink").1.as_deref(), Some("data/linked"));
    assert_eq!(find("data/symlink").2, EntryType::Symlink);
    assert_eq!(find("data/owned").3, 0o640);
    assert_eq!(find("data/owned").4, 1000);
    assert_eq!(find("data/setuid").3, 0o4755);
}

#[test]
fn hostile_layers_keep_their_escaping_names() {
    let names =
        |entries: Vec<Entry>| list(&images::build_layer(&entries, Compression::None).unwrap());
    let dotdot = names(images::hostile_dotdot_layer());
    assert!(dotdot.iter().all(|e| e.0.contains("../")));
    let abs = names(images::hostile_absolute_layer());
    assert_eq!(abs[0].0, images::HOSTILE_ABS_HOST_PATH);
    let symlink = names(images::hostile_symlink_escape_layer());
    assert_eq!(
        (symlink[0].1.as_deref(), symlink[0].2),
        (Some("/tmp"), EntryType::Symlink)
    );
    assert_eq!(symlink[1].0, "escape/e2e-hostile-symlink");
    let hardlink = names(images::hostile_hardlink_escape_layer());
    assert_eq!(hardlink[0].2, EntryType::Link);
    assert!(hardlink[0].1.as_deref().unwrap().starts_with("../../"));
}

#[test]
fn xattrs_and_devices_are_encoded() {
    let entries = [
        Entry::FileWithXattrs {
            path: "x".into(),
            mode: 0o644,
            data: b"x".to_vec(),
            xattrs: vec![("user.foo".into(), b"bar".to_vec())],
        },
        Entry::CharDevice {
            path: "/dev/null2".into(),
            major: 1,
            minor: 3,
            mode: 0o666,
        },
    ];
    let layer = images::build_layer(&entries, Compression::None).unwrap();
    let mut archive = tar::Archive::new(layer.bytes.as_slice());
    let mut it = archive.entries().unwrap();
    let mut x = it.next().unwrap().unwrap();
    let pax: Vec<_> = x
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|e| e.unwrap().key().unwrap().to_string())
        .collect();
    assert_eq!(pax, ["SCHILY.xattr.user.foo"]);
    let dev = it.next().unwrap().unwrap();
    assert_eq!(dev.header().entry_type(), EntryType::Char);
    assert_eq!(dev.header().device_major().unwrap(), Some(1));
    assert_eq!(&*dev.path_bytes(), b"dev/null2");
}

#[test]
fn random_layer_is_deterministic_and_incompressible() {
    let a = images::random_layer(1 << 20, 42, Compression::Gzip).unwrap();
    let b = images::random_layer(1 << 20, 42, Compression::Gzip).unwrap();
    let c = images::random_layer(1 << 20, 43, Compression::Gzip).unwrap();
    assert_eq!(a.digest, b.digest);
    assert_ne!(a.diff_id, c.diff_id);
    assert!(
        a.size > 1 << 20,
        "gzip of random data should not shrink: {}",
        a.size
    );
}
