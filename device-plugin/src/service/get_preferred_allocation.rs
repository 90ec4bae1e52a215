//! GetPreferredAllocation: per container, the policy of `crate::preferred`.

use tonic::Status;
use tracing::debug;

use super::PluginState;
use crate::preferred;
use crate::v1beta1::{
    ContainerPreferredAllocationResponse, PreferredAllocationRequest, PreferredAllocationResponse,
};

pub fn get_preferred_allocation(
    state: &PluginState,
    request: PreferredAllocationRequest,
) -> Result<PreferredAllocationResponse, Status> {
    let inventory = state.inventory.borrow().clone();
    let mut response = PreferredAllocationResponse::default();
    for c in &request.container_requests {
        let size = usize::try_from(c.allocation_size)
            .map_err(|_| Status::invalid_argument("allocation_size is negative"))?;
        let ids = preferred::preferred(
            &inventory,
            state.config.replicas,
            &c.available_device_i_ds,
            &c.must_include_device_i_ds,
            size,
        );
        debug!(available = ?c.available_device_i_ds, must_include = ?c.must_include_device_i_ds, size, preferred = ?ids, "preferred allocation");
        response
            .container_responses
            .push(ContainerPreferredAllocationResponse { device_i_ds: ids });
    }
    Ok(response)
}
