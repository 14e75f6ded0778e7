//! Build contexts for components under test.

use std::sync::Arc;

use periscope_pipeline::component::{BuildContext, ComponentId};
use periscope_pipeline::devices::DeviceTable;

/// A build context for component `id` (`type` or `type/name`) with fresh, empty tables.
pub fn context(id: &str) -> BuildContext {
    BuildContext {
        id: ComponentId::parse(id).expect("component id"),
        devices: DeviceTable::default(),
        sockets: Default::default(),
        dns: Default::default(),
        counters: Arc::default(),
    }
}
