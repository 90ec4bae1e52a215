//! PullImage: resolve the reference through mirrors, verify every blob, and stream each layer
//! straight from the network into its unpacked directory (download, digest, decompress and
//! unpack in one pass, layers in parallel), so nothing is written twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::auth::{self, Credential};
use super::hosts::{Endpoint, Hosts};
use super::{
    ImageError, ImageRecord, ImageStore, LayerRecord, RunConfig, chain_ids, hex_of, reference,
};
use crate::store;

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: [&str; 4] = [
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_MANIFEST,
    MEDIA_DOCKER_MANIFEST,
];
const LAYER_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];
const MAX_MANIFEST_BYTES: usize = 4 << 20;
const MAX_CONFIG_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub hosts: Hosts,
    pub docker_config: PathBuf,
    pub max_concurrent_downloads: usize,
}

pub(super) struct Puller {
    options: PullOptions,
    /// One client per endpoint and credential: oci-client keeps the first credential it sees
    /// for a registry, so clients are never shared between credentials.
    clients: Mutex<HashMap<(Endpoint, String), (Client, reqwest::Client)>>,
    downloads: Arc<Semaphore>,
    /// One lock per layer chain ID (and per image reference): concurrent pulls of one layer
    /// download it once, the others wait and find it unpacked.
    keyed: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls running now: the last one to finish drops the registry clients (TLS roots,
    /// connection pools), which an idle node does not need; the next pull builds them anew.
    active: std::sync::atomic::AtomicUsize,
}

/// Counts a running pull; the last one out drops the clients.
struct ActivePull<'a>(&'a Puller);

impl Drop for ActivePull<'_> {
    fn drop(&mut self) {
        if self
            .0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.clients.lock().expect("clients lock").clear();
            // Hand the pull's buffers and the clients back to the system instead of keeping
            // them in the heap.
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ContainerConfig {
    user: Option<String>,
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
    volumes: Option<HashMap<String, serde_json::Value>>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

/// A registry endpoint ready to use: client, reference rewritten for it, credentials.
struct Source {
    endpoint: Endpoint,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
}

impl Puller {
    pub(super) fn new(options: PullOptions) -> Self {
        let downloads = Arc::new(Semaphore::new(options.max_concurrent_downloads));
        Self {
            options,
            clients: Mutex::new(HashMap::new()),
            downloads,
            keyed: Mutex::new(HashMap::new()),
            active: Default::default(),
        }
    }

    fn clients_for(
        &self,
        ep: &Endpoint,
        cred: &Credential,
    ) -> Result<(Client, reqwest::Client), ImageError> {
        let key = (ep.clone(), cred.fingerprint());
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        if clients.len() >= 64 {
            clients.clear(); // many credentials seen: start over rather than grow without bound
        }
        let mut certs = Vec::new();
        let mut http = reqwest::Client::builder().danger_accept_invalid_certs(ep.skip_verify);
        for ca in &ep.ca {
            let data = std::fs::read(ca).map_err(ImageError::io("read registry CA", ca))?;
            let cert =
                reqwest::Certificate::from_pem(&data).map_err(|e| ImageError::RegistryConfig {
                    path: ca.clone(),
                    reason: format!("not a PEM certificate: {e}"),
                })?;
            http = http.add_root_certificate(cert);
            certs.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if ep.scheme == "http" {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: ep.skip_verify,
            extra_root_certificates: certs,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("cri-server/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let http = http
            .build()
            .map_err(|e| ImageError::Registry(format!("HTTP client: {e}")))?;
        let pair = (Client::new(config), http);
        clients.insert(key, pair.clone());
        Ok(pair)
    }

    fn keyed_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.keyed.lock().expect("keyed lock");
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_string()).or_default().clone()
    }

    async fn sources(
        &self,
        r: &Reference,
        request_cred: Option<&Credential>,
    ) -> Result<Vec<Source>, ImageError> {
        let mut out = Vec::new();
        for endpoint in self.options.hosts.endpoints(r.registry())? {
            let mut reference = r.clone();
            if endpoint.host != r.registry() {
                reference.set_mirror_registry(endpoint.host.clone());
            }
            // Request credentials are for the image's own registry, never for a mirror.
            let cred = match request_cred {
                Some(c) if endpoint.upstream && *c != Credential::Anonymous => c.clone(),
                _ => auth::from_docker_config(&self.options.docker_config, &endpoint.host)?,
            };
            let (client, http) = self.clients_for(&endpoint, &cred)?;
            let base = format!("{}://{}", endpoint.scheme, endpoint.host);
            let auth = auth::to_registry_auth(&cred, &http, &base, r.repository()).await?;
            out.push(Source {
                endpoint,
                client,
                reference,
                auth,
            });
        }
        Ok(out)
    }
}

fn registry_error(what: &str, e: oci_client::errors::OciDistributionError) -> ImageError {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::UnauthorizedError { url } => ImageError::Unauthorized(format!("{what}: {url}")),
        E::AuthenticationFailure(m) => ImageError::Unauthorized(format!("{what}: {m}")),
        E::ImageManifestNotFoundError(m) => ImageError::NotFound(format!("{what}: {m}")),
        E::RegistryError { envelope, url }
            if envelope
                .errors
                .iter()
                .any(|x| format!("{:?}", x.code).contains("Unknown")) =>
        {
            ImageError::NotFound(format!("{what}: {url}: {envelope}"))
        }
        E::DigestError(d) => ImageError::Verification {
            what: what.into(),
            reason: d.to_string(),
        },
        other => ImageError::Registry(format!("{what}: {other}")),
    }
}

/// The platform this process runs on, in OCI's names.
fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    }
}

