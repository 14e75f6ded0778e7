//! What the Kubernetes source keeps of the API's pods and Services: only the attributes it
//! adds, each string once (`Arc<str>`, namespaces and nodes interned), indexed by what the
//! telemetry carries — the pod uid of a cgroup path, a container id, an address.

use std::net::IpAddr;
use std::sync::Arc;

use globset::GlobSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustc_hash::{FxHashMap, FxHashSet};

use periscope_pipeline::telemetry::names;

/// A pod of this node: the attributes its telemetry gets.
#[derive(Debug)]
pub struct PodMeta {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub node: Arc<str>,
    /// `k8s.replicaset.name`, `k8s.deployment.name`, ... with their values.
    pub workload: Box<[(&'static str, Arc<str>)]>,
    /// `k8s.pod.label.<key>` / `k8s.pod.annotation.<key>` with their values (opt-in).
    pub extra: Box<[(Arc<str>, Arc<str>)]>,
    containers: Box<[Arc<str>]>,
}

/// What the other end of a flow or connection is: a pod (with its top owner) or a Service.
#[derive(Debug)]
pub struct Peer {
    /// The pod's or Service's uid: an address is forgotten only by what it names.
    uid: Arc<str>,
    pub namespace: Arc<str>,
    pub pod: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// The pod's workload (`Deployment`, `web`), or (`Pod`, its name) without an owner.
    pub owner: Option<(&'static str, Arc<str>)>,
}

/// Which labels and annotations pods keep.
#[derive(Debug, Default)]
pub struct Extras {
    pub labels: Option<GlobSet>,
    pub annotations: Option<GlobSet>,
}

/// The tables. One writer (the watch loop), many readers (the identity processor, per series).
#[derive(Debug, Default)]
pub struct Store {
    node: Arc<str>,
    extras: Extras,
    pods: FxHashMap<Arc<str>, Arc<PodMeta>>,
    containers: FxHashMap<Arc<str>, Arc<PodMeta>>,
    peers: FxHashMap<IpAddr, Arc<Peer>>,
    /// The addresses each pod or Service (`true`) holds in `peers`, to forget them.
    addresses: FxHashMap<Arc<str>, (bool, Box<[IpAddr]>)>,
    /// Namespace and node names, owner kinds: one copy each.
    interned: FxHashSet<Arc<str>>,
}

/// Which objects a relist saw, to forget the others when it is done.
#[derive(Debug, Default)]
pub struct Relist {
    seen: FxHashSet<Arc<str>>,
}

impl Relist {
    pub fn saw(&mut self, uid: &Arc<str>) {
        self.seen.insert(uid.clone());
    }
}

impl Store {
    pub fn new(node: &str, extras: Extras) -> Self {
        Store {
            node: Arc::from(node),
            extras,
            ..Store::default()
        }
    }

    /// The node whose pods get [`PodMeta`]s.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A pod of this node by its uid.
    pub fn pod(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        self.pods.get(uid)
    }

    /// A pod of this node by one of its containers' ids (without `containerd://`).
    pub fn pod_of_container(&self, id: &str) -> Option<&Arc<PodMeta>> {
        self.containers.get(id)
    }

    /// The pod (not on the host's network) or Service behind `addr`.
    pub fn peer(&self, addr: IpAddr) -> Option<&Arc<Peer>> {
        self.peers.get(&addr)
    }

    /// Pods of this node.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    /// Addresses of pods and Services known cluster-wide.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }

    /// A pod added or changed. `peers`: also keep its address (the cluster-wide watch).
    /// Returns its uid, for [`Relist::saw`].
    pub fn apply_pod(&mut self, pod: &Pod, peers: bool) -> Option<Arc<str>> {
        let meta = &pod.metadata;
        let uid: Arc<str> = Arc::from(meta.uid.as_deref()?);
        let name = meta.name.as_deref()?;
        let namespace = self.intern(meta.namespace.as_deref().unwrap_or("default"));
        let spec = pod.spec.as_ref();
        let on_node = spec
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n == &*self.node);
        let workload = workload(meta);
        let name: Arc<str> = Arc::from(name);
        if peers {
            let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
            let status = pod.status.as_ref();
            let mut addrs: Vec<IpAddr> = status
                .and_then(|s| s.pod_ips.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| p.ip.parse().ok())
                .chain(
                    status
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse().ok()),
                )
                .collect();
            addrs.sort_unstable();
            addrs.dedup();
            // A pod on the host's network has the node's address: it names no pod.
            if host_network {
                addrs.clear();
            }
            let owner = match workload.last() {
                Some((attr, n)) => Some((owner_kind(attr), n.clone())),
                None => Some(("Pod", name.clone())),
            };
            let peer = Arc::new(Peer {
                uid: uid.clone(),
                namespace: namespace.clone(),
                pod: Some(name.clone()),
                service: None,
                owner,
            });
            self.set_addresses(&uid, Some(peer), addrs);
        }
        if !on_node {
            return Some(uid);
        }
        let extra = self.extras(meta);
        let containers: Box<[Arc<str>]> = pod
            .status
            .iter()
            .flat_map(|s| {
                [
                    s.container_statuses.as_deref(),
                    s.init_container_statuses.as_deref(),
                    s.ephemeral_container_statuses.as_deref(),
                ]
            })
            .flatten()
            .flatten()
            .filter_map(|c| c.container_id.as_deref())
            .map(|id| Arc::from(id.split_once("://").map_or(id, |(_, id)| id)))
            .collect();
        let pod = Arc::new(PodMeta {
            uid: uid.clone(),
            name,
            namespace,
            node: self.node.clone(),
            workload: workload.into_boxed_slice(),
            extra,
            containers,
        });
        if let Some(old) = self.pods.insert(uid.clone(), pod.clone()) {
            for c in old.containers.iter() {
                self.containers.remove(c);
            }
        }
        for c in pod.containers.iter() {
            self.containers.insert(c.clone(), pod.clone());
        }
        Some(uid)
    }

    /// A pod deleted (by the watch, or not seen by a relist).
    pub fn delete_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for c in old.containers.iter() {
                self.containers.remove(c);
            }
        }
        self.set_addresses(uid, None, Vec::new());
    }

    /// A Service added or changed: its ClusterIPs (not a headless `None`).
    pub fn apply_service(&mut self, service: &Service) -> Option<Arc<str>> {
        let meta = &service.metadata;
        let uid: Arc<str> = Arc::from(meta.uid.as_deref()?);
        let name: Arc<str> = Arc::from(meta.name.as_deref()?);
        let namespace = self.intern(meta.namespace.as_deref().unwrap_or("default"));
        let spec = service.spec.as_ref();
        let mut addrs: Vec<IpAddr> = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(spec.and_then(|s| s.cluster_ip.as_deref()))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let peer = Arc::new(Peer {
            uid: uid.clone(),
            namespace,
            pod: None,
            service: Some(name),
            owner: None,
        });
        self.set_addresses(&uid, Some(peer), addrs);
        Some(uid)
    }

    pub fn delete_service(&mut self, uid: &str) {
        self.set_addresses(uid, None, Vec::new());
    }

    /// `uid` now holds exactly `addrs`, naming `peer`. An address another object took since
    /// (a reused pod IP whose deletion is not seen yet) is left to it.
    fn set_addresses(&mut self, uid: &str, peer: Option<Arc<Peer>>, addrs: Vec<IpAddr>) {
        if let Some((_, old)) = self.addresses.remove(uid) {
            for a in old.iter() {
                if self.peers.get(a).is_some_and(|p| &*p.uid == uid) {
                    self.peers.remove(a);
                }
            }
        }
        let Some(peer) = peer.filter(|_| !addrs.is_empty()) else {
            return;
        };
        for a in &addrs {
            self.peers.insert(*a, peer.clone());
        }
        let service = peer.service.is_some();
        self.addresses
            .insert(peer.uid.clone(), (service, addrs.into_boxed_slice()));
    }

    /// After a relist of pods: forgets the ones it did not see (deleted while not watched).
    pub fn finish_pod_relist(&mut self, relist: Relist) -> usize {
        let gone: Vec<Arc<str>> = self
            .pods
            .keys()
            .chain(
                self.addresses
                    .iter()
                    .filter(|(_, (service, _))| !service)
                    .map(|(u, _)| u),
            )
            .filter(|u| !relist.seen.contains(*u))
            .cloned()
            .collect();
        let mut gone = gone;
        gone.sort_unstable();
        gone.dedup();
        for uid in &gone {
            self.delete_pod(uid);
        }
        gone.len()
    }

    /// After a relist of Services: forgets the ones it did not see.
    pub fn finish_service_relist(&mut self, relist: Relist) -> usize {
        let gone: Vec<Arc<str>> = self
            .addresses
            .iter()
            .filter(|(_, (service, _))| *service)
            .map(|(u, _)| u)
            .filter(|u| !relist.seen.contains(*u))
            .cloned()
            .collect();
        for uid in &gone {
            self.delete_service(uid);
        }
        gone.len()
    }

    fn extras(&mut self, meta: &ObjectMeta) -> Box<[(Arc<str>, Arc<str>)]> {
        let mut out = Vec::new();
        for (set, map, prefix) in [
            (&self.extras.labels, &meta.labels, names::ATTR_K8S_POD_LABEL),
            (
                &self.extras.annotations,
                &meta.annotations,
                names::ATTR_K8S_POD_ANNOTATION,
            ),
        ] {
            let (Some(set), Some(map)) = (set, map) else {
                continue;
            };
            for (k, v) in map.iter().filter(|(k, _)| set.is_match(k.as_str())) {
                out.push((Arc::from(format!("{prefix}{k}")), Arc::from(v.as_str())));
            }
        }
        out.into_boxed_slice()
    }
}

