//! Allocate: per container, the devices resolved (replicas to their physical device,
//! deduplicated), refused if unknown (InvalidArgument) or unhealthy (FailedPrecondition),
//! then the response the strategies call for. The CDI spec is brought up to date before any
//! CDI name is handed out.

use tonic::Status;
use tracing::{info, warn};

use super::PluginState;
use crate::allocation;
use crate::error::Error;
use crate::sharing;
use crate::v1beta1::{AllocateRequest, AllocateResponse};

pub fn allocate(state: &PluginState, request: AllocateRequest) -> Result<AllocateResponse, Status> {
    let config = &state.config;
    let inventory = state.inventory.borrow().clone();
    let result = (|| -> Result<AllocateResponse, Error> {
        let mut response = AllocateResponse::default();
        for container in &request.container_requests {
            let devices = sharing::resolve_all(
                &inventory,
                config.replicas,
                &config.resource_name,
                &container.devices_ids,
                true,
            )?;
            response
                .container_responses
                .push(allocation::container_response(
                    config, &inventory, &devices,
                )?);
        }
        if let Some(writer) = &state.cdi {
            writer.write(&allocation::cdi_spec(config, &inventory))?;
        }
        Ok(response)
    })();
    let requested: Vec<&Vec<String>> = request
        .container_requests
        .iter()
        .map(|c| &c.devices_ids)
        .collect();
    match result {
        Ok(response) => {
            info!(resource = %config.resource_name, devices = ?requested, "allocated");
            Ok(response)
        }
        Err(e) => {
            warn!(resource = %config.resource_name, devices = ?requested, error = %e, "allocation refused");
            Err(e.into())
        }
    }
}
