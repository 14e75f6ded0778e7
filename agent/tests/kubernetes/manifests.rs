//! The rendered kustomizations: valid Kubernetes objects, wired to each other, and to the
//! agent — its config passes `periscope validate`, every host path it needs is mounted and
//! nothing else, and the capabilities are exactly the measured set for its receivers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use periscope_receivers::shared::kernel::{smallest_grant, Need};
use periscope_receivers::{cgroup_skb, netdev, qdisc, sk_msg, sockops, tcp_udp, tcx, xdp};
use periscope_testkit::periscope::{describe_output, periscope_command};
use periscope_testkit::{output_with_timeout, test_name, TestDir};
use serde_json::Value;

use crate::render::{render, typed, Rendered, KUSTOMIZATIONS};

/// Every kustomization, rendered (none when kubectl is missing outside CI).
fn all(test: &str) -> Vec<Rendered> {
    KUSTOMIZATIONS
        .iter()
        .filter_map(|dir| render(test, dir))
        .collect()
}

/// The agent's config as JSON (the ConfigMap's YAML).
fn config(r: &Rendered) -> Value {
    serde_saphyr::from_str(&r.agent_config())
        .unwrap_or_else(|e| panic!("{}: the agent's config is not YAML: {e}", r.dir))
}

#[test]
fn every_object_is_a_kubernetes_api_object() {
    for r in all(test_name!()) {
        let mut kinds = BTreeSet::new();
        for o in &r.objects {
            let kind = o["kind"].as_str().unwrap_or_default();
            kinds.insert(kind.to_string());
            match kind {
                "Namespace" => drop(typed::<Namespace>(r.dir, o)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(r.dir, o)),
                "ClusterRole" => drop(typed::<ClusterRole>(r.dir, o)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(r.dir, o)),
                "ConfigMap" => drop(typed::<ConfigMap>(r.dir, o)),
                "DaemonSet" => drop(r.daemonset()),
                "Deployment" => drop(typed::<Deployment>(r.dir, o)),
                "Service" => drop(typed::<Service>(r.dir, o)),
                other => panic!("{}: unexpected kind {other}", r.dir),
            }
        }
        let want: BTreeSet<String> = [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Deployment",
            "Service",
        ]
        .map(String::from)
        .into();
        assert_eq!(kinds, want, "{}", r.dir);
    }
}

#[test]
fn the_daemonset_is_a_node_agent_without_privileged() {
    for r in all(test_name!()) {
        let ds = r.daemonset();
        let pod = ds.spec.template.spec.expect("pod spec");
        assert_eq!(pod.host_network, Some(true), "{}: hostNetwork", r.dir);
        assert_eq!(pod.host_pid, Some(true), "{}: hostPID", r.dir);
        assert_eq!(
            pod.dns_policy.as_deref(),
            Some("ClusterFirstWithHostNet"),
            "{}",
            r.dir
        );
        let sa = pod
            .service_account_name
            .clone()
            .expect("serviceAccountName");
        let binding: ClusterRoleBinding =
            typed(r.dir, r.object("ClusterRoleBinding", "periscope-agent"));
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("ServiceAccount", sa.as_str())
        );
        assert_eq!(
            subject.namespace.as_deref(),
            ds.metadata.namespace.as_deref()
        );
        // Read-only, pods and Services: what the Kubernetes metadata watches.
        let role: ClusterRole = typed(r.dir, r.object("ClusterRole", "periscope-agent"));
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 1, "{}", r.dir);
        let resources: BTreeSet<&str> = rules[0]
            .resources
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(resources, BTreeSet::from(["pods", "services"]));
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);

        let c = r.agent();
        let sc = c.security_context.clone().expect("securityContext");
        assert_ne!(sc.privileged, Some(true), "{}: privileged", r.dir);
        // The API server refuses allowPrivilegeEscalation: false with CAP_SYS_ADMIN.
        if r.capabilities().iter().any(|c| c == "CAP_SYS_ADMIN") {
            assert_ne!(sc.allow_privilege_escalation, Some(false), "{}", r.dir);
        }
        let env = |name: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path)
                .unwrap_or_else(|| panic!("{}: env {name} from the downward API", r.dir))
        };
        assert_eq!(env("K8S_NODE_NAME"), "spec.nodeName");
        assert_eq!(env("K8S_NODE_IP"), "status.hostIP");
        let resources = c.resources.clone().expect("resources");
        for what in ["cpu", "memory"] {
            assert!(
                resources
                    .requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key(what)),
                "{}: a {what} request",
                r.dir
            );
        }
        assert!(
            resources
                .limits
                .as_ref()
                .is_some_and(|l| l.contains_key("memory")),
            "{}: a memory limit",
            r.dir
        );

        // Probes on the Prometheus endpoint, which listens on the node's address.
        let cfg = config(&r);
        let listen = cfg["exporters"]["prometheus"]["listen"]
            .as_str()
            .expect("a prometheus listen address");
        assert!(
            listen.starts_with("${env:K8S_NODE_IP}:"),
            "{}: the kubelet probes the node's address, not {listen}",
            r.dir
        );
        let port: i32 = listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let named = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .expect("a port named metrics");
        assert_eq!(named.container_port, port, "{}", r.dir);
        for (what, probe) in [
            ("readiness", &c.readiness_probe),
            ("liveness", &c.liveness_probe),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.clone())
                .unwrap_or_else(|| panic!("{}: an HTTP {what} probe", r.dir));
            assert_eq!(
                serde_json::to_value(&get.port).expect("port"),
                "metrics",
                "{}: {what}",
                r.dir
            );
        }

        // The agents ship to the gateway's Service.
        let endpoint = cfg["exporters"]["otlp"]["endpoint"]
            .as_str()
            .expect("otlp endpoint");
        let svc: Service = typed(r.dir, r.object("Service", "periscope-gateway"));
        let ns = svc.metadata.namespace.clone().expect("namespace");
        let svc_port = svc
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| {
                p.into_iter()
                    .find(|p| p.name.as_deref() == Some("otlp-grpc"))
            })
            .expect("an otlp-grpc port")
            .port;
        assert_eq!(
            endpoint,
            format!("http://periscope-gateway.{ns}.svc:{svc_port}"),
            "{}",
            r.dir
        );
        // The ConfigMap mounted is the generated one.
        let cm_name = r.object("ConfigMap", "periscope-agent")["metadata"]["name"].clone();
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "config")
            .and_then(|v| v.config_map.clone())
            .expect("a config volume");
        assert_eq!(Value::from(volume.name), cm_name, "{}", r.dir);
    }
}

