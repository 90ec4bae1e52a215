//! Test images built in Rust (tar + gzip/zstd) and pushed with the plain OCI distribution API.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail, ensure};
use reqwest::{Method, RequestBuilder, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

pub use tar::EntryType;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// `Accept` header value covering every manifest type this module pushes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Host paths a buggy extractor would create when unpacking the hostile layers.
pub const HOSTILE_DOTDOT_HOST_PATH: &str = "/tmp/e2e-hostile-dotdot";
pub const HOSTILE_ABS_HOST_PATH: &str = "/tmp/e2e-hostile-absolute";
pub const HOSTILE_SYMLINK_HOST_PATH: &str = "/tmp/e2e-hostile-symlink";

const MTIME: u64 = 1_700_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// One entry of a layer tarball. Paths may be given with or without a leading `/`; they are
/// stored relative (as `bin/sh`). `Raw` bypasses every check of the `tar` crate.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    DirWithOwner {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    FileWithOwner {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
    },
    /// Regular file preceded by a PAX header carrying `SCHILY.xattr.<name>` records
    /// (e.g. name `user.foo`).
    FileWithXattrs {
        path: String,
        mode: u32,
        data: Vec<u8>,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Hard link to `target`, an earlier entry of the archive.
    Hardlink {
        path: String,
        target: String,
    },
    /// Deletes `path` from lower layers: written as `<parent>/.wh.<name>`.
    Whiteout {
        path: String,
    },
    /// Hides the lower-layer contents of `dir`: written as `<dir>/.wh..wh..opq`.
    Opaque {
        dir: String,
    },
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
        mode: u32,
    },
    /// A header whose name (and link name) bytes are copied verbatim, for hostile layers.
    Raw {
        name_bytes: Vec<u8>,
        kind: EntryType,
        data: Vec<u8>,
        link_target: Option<Vec<u8>>,
    },
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode,
        }
    }
    pub fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.into(),
            mode,
            data: data.into(),
        }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerBlob {
    /// The blob as pushed (compressed unless `Compression::None`).
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// OCI layer media type; translated to the Docker one when pushed with `docker_schema`.
    pub media_type: String,
    pub size: u64,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_entry(b: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> Result<()> {
    match entry {
        Entry::Dir { path, mode } => {
            let mut h = header(EntryType::Directory, *mode, 0);
            b.append_data(
                &mut h,
                format!("{}/", rel(path).trim_end_matches('/')),
                &[][..],
            )?;
        }
        Entry::DirWithOwner {
            path,
            mode,
            uid,
            gid,
        } => {
            let mut h = header(EntryType::Directory, *mode, 0);
            h.set_uid(*uid);
            h.set_gid(*gid);
            b.append_data(
                &mut h,
                format!("{}/", rel(path).trim_end_matches('/')),
                &[][..],
            )?;
        }
        Entry::File { path, mode, data } => {
            let mut h = header(EntryType::Regular, *mode, data.len() as u64);
            b.append_data(&mut h, rel(path), data.as_slice())?;
        }
        Entry::FileWithOwner {
            path,
            mode,
            uid,
            gid,
            data,
        } => {
            let mut h = header(EntryType::Regular, *mode, data.len() as u64);
            h.set_uid(*uid);
            h.set_gid(*gid);
            b.append_data(&mut h, rel(path), data.as_slice())?;
        }
        Entry::FileWithXattrs {
            path,
            mode,
            data,
            xattrs,
        } => {
            let keys: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))?;
            let mut h = header(EntryType::Regular, *mode, data.len() as u64);
            b.append_data(&mut h, rel(path), data.as_slice())?;
        }
        Entry::Symlink { path, target } => {
            let mut h = header(EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, rel(path), target)?;
        }
        Entry::Hardlink { path, target } => {
            let mut h = header(EntryType::Link, 0o644, 0);
            b.append_link(&mut h, rel(path), rel(target))?;
        }
        Entry::Whiteout { path } => {
            let p = rel(path).trim_end_matches('/');
            let name = match p.rsplit_once('/') {
                Some((parent, name)) => format!("{parent}/.wh.{name}"),
                None => format!(".wh.{p}"),
            };
            let mut h = header(EntryType::Regular, 0o644, 0);
            b.append_data(&mut h, name, &[][..])?;
        }
        Entry::Opaque { dir } => {
            let mut h = header(EntryType::Regular, 0o644, 0);
            let name = format!("{}/.wh..wh..opq", rel(dir).trim_end_matches('/'));
            b.append_data(&mut h, name, &[][..])?;
        }
        Entry::CharDevice {
            path,
            major,
            minor,
            mode,
        } => {
            let mut h = header(EntryType::Char, *mode, 0);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
            b.append_data(&mut h, rel(path), &[][..])?;
        }
        Entry::Raw {
            name_bytes,
            kind,
            data,
            link_target,
        } => {
            let mode = match kind {
                EntryType::Directory => 0o755,
                EntryType::Symlink => 0o777,
                _ => 0o644,
            };
            let mut h = header(*kind, mode, data.len() as u64);
            let old = h.as_old_mut();
            ensure!(
                name_bytes.len() <= old.name.len(),
                "raw tar name longer than 100 bytes"
            );
            old.name = [0; 100];
            old.name[..name_bytes.len()].copy_from_slice(name_bytes);
            if let Some(target) = link_target {
                ensure!(
                    target.len() <= old.linkname.len(),
                    "raw link name longer than 100 bytes"
                );
                old.linkname = [0; 100];
                old.linkname[..target.len()].copy_from_slice(target);
            }
            h.set_cksum();
            b.append(&h, data.as_slice())?;
        }
    }
    Ok(())
}