impl Peer {
    /// Whether this is the pod `uid`.
    pub fn is_pod(&self, uid: &str) -> bool {
        self.pod.is_some() && &*self.uid == uid
    }
}

/// The kind named by a workload attribute, for `k8s.peer.owner.kind`.
fn owner_kind(attr: &str) -> &'static str {
    match attr {
        names::ATTR_K8S_DEPLOYMENT_NAME => "Deployment",
        names::ATTR_K8S_REPLICASET_NAME => "ReplicaSet",
        names::ATTR_K8S_STATEFULSET_NAME => "StatefulSet",
        names::ATTR_K8S_DAEMONSET_NAME => "DaemonSet",
        names::ATTR_K8S_CRONJOB_NAME => "CronJob",
        names::ATTR_K8S_JOB_NAME => "Job",
        _ => "Pod",
    }
}

/// The pod's workload attributes from its controller's owner reference, innermost first, as
/// the Collector's k8sattributes processor derives them without watching ReplicaSets and
/// Jobs: a ReplicaSet `web-5d4f8b9c7` is Deployment `web` (the pod-template hash trimmed), a
/// Job `backup-28457760` is CronJob `backup` (the schedule's minute trimmed).
pub fn workload(meta: &ObjectMeta) -> Vec<(&'static str, Arc<str>)> {
    let Some(owner) = meta.owner_references.as_ref().and_then(|o| {
        o.iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| o.first())
    }) else {
        return Vec::new();
    };
    let name = owner.name.as_str();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = meta
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            let deployment = match hash {
                Some(h) => name
                    .strip_suffix(h.as_str())
                    .and_then(|n| n.strip_suffix('-')),
                None => trim_suffix(name, |c| c.is_ascii_alphanumeric()),
            };
            let mut w = vec![(names::ATTR_K8S_REPLICASET_NAME, Arc::from(name))];
            if let Some(d) = deployment.filter(|d| !d.is_empty()) {
                w.push((names::ATTR_K8S_DEPLOYMENT_NAME, Arc::from(d)));
            }
            w
        }
        "Job" => {
            let mut w = vec![(names::ATTR_K8S_JOB_NAME, Arc::from(name))];
            if let Some(c) = trim_suffix(name, |c| c.is_ascii_digit()) {
                w.push((names::ATTR_K8S_CRONJOB_NAME, Arc::from(c)));
            }
            w
        }
        "StatefulSet" => vec![(names::ATTR_K8S_STATEFULSET_NAME, Arc::from(name))],
        "DaemonSet" => vec![(names::ATTR_K8S_DAEMONSET_NAME, Arc::from(name))],
        _ => Vec::new(),
    }
}