#[test]
fn the_agent_config_passes_periscope_validate() {
    let dir = TestDir::new(test_name!());
    for r in all(test_name!()) {
        let path = dir.write("agent.yaml", r.agent_config());
        let out = output_with_timeout(
            periscope_command()
                .args(["validate", "-c"])
                .arg(&path)
                .env("K8S_NODE_IP", "10.0.0.7")
                .env("K8S_NODE_NAME", "node-a"),
            std::time::Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}:\n{}",
            r.dir,
            describe_output(&out)
        );
    }
}

/// A receiver's options from the config (`{}` when it has none).
fn options<T: serde::de::DeserializeOwned>(id: &str, v: &Value) -> T {
    let v = if v.is_null() {
        Value::Object(Default::default())
    } else {
        v.clone()
    };
    serde_json::from_value(v).unwrap_or_else(|e| panic!("receiver {id}: {e}"))
}

/// A receiver of the config and what it needs.
struct Needs {
    id: String,
    capabilities: Vec<Need>,
    /// Paths in the container, each with whether it must follow mounts the host makes later.
    paths: Vec<(PathBuf, bool)>,
}

/// Every receiver of the config and what it needs.
fn receivers(cfg: &Value) -> Vec<Needs> {
    let mut out = Vec::new();
    for (id, v) in cfg["receivers"].as_object().expect("receivers") {
        let kind = id.split('/').next().unwrap_or(id);
        let bpffs = (PathBuf::from("/sys/fs/bpf"), true);
        let netns = (PathBuf::from("/run/netns"), true);
        let cgroup_path = |p: &Path| {
            // `root` inside a container is the container's own cgroup namespace.
            assert_ne!(
                p,
                Path::new("root"),
                "{id}: name the node's cgroup v2 mount, not `root`"
            );
            (p.to_path_buf(), false)
        };
        let netdev_paths = |scope: netdev::NamespacesConfig| {
            let mut paths = vec![bpffs.clone()];
            match scope {
                netdev::NamespacesConfig::Listed(l) if l.iter().all(|n| n == "host") => {}
                netdev::NamespacesConfig::Cgroup(c) => {
                    paths.push(netns.clone());
                    paths.push(cgroup_path(&c.cgroup));
                }
                _ => paths.push(netns.clone()),
            }
            paths
        };
        let (needs, paths) = match kind {
            "tcx" => {
                let c: tcx::TcxConfig = options(id, v);
                (c.capabilities(), netdev_paths(c.namespaces))
            }
            "xdp" => {
                let c: xdp::XdpConfig = options(id, v);
                (c.capabilities(), netdev_paths(c.namespaces))
            }
            "sockops" => {
                let c: sockops::SockopsConfig = options(id, v);
                (c.capabilities(), vec![cgroup_path(&c.cgroup)])
            }
            "sk_msg" => {
                let c: sk_msg::SkMsgConfig = options(id, v);
                (c.capabilities(), vec![cgroup_path(&c.cgroup)])
            }
            "cgroup_skb" => {
                let c: cgroup_skb::CgroupSkbConfig = options(id, v);
                (c.capabilities(), vec![cgroup_path(&c.cgroup)])
            }
            "tcp_udp" => {
                let c: tcp_udp::TcpUdpConfig = options(id, v);
                let tracefs = c
                    .drops
                    .then(|| (PathBuf::from("/sys/kernel/tracing"), false));
                (c.capabilities(), tracefs.into_iter().collect())
            }
            // Global tracepoints: no namespace, no cgroup; tracefs for the drop reasons.
            "qdisc" => {
                let c: qdisc::QdiscConfig = options(id, v);
                let tracefs = c
                    .drops
                    .then(|| (PathBuf::from("/sys/kernel/tracing"), false));
                (c.capabilities(), tracefs.into_iter().collect())
            }
            other => panic!("receiver {id}: type {other} is not a kernel receiver"),
        };
        out.push(Needs {
            id: id.clone(),
            capabilities: needs,
            paths,
        });
    }
    // `identity` maps cgroup ids to pods by walking the node's cgroup v2 hierarchy.
    for (id, v) in cfg["processors"].as_object().into_iter().flatten() {
        if id.split('/').next() == Some("identity") {
            let root = v["container"]["cgroup_root"].as_str().unwrap_or_else(|| {
                panic!("processor {id}: set container.cgroup_root to the node's cgroup mount")
            });
            out.push(Needs {
                id: id.clone(),
                capabilities: Vec::new(),
                paths: vec![(PathBuf::from(root), false)],
            });
        }
    }
    out
}

