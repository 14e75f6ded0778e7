//! The names a processor's series carry, looked up once per series — when its first record
//! makes it — from the tables receivers fill while devices and namespaces are alive, and kept
//! with the series: a series is named after what its device was called while it counted, even
//! after the device is gone or its namespace's inode is reused by another pod.
//!
//! A device renamed while alive (CNI plugins rename a temporary name to `eth0`) is a new
//! series (names learned late — a namespace named after the series began — are filled in): [`DeviceNames::renamed`] lists such devices at a collect, the processor retires their
//! series (one last point under the old name), and [`DeviceNames::after_collect`] forgets the
//! old names, so the next record captures the new ones.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::model::{DeviceRef, Direction, KeyValue, NetnsId, WorkloadDirection};
use periscope_pipeline::telemetry::names;

use crate::identity::cgroup::parse_cgroup_path;

/// Adds a namespace's id: `periscope.netns.inode`, and `periscope.netns.cookie` when known
/// (live hooks; a replayed capture has none, and its output stays as it was).
pub fn push_netns(a: &mut Vec<KeyValue>, netns: NetnsId) {
    a.push(KeyValue::new(
        names::ATTR_NETNS_INODE,
        i64::from(netns.inode),
    ));
    if netns.cookie != 0 {
        a.push(KeyValue::new(
            names::ATTR_NETNS_COOKIE,
            i64::try_from(netns.cookie).unwrap_or(i64::MAX),
        ));
    }
}

/// A device's names as captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// `network.interface.name`: the registered name, `if<N>` for a device never registered.
    pub interface: Arc<str>,
    /// `periscope.netns.name`, if the namespace had one when the device was registered.
    pub netns: Option<Arc<str>>,
    /// Whether the device was registered (only registered devices can be renamed).
    registered: bool,
    /// The device serves its peer's namespace (a node-side veth end): its workload is there.
    pub serves_peer: bool,
    /// `IFF_LOOPBACK`: not part of any workload's total.
    pub loopback: bool,
    /// The other end of a veth in another namespace.
    pub peer: Option<PeerNames>,
    /// A collect emitted a series with these names: what is learned from now on is not filled
    /// in (a series' attributes never change after its first point).
    published: bool,
}

/// The other end of a veth, as captured with the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNames {
    pub netns: NetnsId,
    /// Its namespace's name (`periscope.peer.netns.name`), if known.
    pub netns_name: Option<Arc<str>>,
    /// The peer device's name (`periscope.peer.interface.name`), if registered.
    pub interface: Option<Arc<str>>,
    /// The container (`periscope.peer.container.id`) and pod (`periscope.peer.k8s.pod.uid`)
    /// of the peer's namespace, from the cgroup of a process in it; `identity` names them.
    pub container: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
}

impl Names {
    fn of(devices: &DeviceTable, namespaces: &NamespaceTable, device: &DeviceRef) -> Names {
        match devices.get(device) {
            Some(info) => {
                // The peer's own registration has the names learned since (a namespace named
                // late, the peer attached after this device).
                let peer = info.peer.map(|p| {
                    let now = devices.get(&p.device);
                    let workload = namespaces
                        .get(&p.device.netns)
                        .and_then(|n| n.cgroup)
                        .map(|c| parse_cgroup_path(&c))
                        .unwrap_or_default();
                    PeerNames {
                        container: workload.container.map(|c| Arc::from(c.0)),
                        pod_uid: workload.pod.map(|p| Arc::from(p.0)),
                        netns: p.device.netns,
                        netns_name: now
                            .as_ref()
                            .and_then(|i| i.netns_name.clone())
                            .or(p.netns_name)
                            .map(Arc::from),
                        interface: now.map(|i| i.name).or(p.name).map(Arc::from),
                    }
                });
                Names {
                    interface: Arc::from(info.name),
                    netns: info.netns_name.map(Arc::from),
                    registered: true,
                    serves_peer: info.serves_peer,
                    loopback: info.loopback,
                    peer,
                    published: false,
                }
            }
            None => Names {
                interface: Arc::from(format!("if{}", device.ifindex)),
                netns: None,
                registered: false,
                serves_peer: false,
                loopback: false,
                peer: None,
                published: false,
            },
        }
    }

