//! ListAndWatch: the advertised device list with health and NUMA topology, sent at once and
//! again whenever it changes, until the client goes away or this server instance stops.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info};

use super::PluginState;
use crate::sharing;
use crate::v1beta1::ListAndWatchResponse;

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means the server is gone.
    let _ = stop.wait_for(|s| *s).await;
}

pub fn list_and_watch(
    state: &Arc<PluginState>,
) -> ReceiverStream<Result<ListAndWatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(4);
    let mut inventory = state.inventory.clone();
    let mut stop = state.stop.clone();
    let replicas = state.config.replicas;
    let resource = state.config.resource_name.clone();
    tokio::spawn(async move {
        let mut last = None;
        let mut backend_alive = true;
        loop {
            let devices = sharing::advertised(&inventory.borrow_and_update(), replicas);
            if last.as_ref() != Some(&devices) {
                let healthy = devices.iter().filter(|d| d.health == "Healthy").count();
                info!(resource = %resource, devices = devices.len(), healthy, "ListAndWatch: sending device list");
                let response = ListAndWatchResponse {
                    devices: devices.clone(),
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
                last = Some(devices);
            }
            tokio::select! {
                changed = inventory.changed(), if backend_alive => {
                    // A backend that ended leaves its last inventory: keep the stream open.
                    backend_alive = changed.is_ok();
                }
                _ = tx.closed() => break,
                _ = stopped(&mut stop) => break,
            }
        }
        debug!(resource = %resource, "ListAndWatch stream ended");
    });
    ReceiverStream::new(rx)
}
