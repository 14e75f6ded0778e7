//! What the namespace watcher holds of each namespace in scope (shared by the watcher and the
//! resolution of veth peers, `peers.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use netlink_sys::Socket;
use periscope_pipeline::model::NetnsId;

use super::devices::DeviceAddress;
use super::enter::NetnsHandle;
use super::{Device, Namespace};

/// A namespace in scope, held open while tracked.
pub(super) struct Tracked {
    pub(super) ns: Namespace,
    pub(super) handle: NetnsHandle,
    pub(super) links: Socket,
    pub(super) devices: BTreeMap<u32, Device>,
    /// Its devices' addresses (for the programs' local/forwarded test).
    pub(super) addrs: BTreeSet<DeviceAddress>,
    /// For requests in the namespace (which namespace a peer's `link-netnsid` is).
    pub(super) query: Socket,
    /// `nsid` → namespace, as this namespace numbers the others; complete: every tracked
    /// namespace was asked since the last one was added.
    pub(super) nsids: HashMap<i32, NetnsId>,
    pub(super) nsids_complete: bool,
}