    /// `periscope.workload.direction` of a packet that crossed the device in `direction`.
    pub fn workload_direction(&self, direction: Direction) -> WorkloadDirection {
        WorkloadDirection::of(direction, self.serves_peer && self.peer.is_some())
    }

    /// The series' device attributes: the namespace's id, its name if any, the interface name;
    /// whether it serves its own namespace or its peer's, and the peer's names.
    pub fn push_attributes(&self, a: &mut Vec<KeyValue>, device: &DeviceRef) {
        push_netns(a, device.netns);
        if let Some(n) = &self.netns {
            a.push(KeyValue::new(names::ATTR_NETNS_NAME, n.to_string()));
        }
        a.push(KeyValue::new(
            names::ATTR_INTERFACE_NAME,
            self.interface.to_string(),
        ));
        // Only live hooks know devices and their peers (captures keep their attributes).
        if !self.registered || device.netns.cookie == 0 {
            return;
        }
        let serves_peer = self.serves_peer && self.peer.is_some();
        a.push(KeyValue::new(
            names::ATTR_INTERFACE_SERVES,
            if serves_peer { "peer" } else { "own" },
        ));
        if let Some(p) = &self.peer {
            a.push(KeyValue::new(
                names::ATTR_PEER_NETNS_INODE,
                i64::from(p.netns.inode),
            ));
            a.push(KeyValue::new(
                names::ATTR_PEER_NETNS_COOKIE,
                i64::try_from(p.netns.cookie).unwrap_or(i64::MAX),
            ));
            if let Some(n) = &p.netns_name {
                a.push(KeyValue::new(names::ATTR_PEER_NETNS_NAME, n.to_string()));
            }
            if let Some(n) = &p.interface {
                a.push(KeyValue::new(
                    names::ATTR_PEER_INTERFACE_NAME,
                    n.to_string(),
                ));
            }
            if let Some(c) = &p.container {
                a.push(KeyValue::new(names::ATTR_PEER_CONTAINER_ID, c.to_string()));
            }
            if let Some(u) = &p.pod_uid {
                a.push(KeyValue::new(names::ATTR_PEER_K8S_POD_UID, u.to_string()));
            }
        }
    }
}

/// The names of the devices a processor has series of.
#[derive(Debug)]
pub struct DeviceNames {
    devices: DeviceTable,
    namespaces: NamespaceTable,
    known: FxHashMap<DeviceRef, Names>,
}

impl DeviceNames {
    pub fn new(devices: DeviceTable) -> Self {
        DeviceNames {
            devices,
            namespaces: NamespaceTable::default(),
            known: FxHashMap::default(),
        }
    }

    /// Reads what receivers captured of namespaces (the container and pod a node-side device
    /// serves) from `namespaces`.
    pub fn set_namespaces(&mut self, namespaces: NamespaceTable) {
        self.namespaces = namespaces;
    }

    /// The table names are read from (to tell whether a device is gone).
    pub fn table(&self) -> &DeviceTable {
        &self.devices
    }

    /// Captures `device`'s names unless they are (a series of it was made before).
    pub fn capture(&mut self, device: DeviceRef) {
        if !self.known.contains_key(&device) {
            let names = Names::of(&self.devices, &self.namespaces, &device);
            self.known.insert(device, names);
        }
    }

    /// The names captured for `device`; looked up now if none were (a series made without
    /// [`capture`](Self::capture)), without keeping them.
    pub fn get(&self, device: &DeviceRef) -> Names {
        self.known
            .get(device)
            .cloned()
            .unwrap_or_else(|| Names::of(&self.devices, &self.namespaces, device))
    }

    /// The names captured for `device`, if they were.
    pub fn captured(&self, device: &DeviceRef) -> Option<&Names> {
        self.known.get(device)
    }

