//! PreStartContainer: nothing to prepare; the IDs are checked to be ones we advertised.

use tonic::Status;

use super::PluginState;
use crate::sharing;
use crate::v1beta1::{PreStartContainerRequest, PreStartContainerResponse};

pub fn pre_start_container(
    state: &PluginState,
    request: PreStartContainerRequest,
) -> Result<PreStartContainerResponse, Status> {
    let inventory = state.inventory.borrow();
    sharing::resolve_all(
        &inventory,
        state.config.replicas,
        &state.config.resource_name,
        &request.devices_ids,
        false,
    )?;
    Ok(PreStartContainerResponse {})
}
