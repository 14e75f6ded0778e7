//! The `identity` processor: like the Collector's k8sattributes processor, it passes events
//! through untouched and enriches telemetry. For each metric data point and each span, it
//! reads the ids already there (`process.pid`, `periscope.cgroup.id`, `periscope.netns.inode`,
//! or a 5-tuple with the namespace) and adds who they are: the process (`process.rs`), its
//! container and pod (`cgroup.rs`) and the namespace's name (`netns.rs`). Unknown ids
//! degrade to the ids: nothing is removed, nothing fails.

mod cache;
pub mod cgroup;
mod config;
pub mod kubernetes;
pub mod netns;
pub mod process;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_pipeline::component::{BuildContext, Emitter, Processor, ProcessorConfig};
use periscope_pipeline::model::{
    AnyValue, Attributes, KeyValue, MetricData, NetnsId, Payload, Telemetry, Transport,
};
use periscope_pipeline::telemetry::{names, ComponentCounters};
use periscope_pipeline::{DnsTable, NamespaceTable, SocketOwner, SocketTable};

pub use cache::Lookup;
pub use config::{
    ContainerOptions, IdentityConfig, KubernetesOptions, NetnsOptions, ProcessOptions, ATTRIBUTES,
    DYNAMIC_PREFIXES,
};

use cache::Cache;
use cgroup::{CgroupIndex, RuntimeState, Workload};
use kubernetes::KubernetesSource;
use netns::NetnsNames;
use process::Processes;

impl ProcessorConfig for IdentityConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Identity::new(self, ctx.sockets.clone(), ctx.counters.clone())
                .with_dns(ctx.dns.clone())
                .with_namespaces(ctx.namespaces.clone())
                .with_kubernetes(self, &ctx.id.to_string())?,
        ))
    }
}

/// How much later than a span's start its pid's process may seem to have started (process
/// start times are known to the second) before the pid counts as reused.
const PID_REUSE_SLACK_NS: u64 = 2_000_000_000;

/// Which attributes one kind of telemetry gets.
#[derive(Clone, Copy, Debug, Default)]
struct Wanted {
    pid: bool,
    exe_name: bool,
    exe_path: bool,
    owner: bool,
    command_line: bool,
    cgroup_id: bool,
    cgroup_path: bool,
    container_id: bool,
    runtime: bool,
    container_name: bool,
    image: bool,
    pod_uid: bool,
    qos: bool,
    netns_name: bool,
    /// `dns.question.name` / `periscope.dns.server.address` of a resolved destination.
    dns_name: bool,
    dns_server: bool,
    /// Which of [`K8S_POD_ATTRIBUTES`] (bit i: attribute i).
    k8s_pod: u16,
    /// Which of [`K8S_PEER_ATTRIBUTES`].
    k8s_peer: u8,
    /// `periscope.peer.container.name` of a node-side device's `periscope.peer.container.id`.
    peer_container_name: bool,
    /// `periscope.peer.k8s.pod.name` / `.k8s.namespace.name` of its `periscope.peer.k8s.pod.uid`.
    peer_pod_name: bool,
    peer_pod_namespace: bool,
}

/// What `kubernetes` adds to a pod's telemetry, in bit order of [`Wanted::k8s_pod`].
const K8S_POD_ATTRIBUTES: [&str; 9] = [
    names::ATTR_K8S_POD_NAME,
    names::ATTR_K8S_NAMESPACE_NAME,
    names::ATTR_K8S_NODE_NAME,
    names::ATTR_K8S_REPLICASET_NAME,
    names::ATTR_K8S_DEPLOYMENT_NAME,
    names::ATTR_K8S_STATEFULSET_NAME,
    names::ATTR_K8S_DAEMONSET_NAME,
    names::ATTR_K8S_JOB_NAME,
    names::ATTR_K8S_CRONJOB_NAME,
];

/// What `kubernetes.peers` adds about the other end, in bit order of [`Wanted::k8s_peer`].
const K8S_PEER_ATTRIBUTES: [&str; 5] = [
    names::ATTR_K8S_PEER_POD_NAME,
    names::ATTR_K8S_PEER_NAMESPACE_NAME,
    names::ATTR_K8S_PEER_OWNER_KIND,
    names::ATTR_K8S_PEER_OWNER_NAME,
    names::ATTR_K8S_PEER_SERVICE_NAME,
];