    /// Adds `device`'s attributes as captured (see [`Names::push_attributes`]).
    pub fn push_attributes(&self, a: &mut Vec<KeyValue>, device: &DeviceRef) {
        match self.known.get(device) {
            Some(n) => n.push_attributes(a, device),
            None => Names::of(&self.devices, &self.namespaces, device).push_attributes(a, device),
        }
    }

    /// The devices with captured names.
    pub fn devices(&self) -> impl Iterator<Item = DeviceRef> + '_ {
        self.known.keys().copied()
    }

    /// Devices alive under other names than the ones captured: their series end, the next
    /// ones get the new names. Names learned late are not a rename and are filled in instead
    /// (the series keeps going, named): a namespace name that appeared after the series began
    /// (a bind mount made after the namespace, as `ip netns add` and runtimes do) and a device
    /// registered only after its first records (no `if<N>` name stays).
    pub fn renamed(&mut self) -> Vec<DeviceRef> {
        let mut renamed = Vec::new();
        for (d, n) in &mut self.known {
            if !self.devices.is_alive(d) {
                continue;
            }
            let Some(info) = self.devices.get(d) else {
                continue;
            };
            let named_late = n.netns.is_none() && *n.interface == *info.name;
            // A veth's peer and its role (a bridge port once enslaved) are resolved after the
            // device is registered, and the peer's names when its namespace is: learned late,
            // filled in.
            let peer_late = *n.interface == *info.name
                && n.netns.as_deref() == info.netns_name.as_deref()
                && info.peer.is_some()
                && (n.serves_peer != info.serves_peer
                    || n.peer
                        .as_ref()
                        .is_none_or(|p| p.netns_name.is_none() || p.interface.is_none()));
            // The peer's container and pod: its first process may start after the device is
            // up (CNI makes the namespace first); filled in only before the series' first point.
            let workload_late = !n.published
                && n.peer.as_ref().is_some_and(|p| {
                    p.container.is_none()
                        && p.pod_uid.is_none()
                        && self
                            .namespaces
                            .get(&p.netns)
                            .is_some_and(|i| i.cgroup.is_some())
                });
            if !n.registered || named_late || peer_late || workload_late {
                let mut now = Names::of(&self.devices, &self.namespaces, d);
                if n.published {
                    // A published series only gains names, never loses one: a peer the
                    // watcher re-reports unresolved (churn elsewhere) stays as captured.
                    if now.peer.is_none() && n.peer.is_some() {
                        now.peer = n.peer.clone();
                        now.serves_peer = n.serves_peer;
                    }
                    if now.netns.is_none() {
                        now.netns = n.netns.clone();
                    }
                    let before = n
                        .peer
                        .as_ref()
                        .map(|p| (p.container.clone(), p.pod_uid.clone()));
                    if let Some(p) = &mut now.peer {
                        (p.container, p.pod_uid) = before.unwrap_or_default();
                    }
                }
                now.published = n.published;
                *n = now;
            } else if *n.interface != *info.name || n.netns.as_deref() != info.netns_name.as_deref()
            {
                renamed.push(*d);
            }
        }
        renamed
    }

    /// Ends a collect: forgets the names of devices no series is about any more (retired,
    /// renamed, or forgotten by a delta collect), so that memory follows the series.
    pub fn after_collect(&mut self, in_use: &FxHashSet<DeviceRef>) {
        self.known.retain(|d, _| in_use.contains(d));
        for n in self.known.values_mut() {
            n.published = true;
        }
    }

    /// Devices whose names are kept.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_pipeline::devices::DeviceInfo;

    fn dev(cookie: u64) -> DeviceRef {
        DeviceRef {
            netns: NetnsId {
                inode: 4026532000,
                cookie,
            },
            ifindex: 2,
        }
    }

    fn info(name: &str, netns: &str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            netns_name: Some(netns.into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_captured_once_and_kept_after_the_device_is_gone() {
        let t = DeviceTable::default();
        let mut n = DeviceNames::new(t.clone());
        t.insert(dev(1), info("eth0", "pod-a"));
        n.capture(dev(1));
        t.retire(&dev(1));
        // The inode's next namespace, another pod.
        t.insert(dev(2), info("eth0", "pod-b"));
        assert_eq!(n.get(&dev(1)).netns.as_deref(), Some("pod-a"));
        assert!(n.renamed().is_empty(), "gone is not renamed");
        let mut a = Vec::new();
        n.push_attributes(&mut a, &dev(1));
        assert!(a.contains(&KeyValue::new(names::ATTR_NETNS_COOKIE, 1i64)));
        assert!(a.contains(&KeyValue::new(names::ATTR_NETNS_NAME, "pod-a")));
        assert!(a.contains(&KeyValue::new(names::ATTR_INTERFACE_NAME, "eth0")));
    }

    #[test]
    fn a_rename_is_seen_and_unused_names_are_forgotten() {
        let t = DeviceTable::default();
        let mut n = DeviceNames::new(t.clone());
        t.insert(dev(1), info("tmp123", "pod-a"));
        n.capture(dev(1));
        assert!(n.renamed().is_empty());
        t.insert(dev(1), info("eth0", "pod-a"));
        assert_eq!(n.renamed(), vec![dev(1)]);
        assert_eq!(
            &*n.get(&dev(1)).interface,
            "tmp123",
            "until the collect ends"
        );
        n.after_collect(&FxHashSet::default());
        assert!(n.is_empty());
        n.capture(dev(1));
        assert_eq!(&*n.get(&dev(1)).interface, "eth0");
    }

    #[test]
    fn a_namespace_name_learned_late_is_filled_in_not_a_rename() {
        let t = DeviceTable::default();
        let mut n = DeviceNames::new(t.clone());
        // Found through its process first, before its bind mount named it.
        t.insert(
            dev(1),
            DeviceInfo {
                name: "eth0".into(),
                netns_name: None,
                ..Default::default()
            },
        );
        n.capture(dev(1));
        // Never registered at all when its first records came: `if2` until it is.
        n.capture(dev(3));
        assert_eq!(&*n.get(&dev(3)).interface, "if2");
        t.insert(dev(1), info("eth0", "pod-a"));
        t.insert(dev(3), info("eth1", "pod-c"));
        assert!(n.renamed().is_empty());
        assert_eq!(n.get(&dev(1)).netns.as_deref(), Some("pod-a"));
        assert_eq!(&*n.get(&dev(3)).interface, "eth1");
        // A real rename after that still is one.
        t.insert(dev(1), info("eth9", "pod-a"));
        assert_eq!(n.renamed(), vec![dev(1)]);
    }

    /// A pod's node-side veth (serves its peer, whose namespace's first process is the pod's
    /// container).
    fn node_side(t: &DeviceTable, peer: NetnsId) {
        t.insert(
            dev(1),
            DeviceInfo {
                name: "veth3a9f".into(),
                serves_peer: true,
                peer: Some(periscope_pipeline::devices::DevicePeer {
                    device: DeviceRef {
                        netns: peer,
                        ifindex: 2,
                    },
                    name: Some("eth0".into()),
                    netns_name: Some("cni-1".into()),
                }),
                ..Default::default()
            },
        );
    }

    const POD_CGROUP: &str = "/kubepods.slice/kubepods-besteffort.slice/\
        kubepods-besteffort-pod1d2e3f40_5a6b_4c7d_8e9f_0a1b2c3d4e5f.slice/\
        cri-containerd-3f2a9c0d1e2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4.scope";

    fn peer_attrs(n: &DeviceNames) -> (Option<String>, Option<String>) {
        let mut a = Vec::new();
        n.push_attributes(&mut a, &dev(1));
        let get = |k: &str| {
            a.iter()
                .find(|kv| kv.key == k)
                .map(|kv| format!("{:?}", kv.value))
        };
        (
            get(names::ATTR_PEER_CONTAINER_ID),
            get(names::ATTR_PEER_K8S_POD_UID),
        )
    }

    #[test]
    fn the_peers_container_and_pod_are_captured_with_the_series_and_learned_late_only_before_its_first_point(
    ) {
        use periscope_pipeline::devices::{NamespaceInfo, NamespaceTable};
        let peer = NetnsId {
            inode: 4026533000,
            cookie: 77,
        };
        let info = |cgroup: Option<&str>, late: bool| NamespaceInfo {
            name: Some("cni-1".into()),
            cgroup: cgroup.map(str::to_string),
            cgroup_late: late,
        };
        // A node-side veth whose series begins now, its peer namespace's cgroup as given.
        let begin = |cgroup: Option<&str>| {
            let (t, ns) = (DeviceTable::default(), NamespaceTable::default());
            ns.insert(peer, info(cgroup, false));
            node_side(&t, peer);
            let mut n = DeviceNames::new(t.clone());
            n.set_namespaces(ns.clone());
            n.capture(dev(1));
            (t, ns, n)
        };
        // Known when the series began.
        let (_, _, n) = begin(Some(POD_CGROUP));
        let (c, p) = peer_attrs(&n);
        assert!(c.is_some_and(|c| c.contains("3f2a9c0d")), "container id");
        assert!(p.is_some_and(|p| p.contains("1d2e3f40-5a6b")), "pod uid");

        // The pod's first process came after the series' first record, before its first
        // point: filled in.
        let (_, ns, mut n) = begin(None);
        assert_eq!(peer_attrs(&n), (None, None));
        ns.insert(peer, info(Some(POD_CGROUP), true));
        assert!(n.renamed().is_empty(), "not a rename");
        assert!(
            peer_attrs(&n).0.is_some(),
            "filled in before the first point"
        );

        // ... after its first point: not (the series keeps the attributes it was born with).
        let (t, ns, mut n) = begin(None);
        n.after_collect(&[dev(1)].into_iter().collect());
        ns.insert(peer, info(Some(POD_CGROUP), true));
        assert!(n.renamed().is_empty());
        assert_eq!(
            peer_attrs(&n),
            (None, None),
            "not added to a published series"
        );
        // A peer name learned late is still filled in, without the workload.
        t.insert(dev(1), {
            let mut i = t.get(&dev(1)).expect("registered");
            if let Some(p) = &mut i.peer {
                p.name = None;
            }
            i
        });
        n.after_collect(&[dev(1)].into_iter().collect());
        assert_eq!(peer_attrs(&n), (None, None));
    }

    /// Seen in CI (docker_agent): while other containers churned, the watcher re-reported a
    /// live host veth without its peer; the series, named in an unnamed namespace (refreshed
    /// at every collect), lost its peer attributes and became a second series of the same
    /// counts.
    #[test]
    fn a_published_series_keeps_its_peer_when_the_device_is_re_reported_without_one() {
        let peer = NetnsId {
            inode: 4026533000,
            cookie: 77,
        };
        let t = DeviceTable::default();
        node_side(&t, peer);
        // The host namespace has no name: its devices are looked at again at every collect.
        t.insert(dev(1), {
            let mut i = t.get(&dev(1)).expect("registered");
            i.netns_name = None;
            i
        });
        let mut n = DeviceNames::new(t.clone());
        n.capture(dev(1));
        n.after_collect(&[dev(1)].into_iter().collect());
        let mut before = Vec::new();
        n.push_attributes(&mut before, &dev(1));
        t.insert(
            dev(1),
            DeviceInfo {
                name: "veth3a9f".into(),
                ..Default::default()
            },
        );
        assert!(n.renamed().is_empty());
        let mut after = Vec::new();
        n.push_attributes(&mut after, &dev(1));
        assert_eq!(after, before);
    }

    #[test]
    fn the_cookie_attribute_only_when_known() {
        let mut a = Vec::new();
        push_netns(
            &mut a,
            NetnsId {
                inode: 5,
                cookie: 0,
            },
        );
        assert_eq!(a, vec![KeyValue::new(names::ATTR_NETNS_INODE, 5i64)]);
    }
}