/// Builds a layer tarball from `entries` (in order) and compresses it.
pub fn build_layer(entries: &[Entry], c: Compression) -> Result<LayerBlob> {
    let mut b = tar::Builder::new(Vec::new());
    for entry in entries {
        append_entry(&mut b, entry).with_context(|| format!("adding tar entry {entry:?}"))?;
    }
    let tar = b.into_inner()?;
    compress_layer(tar, c, 6)
}

fn compress_layer(tar: Vec<u8>, c: Compression, level: u32) -> Result<LayerBlob> {
    let diff_id = sha256_digest(&tar);
    let (bytes, media_type) = match c {
        Compression::None => (tar, OCI_LAYER_TAR),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(tar.len() / 2),
                flate2::Compression::new(level),
            );
            e.write_all(&tar)?;
            (e.finish()?, OCI_LAYER_GZIP)
        }
        Compression::Zstd => (zstd::encode_all(tar.as_slice(), 3)?, OCI_LAYER_ZSTD),
    };
    Ok(LayerBlob {
        digest: sha256_digest(&bytes),
        diff_id,
        media_type: media_type.to_string(),
        size: bytes.len() as u64,
        bytes,
    })
}

/// A layer with a single file `data/blob-<seed>` of `size_bytes` incompressible pseudo-random
/// bytes (splitmix64), e.g. for pull benchmarks. Deterministic for a given seed.
pub fn random_layer(size_bytes: usize, seed: u64, c: Compression) -> Result<LayerBlob> {
    let mut state = seed;
    let mut data = Vec::with_capacity(size_bytes + 8);
    while data.len() < size_bytes {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(size_bytes);
    let mut b = tar::Builder::new(Vec::with_capacity(size_bytes + 2048));
    b.append_data(
        &mut header(EntryType::Directory, 0o755, 0),
        "data/",
        &[][..],
    )?;
    let mut h = header(EntryType::Regular, 0o644, size_bytes as u64);
    b.append_data(&mut h, format!("data/blob-{seed}"), data.as_slice())?;
    // Gzip level 0 (stored blocks): deflate would emit stored blocks for this payload anyway,
    // and skipping the match search keeps debug builds fast.
    compress_layer(b.into_inner()?, c, 0)
}

/// A minimal runnable root filesystem: the host's static busybox plus passwd/group.
pub fn busybox_base_entries() -> Result<Vec<Entry>> {
    let busybox = std::fs::read("/bin/busybox").context("reading host /bin/busybox")?;
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("proc", 0o555),
        Entry::dir("sys", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("tmp", 0o1777),
        Entry::dir("home", 0o755),
        Entry::DirWithOwner {
            path: "home/app".into(),
            mode: 0o755,
            uid: 1000,
            gid: 1000,
        },
        Entry::file("bin/busybox", 0o755, busybox),
    ];
    for tool in [
        "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "ps", "wget", "httpd",
        "hostname", "tail", "mkdir", "nc", "ping", "touch", "head", "stat", "chown", "readlink",
    ] {
        entries.push(Entry::symlink(&format!("bin/{tool}"), "busybox"));
    }
    entries.push(Entry::file(
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ));
    entries.push(Entry::file(
        "etc/group",
        0o644,
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    ));
    Ok(entries)
}

fn raw(name: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Entry {
    Entry::Raw {
        name_bytes: name.as_bytes().to_vec(),
        kind,
        data: data.to_vec(),
        link_target: link.map(|l| l.as_bytes().to_vec()),
    }
}

/// A file whose name climbs out of the rootfs with `..`.
pub fn hostile_dotdot_layer() -> Vec<Entry> {
    let climb = "../".repeat(12);
    vec![
        raw(
            &format!("{climb}tmp/e2e-hostile-dotdot"),
            EntryType::Regular,
            b"dotdot\n",
            None,
        ),
        raw(
            "data/../../../../tmp/e2e-hostile-dotdot",
            EntryType::Regular,
            b"dotdot\n",
            None,
        ),
    ]
}

/// A file with an absolute name.
pub fn hostile_absolute_layer() -> Vec<Entry> {
    vec![raw(
        HOSTILE_ABS_HOST_PATH,
        EntryType::Regular,
        b"absolute\n",
        None,
    )]
}

/// A symlink to an absolute host directory, then a file written through it
/// (`escape -> /tmp`, `escape/e2e-hostile-symlink`), plus the same with a relative `..` target.
pub fn hostile_symlink_escape_layer() -> Vec<Entry> {
    vec![
        raw("escape", EntryType::Symlink, b"", Some("/tmp")),
        raw(
            "escape/e2e-hostile-symlink",
            EntryType::Regular,
            b"symlink\n",
            None,
        ),
        raw(
            "up",
            EntryType::Symlink,
            b"",
            Some("../../../../../../../../tmp"),
        ),
        raw(
            "up/e2e-hostile-symlink",
            EntryType::Regular,
            b"symlink\n",
            None,
        ),
    ]
}

/// A hard link whose target climbs out of the rootfs (`passwd-link -> ../../…/etc/passwd`).
pub fn hostile_hardlink_escape_layer() -> Vec<Entry> {
    let target = format!("{}etc/passwd", "../".repeat(12));
    vec![raw("passwd-link", EntryType::Link, b"", Some(&target))]
}

/// What an image is made of. `ImageSpec::default()` targets linux on the host architecture.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<LayerBlob>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// OCI architecture name (`amd64`, `arm64`, `arm`, ...).
    pub arch: String,
    pub os: String,
    pub variant: Option<String>,
    /// Docker v2 schema2 media types instead of OCI.
    pub docker_schema: bool,
}

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host architecture in OCI naming.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            layers: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: vec![DEFAULT_PATH.to_string()],
            workdir: None,
            user: None,
            stop_signal: None,
            volumes: Vec::new(),
            labels: BTreeMap::new(),
            arch: host_arch().to_string(),
            os: "linux".to_string(),
            variant: None,
            docker_schema: false,
        }
    }
}

