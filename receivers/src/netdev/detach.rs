//! Devices and namespaces that go away, in an order that loses no count and names every one:
//!
//! 1. the caller drains the ring buffers (records of the device reach the pipeline first);
//! 2. the device's kernel counters are read and returned with `last: true` (its final point),
//!    and the last points of its flows are kept for `take_last_flows`;
//! 3. its links are released (on the releasing thread, [`super::defunct`]);
//! 4. once they are, its keys are deleted from the shared counters map, with what user space
//!    kept per device (records delivered): a later device with the same ifindex starts at zero;
//! 5. its names are retired in the [`DeviceTable`](periscope_pipeline::devices::DeviceTable)
//!    (kept for the retention period, for what is still on its way downstream).
//!
//! A namespace that goes away does the same for all its devices at once, then retires its own
//! names in the `NamespaceTable`.

use periscope_pipeline::model::{DeviceCounters, DeviceRef, NetnsId};

use super::attach::{now_unix_ns, Attacher};
use super::read::Scope;

impl Attacher {
    /// A device went away (deleted, or moved to another namespace): returns its final
    /// counters (`last: true`); its links are released and its counters deleted after.
    /// Drain the ring buffers first.
    pub fn remove_device(&mut self, netns: NetnsId, ifindex: u32) -> Vec<DeviceCounters> {
        self.settle();
        let mut last = Vec::new();
        if let Some(state) = self.namespaces.get_mut(&netns) {
            let reader = &mut self.reader;
            last = reader.counters(now_unix_ns(), Scope::Device(netns, ifindex));
            let now = now_unix_ns();
            reader.last_flows(netns, Some(ifindex), now, &mut self.last_flows);
            match state.devices.remove(&ifindex) {
                Some(dev) => self.defunct.device(netns, ifindex, dev),
                // Nothing attached: nothing can count it any more.
                None => reader.forget(|n, i| n == netns && i == ifindex),
            }
        }
        for c in &mut last {
            c.last = true;
        }
        self.devices.retire(&DeviceRef { netns, ifindex });
        last
    }

    /// A namespace went away: returns the final counters of its devices (`last: true`); its
    /// links, pins, programs and maps are let go of on the releasing thread. Drain the ring
    /// buffers first.
    pub fn remove_namespace(&mut self, netns: NetnsId) -> Vec<DeviceCounters> {
        let mut last = Vec::new();
        if let Some(state) = self.namespaces.remove(&netns) {
            last = self.reader.counters(now_unix_ns(), Scope::Namespace(netns));
            let now = now_unix_ns();
            let flows = &mut self.last_flows;
            self.reader.last_flows(netns, None, now, flows);
            for ifindex in state.devices.keys() {
                self.devices.retire(&DeviceRef {
                    netns,
                    ifindex: *ifindex,
                });
            }
            self.defunct.namespace(state, true);
        }
        for c in &mut last {
            c.last = true;
            // Devices never attached (already gone) but counted: retired with the rest.
            self.devices.retire(&c.device);
        }
        self.namespace_names.retire(&netns);
        self.settle();
        last
    }

    /// Deletes the counters of devices and namespaces whose links are now released (no
    /// program can write them again). Call now and then (the receiver does every loop).
    pub fn settle(&mut self) {
        let (devices, namespaces) = self.defunct.take_released();
        let reader = &mut self.reader;
        for (netns, ifindex) in devices {
            if let Some(state) = self.namespaces.get(&netns) {
                // Back meanwhile under the same ifindex: its counters are the new device's.
                if !state.devices.contains_key(&ifindex) {
                    reader.forget(|n, i| n == netns && i == ifindex);
                }
            }
        }
        if !namespaces.is_empty() {
            // A namespace's cookie never comes back: every key of it goes.
            reader.forget(|n, _| namespaces.contains(&n));
        }
    }

    /// Whether a device's links are still being released (it came back: wait for them).
    pub(super) fn wait_released(&mut self, netns: NetnsId, ifindex: u32) {
        self.defunct.wait_device(netns, ifindex);
    }
}
