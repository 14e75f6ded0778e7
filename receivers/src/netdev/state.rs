//! What the attacher holds: per namespace its program instance and pins, per device
//! its links; and letting go of a device's links. Shared by the attacher and the thread that
//! releases what went away (`defunct.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use aya::programs::links::{FdLink, PinnedLink};

use super::instance::{Hook, Programs};
use crate::shared::netns::{Namespace, NetnsHandle};

/// A device's link: held by this process (closing it detaches), or pinned.
pub(super) enum HeldLink {
    Owned(#[allow(dead_code)] FdLink),
    Pinned(PinnedLink),
}

/// The links of one device.
pub(super) struct DevState {
    pub(super) links: Vec<(Hook, HeldLink)>,
}

impl DevState {
    /// Links that closing our fd detaches (not pinned).
    pub(super) fn owned_links(&self) -> usize {
        self.links
            .iter()
            .filter(|(_, l)| matches!(l, HeldLink::Owned(_)))
            .count()
    }
}

/// One namespace: its instance and its devices.
pub(super) struct NsState {
    pub(super) ns: Namespace,
    /// The namespace itself: entering it to attach. Dropped with the state.
    pub(super) handle: NetnsHandle,
    pub(super) programs: Programs,
    /// Pin directory of this namespace.
    pub(super) dir: Option<PathBuf>,
    pub(super) devices: HashMap<u32, DevState>,
    /// Pinned links of an earlier run not yet claimed by a device, by pin file name.
    pub(super) adopted: HashMap<String, PinnedLink>,
    /// When the namespace was added (unclaimed adopted links are released after a while).
    pub(super) added_at: Instant,
}

/// Detaches (and unpins) a device's links; returns how many.
pub(super) fn release(dev: DevState) -> usize {
    let n = dev.links.len();
    for (_, link) in dev.links {
        match link {
            HeldLink::Owned(l) => drop(l),
            HeldLink::Pinned(p) => {
                // Removing the pin drops the kernel's reference; closing ours detaches.
                if let Err(e) = p.unpin() {
                    tracing::debug!("unpinning a link: {e}");
                }
            }
        }
    }
    n
}