impl ImageSpec {
    pub fn new(layers: Vec<LayerBlob>) -> Self {
        ImageSpec {
            layers,
            ..Default::default()
        }
    }

    /// The image config JSON (OCI image config; also valid as a Docker image config).
    pub fn config_json(&self) -> Result<Vec<u8>> {
        let mut config = serde_json::Map::new();
        config.insert("Env".into(), json!(self.env));
        let optional = [
            ("Entrypoint", self.entrypoint.as_ref().map(|v| json!(v))),
            ("Cmd", self.cmd.as_ref().map(|v| json!(v))),
            ("WorkingDir", self.workdir.as_ref().map(|v| json!(v))),
            ("User", self.user.as_ref().map(|v| json!(v))),
            ("StopSignal", self.stop_signal.as_ref().map(|v| json!(v))),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                config.insert(key.into(), value);
            }
        }
        if !self.volumes.is_empty() {
            let volumes: serde_json::Map<String, Value> = self
                .volumes
                .iter()
                .map(|v| (v.clone(), json!({})))
                .collect();
            config.insert("Volumes".into(), Value::Object(volumes));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let mut doc = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": self.arch,
            "os": self.os,
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "history": self.layers.iter()
                .map(|_| json!({"created": "2023-11-14T22:13:20Z", "created_by": "e2e::images"}))
                .collect::<Vec<_>>(),
        });
        if let Some(variant) = &self.variant {
            doc["variant"] = json!(variant);
        }
        Ok(serde_json::to_vec(&doc)?)
    }
}