fn bit(attrs: &[&str], name: &str) -> u32 {
    attrs.iter().position(|a| *a == name).map_or(0, |i| 1 << i)
}

/// Which opt-in labels and annotations one kind of telemetry gets.
#[derive(Clone, Debug, Default)]
struct ExtraFilter {
    exclude: Vec<String>,
    /// `metric_attributes`, for metrics.
    only: Option<Vec<String>>,
}

impl ExtraFilter {
    fn allows(&self, key: &str) -> bool {
        !self.exclude.iter().any(|e| e == key)
            && self
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|a| a == key))
    }
}

impl Wanted {
    fn new(config: &IdentityConfig, metrics: bool) -> Self {
        let on = |name: &str| {
            !config.exclude.iter().any(|e| e == name)
                && (!metrics
                    || config
                        .metric_attributes
                        .as_ref()
                        .is_none_or(|m| m.iter().any(|a| a == name)))
        };
        let p = config.process.enabled;
        let c = config.container.enabled;
        let k = c && config.kubernetes.enabled;
        let bits = |attrs: &[&str]| {
            attrs
                .iter()
                .filter(|a| k && on(a))
                .fold(0, |b, a| b | bit(attrs, a))
        };
        Wanted {
            k8s_pod: bits(&K8S_POD_ATTRIBUTES) as u16,
            k8s_peer: if config.kubernetes.peers {
                bits(&K8S_PEER_ATTRIBUTES) as u8
            } else {
                0
            },
            peer_container_name: c && on(names::ATTR_PEER_CONTAINER_NAME),
            peer_pod_name: k && on(names::ATTR_PEER_K8S_POD_NAME),
            peer_pod_namespace: k && on(names::ATTR_PEER_K8S_NAMESPACE_NAME),
            pid: p && config.process.from_sockets && on(names::ATTR_PROCESS_PID),
            exe_name: p && on(names::ATTR_PROCESS_NAME),
            exe_path: p && on(names::ATTR_PROCESS_EXECUTABLE_PATH),
            owner: p && on(names::ATTR_PROCESS_OWNER),
            command_line: p && config.process.command_line && on(names::ATTR_PROCESS_COMMAND_LINE),
            cgroup_id: p && config.process.from_sockets && on(names::ATTR_CGROUP_ID),
            cgroup_path: c && on(names::ATTR_CGROUP_PATH),
            container_id: c && on(names::ATTR_CONTAINER_ID),
            runtime: c && on(names::ATTR_CONTAINER_RUNTIME),
            container_name: c && on(names::ATTR_CONTAINER_NAME),
            image: c && on(names::ATTR_CONTAINER_IMAGE_NAME),
            pod_uid: c && on(names::ATTR_K8S_POD_UID),
            qos: c && on(names::ATTR_K8S_POD_QOS_CLASS),
            netns_name: config.netns.enabled && on(names::ATTR_NETNS_NAME),
            dns_name: on(names::ATTR_DNS_QUESTION_NAME),
            dns_server: on(names::ATTR_DNS_SERVER_ADDRESS),
        }
    }

    fn process(&self) -> bool {
        self.exe_name || self.exe_path || self.owner || self.command_line
    }

    fn container(&self) -> bool {
        self.cgroup_path
            || self.container_id
            || self.runtime
            || self.container_name
            || self.image
            || self.pod_uid
            || self.qos
            || self.k8s_pod != 0
    }

    fn any(&self) -> bool {
        self.pid
            || self.cgroup_id
            || self.process()
            || self.container()
            || self.netns_name
            || self.dns_name
            || self.dns_server
            || self.k8s_peer != 0
            || self.peer_container_name
            || self.peer_pod_name
            || self.peer_pod_namespace
    }
}

/// Lookups that found nothing, per kind (for the log and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedLookups {
    pub processes: u64,
    pub cgroups: u64,
    pub namespaces: u64,
    /// Pods of this node (by uid or container id) the Kubernetes API did not name (yet).
    pub pods: u64,
}

