//! Naming the two ends of a connection.
//!
//! A socket's own end is named from identity (its process, cgroup and namespace). The other
//! end is looked up among the endpoints this host's sockets showed (their local address and
//! port, and their addresses alone): a server or client observed here is named as itself.
//! Otherwise the other end is a virtual node, named from what identity knows of the peer
//! address (the Kubernetes pod's workload or Service, the DNS name it was resolved from),
//! else the address.
//!
//! Names are cached by the ids they come from; the endpoint maps and the caches are two
//! generations each (the current one, and the previous one that lookups still read), so they
//! stay bounded and keep what is in use without an eviction scan.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use periscope_pipeline::model::{Attributes, KeyValue, NetnsId};
use periscope_pipeline::telemetry::names;

use crate::identity::Identity;

/// Who a socket belongs to: what identity names it from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Ids {
    pub(super) netns: NetnsId,
    pub(super) cgroup_id: u64,
    /// 0 when no event of the socket ran in its process's context (yet).
    pub(super) pid: u32,
    /// The kernel's command name, for a process that exited before it was looked up.
    pub(super) comm: [u8; 16],
}

/// The attributes a workload is named from, most specific first.
const WORKLOAD_ATTRIBUTES: [&str; 10] = [
    names::ATTR_K8S_DEPLOYMENT_NAME,
    names::ATTR_K8S_STATEFULSET_NAME,
    names::ATTR_K8S_DAEMONSET_NAME,
    names::ATTR_K8S_CRONJOB_NAME,
    names::ATTR_K8S_JOB_NAME,
    names::ATTR_K8S_REPLICASET_NAME,
    names::ATTR_K8S_POD_NAME,
    names::ATTR_CONTAINER_NAME,
    names::ATTR_NETNS_NAME,
    names::ATTR_PROCESS_NAME,
];

/// The same for sockets of the agent's own (the host's) namespace: not its name (Docker's
/// `default`), which every host process shares.
const HOST_WORKLOAD_ATTRIBUTES: [&str; 9] = [
    names::ATTR_K8S_DEPLOYMENT_NAME,
    names::ATTR_K8S_STATEFULSET_NAME,
    names::ATTR_K8S_DAEMONSET_NAME,
    names::ATTR_K8S_CRONJOB_NAME,
    names::ATTR_K8S_JOB_NAME,
    names::ATTR_K8S_REPLICASET_NAME,
    names::ATTR_K8S_POD_NAME,
    names::ATTR_CONTAINER_NAME,
    names::ATTR_PROCESS_NAME,
];

/// What a peer outside this host is named from, most specific first (then its address).
const PEER_ATTRIBUTES: [&str; 4] = [
    names::ATTR_K8S_PEER_OWNER_NAME,
    names::ATTR_K8S_PEER_SERVICE_NAME,
    names::ATTR_K8S_PEER_POD_NAME,
    names::ATTR_DNS_QUESTION_NAME,
];

/// The name of a workload nothing names.
const UNKNOWN: &str = "unknown";

/// A map of at most `2 × half` entries in two generations.
struct Generations<K, V> {
    current: FxHashMap<K, V>,
    previous: FxHashMap<K, V>,
    half: usize,
}