#[test]
fn every_host_path_the_config_needs_is_mounted_and_nothing_else() {
    for r in all(test_name!()) {
        let pod = r.daemonset().spec.template.spec.expect("pod spec");
        let c = r.agent();
        let host_mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
                let host = volume.host_path.as_ref()?.path.clone();
                Some((m.clone(), host))
            })
            .collect();
        let mut used = BTreeSet::new();
        for Needs { id, paths, .. } in receivers(&config(&r)) {
            for (path, follows) in paths {
                let (m, host) = host_mounts
                    .iter()
                    .find(|(m, _)| path.starts_with(&m.mount_path))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: receiver {id} needs {} mounted from the host",
                            r.dir,
                            path.display()
                        )
                    });
                used.insert(m.mount_path.clone());
                // Mounted where the agent looks, or (cgroups) the node's root somewhere.
                let rel = path.strip_prefix(&m.mount_path).expect("prefix");
                let on_host = Path::new(host).join(rel);
                if path.starts_with("/sys/fs/bpf") || path.starts_with("/run/netns") {
                    assert_eq!(on_host, path, "{}: {id}", r.dir);
                } else if !path.starts_with("/sys/kernel/tracing") {
                    assert_eq!(
                        on_host,
                        Path::new("/sys/fs/cgroup"),
                        "{}: {id}: the node's cgroup v2 root",
                        r.dir
                    );
                }
                if follows {
                    assert_eq!(
                        m.mount_propagation.as_deref(),
                        Some("HostToContainer"),
                        "{}: {} must show mounts the node makes later",
                        r.dir,
                        m.mount_path
                    );
                }
            }
        }
        let mounted: BTreeSet<String> = host_mounts
            .iter()
            .map(|(m, _)| m.mount_path.clone())
            .collect();
        assert_eq!(
            mounted, used,
            "{}: host paths mounted that the config does not need",
            r.dir
        );
    }
}

#[test]
fn the_capabilities_are_the_measured_set_for_the_config() {
    for r in all(test_name!()) {
        let needs: Vec<Need> = receivers(&config(&r))
            .into_iter()
            .flat_map(|n| n.capabilities)
            .collect();
        let want: BTreeSet<String> = smallest_grant(&needs)
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        let got: BTreeSet<String> = r.capabilities().into_iter().collect();
        assert_eq!(got, want, "{}: the DaemonSet's capabilities", r.dir);
    }
}

/// `qdisc` (queue delay, opt-in) is in neither kustomization. Added to either config it changes
/// no capability — CAP_BPF and CAP_PERFMON, measured (docs/deploy.md), which host-only grants
/// and CAP_SYS_ADMIN stands in for in the base — but its drop reasons need tracefs.
#[test]
fn adding_qdisc_changes_no_capability_and_needs_tracefs() {
    let grant = |cfg: &Value| -> BTreeSet<String> {
        let needs: Vec<Need> = receivers(cfg)
            .into_iter()
            .flat_map(|n| n.capabilities)
            .collect();
        smallest_grant(&needs)
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    };
    for r in all(test_name!()) {
        let mut cfg = config(&r);
        assert!(
            receivers(&cfg).iter().all(|n| !n.id.starts_with("qdisc")),
            "{}: the config enables qdisc: update docs/deploy.md and this test",
            r.dir
        );
        let before = grant(&cfg);
        cfg["receivers"]["qdisc"] = Value::Null;
        assert_eq!(grant(&cfg), before, "{}: with qdisc added", r.dir);
        let q = receivers(&cfg)
            .into_iter()
            .find(|n| n.id == "qdisc")
            .expect("qdisc");
        assert_eq!(
            q.paths,
            [(PathBuf::from("/sys/kernel/tracing"), false)],
            "{}",
            r.dir
        );
        cfg["receivers"]["qdisc"] = serde_json::json!({"drops": false});
        assert!(receivers(&cfg)
            .iter()
            .any(|n| n.id == "qdisc" && n.paths.is_empty()));
    }
}