fn choose_platform(index: &[Descriptor]) -> Option<&Descriptor> {
    let (arch, variant) = host_platform();
    let candidates: Vec<&Descriptor> = index
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| candidates.first())
        .copied()
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ImageStore {
    /// Pulls `name` and returns the image id. `cred` comes from the request; without it the
    /// docker config.json is consulted per endpoint.
    pub async fn pull(&self, name: &str, cred: Option<Credential>) -> Result<String, ImageError> {
        let r = reference::parse(name)?;
        self.puller
            .active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _active = ActivePull(&self.puller);
        let image_lock = self.puller.keyed_lock(&format!("image:{}", r.whole()));
        let _image_guard = image_lock.lock().await;
        let started = std::time::Instant::now();
        let sources = self.puller.sources(&r, cred.as_ref()).await?;

        // Resolve: the top manifest (by tag through `resolve` endpoints, by digest through
        // `pull` endpoints), then the platform manifest from an index.
        let by_digest = r.digest().map(str::to_string);
        let (top_bytes, top_digest, mut source_idx) =
            self.fetch_manifest(&sources, by_digest.as_deref()).await?;
        let top: Manifest = serde_json::from_slice(&top_bytes)
            .map_err(|e| ImageError::Unsupported(format!("manifest of {name}: {e}")))?;
        if top.schema_version != 2 {
            return Err(ImageError::Unsupported(format!(
                "{name}: manifest schema version {} (only schema 2 / OCI)",
                top.schema_version
            )));
        }
        let (manifest_bytes, manifest_digest, index) = match &top.manifests {
            Some(list) => {
                let chosen = choose_platform(list).ok_or_else(|| {
                    let (arch, _) = host_platform();
                    ImageError::Unsupported(format!("{name}: no linux/{arch} image in the index"))
                })?;
                let (bytes, digest, idx) =
                    self.fetch_manifest(&sources, Some(&chosen.digest)).await?;
                source_idx = idx;
                self.put_content(&top_digest, &top_bytes)?;
                (bytes, digest, Some(top_digest.clone()))
            }
            None => (top_bytes.clone(), top_digest.clone(), None),
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| ImageError::Unsupported(format!("manifest of {name}: {e}")))?;
        if manifest.manifests.is_some() {
            return Err(ImageError::Unsupported(format!(
                "{name}: an index inside an index"
            )));
        }
        let config_desc = manifest
            .config
            .as_ref()
            .ok_or_else(|| ImageError::Unsupported(format!("{name}: manifest has no config")))?;
        if let Some(mt) = &manifest.media_type
            && mt != MEDIA_OCI_MANIFEST
            && mt != MEDIA_DOCKER_MANIFEST
        {
            return Err(ImageError::Unsupported(format!(
                "{name}: manifest media type {mt}"
            )));
        }
        for l in &manifest.layers {
            if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                return Err(ImageError::Unsupported(format!(
                    "{name}: layer {} has media type {:?}, not a container image layer",
                    l.digest, l.media_type
                )));
            }
        }

        // Config, verified by digest and size.
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(ImageError::Unsupported(format!(
                "{name}: config of {} bytes",
                config_desc.size
            )));
        }
        let config_bytes = self
            .fetch_blob_bytes(&sources, source_idx, config_desc)
            .await?;
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::Unsupported(format!("{name}: image config: {e}")))?;
        if config.rootfs.kind != "layers" || config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Verification {
                what: format!("{name} config"),
                reason: format!(
                    "{} diff_ids for {} layers (rootfs type {:?})",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len(),
                    config.rootfs.kind
                ),
            });
        }
        let chains = chain_ids(&config.rootfs.diff_ids);

        // Layers: each missing one downloaded and unpacked in parallel; GC spares them until
        // the record exists.
        self.mark_pending(&chains, true);
        let result = self
            .fetch_layers(
                &sources,
                source_idx,
                &manifest.layers,
                &config.rootfs.diff_ids,
                &chains,
            )
            .await;
        let record = match result {
            Ok(layers) => {
                let c = config.config.unwrap_or_default();
                let mut volumes: Vec<String> = c.volumes.unwrap_or_default().into_keys().collect();
                volumes.sort();
                ImageRecord {
                    id: config_desc.digest.clone(),
                    repo_tags: reference::repo_tag(&r).into_iter().collect(),
                    repo_digests: vec![reference::repo_digest(
                        &r,
                        index.as_deref().unwrap_or(&manifest_digest),
                    )],
                    size: config_desc.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
                    manifest_digest: manifest_digest.clone(),
                    index_digest: index.clone(),
                    layers,
                    config: RunConfig {
                        user: c.user.unwrap_or_default(),
                        env: c.env.unwrap_or_default(),
                        entrypoint: c.entrypoint.unwrap_or_default(),
                        cmd: c.cmd.unwrap_or_default(),
                        working_dir: c.working_dir.unwrap_or_default(),
                        stop_signal: c.stop_signal.unwrap_or_default(),
                        volumes,
                        labels: c.labels.unwrap_or_default(),
                    },
                    pulled_at_unix_nanos: now_nanos(),
                }
            }
            Err(e) => {
                self.mark_pending(&chains, false);
                return Err(e);
            }
        };
        let stored = async {
            self.put_content(&manifest_digest, &manifest_bytes)?;
            self.put_content(&config_desc.digest, &config_bytes)?;
            self.save_record(record).await
        }
        .await;
        self.mark_pending(&chains, false);
        let id = stored?;
        info!(image = %name, id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
        Ok(id)
    }

    fn mark_pending(&self, chains: &[String], add: bool) {
        let mut p = self.pending.lock().expect("pending lock");
        for c in chains {
            if add {
                *p.entry(c.clone()).or_default() += 1;
            } else if let Some(n) = p.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    p.remove(c);
                }
            }
        }
    }

    /// Adds the new record's names, taking its tag from any image that had it before.
    async fn save_record(&self, mut record: ImageRecord) -> Result<String, ImageError> {
        let _w = self.write.lock().await;
        let mut changed = Vec::new();
        {
            let mut records = self.records.write().expect("image records lock");
            if let Some(old) = records.get(&record.id) {
                for t in &old.repo_tags {
                    if !record.repo_tags.contains(t) {
                        record.repo_tags.push(t.clone());
                    }
                }
                for d in &old.repo_digests {
                    if !record.repo_digests.contains(d) {
                        record.repo_digests.push(d.clone());
                    }
                }
            }
            for other in records.values_mut() {
                if other.id != record.id
                    && other.repo_tags.iter().any(|t| record.repo_tags.contains(t))
                {
                    other.repo_tags.retain(|t| !record.repo_tags.contains(t));
                    changed.push(other.clone());
                }
            }
            changed.push(record.clone());
            for c in &changed {
                records.insert(c.id.clone(), c.clone());
            }
        }
        for c in &changed {
            let path = self.record_path(&c.id);
            store::write_json(&path, c).map_err(ImageError::io("write image record", &path))?;
        }
        Ok(record.id)
    }

    fn put_content(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        let path = self.content_path(digest);
        if path.exists() {
            return Ok(());
        }
        store::write_atomic(&path, data).map_err(ImageError::io("write content", &path))
    }

    /// Fetches a manifest, trying each usable endpoint in order. Returns the bytes, their
    /// verified digest and the index of the endpoint that answered.
    async fn fetch_manifest(
        &self,
        sources: &[Source],
        digest: Option<&str>,
    ) -> Result<(Bytes, String, usize), ImageError> {
        let mut last = None;
        for (i, s) in sources.iter().enumerate() {
            let usable = if digest.is_some() {
                s.endpoint.pull
            } else {
                s.endpoint.resolve
            };
            if !usable {
                continue;
            }
            let reference = match digest {
                Some(d) => s.reference.clone_with_digest(d.to_string()),
                None => s.reference.clone(),
            };
            let res = s
                .client
                .pull_manifest_raw(&reference, &s.auth, &MANIFEST_TYPES)
                .await;
            match res {
                Ok((bytes, _)) => {
                    if bytes.len() > MAX_MANIFEST_BYTES {
                        last = Some(ImageError::Unsupported(format!(
                            "manifest of {} bytes",
                            bytes.len()
                        )));
                        continue;
                    }
                    let actual = sha256_digest(&bytes);
                    if let Some(d) = digest
                        && d != actual
                    {
                        warn!(endpoint = %s.endpoint.host, expected = d, actual, "manifest digest mismatch");
                        last = Some(ImageError::Verification {
                            what: format!("manifest {d}"),
                            reason: format!("served content has digest {actual}"),
                        });
                        continue;
                    }
                    debug!(endpoint = %s.endpoint.host, digest = %actual, "manifest resolved");
                    return Ok((bytes, actual, i));
                }
                Err(e) => {
                    let e = registry_error(
                        &format!("manifest of {} from {}", reference.whole(), s.endpoint.host),
                        e,
                    );
                    warn!(error = %e, "endpoint failed, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| ImageError::Registry("no endpoint may serve this request".into())))
    }

    /// Endpoints for blobs: the one that served the manifest first, then the other pull ones.
    fn blob_order(sources: &[Source], first: usize) -> Vec<&Source> {
        let mut order = vec![&sources[first]];
        order.extend(
            sources
                .iter()
                .enumerate()
                .filter(|(i, s)| *i != first && s.endpoint.pull)
                .map(|(_, s)| s),
        );
        order
    }

    async fn fetch_blob_bytes(
        &self,
        sources: &[Source],
        first: usize,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, ImageError> {
        let mut last = None;
        for s in Self::blob_order(sources, first) {
            let mut out = Vec::with_capacity(desc.size as usize);
            match s
                .client
                .pull_blob(&s.reference, &oci_desc(desc), &mut out)
                .await
            {
                Ok(()) if out.len() as u64 == desc.size && sha256_digest(&out) == desc.digest => {
                    return Ok(out);
                }
                Ok(()) => {
                    last = Some(ImageError::Verification {
                        what: format!("blob {}", desc.digest),
                        reason: format!("{} bytes with digest {}", out.len(), sha256_digest(&out)),
                    })
                }
                Err(e) => {
                    last = Some(registry_error(
                        &format!("blob {} from {}", desc.digest, s.endpoint.host),
                        e,
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::Registry("no endpoint may serve blobs".into())))
    }

    async fn fetch_layers(
        &self,
        sources: &[Source],
        first: usize,
        layers: &[Descriptor],
        diff_ids: &[String],
        chains: &[String],
    ) -> Result<Vec<LayerRecord>, ImageError> {
        let jobs = layers.iter().zip(diff_ids).zip(chains).map(|((desc, diff_id), chain)| async move {
            let lock = self.puller.keyed_lock(&format!("layer:{chain}"));
            let _g = lock.lock().await;
            let path = self.layer_path(chain);
            let meta_path = path.with_extension("json");
            if path.exists()
                && let Ok(rec) = store::read_json::<LayerRecord>(&meta_path)
            {
                return Ok(rec);
            }
            let _permit = self.puller.downloads.acquire().await.map_err(|_| ImageError::Registry("shutting down".into()))?;
            let mut last = None;
            for s in Self::blob_order(sources, first) {
                match self.fetch_layer(s, desc, diff_id, chain).await {
                    Ok(rec) => return Ok(rec),
                    Err(e) => {
                        warn!(layer = %desc.digest, endpoint = %s.endpoint.host, error = %e, "layer fetch failed");
                        let hostile = matches!(e, ImageError::Unpack { source: super::unpack::UnpackError::Escape { .. }, .. });
                        last = Some(e);
                        if hostile {
                            break;
                        }
                    }
                }
            }
            Err(last.unwrap_or_else(|| ImageError::Registry("no endpoint may serve blobs".into())))
        });
        // Every layer job runs to its end (success or cleanup) before the pull reports, so a
        // failed layer never leaves another one half-written.
        futures::future::join_all(jobs).await.into_iter().collect()
    }

    /// Streams one layer blob into a temp dir beside its final place, checking the blob digest
    /// and size and the diff ID, then syncs and renames it into place.
    async fn fetch_layer(
        &self,
        s: &Source,
        desc: &Descriptor,
        diff_id: &str,
        chain: &str,
    ) -> Result<LayerRecord, ImageError> {
        let final_path = self.layer_path(chain);
        let layers_dir = final_path
            .parent()
            .expect("layer path has a parent")
            .to_path_buf();
        let tmp = layers_dir.join(format!(".tmp-{}-{}", &hex_of(chain)[..12], now_nanos()));
        std::fs::create_dir(&tmp).map_err(ImageError::io("create layer dir", &tmp))?;
        let result = self
            .stream_into(s, desc, &tmp)
            .await
            .and_then(|(digest, size, unpacked)| {
                if size != desc.size || digest != desc.digest {
                    return Err(ImageError::Verification {
                        what: format!("layer {}", desc.digest),
                        reason: format!(
                            "received {size} bytes with digest {digest}, expected {} bytes",
                            desc.size
                        ),
                    });
                }
                if unpacked.diff_id != diff_id {
                    return Err(ImageError::Verification {
                        what: format!("layer {}", desc.digest),
                        reason: format!(
                            "uncompressed digest {} but the config says {diff_id}",
                            unpacked.diff_id
                        ),
                    });
                }
                Ok(unpacked)
            });
        let unpacked = match result {
            Ok(u) => u,
            Err(e) => {
                if let Err(rm) = std::fs::remove_dir_all(&tmp) {
                    warn!(path = %tmp.display(), error = %rm, "could not remove a failed layer dir");
                }
                return Err(e);
            }
        };
        let rec = LayerRecord {
            chain_id: chain.to_string(),
            diff_id: diff_id.to_string(),
            digest: desc.digest.clone(),
            size: desc.size,
            unpacked_bytes: unpacked.bytes,
            inodes: unpacked.inodes,
        };
        let finish = {
            let tmp = tmp.clone();
            let final_path = final_path.clone();
            let rec = rec.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                syncfs(&tmp)?;
                store::write_json(&final_path.with_extension("json"), &rec)?;
                std::fs::rename(&tmp, &final_path)?;
                std::fs::File::open(final_path.parent().expect("parent"))?.sync_all()
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
        };
        if let Err(e) = finish {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ImageError::io("commit layer", &final_path)(e));
        }
        debug!(layer = %desc.digest, chain = %chain, bytes = rec.unpacked_bytes, "layer unpacked");
        Ok(rec)
    }

    /// Download -> (blocking thread) digest + decompress + unpack. Returns the digest and size
    /// of what was received and what the unpacker found.
    async fn stream_into(
        &self,
        s: &Source,
        desc: &Descriptor,
        dest: &Path,
    ) -> Result<(String, u64, super::unpack::Unpacked), ImageError> {
        let mut stream = s
            .client
            .pull_blob_stream(&s.reference, &oci_desc(desc))
            .await
            .map_err(|e| {
                registry_error(
                    &format!("layer {} from {}", desc.digest, s.endpoint.host),
                    e,
                )
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let dest = dest.to_path_buf();
        let digest = desc.digest.clone();
        let worker = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
                hasher: Sha256::new(),
                count: 0,
            };
            let unpacked = super::unpack::unpack_layer(&mut reader, &dest);
            // Whatever the tar left unread still counts toward the blob digest.
            let drained = std::io::copy(&mut reader, &mut std::io::sink());
            let received = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
            (unpacked, drained, received, reader.count)
        });
        let mut net_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => {
                    if tx.send(b).await.is_err() {
                        break; // the unpacker stopped early: its error says why
                    }
                }
                Err(e) => {
                    net_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let (unpacked, _drained, received, count) = worker
            .await
            .map_err(|e| ImageError::Registry(format!("unpack task: {e}")))?;
        let unpacked = unpacked.map_err(|source| ImageError::Unpack {
            digest: digest.clone(),
            source,
        })?;
        if let Some(e) = net_error {
            return Err(ImageError::Verification {
                what: format!("layer {digest}"),
                reason: e.to_string(),
            });
        }
        Ok((received, count, unpacked))
    }
}

fn oci_desc(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    }
}

/// Reads the chunks a download task sends, hashing them on the way.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    hasher: Sha256,
    count: u64,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.hasher.update(&b);
                    self.count += b.len() as u64;
                    self.current = b;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn syncfs(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn index_picks_linux_on_the_host_arch() {
        let (arch, variant) = host_platform();
        let list = vec![
            desc("windows", arch, None, "win"),
            desc("linux", "s390x-not-us", None, "other"),
            desc("linux", arch, variant, "ours"),
        ];
        assert_eq!(choose_platform(&list).unwrap().digest, "ours");
        assert!(choose_platform(&list[..2]).is_none());
    }
}