#[derive(Clone, Debug)]
pub struct PushedImage {
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

/// Pushes blobs and manifests to a registry on 127.0.0.1 with the plain distribution API.
pub struct Pusher {
    addr: String,
    auth: Option<(String, String)>,
    client: reqwest::Client,
}

impl Pusher {
    /// `addr` must be `127.0.0.1:<port>` (or another loopback `host:port`).
    pub fn new(addr: &str, auth: Option<(String, String)>) -> Result<Pusher> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        ensure!(
            host == "127.0.0.1" || host == "localhost" || host == "[::1]",
            "refusing to push to non-loopback registry {addr}"
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(300))
            .build()?;
        Ok(Pusher {
            addr: addr.to_string(),
            auth,
            client,
        })
    }

    /// A pusher for `registry`, using its basic-auth credentials if it has any.
    pub fn for_registry(registry: &Registry) -> Result<Pusher> {
        let auth = registry
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string()));
        Pusher::new(registry.addr(), auth)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request(&self, method: Method, path_or_url: &str) -> Result<RequestBuilder> {
        let base = format!("http://{}", self.addr);
        let url = if path_or_url.starts_with('/') {
            format!("{base}{path_or_url}")
        } else {
            // Upload locations may be absolute; never follow one off our registry.
            ensure!(
                path_or_url.starts_with(&format!("{base}/")),
                "registry redirected to foreign location {path_or_url}"
            );
            path_or_url.to_string()
        };
        let mut req = self.client.request(method, url);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        Ok(req)
    }

    /// Uploads `bytes` as a blob (monolithic upload); returns its digest. (No existence check
    /// first: distribution logs every HEAD miss as an error, which buries the interesting lines.)
    pub async fn push_raw_blob(&self, repo: &str, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let resp = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?
            .send()
            .await?;
        let resp = check(resp, "start blob upload").await?;
        let location = resp
            .headers()
            .get(header::LOCATION)
            .context("upload response without Location")?
            .to_str()?
            .to_string();
        let resp = self
            .request(Method::PUT, &location)?
            .query(&[("digest", &digest)])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        check(resp, "finish blob upload").await?;
        Ok(digest)
    }

    /// Unlinks blob `digest` from `repo` (`DELETE /v2/<repo>/blobs/<digest>`), so that manifests
    /// referencing it point at a missing blob.
    pub async fn delete_blob(&self, repo: &str, digest: &str) -> Result<()> {
        let resp = self
            .request(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}"))?
            .send()
            .await?;
        check(resp, &format!("delete blob {repo}@{digest}")).await?;
        Ok(())
    }

    /// PUTs `bytes` as a manifest of `media_type` under `reference` (tag or digest).
    /// Returns the digest of `bytes`.
    pub async fn push_raw_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let resp = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))?
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        check(resp, &format!("push manifest {repo}:{reference}")).await?;
        Ok(sha256_digest(bytes))
    }

    /// Pushes layers, config and manifest. With `tag == None` the manifest is pushed by digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        spec: &ImageSpec,
    ) -> Result<PushedImage> {
        let config_bytes = spec.config_json()?;
        let config_digest = self.push_raw_blob(repo, &config_bytes).await?;
        let mut layers = Vec::new();
        for layer in &spec.layers {
            self.push_raw_blob(repo, &layer.bytes).await?;
            let media_type = if spec.docker_schema {
                match layer.media_type.as_str() {
                    OCI_LAYER_GZIP => DOCKER_LAYER_GZIP,
                    OCI_LAYER_TAR => DOCKER_LAYER_TAR,
                    other => bail!("no Docker schema2 media type for {other}"),
                }
            } else {
                layer.media_type.as_str()
            };
            layers
                .push(json!({"mediaType": media_type, "digest": layer.digest, "size": layer.size}));
        }
        let (manifest_type, config_type) = if spec.docker_schema {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config_bytes.len()},
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        let reference = tag.unwrap_or(&manifest_digest);
        self.push_raw_manifest(repo, reference, manifest_type, &manifest_bytes)
            .await?;
        Ok(PushedImage {
            manifest_digest,
            manifest_media_type: manifest_type.to_string(),
            config_digest,
            manifest_bytes,
            config_bytes,
            layer_digests: spec.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: spec.layers.iter().map(|l| l.diff_id.clone()).collect(),
        })
    }

    /// Pushes an OCI image index (or a Docker manifest list with `docker_schema`) over images
    /// already pushed to `repo`, entries given as `(image, os, arch, variant)`.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        images: &[(PushedImage, &str, &str, Option<&str>)],
        docker_schema: bool,
    ) -> Result<String> {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(image, os, arch, variant)| {
                let mut platform = json!({"architecture": arch, "os": os});
                if let Some(variant) = variant {
                    platform["variant"] = json!(variant);
                }
                json!({
                    "mediaType": image.manifest_media_type,
                    "digest": image.manifest_digest,
                    "size": image.manifest_bytes.len(),
                    "platform": platform,
                })
            })
            .collect();
        let media_type = if docker_schema {
            DOCKER_LIST
        } else {
            OCI_INDEX
        };
        let index = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
        let bytes = serde_json::to_vec_pretty(&index)?;
        self.push_raw_manifest(repo, tag, media_type, &bytes).await
    }
}