/// The running processor.
pub struct Identity {
    spans: Wanted,
    metrics: Wanted,
    from_sockets: bool,
    sockets: SocketTable,
    counters: Arc<ComponentCounters>,
    processes: Option<Processes>,
    cgroups: Option<CgroupIndex>,
    workloads: Cache<u64, Arc<(Arc<str>, Workload)>>,
    missing_cgroups: Cache<u64, ()>,
    runtime: RuntimeState,
    netns: Option<NetnsNames>,
    missing_netns: Cache<NetnsId, ()>,
    /// What the receivers captured of each namespace while it was alive: consulted first.
    namespaces: NamespaceTable,
    sweep_interval: Duration,
    next_sweep: Instant,
    failed: FailedLookups,
    dns: DnsTable,
    kubernetes: Option<Arc<KubernetesSource>>,
    /// Pod uids (as 128-bit numbers) not found, counted once per `cache_ttl`.
    missing_pods: Cache<u128, ()>,
    extra_spans: ExtraFilter,
    extra_metrics: ExtraFilter,
}

impl Identity {
    /// Reads resolved addresses (`dns.question.name`) from `dns`, the table the `dns`
    /// processor fills; without it nothing is resolved.
    pub fn with_dns(mut self, dns: DnsTable) -> Self {
        self.dns = dns;
        self
    }

    /// Adds `dns.question.name` and `periscope.dns.server.address` for a destination
    /// (`destination.address`, flows) or peer (`network.peer.address`, connections) that
    /// the series' namespace resolved.
    fn enrich_dns(&self, attrs: &mut Attributes, want: Wanted, netns: Option<NetnsId>) {
        if !(want.dns_name || want.dns_server) || has(attrs, names::ATTR_DNS_QUESTION_NAME) {
            return;
        }
        let Some(netns) = netns else {
            return;
        };
        let addr = string(attrs, names::ATTR_DESTINATION_ADDRESS)
            .or_else(|| string(attrs, names::ATTR_PEER_ADDRESS))
            .and_then(|a| a.parse::<IpAddr>().ok());
        let Some(r) = addr.and_then(|a| self.dns.resolve(netns, a)) else {
            return;
        };
        if want.dns_name {
            set(attrs, names::ATTR_DNS_QUESTION_NAME, r.name.to_string());
        }
        if want.dns_server {
            set(attrs, names::ATTR_DNS_SERVER_ADDRESS, r.server.to_string());
        }
    }

    pub fn new(
        config: &IdentityConfig,
        sockets: SocketTable,
        counters: Arc<ComponentCounters>,
    ) -> Self {
        let capacity = config.cache_capacity.get();
        let ttl = config.cache_ttl.get();
        let rescan = config.rescan_interval.0;
        let spans = Wanted::new(config, false);
        let metrics = Wanted::new(config, true);
        let either = |f: fn(&Wanted) -> bool| f(&spans) || f(&metrics);
        let need_processes = either(Wanted::process) || either(Wanted::container);
        let cgroup_root = config
            .container
            .cgroup_root
            .clone()
            .or_else(|| cgroup::find_cgroup2(&config.proc_root));
        if either(Wanted::container) && cgroup_root.is_none() {
            tracing::warn!("identity: no cgroup v2 mount found; cgroup ids stay unresolved");
        }
        Identity {
            from_sockets: config.process.enabled && config.process.from_sockets,
            sockets,
            counters,
            processes: need_processes.then(|| {
                Processes::new(
                    config.proc_root.clone(),
                    PathBuf::from("/etc/passwd"),
                    config.process.command_line,
                    capacity,
                    ttl,
                )
            }),
            cgroups: either(Wanted::container)
                .then(|| CgroupIndex::new(cgroup_root, capacity, rescan)),
            workloads: Cache::new(capacity, ttl),
            missing_cgroups: Cache::new(capacity, ttl),
            runtime: RuntimeState::new(Some(config.container.docker_root.clone()), capacity, ttl),
            netns: (spans.netns_name || metrics.netns_name).then(|| {
                NetnsNames::new(
                    config.netns.directories.clone(),
                    config.proc_root.clone(),
                    config.netns.containers,
                    capacity,
                    rescan,
                )
            }),
            missing_netns: Cache::new(capacity, ttl),
            namespaces: NamespaceTable::default(),
            sweep_interval: config.sweep_interval.get(),
            next_sweep: Instant::now() + config.sweep_interval.get(),
            spans,
            metrics,
            failed: FailedLookups::default(),
            dns: DnsTable::default(),
            kubernetes: None,
            missing_pods: Cache::new(capacity, ttl),
            extra_spans: ExtraFilter {
                exclude: config.exclude.clone(),
                only: None,
            },
            extra_metrics: ExtraFilter {
                exclude: config.exclude.clone(),
                only: config.metric_attributes.clone(),
            },
        }
    }

