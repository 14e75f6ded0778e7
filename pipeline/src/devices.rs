//! Names of the devices and namespaces events refer to. Receivers register what they attach
//! to (or, for captures, the capture's interfaces) while it is alive, and retire it when it
//! goes away; processors look names up per series, not per event.
//!
//! Entries of things that went away are kept for a while ([`crate::retained`]): the last
//! records and the final counters of a deleted device reach the processors after the receiver
//! has seen it go, and must still be named after it. Keys carry the namespace's cookie, unique
//! for the boot, so a kept entry never names a device of a later namespace that reuses the
//! inode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::model::{DeviceRef, NetnsId};
use crate::retained::RetainedMap;

/// What is known of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Interface name (`eth0`).
    pub name: String,
    /// Name of the namespace (`/run/netns` name, container), if known.
    pub netns_name: Option<String>,
    /// For a veth whose other end is in another namespace: that end.
    pub peer: Option<DevicePeer>,
    /// The device serves its peer's namespace (the node-side end of a pod's veth): traffic it
    /// receives is its peer's workload sending. False: it serves its own namespace.
    pub serves_peer: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
}

/// The other end of a veth, in another namespace, as the device's receiver resolved it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePeer {
    /// The peer device (its namespace and ifindex there).
    pub device: DeviceRef,
    /// Its name, if it was registered when this device was.
    pub name: Option<String>,
    /// Its namespace's name, if known when this device was registered.
    pub netns_name: Option<String>,
}

/// A shared, thread-safe table from device to its names.
#[derive(Clone, Debug, Default)]
pub struct DeviceTable {
    inner: Arc<RwLock<RetainedMap<DeviceRef, DeviceInfo>>>,
}

impl DeviceTable {
    /// Registers a device that is alive (again), or its new names after a rename.
    pub fn insert(&self, device: DeviceRef, info: DeviceInfo) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(device, info);
        }
    }

    /// The device went away (deleted, moved out, its namespace gone): its names stay known for
    /// the retention period, for its last records and final counters.
    pub fn retire(&self, device: &DeviceRef) {
        if let Ok(mut map) = self.inner.write() {
            map.retire(device, Instant::now());
        }
    }

    /// Its names, alive or recently gone.
    pub fn get(&self, device: &DeviceRef) -> Option<DeviceInfo> {
        self.inner.read().ok().and_then(|m| m.get(device).cloned())
    }

    /// Whether the device is registered and has not gone away.
    pub fn is_alive(&self, device: &DeviceRef) -> bool {
        self.inner.read().is_ok_and(|m| m.is_alive(device))
    }

    /// The interface name, or `if<N>` when the device was never registered (or went away
    /// longer ago than the retention).
    pub fn interface_name(&self, device: &DeviceRef) -> String {
        self.get(device)
            .map(|d| d.name)
            .unwrap_or_else(|| format!("if{}", device.ifindex))
    }
}

/// What is known of one network namespace, captured while it is alive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// `/run/netns` or Docker netns name, if it has one.
    pub name: Option<String>,
    /// The cgroup v2 path (as `/proc/PID/cgroup` shows it) of a process found in the
    /// namespace when it was discovered, if any: names its container or pod after the process
    /// is gone.
    pub cgroup: Option<String>,
    /// `cgroup` was learned after the namespace was reported (it was made before any process
    /// was in it: CNI and `ip netns add` do that; or found through a runtime's setup process
    /// that exited before its cgroup was read), from the first process seen in it. Kept by
    /// the table only if a series of the namespace was named before ([`NamespaceTable::
    /// get_for_naming`]): `identity`, which names every point, then does not use it (an
    /// attribute its series' first points lacked would make a second series of the same
    /// counts); learned before that, it is as good as captured at discovery. Names captured
    /// with a series before its first export use it either way (`periscope.peer.*` of a
    /// node-side device).
    pub cgroup_late: bool,
}

/// A shared, thread-safe table from namespace (inode and cookie) to what is known of it.
/// Filled by whatever discovers namespaces (the netns watcher of the `xdp`/`tcx` receivers),
/// read by `identity`.
#[derive(Clone, Debug, Default)]
pub struct NamespaceTable {
    inner: Arc<RwLock<RetainedMap<NetnsId, NamespaceEntry>>>,
}

#[derive(Debug)]
struct NamespaceEntry {
    info: NamespaceInfo,
    /// A series of the namespace was named with `info` ([`NamespaceTable::get_for_naming`]):
    /// from then on a cgroup learned late stays late. Set under the read lock.
    named: AtomicBool,
}

