//! Network namespaces and their devices: finding every namespace on the host, watching for
//! namespaces and devices that come and go, and running code inside a namespace.
//!
//! The API below is the contract between discovery (this folder) and attachment
//! (`crate::netdev`).

mod devices;
mod discover;
mod enter;
mod fds;
mod owner;
mod peers;
mod procevents;
mod scope;
mod tracked;
mod watch;

use std::path::PathBuf;

use periscope_pipeline::model::NetnsId;

pub(crate) use devices::rtnetlink_request;
pub use devices::{list_addresses, list_devices, Device, DeviceAddress};
pub(crate) use discover::HOST_PATH;
pub use discover::{host_namespace, scan};
pub use enter::{netns_cookie, run_each_in, run_in, NetnsFd, NetnsHandle};
pub use scope::NamespaceScope;
pub use watch::{watch, Watcher};

/// A namespace found by a scan, before it is opened: inode, name, a path to open it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub inode: u32,
    pub name: Option<String>,
    pub path: PathBuf,
}

/// A network namespace found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Inode and cookie: the inode alone is reused after a namespace dies.
    pub id: NetnsId,
    /// `/run/netns` or Docker netns name, if it has one.
    pub name: Option<String>,
    /// A path through which it was found and can be opened (`/run/netns/x`, `/proc/PID/ns/net`).
    pub path: PathBuf,
    /// The cgroup v2 path of a process found in it when it was discovered (names its container
    /// or pod after the process is gone), if one was; else of the first process seen in it
    /// later (`cgroup_late`, sent as an update).
    pub cgroup: Option<String>,
    /// `cgroup` was learned after the namespace was first reported.
    pub cgroup_late: bool,
    /// The namespace, open (the watcher's fd, shared): opens it after the process it was found
    /// through (`path`) has exited — a runtime's setup process often has by the time a
    /// receiver gets to it. `None`: open `path`.
    pub fd: Option<NetnsFd>,
}

/// What the watcher reports. Devices are reported only for namespaces in scope, after the
/// namespace itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// A namespace in scope appeared (or was there at start). Sent again, as an update, when
    /// a namespace already reported gets a name (a bind mount appeared after its process) or,
    /// found without a process, its first process (`cgroup_late`).
    NamespaceAdded(Namespace),
    /// A namespace is gone (no process, no bind mount): forget it and its devices.
    NamespaceRemoved(NetnsId),
    /// A device appeared in a namespace (or was there at start), or changed name/state.
    DeviceAdded { netns: NetnsId, device: Device },
    /// A device left the namespace (deleted or moved elsewhere).
    DeviceRemoved { netns: NetnsId, ifindex: u32 },
    /// The addresses of a namespace's devices (all of them, after the namespace is reported,
    /// and again whenever they change): what the programs tell local traffic by.
    Addresses {
        netns: NetnsId,
        addresses: Vec<std::net::IpAddr>,
    },
}
