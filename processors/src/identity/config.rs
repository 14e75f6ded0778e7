//! The `identity` processor's options.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};
use periscope_pipeline::telemetry::names;

/// Adds identity to telemetry: for each metric data point and span, the process behind
/// `process.pid` (executable name and path, owner, opt-in command line), the container and
/// pod behind `periscope.cgroup.id` or the process's cgroups (`container.id`,
/// `container.runtime`, `container.name`, `container.image.name`, `k8s.pod.uid`,
/// `k8s.pod.qos_class`), and the name of the namespace behind `periscope.netns.inode`. Series
/// with a 5-tuple and a namespace but no pid get their process from the socket table. Ids it
/// cannot resolve stay as they are (and count as errors of this processor). Series and spans
/// whose `destination.address` or `network.peer.address` was resolved in their namespace get
/// `dns.question.name` and `periscope.dns.server.address` from the table the `dns` processor
/// fills. Passes events on untouched; put it after `connections` and `flow`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Process attributes: `process.executable.name` (base name of `/proc/PID/exe`, replacing
    /// the 16-byte command name), `process.executable.path`, `process.owner` and, with
    /// `command_line: true`, `process.command_line`.
    #[serde(default)]
    pub process: ProcessOptions,
    /// Container and pod attributes: `container.id`, `container.runtime`, `container.name`,
    /// `container.image.name`, `k8s.pod.uid`, `k8s.pod.qos_class`, `periscope.cgroup.path`.
    #[serde(default)]
    pub container: ContainerOptions,
    /// Namespace attributes: `periscope.netns.name`.
    #[serde(default)]
    pub netns: NetnsOptions,
    /// Pod attributes from the Kubernetes API (`k8s.pod.name`, `k8s.namespace.name`, the
    /// pod's workload, opt-in labels and annotations) and, opt-in, the pod or Service at the
    /// other end of a flow or connection (`k8s.peer.*`); off by default.
    #[serde(default)]
    pub kubernetes: KubernetesOptions,
    /// Attribute names never added, e.g. `[process.owner, container.image.name]`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The attributes metric data points get (each one becomes a metric dimension); default:
    /// every enabled one. Spans always get every enabled attribute.
    #[serde(default)]
    pub metric_attributes: Option<Vec<String>>,
    /// Most entries in each cache (processes, containers, cgroups, namespaces); default 4096.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: NonZeroUsize,
    /// How long a process or container looked up (or found missing) stays cached before it
    /// is read again; default 60s.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: PositiveDuration,
    /// How often cached processes are checked against procfs: exited processes and reused
    /// pids (another start time) are evicted; default 5s.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: PositiveDuration,
    /// Shortest time between two walks of the cgroup hierarchy, or two scans of the namespace
    /// directories, that an unknown id triggers; default 100ms.
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval: ConfigDuration,
    /// Where procfs is mounted; default `/proc`.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
}

/// Process attributes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessOptions {
    /// Look processes up at all; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Add `process.command_line` (may hold secrets; high cardinality on metrics); default
    /// false.
    #[serde(default)]
    pub command_line: bool,
    /// For series without `process.pid` but with a `periscope.socket.cookie`, or a 5-tuple
    /// and a namespace (flows with `flow_attributes: true`), find the socket's owner in the
    /// socket table and add `process.pid` (and `periscope.cgroup.id`); default true.
    #[serde(default = "default_true")]
    pub from_sockets: bool,
}

/// Container and pod attributes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerOptions {
    /// Look containers and pods up at all; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The cgroup v2 mount walked to map cgroup ids to paths; default: found in
    /// `/proc/self/mountinfo`.
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    /// Docker's state directory, for `container.name` and `container.image.name` (from
    /// `containers/<id>/config.v2.json`); default `/var/lib/docker`.
    #[serde(default = "default_docker_root")]
    pub docker_root: PathBuf,
}

/// Namespace attributes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetnsOptions {
    /// Name namespaces at all; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Directories of namespace bind mounts whose file names name them; default
    /// `[/run/netns, /var/run/docker/netns]`.
    #[serde(default = "default_netns_dirs")]
    pub directories: Vec<PathBuf>,
    /// Name other namespaces after the container their processes are in (its name, else its
    /// id), found by scanning `/proc/*/ns/net`; series without a container of their own also
    /// get that container's attributes; default true.
    #[serde(default = "default_true")]
    pub containers: bool,
}

/// Pod metadata from the Kubernetes API.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesOptions {
    /// Watch the API at all; default false.
    #[serde(default)]
    pub enabled: bool,
    /// The node whose pods are watched (field selector `spec.nodeName`); default: the
    /// `K8S_NODE_NAME` environment variable (set it from the downward API).
    #[serde(default)]
    pub node_name: Option<String>,
    /// A kubeconfig file to reach the API with; default: the pod's service account when
    /// running in a cluster, else `KUBECONFIG`, else `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Pod label keys (or globs such as `app.kubernetes.io/*`) added as
    /// `k8s.pod.label.<key>`; default none.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Pod annotation keys (or globs) added as `k8s.pod.annotation.<key>`; default none.
    #[serde(default)]
    pub annotations: Vec<String>,
    /// Also watch every pod and Service of the cluster (their names and addresses only) and
    /// name the other end of flows and connections: `k8s.peer.pod.name`,
    /// `k8s.peer.namespace.name`, `k8s.peer.owner.kind`, `k8s.peer.owner.name`,
    /// `k8s.peer.service.name`; default false.
    #[serde(default)]
    pub peers: bool,
}