async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status}: {body}")
}

/// Overwrites the stored data of blob `digest` with different bytes of the same length, so that
/// the registry serves content that no longer matches its digest.
pub async fn corrupt_blob_on_disk(registry: &Registry, digest: &str) -> Result<()> {
    let hex = digest
        .strip_prefix("sha256:")
        .context("only sha256 digests are supported")?;
    ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "bad digest {digest}"
    );
    let path = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut data = tokio::fs::read(&path)
        .await
        .with_context(|| format!("reading {path:?}"))?;
    ensure!(!data.is_empty(), "cannot corrupt an empty blob");
    for byte in &mut data {
        *byte ^= 0xff;
    }
    tokio::fs::write(&path, data)
        .await
        .with_context(|| format!("writing {path:?}"))?;
    Ok(())
}

/// One platform-specific image inside an index.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub image: PushedImage,
}

/// Everything `push_standard_images` pushed. Repositories and tags are the `*_REF` constants.
#[derive(Clone, Debug)]
pub struct StandardImages {
    pub busybox: PushedImage,
    pub multilayer: PushedImage,
    pub zstd: PushedImage,
    pub uncompressed: PushedImage,
    pub multiarch_index: String,
    pub multiarch: Vec<PlatformImage>,
    pub dockerlist_index: String,
    pub dockerlist: Vec<PlatformImage>,
    pub hostile_dotdot: PushedImage,
    pub hostile_abs: PushedImage,
    pub hostile_symlink: PushedImage,
    pub hostile_hardlink: PushedImage,
    pub user: PushedImage,
}