    /// Starts the Kubernetes source if `config.kubernetes.enabled` (and containers are looked
    /// up: pods are found from their cgroups), or shares the one another pipeline's instance
    /// started with the same options; its watch errors count in that first instance.
    pub fn with_kubernetes(mut self, config: &IdentityConfig, id: &str) -> anyhow::Result<Self> {
        if config.kubernetes.enabled {
            if !config.container.enabled {
                tracing::warn!(
                    "identity `{id}`: kubernetes needs container.enabled (pods are found from \
                     their cgroups); not watching the API"
                );
                return Ok(self);
            }
            self.kubernetes = Some(KubernetesSource::shared(
                &config.kubernetes,
                id,
                self.counters.clone(),
            )?);
        }
        Ok(self)
    }

    /// The Kubernetes source, if one runs.
    pub fn kubernetes(&self) -> Option<&KubernetesSource> {
        self.kubernetes.as_deref()
    }

    /// Adds the pod's name, namespace, node, workload and opt-in labels and annotations, for
    /// the pod uid (from the cgroup path) or else the container id.
    fn enrich_pod(&mut self, attrs: &mut Attributes, metric: bool, w: &Workload, now: Instant) {
        let want = if metric { self.metrics } else { self.spans };
        let Some(source) = self.kubernetes.as_ref() else {
            return;
        };
        if want.k8s_pod == 0 {
            return;
        }
        let uid = w.pod.as_ref().map(|p| p.0.as_str());
        let container = w.container.as_ref().map(|c| c.0.as_str());
        let pod = {
            let store = source.store();
            uid.and_then(|u| store.pod(u))
                .or_else(|| container.and_then(|c| store.pod_of_container(c)))
                .cloned()
        };
        let Some(pod) = pod else {
            // Not a pod (a container outside Kubernetes), or one the API has not named yet.
            if let Some(uid) = uid {
                let key = uid
                    .chars()
                    .filter_map(|c| c.to_digit(16))
                    .fold(0u128, |k, d| k.wrapping_shl(4) | u128::from(d));
                if self.missing_pods.get(&key, now).is_none() {
                    self.missing_pods.insert(key, (), now);
                    self.failed.pods += 1;
                    tracing::debug!(uid, "identity: pod not (yet) known to the Kubernetes API");
                    self.counters.add_errors(1);
                }
            }
            return;
        };
        let on = |name: &str| u32::from(want.k8s_pod) & bit(&K8S_POD_ATTRIBUTES, name) != 0;
        for (key, value) in [
            (names::ATTR_K8S_POD_NAME, &pod.name),
            (names::ATTR_K8S_NAMESPACE_NAME, &pod.namespace),
            (names::ATTR_K8S_NODE_NAME, &pod.node),
        ]
        .into_iter()
        .chain(pod.workload.iter().map(|(k, v)| (*k, v)))
        {
            if on(key) {
                set(attrs, key, value.to_string());
            }
        }
        if want.pod_uid && !has(attrs, names::ATTR_K8S_POD_UID) {
            set(attrs, names::ATTR_K8S_POD_UID, pod.uid.to_string());
        }
        let filter = if metric {
            &self.extra_metrics
        } else {
            &self.extra_spans
        };
        for (key, value) in pod.extra.iter() {
            if filter.allows(key) {
                let value = AnyValue::from(value.to_string());
                match attrs.iter_mut().find(|kv| kv.key == **key) {
                    Some(kv) => kv.value = value,
                    None => attrs.push(KeyValue::new(key.to_string(), value)),
                }
            }
        }
    }