/// `name` without its last `-<suffix>`, where the suffix is one or more characters `keep`
/// accepts (the Collector's `^(.*)-[0-9a-zA-Z]+$` and `^(.*)-[0-9]+$`).
fn trim_suffix(name: &str, keep: fn(char) -> bool) -> Option<&str> {
    let (head, tail) = name.rsplit_once('-')?;
    (!tail.is_empty() && tail.chars().all(keep)).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(kind: &str, owner: &str, hash: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                kind: kind.into(),
                name: owner.into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            labels: hash.map(|h| [("pod-template-hash".to_string(), h.to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    fn names_of<'a>(w: &'a [(&'static str, Arc<str>)]) -> Vec<(&'static str, &'a str)> {
        w.iter().map(|(k, v)| (*k, &**v)).collect()
    }

    #[test]
    fn workloads_are_trimmed_as_the_collector_does() {
        /// Owner kind and name, `pod-template-hash`, the attributes wanted.
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                "ReplicaSet",
                "web-5d4f8b9c7",
                None,
                &[
                    ("k8s.replicaset.name", "web-5d4f8b9c7"),
                    ("k8s.deployment.name", "web"),
                ],
            ),
            (
                "ReplicaSet",
                "my-api-v2-7c9f6d5b8",
                Some("7c9f6d5b8"),
                &[
                    ("k8s.replicaset.name", "my-api-v2-7c9f6d5b8"),
                    ("k8s.deployment.name", "my-api-v2"),
                ],
            ),
            // The label wins over the pattern: a hash that is not the name's suffix names
            // no Deployment.
            (
                "ReplicaSet",
                "handmade-abc",
                Some("xyz"),
                &[("k8s.replicaset.name", "handmade-abc")],
            ),
            (
                "ReplicaSet",
                "solo",
                None,
                &[("k8s.replicaset.name", "solo")],
            ),
            (
                "Job",
                "backup-28457760",
                None,
                &[
                    ("k8s.job.name", "backup-28457760"),
                    ("k8s.cronjob.name", "backup"),
                ],
            ),
            ("Job", "migrate-v2", None, &[("k8s.job.name", "migrate-v2")]),
            ("StatefulSet", "db", None, &[("k8s.statefulset.name", "db")]),
            (
                "DaemonSet",
                "agent",
                None,
                &[("k8s.daemonset.name", "agent")],
            ),
            ("Node", "n1", None, &[]),
        ];
        for (kind, name, hash, want) in cases {
            let got = workload(&meta(kind, name, *hash));
            assert_eq!(names_of(&got), *want, "{kind} {name} {hash:?}");
        }
    }
}