impl NamespaceTable {
    /// Registers a namespace that is alive, or what became known of it (a name, a cgroup).
    /// A late cgroup (`cgroup_late`) counts as late only if a series of the namespace was
    /// named already.
    pub fn insert(&self, netns: NetnsId, mut info: NamespaceInfo) {
        if let Ok(mut map) = self.inner.write() {
            let old = map.get(&netns);
            let named = old.is_some_and(|e| e.named.load(Ordering::Relaxed));
            info.cgroup_late = match old {
                // Sent again (a name became known): the cgroup keeps what it was.
                Some(e) if e.info.cgroup == info.cgroup => e.info.cgroup_late,
                _ => info.cgroup_late && named,
            };
            map.insert(
                netns,
                NamespaceEntry {
                    info,
                    named: AtomicBool::new(named),
                },
            );
        }
    }

    /// The namespace went away: what is known of it stays for the retention period.
    pub fn retire(&self, netns: &NetnsId) {
        if let Ok(mut map) = self.inner.write() {
            map.retire(netns, Instant::now());
        }
    }

    /// What is known of it, alive or recently gone.
    pub fn get(&self, netns: &NetnsId) -> Option<NamespaceInfo> {
        self.inner
            .read()
            .ok()
            .and_then(|m| m.get(netns).map(|e| e.info.clone()))
    }

    /// As [`get`](Self::get), for naming a series by it: what is learned of the namespace's
    /// cgroup from now on is late (`cgroup_late`).
    pub fn get_for_naming(&self, netns: &NetnsId) -> Option<NamespaceInfo> {
        let map = self.inner.read().ok()?;
        let entry = map.get(netns)?;
        entry.named.store(true, Ordering::Relaxed);
        Some(entry.info.clone())
    }

    /// Whether the namespace is registered and has not gone away.
    pub fn is_alive(&self, netns: &NetnsId) -> bool {
        self.inner.read().is_ok_and(|m| m.is_alive(netns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(inode: u32, cookie: u64, ifindex: u32) -> DeviceRef {
        DeviceRef {
            netns: NetnsId { inode, cookie },
            ifindex,
        }
    }

    #[test]
    fn a_retired_device_keeps_its_name_and_a_reused_inode_does_not_inherit_it() {
        let t = DeviceTable::default();
        let old = dev(4026532000, 10, 2);
        t.insert(
            old,
            DeviceInfo {
                name: "eth0".into(),
                netns_name: Some("pod-a".into()),
                ..DeviceInfo::default()
            },
        );
        t.retire(&old);
        assert!(!t.is_alive(&old));
        assert_eq!(t.interface_name(&old), "eth0");
        // The next namespace gets the same inode, a new cookie.
        let new = dev(4026532000, 11, 2);
        assert_eq!(t.get(&new), None);
        assert_eq!(t.interface_name(&new), "if2");
    }

    #[test]
    fn a_cgroup_learned_before_any_series_was_named_is_not_late() {
        let t = NamespaceTable::default();
        let ns = NetnsId {
            inode: 4026532001,
            cookie: 5,
        };
        let late = |cgroup: &str| NamespaceInfo {
            name: None,
            cgroup: Some(cgroup.into()),
            cgroup_late: true,
        };
        t.insert(ns, NamespaceInfo::default());
        t.insert(ns, late("/docker/a"));
        assert_eq!(t.get(&ns).map(|i| i.cgroup_late), Some(false));
        // Named with it: a cgroup learned from now on is late.
        assert!(t.get_for_naming(&ns).is_some());
        t.insert(ns, late("/docker/b"));
        assert_eq!(t.get(&ns).map(|i| i.cgroup_late), Some(true));
        // Sent again with a name: the cgroup stays as it was.
        t.insert(
            ns,
            NamespaceInfo {
                name: Some("x".into()),
                ..late("/docker/b")
            },
        );
        assert_eq!(t.get(&ns).map(|i| i.cgroup_late), Some(true));
        let early = NetnsId { cookie: 7, ..ns };
        t.insert(early, late("/docker/d"));
        assert!(t.get_for_naming(&early).is_some());
        t.insert(
            early,
            NamespaceInfo {
                name: Some("y".into()),
                ..late("/docker/d")
            },
        );
        assert_eq!(t.get(&early).map(|i| i.cgroup_late), Some(false));
        // Another namespace with the same inode starts afresh.
        let next = NetnsId { cookie: 6, ..ns };
        t.insert(next, late("/docker/c"));
        assert_eq!(t.get(&next).map(|i| i.cgroup_late), Some(false));
    }
}