    /// Names the pod or Service at the other end: `network.peer.address` (connections),
    /// else `destination.address` (flows) — or `source.address` where the destination is the
    /// series' own pod `own` (a flow it received).
    fn enrich_peer(&self, attrs: &mut Attributes, want: Wanted, own: Option<&str>) {
        let Some(source) = self.kubernetes.as_ref() else {
            return;
        };
        if want.k8s_peer == 0 {
            return;
        }
        let addr = |key: &str| string(attrs, key).and_then(|a| a.parse::<IpAddr>().ok());
        let peer = {
            let store = source.store();
            match addr(names::ATTR_PEER_ADDRESS) {
                Some(a) => store.peer(a),
                None => match addr(names::ATTR_DESTINATION_ADDRESS).and_then(|a| store.peer(a)) {
                    Some(p) if own.is_some_and(|u| p.is_pod(u)) => {
                        addr(names::ATTR_SOURCE_ADDRESS).and_then(|a| store.peer(a))
                    }
                    other => other,
                },
            }
            .cloned()
        };
        let Some(peer) = peer else {
            return;
        };
        let on = |name: &str| u32::from(want.k8s_peer) & bit(&K8S_PEER_ATTRIBUTES, name) != 0;
        let owner = peer.owner.as_ref();
        for (key, value) in [
            (names::ATTR_K8S_PEER_POD_NAME, peer.pod.as_deref()),
            (names::ATTR_K8S_PEER_NAMESPACE_NAME, Some(&*peer.namespace)),
            (names::ATTR_K8S_PEER_OWNER_KIND, owner.map(|o| o.0)),
            (names::ATTR_K8S_PEER_OWNER_NAME, owner.map(|o| &*o.1)),
            (names::ATTR_K8S_PEER_SERVICE_NAME, peer.service.as_deref()),
        ] {
            if let (true, Some(v)) = (on(key), value) {
                set(attrs, key, v.to_string());
            }
        }
    }

    /// Names the container and pod a node-side device serves, from the ids its series was
    /// captured with (`periscope.peer.container.id`, `periscope.peer.k8s.pod.uid`): lookups by
    /// id only, no scan.
    fn name_peer_workload(&mut self, attrs: &mut Attributes, want: Wanted, now: Instant) {
        let container = string(attrs, names::ATTR_PEER_CONTAINER_ID).map(str::to_owned);
        if let (true, Some(id)) = (want.peer_container_name, &container) {
            let d = self.runtime.describe(id, None, now);
            if let Some(n) = &d.name {
                set(attrs, names::ATTR_PEER_CONTAINER_NAME, n.clone());
            }
        }
        if !(want.peer_pod_name || want.peer_pod_namespace) {
            return;
        }
        let Some(source) = self.kubernetes.as_ref() else {
            return;
        };
        let pod = {
            let store = source.store();
            string(attrs, names::ATTR_PEER_K8S_POD_UID)
                .and_then(|u| store.pod(u))
                .or_else(|| container.as_deref().and_then(|c| store.pod_of_container(c)))
                .cloned()
        };
        if let Some(pod) = pod {
            if want.peer_pod_name {
                set(attrs, names::ATTR_PEER_K8S_POD_NAME, pod.name.to_string());
            }
            if want.peer_pod_namespace {
                set(
                    attrs,
                    names::ATTR_PEER_K8S_NAMESPACE_NAME,
                    pod.namespace.to_string(),
                );
            }
        }
    }

    /// Reads what the receivers captured of each namespace (its name, the cgroup of a process
    /// in it) from `namespaces`, before scanning for it: it names namespaces that are gone.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// What the receivers captured of `netns` while it was alive, if they named it or knew
    /// its container.
    fn captured_namespace(&self, netns: NetnsId) -> Option<Arc<netns::NetnsInfo>> {
        let mut info = self.namespaces.get_for_naming(&netns)?;
        // Learned after a series of the namespace was named: naming them by it now would
        // change their attributes after their first points (see `NamespaceInfo::cgroup_late`).
        if info.cgroup_late {
            info.cgroup = None;
        }
        if info.name.is_none() && info.cgroup.is_none() {
            return None;
        }
        Some(Arc::new(netns::NetnsInfo {
            workload: info
                .cgroup
                .as_deref()
                .map(cgroup::parse_cgroup_path)
                .unwrap_or_default(),
            name: info.name,
            cookie: netns.cookie,
        }))
    }

    /// Lookups that failed so far.
    pub fn failed_lookups(&self) -> FailedLookups {
        self.failed
    }

    fn fail(&mut self, what: &str, id: u64) {
        tracing::debug!(kind = what, id, "identity: lookup found nothing");
        self.counters.add_errors(1);
    }

