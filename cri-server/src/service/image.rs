//! ImageService: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::image_status;
use crate::image::pull_runtime::PullRuntime;
use crate::image::{ImageRecord, ImageStore, auth};

pub struct ImageServiceImpl {
    pub images: Arc<ImageStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Pulls run there, off the RPC runtime (see [`PullRuntime`]).
    pub pulls: PullRuntime,
}

fn image_name(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Status::invalid_argument(
            "image spec with a non-empty image name is required",
        )),
    }
}

fn to_cri(r: &ImageRecord) -> Image {
    let (uid, username) = r.user();
    Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

#[tonic::async_trait]
impl ImageService for ImageServiceImpl {
    #[instrument(skip_all, fields(image))]
    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        tracing::Span::current().record("image", name);
        let cred = req
            .auth
            .as_ref()
            .map(auth::from_cri)
            .transpose()
            .map_err(image_status)?;
        // The pull runs in its own task: a client that gives up does not cut it off halfway
        // (a retry finds the layers done).
        let images = self.images.clone();
        let name = name.to_string();
        let started = std::time::Instant::now();
        let id = self
            .pulls
            .spawn(async move { images.pull(&name, cred).await })
            .map_err(|e| Status::internal(format!("start the pull runtime: {e}")))?
            .await
            .map_err(|e| Status::internal(format!("pull task: {e}")))?
            .map_err(image_status)?;
        self.metrics.observe_pull(started.elapsed().as_secs_f64());
        Ok(Response::new(PullImageResponse { image_ref: id }))
    }

    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(name) => self.images.find(&name).iter().map(to_cri).collect(),
            None => self.images.list().iter().map(to_cri).collect(),
        };
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let Some(rec) = self.images.find(name) else {
            // The CRI answer for an absent image is an empty status, not an error.
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let config: serde_json::Value = self
                .images
                .config_json(&rec.id)
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({
                "imageSpec": config,
                "manifestDigest": rec.manifest_digest,
                "indexDigest": rec.index_digest,
                "chainIDs": rec.layers.iter().map(|l| &l.chain_id).collect::<Vec<_>>(),
                "layers": rec.layers,
                "pulledAtUnixNanos": rec.pulled_at_unix_nanos,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(&rec)),
            info,
        }))
    }

    #[instrument(skip_all)]
    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        self.images.remove(name).await.map_err(image_status)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let (bytes, inodes) = self.images.usage();
        let usage = FilesystemUsage {
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.images.root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![],
        }))
    }
}
