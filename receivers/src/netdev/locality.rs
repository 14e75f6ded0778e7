//! The addresses of every observed namespace, as the programs' local/forwarded test needs them
//! (`periscope_local_addrs`, `ebpf/packet_locality.h`), and the same test in user space for
//! the flows of the kernel's flow table (whose key has no room for it).
//!
//! The watcher reports a namespace's addresses whenever they change; the hash is updated by
//! difference (a few syscalls per change, none per packet).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use aya::maps::{HashMap as BpfHash, Map, MapData};

use periscope_pipeline::model::{Direction, Locality, NetnsId};

use super::shared_maps::SharedMaps;
use crate::shared::ebpf::names;

/// `struct periscope_local_key`: the namespace's cookie, then the address (IPv4 in the first 4
/// bytes), 24 bytes.
type Key = [u8; 24];

fn key(netns: NetnsId, addr: IpAddr) -> Key {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&netns.cookie.to_ne_bytes());
    match addr {
        IpAddr::V4(a) => k[8..12].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => k[8..24].copy_from_slice(&a.octets()),
    }
    k
}

/// The addresses per namespace, and the programs' hash once the shared maps exist.
#[derive(Default)]
pub(super) struct LocalAddrs {
    map: Option<BpfHash<MapData, Key, u8>>,
    by_ns: HashMap<NetnsId, BTreeSet<IpAddr>>,
}

impl LocalAddrs {
    /// Sets a namespace's addresses (an empty list forgets it) in user space and, when the
    /// programs classify (`kernel`), in their hash.
    pub(super) fn set(
        &mut self,
        maps: &SharedMaps,
        kernel: bool,
        netns: NetnsId,
        addrs: &[IpAddr],
    ) {
        let new: BTreeSet<IpAddr> = addrs.iter().copied().collect();
        let old = self.by_ns.remove(&netns).unwrap_or_default();
        if kernel && self.map.is_none() && maps.exist() {
            match maps.open(names::LOCAL_ADDRS) {
                Ok(Map::HashMap(m)) => match BpfHash::try_from(Map::HashMap(m)) {
                    Ok(h) => self.map = Some(h),
                    Err(e) => tracing::warn!("periscope_local_addrs: {e}"),
                },
                Ok(_) => tracing::warn!("periscope_local_addrs is not a hash"),
                Err(e) => tracing::warn!("periscope_local_addrs: {e:#}"),
            }
        }
        if let Some(map) = &mut self.map {
            for a in old.difference(&new) {
                let _ = map.remove(&key(netns, *a));
            }
            for a in new.difference(&old) {
                if let Err(e) = map.insert(key(netns, *a), 1, 0) {
                    // Full (16384 addresses): its packets read as forwarded.
                    tracing::warn!(address = %a, "periscope_local_addrs: {e}");
                }
            }
        }
        if !new.is_empty() {
            self.by_ns.insert(netns, new);
        }
    }

    /// The programs' test, for a flow of `netns` crossing a device in `direction`.
    pub(super) fn classify(
        &self,
        netns: NetnsId,
        direction: Direction,
        src: IpAddr,
        dst: IpAddr,
    ) -> Locality {
        let addr = match direction {
            Direction::Ingress => dst,
            Direction::Egress => src,
        };
        if addr.is_unspecified() {
            return Locality::Unknown;
        }
        let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
        if addr.is_multicast() || broadcast {
            return Locality::Local;
        }
        match self.by_ns.get(&netns) {
            Some(set) if set.contains(&addr) => Locality::Local,
            _ => Locality::Forwarded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_header_layout_and_classification_follows_the_programs() {
        let ns = NetnsId {
            inode: 7,
            cookie: 0x0102,
        };
        let k = key(ns, "10.61.0.1".parse().unwrap());
        assert_eq!(&k[..8], &0x0102u64.to_ne_bytes());
        assert_eq!(&k[8..12], &[10, 61, 0, 1]);
        assert!(k[12..].iter().all(|b| *b == 0));
        let mut l = LocalAddrs::default();
        l.by_ns
            .insert(ns, ["10.61.0.1".parse().unwrap()].into_iter().collect());
        let (me, other) = ("10.61.0.1".parse().unwrap(), "10.61.0.9".parse().unwrap());
        assert_eq!(
            l.classify(ns, Direction::Ingress, other, me),
            Locality::Local
        );
        assert_eq!(
            l.classify(ns, Direction::Egress, me, other),
            Locality::Local
        );
        assert_eq!(
            l.classify(ns, Direction::Ingress, me, other),
            Locality::Forwarded
        );
        let mc = "224.0.0.251".parse().unwrap();
        assert_eq!(
            l.classify(ns, Direction::Ingress, other, mc),
            Locality::Local
        );
        let zero = "0.0.0.0".parse().unwrap();
        assert_eq!(
            l.classify(ns, Direction::Egress, zero, mc),
            Locality::Unknown
        );
    }
}