    /// The socket a series' 5-tuple names, where the socket table knows its owner.
    fn socket_owner(&self, attrs: &Attributes, netns: Option<NetnsId>) -> Option<SocketOwner> {
        let netns = netns?;
        let transport = match string(attrs, names::ATTR_TRANSPORT)? {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return None,
        };
        let endpoint = |addr: &str, port: &str| -> Option<(IpAddr, u16)> {
            let a: IpAddr = string(attrs, addr)?.parse().ok()?;
            let p = u16::try_from(int(attrs, port)?).ok()?;
            Some((a, p))
        };
        let (src, dst) = match (
            endpoint(names::ATTR_SOURCE_ADDRESS, names::ATTR_SOURCE_PORT),
            endpoint(
                names::ATTR_DESTINATION_ADDRESS,
                names::ATTR_DESTINATION_PORT,
            ),
        ) {
            (Some(s), Some(d)) => (s, d),
            _ => (
                endpoint(names::ATTR_LOCAL_ADDRESS, names::ATTR_LOCAL_PORT)?,
                endpoint(names::ATTR_PEER_ADDRESS, names::ATTR_PEER_PORT)?,
            ),
        };
        self.sockets
            .by_tuple(netns, transport, src, dst)
            .filter(|o| o.process.is_known())
    }

    /// The workload (and path) of cgroup `id`.
    fn cgroup_workload(&mut self, id: u64, now: Instant) -> Option<Arc<(Arc<str>, Workload)>> {
        if let Some(w) = self.workloads.get(&id, now) {
            return Some(w.clone());
        }
        if self.missing_cgroups.get(&id, now).is_some() {
            return None;
        }
        match self.cgroups.as_mut()?.path(id, now) {
            Lookup::Found(path) => {
                let w = Arc::new((path.clone(), cgroup::parse_cgroup_path(&path)));
                self.workloads.insert(id, w.clone(), now);
                Some(w)
            }
            Lookup::Failed => {
                self.missing_cgroups.insert(id, (), now);
                self.failed.cgroups += 1;
                self.fail("cgroup", id);
                None
            }
            // Not walked again yet: retried with the next data point.
            Lookup::KnownMissing => None,
        }
    }

    /// Adds the identity of the ids in `attrs`.
    /// `since_ns`: when what the attributes describe began (a span's start), if it is one
    /// thing: a process found under its pid that started later is another one (a reused pid).
    fn enrich(
        &mut self,
        attrs: &mut Attributes,
        metric: bool,
        since_ns: Option<u64>,
        now: Instant,
    ) {
        let want = if metric { self.metrics } else { self.spans };
        if !want.any() {
            return;
        }
        let mut pid = int(attrs, names::ATTR_PROCESS_PID)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|p| *p != 0);
        let mut cgroup_id = int(attrs, names::ATTR_CGROUP_ID)
            .and_then(|v| u64::try_from(v).ok())
            .filter(|c| *c != 0);
        let netns = netns_of(attrs);
        self.enrich_dns(attrs, want, netns);
        let mut comm = None;
        if pid.is_none() && self.from_sockets {
            let by_cookie = int(attrs, names::ATTR_SOCKET_COOKIE)
                .and_then(|c| u64::try_from(c).ok())
                .and_then(|c| self.sockets.by_cookie(c))
                .filter(|o| o.process.is_known());
            if let Some(owner) = by_cookie.or_else(|| self.socket_owner(attrs, netns)) {
                pid = Some(owner.process.pid);
                if want.pid {
                    set(attrs, names::ATTR_PROCESS_PID, i64::from(owner.process.pid));
                }
                if cgroup_id.is_none() && owner.cgroup_id != 0 {
                    cgroup_id = Some(owner.cgroup_id);
                    if want.cgroup_id {
                        set(
                            attrs,
                            names::ATTR_CGROUP_ID,
                            i64::try_from(owner.cgroup_id).unwrap_or(i64::MAX),
                        );
                    }
                }
                comm = Some(owner.process.comm_str().into_owned());
            }
        }