impl<K: Eq + Hash + Copy, V: Clone> Generations<K, V> {
    fn new(capacity: usize) -> Self {
        Generations {
            current: FxHashMap::default(),
            previous: FxHashMap::default(),
            half: (capacity / 2).max(1),
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if self.current.len() >= self.half && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    /// The value of `key`; one found in the previous generation moves to the current one.
    fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.current.get(key) {
            return Some(v.clone());
        }
        let v = self.previous.remove(key)?;
        self.insert(*key, v.clone());
        Some(v)
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// An address seen on this host, with its port (0: the address alone). Loopback addresses
/// are per namespace.
type EndpointKey = (NetnsId, IpAddr, u16);

fn endpoint(netns: NetnsId, addr: IpAddr, port: u16) -> EndpointKey {
    let scope = if addr.is_loopback() {
        netns
    } else {
        NetnsId::default()
    };
    (scope, addr, port)
}

/// The two ends' names.
pub(super) struct Workloads {
    identity: Identity,
    /// The inode of the agent's own network namespace (the host's), if it could be read.
    host_netns: Option<u32>,
    names: Generations<Ids, Arc<str>>,
    peers: Generations<(NetnsId, IpAddr), Arc<str>>,
    endpoints: Generations<EndpointKey, Ids>,
}

impl Workloads {
    pub(super) fn new(
        identity: Identity,
        proc_root: &std::path::Path,
        max_endpoints: usize,
        cache: usize,
    ) -> Self {
        let host_netns = std::fs::read_link(proc_root.join("self/ns/net"))
            .ok()
            .and_then(|t| {
                t.to_str()?
                    .strip_prefix("net:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            });
        Workloads {
            identity,
            host_netns,
            names: Generations::new(cache),
            peers: Generations::new(cache),
            endpoints: Generations::new(max_endpoints),
        }
    }

    /// Remembers that a socket of `ids` has `addr`:`port` on this host.
    pub(super) fn learn(&mut self, ids: Ids, addr: IpAddr, port: u16) {
        if addr.is_unspecified() || port == 0 {
            return;
        }
        for key in [
            endpoint(ids.netns, addr, port),
            endpoint(ids.netns, addr, 0),
        ] {
            // A pid learned later replaces an unknown one, not the reverse.
            let keep = matches!(self.endpoints.current.get(&key), Some(old) if old.pid != 0 && ids.pid == 0 && old.netns == ids.netns);
            if !keep {
                self.endpoints.insert(key, ids);
            }
        }
    }

    /// The workload a socket of `ids` belongs to; `since_ns`: when the socket began (a pid
    /// whose process started later was reused).
    pub(super) fn name(&mut self, ids: Ids, since_ns: u64) -> Arc<str> {
        if let Some(n) = self.names.get(&ids) {
            return n;
        }
        let mut attrs: Attributes = Vec::with_capacity(24);
        attrs.push(KeyValue::new(
            names::ATTR_NETNS_INODE,
            i64::from(ids.netns.inode),
        ));
        if ids.netns.cookie != 0 {
            attrs.push(KeyValue::new(
                names::ATTR_NETNS_COOKIE,
                i64::try_from(ids.netns.cookie).unwrap_or(i64::MAX),
            ));
        }
        if ids.cgroup_id != 0 {
            attrs.push(KeyValue::new(
                names::ATTR_CGROUP_ID,
                i64::try_from(ids.cgroup_id).unwrap_or(i64::MAX),
            ));
        }
        if ids.pid != 0 {
            attrs.push(KeyValue::new(names::ATTR_PROCESS_PID, i64::from(ids.pid)));
            let end = ids.comm.iter().position(|&b| b == 0).unwrap_or(16);
            if end > 0 {
                attrs.push(KeyValue::new(
                    names::ATTR_PROCESS_NAME,
                    String::from_utf8_lossy(&ids.comm[..end]).into_owned(),
                ));
            }
        }
        self.identity.enrich_span_attributes(&mut attrs, since_ns);
        let from: &[&str] = if Some(ids.netns.inode) == self.host_netns {
            &HOST_WORKLOAD_ATTRIBUTES
        } else {
            &WORKLOAD_ATTRIBUTES
        };
        let name: Arc<str> = first_of(&attrs, from).unwrap_or(UNKNOWN).into();
        self.names.insert(ids, name.clone());
        name
    }

    /// The other end of a socket of namespace `netns` whose peer is `addr`:`port`: its name,
    /// and whether it is a virtual node (not observed on this host).
    pub(super) fn peer(
        &mut self,
        netns: NetnsId,
        addr: IpAddr,
        port: u16,
        since_ns: u64,
    ) -> (Arc<str>, bool) {
        let found = self
            .endpoints
            .get(&endpoint(netns, addr, port))
            .or_else(|| self.endpoints.get(&endpoint(netns, addr, 0)));
        if let Some(ids) = found {
            return (self.name(ids, since_ns), false);
        }
        if let Some(n) = self.peers.get(&(netns, addr)) {
            return (n, true);
        }
        let mut attrs: Attributes = vec![
            KeyValue::new(names::ATTR_NETNS_INODE, i64::from(netns.inode)),
            KeyValue::new(names::ATTR_PEER_ADDRESS, addr.to_string()),
        ];
        if netns.cookie != 0 {
            attrs.push(KeyValue::new(
                names::ATTR_NETNS_COOKIE,
                i64::try_from(netns.cookie).unwrap_or(i64::MAX),
            ));
        }
        self.identity.enrich_span_attributes(&mut attrs, since_ns);
        let name: Arc<str> = match first_of(&attrs, &PEER_ATTRIBUTES) {
            Some(n) => n.into(),
            None => addr.to_string().into(),
        };
        self.peers.insert((netns, addr), name.clone());
        (name, true)
    }

    /// Forgets the names looked up (so that a workload renamed, or a process that replaced
    /// another, is named anew), and lets identity sweep its caches.
    pub(super) fn refresh(&mut self) {
        self.names.clear();
        self.peers.clear();
    }

    /// Lets identity check its cached processes.
    pub(super) fn identity(&mut self) -> &mut Identity {
        &mut self.identity
    }

    /// Endpoints remembered.
    pub(super) fn endpoints(&self) -> usize {
        self.endpoints.len()
    }
}

/// The first non-empty string value among `keys`, in that order.
fn first_of<'a>(attrs: &'a Attributes, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .find(|kv| kv.key == *k)
            .and_then(|kv| match &kv.value {
                periscope_pipeline::model::AnyValue::String(s) if !s.is_empty() => Some(&**s),
                _ => None,
            })
    })
}