pub const BUSYBOX_REF: &str = "test/busybox:latest";
pub const MULTILAYER_REF: &str = "test/multilayer:v1";
pub const ZSTD_REF: &str = "test/zstd:v1";
pub const UNCOMPRESSED_REF: &str = "test/uncompressed:v1";
pub const MULTIARCH_REF: &str = "test/multiarch:v1";
pub const DOCKERLIST_REF: &str = "test/dockerlist:v1";
pub const HOSTILE_DOTDOT_REF: &str = "test/hostile-dotdot:v1";
pub const HOSTILE_ABS_REF: &str = "test/hostile-abs:v1";
pub const HOSTILE_SYMLINK_REF: &str = "test/hostile-symlink:v1";
pub const HOSTILE_HARDLINK_REF: &str = "test/hostile-hardlink:v1";
pub const USER_REF: &str = "test/user:v1";

fn split_ref(reference: &str) -> Result<(&str, &str)> {
    reference.rsplit_once(':').context("reference without tag")
}

/// The second layer of `test/multilayer:v1`.
pub fn multilayer_files_entries() -> Vec<Entry> {
    vec![
        Entry::dir("data", 0o755),
        Entry::file("data/a", 0o644, "a\n"),
        Entry::dir("data/dir", 0o755),
        Entry::file("data/dir/b", 0o644, "b\n"),
        Entry::file("data/keep", 0o644, "keep\n"),
        Entry::file("data/gone", 0o644, "gone\n"),
        Entry::dir("opq", 0o755),
        Entry::dir("opq/x", 0o755),
        Entry::file("opq/x/old", 0o644, "old\n"),
    ]
}

/// The third layer of `test/multilayer:v1`: whiteout, opaque dir, links, ownership, setuid.
pub fn multilayer_changes_entries() -> Vec<Entry> {
    vec![
        Entry::Whiteout {
            path: "data/gone".into(),
        },
        Entry::dir("opq", 0o755),
        Entry::Opaque { dir: "opq".into() },
        Entry::file("opq/new", 0o644, "new\n"),
        Entry::file("data/linked", 0o644, "linked\n"),
        Entry::hardlink("data/hardlink", "data/linked"),
        Entry::symlink("data/symlink", "a"),
        Entry::FileWithOwner {
            path: "data/owned".into(),
            mode: 0o640,
            uid: 1000,
            gid: 1000,
            data: b"owned\n".to_vec(),
        },
        Entry::file("data/setuid", 0o4755, "#!/bin/sh\necho setuid\n"),
    ]
}

