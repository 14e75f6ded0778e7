//! The other end of each veth across namespaces, and which namespace a device serves.
//!
//! rtnetlink tells a veth's peer by its ifindex (`IFLA_LINK`) in a namespace numbered from
//! the device's own (`IFLA_LINK_NETNSID`). Which namespace that number is, is asked of the
//! device's namespace with `RTM_GETNSID` for each tracked namespace's fd (cached per
//! namespace; ifindexes alone are ambiguous: every node namespace made the same way numbers
//! its veths alike). Once one end is resolved, the other end is set too: a veth whose peer was
//! moved away after its creation gets no notification of its own.
//!
//! Which namespace a device serves (the workload its traffic is into or out of): its own,
//! except for the node-side end of a veth, which serves its peer's. A veth end `E` in namespace
//! `A` whose peer is in `B` serves `B` when
//! 1. `B` is not the agent's own namespace, and
//! 2. `A` is the agent's namespace (the node's, when the agent runs with the host network), or
//!    `E` is a port of a bridge (or bond, VRF: it has a master), or `B` had no other device
//!    than the peer (besides loopback) while `A` had others when the peer was resolved — a
//!    pod's namespace behind a routed (`/32`, Calico/Cilium style) veth. That last test is
//!    taken once per device: a namespace that gains devices later does not turn the ends it
//!    has around (their series would change attributes midway).
//!
//! Otherwise it serves `A` (a pod's `eth0`; both ends of a veth between two namespaces that
//! each have other devices).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use periscope_pipeline::model::NetnsId;

use super::devices::{nsid_of, DeviceAddress};
use super::tracked::Tracked;

/// The distinct addresses of a namespace's devices.
pub(super) fn addresses(addrs: &BTreeSet<DeviceAddress>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = addrs.iter().map(|a| a.addr).collect();
    out.sort();
    out.dedup();
    out
}

/// Resolution state (the per-namespace caches live in [`Tracked`]).
#[derive(Default)]
pub(super) struct Peers {
    seq: u32,
}

impl Peers {
    /// Resolves every veth's peer it can, sets both ends, and decides each device's role.
    /// Returns the devices (namespace inode, ifindex) whose peer or role changed.
    pub(super) fn resolve(
        &mut self,
        tracked: &mut HashMap<u32, Tracked>,
        host_inode: u32,
    ) -> Vec<(u32, u32)> {
        let mut found = Vec::new();
        let inodes: Vec<u32> = tracked.keys().copied().collect();
        for &a in &inodes {
            let wanted: Vec<(u32, i32, u32)> = tracked[&a]
                .devices
                .values()
                .filter(|d| d.peer.is_none() && d.link != 0 && is_pair(&d.kind))
                .filter_map(|d| d.link_netnsid.map(|n| (d.ifindex, n, d.link)))
                .collect();
            for (ifindex, nsid, link) in wanted {
                if let Some(b) = self.namespace_of(tracked, a, nsid) {
                    found.push((a, ifindex, b, link));
                }
            }
        }
        let mut changed = BTreeSet::new();
        for (a, ifindex, b, link) in found {
            let Some(a_id) = tracked.get(&a).map(|t| t.ns.id) else {
                continue;
            };
            if let Some(d) = tracked
                .get_mut(&a)
                .and_then(|t| t.devices.get_mut(&ifindex))
            {
                d.peer = Some((b, link));
                changed.insert((a, ifindex));
            }
            if let Some(tb) = tracked.get_mut(&b.inode).filter(|t| t.ns.id == b) {
                if let Some(p) = tb.devices.get_mut(&link) {
                    // Its own `IFLA_LINK` may be stale: the kernel sends no notification to the
                    // end that stays when the other is moved (and renumbered) away.
                    let points_back = p.link == ifindex || p.link_netnsid.is_none();
                    if is_pair(&p.kind) && points_back && p.peer != Some((a_id, ifindex)) {
                        p.peer = Some((a_id, ifindex));
                        changed.insert((b.inode, link));
                    }
                }
            }
        }
        // Roles, from the devices every namespace has now.
        let others: HashMap<u32, usize> = tracked
            .iter()
            .map(|(i, t)| (*i, t.devices.values().filter(|d| !d.loopback).count()))
            .collect();
        let mut roles = Vec::new();
        for (&a, t) in tracked.iter() {
            for d in t.devices.values() {
                let (serves, leaf) = match d.peer {
                    Some((b, _)) if b.inode != a => {
                        // The device-count test is taken once (see `Device::leaf_peer`).
                        let leaf = d.leaf_peer.unwrap_or_else(|| {
                            let in_a = others[&a].saturating_sub(usize::from(!d.loopback));
                            let in_b = others.get(&b.inode).map_or(0, |n| n.saturating_sub(1));
                            in_b == 0 && in_a > 0
                        });
                        let serves = serves_peer(a, b.inode, host_inode, d.master != 0, leaf);
                        (serves, Some(leaf))
                    }
                    _ => (false, None),
                };
                if serves != d.serves_peer || leaf != d.leaf_peer {
                    roles.push((a, d.ifindex, serves, leaf));
                }
            }
        }
        for (a, ifindex, serves, leaf) in roles {
            if let Some(d) = tracked
                .get_mut(&a)
                .and_then(|t| t.devices.get_mut(&ifindex))
            {
                if d.serves_peer != serves {
                    changed.insert((a, ifindex));
                }
                d.serves_peer = serves;
                d.leaf_peer = leaf;
            }
        }
        changed.into_iter().collect()
    }