        // The process.
        let mut process_workload = None;
        if let (Some(p), true) = (pid, want.process() || want.container()) {
            let lookup = match self.processes.as_mut() {
                Some(procs) => match procs.lookup(p, now) {
                    // The pid's process began after the span did: the span's process exited
                    // and its pid was reused. What the kernel reported (comm) stays.
                    Lookup::Found(info)
                        if since_ns.zip(procs.started_ns(&info)).is_some_and(
                            |(since, started)| started > since.saturating_add(PID_REUSE_SLACK_NS),
                        ) =>
                    {
                        Lookup::KnownMissing
                    }
                    other => other,
                },
                None => Lookup::KnownMissing,
            };
            match lookup {
                Lookup::Found(info) => {
                    if want.exe_name {
                        if let Some(n) = &info.exe_name {
                            set(attrs, names::ATTR_PROCESS_NAME, n.clone());
                        }
                    }
                    if want.exe_path {
                        if let Some(n) = &info.exe_path {
                            set(attrs, names::ATTR_PROCESS_EXECUTABLE_PATH, n.clone());
                        }
                    }
                    if want.owner {
                        if let Some(n) = &info.owner {
                            set(attrs, names::ATTR_PROCESS_OWNER, n.clone());
                        }
                    }
                    if want.command_line {
                        if let Some(n) = &info.command_line {
                            set(attrs, names::ATTR_PROCESS_COMMAND_LINE, n.clone());
                        }
                    }
                    process_workload = Some((info.cgroup_path.clone(), info.workload.clone()));
                }
                Lookup::Failed => {
                    self.failed.processes += 1;
                    self.fail("process", u64::from(p));
                }
                Lookup::KnownMissing => {}
            }
            // Gone, but the socket table knew its command name.
            if want.exe_name && !has(attrs, names::ATTR_PROCESS_NAME) {
                if let Some(c) = comm.filter(|c| !c.is_empty()) {
                    set(attrs, names::ATTR_PROCESS_NAME, c);
                }
            }
        }

        // The container and pod: from the cgroup id, else the process's cgroups.
        let mut workload = None;
        // Whether the cgroup id named a cgroup: one that did not (a cgroup v1/hybrid host whose
        // v2 hierarchy the agent cannot walk, say) tells nothing about whose socket it is.
        let mut cgroup_resolved = false;
        if want.container() {
            if let Some(id) = cgroup_id {
                if let Some(w) = self.cgroup_workload(id, now) {
                    cgroup_resolved = true;
                    if want.cgroup_path {
                        set(attrs, names::ATTR_CGROUP_PATH, w.0.to_string());
                    }
                    workload = Some(w.1.clone());
                }
            }
            if let Some((path, w)) = process_workload {
                if workload.is_none() {
                    if let (true, Some(path)) = (want.cgroup_path, path) {
                        set(attrs, names::ATTR_CGROUP_PATH, path);
                    }
                }
                if workload.as_ref().is_none_or(Workload::is_empty) {
                    workload = Some(w);
                }
            }
        }

        // The namespace, and its container for series that have none of their own.
        if let (Some(ns), true) = (netns, want.netns_name || want.container()) {
            let info = match self.captured_namespace(ns) {
                Some(info) => Lookup::Found(info),
                None => match self.netns.as_mut() {
                    Some(n) if self.missing_netns.get(&ns, now).is_none() => n.lookup(ns, now),
                    _ => Lookup::KnownMissing,
                },
            };
            match info {
                Lookup::Found(info) => {
                    let own_container = workload.as_ref().is_some_and(|w| !w.is_empty());
                    // Series have no cgroup or process of their own; a socket without a
                    // process (the kernel accepted it) whose cgroup could not be resolved
                    // belongs to its namespace's container too. A host process or cgroup
                    // that entered the namespace does not.
                    if !own_container
                        && !info.workload.is_empty()
                        && !cgroup_resolved
                        && pid.is_none()
                    {
                        workload = Some(info.workload.clone());
                    }
                    // A name the series captured while its namespace was alive stays.
                    if want.netns_name && !has(attrs, names::ATTR_NETNS_NAME) {
                        let name = info.name.clone().or_else(|| {
                            let (id, runtime) = info.workload.container.as_ref()?;
                            let d = self.runtime.describe(id, *runtime, now);
                            Some(d.name.clone().unwrap_or_else(|| id.clone()))
                        });
                        if let Some(name) = name {
                            set(attrs, names::ATTR_NETNS_NAME, name);
                        }
                    }
                }
                Lookup::Failed => {
                    self.missing_netns.insert(ns, (), now);
                    self.failed.namespaces += 1;
                    self.fail("netns", u64::from(ns.inode));
                }
                Lookup::KnownMissing => {}
            }
        }

