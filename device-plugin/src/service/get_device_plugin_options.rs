//! GetDevicePluginOptions: the options the plugin registered with.

use crate::config::Config;
use crate::v1beta1::DevicePluginOptions;

pub fn options(config: &Config) -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: config.pre_start_required,
        get_preferred_allocation_available: config.get_preferred_allocation_available,
    }
}