    /// The namespace that `a` numbers `nsid`, among the tracked ones.
    fn namespace_of(
        &mut self,
        tracked: &mut HashMap<u32, Tracked>,
        a: u32,
        nsid: i32,
    ) -> Option<NetnsId> {
        let t = tracked.get(&a)?;
        if let Some(id) = t.nsids.get(&nsid) {
            if tracked.get(&id.inode).is_some_and(|b| b.ns.id == *id) {
                return Some(*id);
            }
        }
        if t.nsids_complete {
            return None; // every tracked namespace was asked since the last one came
        }
        let mut learned = Vec::new();
        for (&b, tb) in tracked.iter() {
            if b == a {
                continue;
            }
            self.seq = self.seq.wrapping_add(1);
            match nsid_of(&t.query, tb.handle.fd.as_raw_fd(), self.seq) {
                Ok(Some(n)) => learned.push((n, tb.ns.id)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "netns watcher: RTM_GETNSID failed");
                    return None; // asked again at the next change
                }
            }
        }
        let t = tracked.get_mut(&a)?;
        t.nsids.extend(learned);
        t.nsids_complete = true;
        t.nsids.get(&nsid).copied()
    }
}

/// Devices that are one end of a pair (a macvlan or VLAN names its parent in `IFLA_LINK`,
/// which is no peer).
fn is_pair(kind: &str) -> bool {
    kind == "veth" || kind == "netkit"
}

/// Whether a veth end in namespace `a` (with `master`: a bridge port) whose peer is in `b`
/// serves `b`; `leaf`: `b` had no other device than the peer (besides loopback) while `a` had
/// others, when the peer was resolved. See the module's documentation.
pub(super) fn serves_peer(a: u32, b: u32, host: u32, master: bool, leaf: bool) -> bool {
    if b == host {
        return false;
    }
    a == host || master || leaf
}

#[cfg(test)]
mod tests {
    use super::serves_peer;

    #[test]
    fn node_side_ends_serve_their_pods() {
        let (host, node, pod) = (1, 2, 3);
        // Bridge port in a node namespace, the pod's eth0 behind it.
        assert!(serves_peer(node, pod, host, true, false));
        assert!(!serves_peer(pod, node, host, false, false));
        // Routed: no bridge, the pod has nothing else.
        assert!(serves_peer(node, pod, host, false, true));
        // The agent's namespace is the node's.
        assert!(serves_peer(host, pod, host, false, false));
        assert!(!serves_peer(pod, host, host, false, true));
        // Neither a port nor in front of a leaf: each end serves its own.
        assert!(!serves_peer(node, pod, host, false, false));
    }
}