        if let Some(w) = &workload {
            if let Some((id, runtime)) = &w.container {
                if want.container_id {
                    set(attrs, names::ATTR_CONTAINER_ID, id.clone());
                }
                if want.runtime {
                    if let Some(r) = runtime {
                        set(attrs, names::ATTR_CONTAINER_RUNTIME, *r);
                    }
                }
                if want.container_name || want.image {
                    let d = self.runtime.describe(id, *runtime, now);
                    if let (true, Some(n)) = (want.container_name, &d.name) {
                        set(attrs, names::ATTR_CONTAINER_NAME, n.clone());
                    }
                    if let (true, Some(i)) = (want.image, &d.image) {
                        set(attrs, names::ATTR_CONTAINER_IMAGE_NAME, i.clone());
                    }
                }
            }
            if let Some((uid, qos)) = &w.pod {
                if want.pod_uid {
                    set(attrs, names::ATTR_K8S_POD_UID, uid.clone());
                }
                if want.qos {
                    set(attrs, names::ATTR_K8S_POD_QOS_CLASS, *qos);
                }
            }
            self.enrich_pod(attrs, metric, w, now);
        }
        let own_pod = workload.as_ref().and_then(|w| w.pod.as_ref());
        self.enrich_peer(attrs, want, own_pod.map(|p| p.0.as_str()));
        self.name_peer_workload(attrs, want, now);
    }

    /// Adds the identity of the ids in `attrs` as for a span that began at `since_ns`: for a
    /// processor that names what it aggregates itself (`servicegraph`).
    pub(crate) fn enrich_span_attributes(&mut self, attrs: &mut Attributes, since_ns: u64) {
        self.enrich(attrs, false, Some(since_ns), Instant::now());
    }

    fn telemetry(&mut self, t: &mut Telemetry) {
        let now = Instant::now();
        match t {
            Telemetry::Metrics(m) => {
                for metric in &mut m.metrics {
                    match &mut metric.data {
                        MetricData::Sum { points, .. } | MetricData::Gauge { points } => {
                            for p in points {
                                self.enrich(&mut p.attributes, true, None, now);
                            }
                        }
                        MetricData::Histogram { points, .. } => {
                            for p in points {
                                self.enrich(&mut p.attributes, true, None, now);
                            }
                        }
                        MetricData::ExponentialHistogram { points, .. } => {
                            for p in points {
                                self.enrich(&mut p.attributes, true, None, now);
                            }
                        }
                    }
                }
            }
            Telemetry::Traces(t) => {
                for span in &mut t.spans {
                    self.enrich(&mut span.attributes, false, Some(span.start_time_ns), now);
                }
            }
        }
    }
}

/// The namespace a series or span is about: `periscope.netns.inode`, with
/// `periscope.netns.cookie` where the hook knew it (else 0, as the tables have it then).
fn netns_of(attrs: &Attributes) -> Option<NetnsId> {
    let inode = int(attrs, names::ATTR_NETNS_INODE).and_then(|v| u32::try_from(v).ok())?;
    let cookie = int(attrs, names::ATTR_NETNS_COOKIE)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    Some(NetnsId { inode, cookie })
}

fn int(attrs: &Attributes, key: &str) -> Option<i64> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value {
            AnyValue::Int(i) => Some(i),
            _ => None,
        })
}

fn string<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            AnyValue::String(s) => Some(s.as_ref()),
            _ => None,
        })
}

fn has(attrs: &Attributes, key: &str) -> bool {
    attrs.iter().any(|kv| kv.key == key)
}

/// Sets `key` to `value`, replacing a value already there.
fn set(attrs: &mut Attributes, key: &'static str, value: impl Into<AnyValue>) {
    let value = value.into();
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = value,
        None => attrs.push(KeyValue::new(key, value)),
    }
}

impl Processor for Identity {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(batch) => out.events(batch),
            Payload::Telemetry(mut t) => {
                self.telemetry(&mut t);
                out.telemetry(t);
            }
            Payload::Shared(t) => {
                let mut t = Arc::unwrap_or_clone(t);
                self.telemetry(&mut t);
                out.telemetry(t);
            }
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        self.processes.as_ref().map(|_| self.next_sweep)
    }

    fn tick(&mut self, now: Instant, _out: &mut Emitter) {
        if let Some(p) = self.processes.as_mut() {
            let gone = p.sweep(now);
            if gone > 0 {
                tracing::debug!(evicted = gone, "identity: processes exited or pids reused");
            }
        }
        self.next_sweep = now + self.sweep_interval;
    }
}

#[cfg(test)]
mod tests;
