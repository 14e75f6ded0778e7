//! Names of the devices events refer to. Receivers register what they attach to (or, for
//! captures, the capture's interfaces); processors look names up per series, not per event.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::DeviceRef;

/// What is known of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Interface name (`eth0`).
    pub name: String,
    /// Name of the namespace (`/run/netns` name, container), if known.
    pub netns_name: Option<String>,
}

/// A shared, thread-safe table from device to its names.
#[derive(Clone, Debug, Default)]
pub struct DeviceTable {
    inner: Arc<RwLock<HashMap<DeviceRef, DeviceInfo>>>,
}

impl DeviceTable {
    pub fn insert(&self, device: DeviceRef, info: DeviceInfo) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(device, info);
        }
    }

    pub fn remove(&self, device: &DeviceRef) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(device);
        }
    }

    pub fn get(&self, device: &DeviceRef) -> Option<DeviceInfo> {
        self.inner.read().ok().and_then(|m| m.get(device).cloned())
    }

    /// The interface name, or `if<N>` when the device is unknown.
    pub fn interface_name(&self, device: &DeviceRef) -> String {
        self.get(device)
            .map(|d| d.name)
            .unwrap_or_else(|| format!("if{}", device.ifindex))
    }
}