/// Pushes the standard test image set (see the `*_REF` constants).
pub async fn push_standard_images(p: &Pusher) -> Result<StandardImages> {
    let base_entries = busybox_base_entries()?;
    let base = build_layer(&base_entries, Compression::Gzip)?;
    let labels: BTreeMap<String, String> =
        [("org.example.e2e".to_string(), "busybox".to_string())].into();
    let busybox_spec = ImageSpec {
        cmd: Some(vec!["sh".into()]),
        labels,
        ..ImageSpec::new(vec![base.clone()])
    };
    let simple = |layers: Vec<LayerBlob>| ImageSpec {
        cmd: Some(vec!["sh".into()]),
        ..ImageSpec::new(layers)
    };
    let push = |reference: &'static str, spec: ImageSpec| async move {
        let (repo, tag) = split_ref(reference)?;
        p.push_image(repo, Some(tag), &spec)
            .await
            .with_context(|| format!("pushing {reference}"))
    };

    let busybox = push(BUSYBOX_REF, busybox_spec).await?;
    let multilayer = push(
        MULTILAYER_REF,
        simple(vec![
            base.clone(),
            build_layer(&multilayer_files_entries(), Compression::Gzip)?,
            build_layer(&multilayer_changes_entries(), Compression::Gzip)?,
        ]),
    )
    .await?;
    let zstd_layer = build_layer(
        &[Entry::file("zstd-file", 0o644, "zstd\n")],
        Compression::Zstd,
    )?;
    let zstd = push(ZSTD_REF, simple(vec![base.clone(), zstd_layer])).await?;
    let uncompressed = push(
        UNCOMPRESSED_REF,
        simple(vec![build_layer(&base_entries, Compression::None)?]),
    )
    .await?;

    let mut hostile = Vec::new();
    for (reference, entries) in [
        (HOSTILE_DOTDOT_REF, hostile_dotdot_layer()),
        (HOSTILE_ABS_REF, hostile_absolute_layer()),
        (HOSTILE_SYMLINK_REF, hostile_symlink_escape_layer()),
        (HOSTILE_HARDLINK_REF, hostile_hardlink_escape_layer()),
    ] {
        let layer = build_layer(&entries, Compression::Gzip)?;
        hostile.push(push(reference, simple(vec![base.clone(), layer])).await?);
    }
    let [
        hostile_dotdot,
        hostile_abs,
        hostile_symlink,
        hostile_hardlink,
    ] = <[PushedImage; 4]>::try_from(hostile).map_err(|_| anyhow::anyhow!("hostile images"))?;

    let user = push(
        USER_REF,
        ImageSpec {
            user: Some("app".into()),
            ..simple(vec![base.clone()])
        },
    )
    .await?;

    let (multiarch_index, multiarch) = push_platform_index(
        p,
        MULTIARCH_REF,
        &base,
        false,
        &[("amd64", None), ("arm64", None), ("arm", Some("v7"))],
    )
    .await?;
    let (dockerlist_index, dockerlist) = push_platform_index(
        p,
        DOCKERLIST_REF,
        &base,
        true,
        &[("amd64", None), ("arm64", None)],
    )
    .await?;

    Ok(StandardImages {
        busybox,
        multilayer,
        zstd,
        uncompressed,
        multiarch_index,
        multiarch,
        dockerlist_index,
        dockerlist,
        hostile_dotdot,
        hostile_abs,
        hostile_symlink,
        hostile_hardlink,
        user,
    })
}

/// Pushes one image per platform (base layer + a layer with `/arch` holding the arch name) by
/// digest, then an index over them. The host architecture is always included.
async fn push_platform_index(
    p: &Pusher,
    reference: &str,
    base: &LayerBlob,
    docker_schema: bool,
    platforms: &[(&str, Option<&str>)],
) -> Result<(String, Vec<PlatformImage>)> {
    let (repo, tag) = split_ref(reference)?;
    let mut platforms = platforms.to_vec();
    if !platforms.iter().any(|(arch, _)| *arch == host_arch()) {
        platforms.push((host_arch(), None));
    }
    let mut pushed = Vec::new();
    for (arch, variant) in platforms {
        let arch_layer = build_layer(
            &[Entry::file("arch", 0o644, format!("{arch}\n"))],
            Compression::Gzip,
        )?;
        let spec = ImageSpec {
            cmd: Some(vec!["cat".into(), "/arch".into()]),
            arch: arch.to_string(),
            variant: variant.map(str::to_string),
            docker_schema,
            ..ImageSpec::new(vec![base.clone(), arch_layer])
        };
        let image = p.push_image(repo, None, &spec).await?;
        pushed.push(PlatformImage {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.map(str::to_string),
            image,
        });
    }
    let entries: Vec<_> = pushed
        .iter()
        .map(|pi| {
            (
                pi.image.clone(),
                pi.os.as_str(),
                pi.arch.as_str(),
                pi.variant.as_deref(),
            )
        })
        .collect();
    let digest = p.push_index(repo, tag, &entries, docker_schema).await?;
    Ok((digest, pushed))
}
