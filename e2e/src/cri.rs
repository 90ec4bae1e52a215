//! A CRI client over a unix socket (the same tonic types the kubelet's protocol uses).

use std::path::Path;

use anyhow::Result;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

pub async fn channel(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by the builder and ignored by the connector.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(channel)
}

pub async fn connect(socket: &Path) -> Result<Clients> {
    let ch = channel(socket).await?;
    Ok(Clients {
        runtime: RuntimeServiceClient::new(ch.clone()).max_decoding_message_size(16 << 20),
        image: ImageServiceClient::new(ch).max_decoding_message_size(16 << 20),
    })
}