fn default_true() -> bool {
    true
}
fn default_cache_capacity() -> NonZeroUsize {
    const { NonZeroUsize::new(4096).unwrap() }
}
fn default_cache_ttl() -> PositiveDuration {
    PositiveDuration::from_secs(60)
}
fn default_sweep_interval() -> PositiveDuration {
    PositiveDuration::from_secs(5)
}
fn default_rescan_interval() -> ConfigDuration {
    ConfigDuration::from_millis(100)
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_docker_root() -> PathBuf {
    PathBuf::from("/var/lib/docker")
}
fn default_netns_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/run/netns"),
        PathBuf::from("/var/run/docker/netns"),
    ]
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            enabled: true,
            command_line: false,
            from_sockets: true,
        }
    }
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            enabled: true,
            cgroup_root: None,
            docker_root: default_docker_root(),
        }
    }
}

impl Default for NetnsOptions {
    fn default() -> Self {
        NetnsOptions {
            enabled: true,
            directories: default_netns_dirs(),
            containers: true,
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            process: ProcessOptions::default(),
            container: ContainerOptions::default(),
            netns: NetnsOptions::default(),
            kubernetes: KubernetesOptions::default(),
            exclude: Vec::new(),
            metric_attributes: None,
            cache_capacity: default_cache_capacity(),
            cache_ttl: default_cache_ttl(),
            sweep_interval: default_sweep_interval(),
            rescan_interval: default_rescan_interval(),
            proc_root: default_proc_root(),
        }
    }
}

/// Every attribute this processor can add.
pub const ATTRIBUTES: &[&str] = &[
    names::ATTR_PROCESS_PID,
    names::ATTR_PROCESS_NAME,
    names::ATTR_PROCESS_EXECUTABLE_PATH,
    names::ATTR_PROCESS_OWNER,
    names::ATTR_PROCESS_COMMAND_LINE,
    names::ATTR_CGROUP_ID,
    names::ATTR_CGROUP_PATH,
    names::ATTR_CONTAINER_ID,
    names::ATTR_CONTAINER_RUNTIME,
    names::ATTR_CONTAINER_NAME,
    names::ATTR_CONTAINER_IMAGE_NAME,
    names::ATTR_K8S_POD_UID,
    names::ATTR_K8S_POD_QOS_CLASS,
    names::ATTR_NETNS_NAME,
    names::ATTR_DNS_QUESTION_NAME,
    names::ATTR_DNS_SERVER_ADDRESS,
    names::ATTR_K8S_POD_NAME,
    names::ATTR_K8S_NAMESPACE_NAME,
    names::ATTR_K8S_NODE_NAME,
    names::ATTR_K8S_REPLICASET_NAME,
    names::ATTR_K8S_DEPLOYMENT_NAME,
    names::ATTR_K8S_STATEFULSET_NAME,
    names::ATTR_K8S_DAEMONSET_NAME,
    names::ATTR_K8S_JOB_NAME,
    names::ATTR_K8S_CRONJOB_NAME,
    names::ATTR_K8S_PEER_POD_NAME,
    names::ATTR_K8S_PEER_NAMESPACE_NAME,
    names::ATTR_K8S_PEER_OWNER_KIND,
    names::ATTR_K8S_PEER_OWNER_NAME,
    names::ATTR_K8S_PEER_SERVICE_NAME,
    names::ATTR_PEER_CONTAINER_NAME,
    names::ATTR_PEER_K8S_POD_NAME,
    names::ATTR_PEER_K8S_NAMESPACE_NAME,
];

/// The prefixes of the labels and annotations `kubernetes.labels` and
/// `kubernetes.annotations` add; `exclude` and `metric_attributes` may name such attributes.
pub const DYNAMIC_PREFIXES: &[&str] = &[names::ATTR_K8S_POD_LABEL, names::ATTR_K8S_POD_ANNOTATION];

impl ComponentConfig for IdentityConfig {
    const TYPE: &'static str = "identity";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut p = Vec::new();
        let check = |p: &mut Vec<Invalid>, path: &str, list: &[String]| {
            for (i, name) in list.iter().enumerate() {
                let dynamic = DYNAMIC_PREFIXES
                    .iter()
                    .any(|p| name.len() > p.len() && name.starts_with(p));
                if !ATTRIBUTES.contains(&name.as_str()) && !dynamic {
                    p.push(Invalid::new(
                        format!("{path}[{i}]"),
                        format!(
                            "`{name}` is not an attribute the identity processor adds; valid: {}, \
                             or `k8s.pod.label.<key>` / `k8s.pod.annotation.<key>`",
                            ATTRIBUTES.join(", ")
                        ),
                    ));
                }
            }
        };
        check(&mut p, "exclude", &self.exclude);
        if let Some(m) = &self.metric_attributes {
            check(&mut p, "metric_attributes", m);
        }
        let k = &self.kubernetes;
        for (what, list) in [("labels", &k.labels), ("annotations", &k.annotations)] {
            for (i, glob) in list.iter().enumerate() {
                if let Err(e) = globset::Glob::new(glob) {
                    p.push(Invalid::new(
                        format!("kubernetes.{what}[{i}]"),
                        format!("`{glob}` is not a key or glob ({e}); e.g. `app` or `app.kubernetes.io/*`"),
                    ));
                }
            }
        }
        if k.node_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            p.push(Invalid::new(
                "kubernetes.node_name",
                "empty; the node's name as the API knows it, e.g. `${env:K8S_NODE_NAME}`",
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}
