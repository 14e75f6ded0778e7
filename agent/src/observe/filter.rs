//! `periscope observe`'s filters, named as Hubble's: each option may be given several times
//! (any of its values matches); different options must all match.

use serde_json::Value;

/// Every filter of `observe` and `top`; empty lists match everything.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Filter {
    /// Only records of this Kubernetes pod (`k8s.pod.name`), on either side.
    #[arg(long)]
    pub pod: Vec<String>,
    /// Only records of this Kubernetes namespace (`k8s.namespace.name`).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// Only records whose source address is this IP.
    #[arg(long)]
    pub from_ip: Vec<String>,
    /// Only records whose destination address is this IP.
    #[arg(long)]
    pub to_ip: Vec<String>,
    /// Only records whose source port is this port.
    #[arg(long)]
    pub from_port: Vec<u16>,
    /// Only records whose destination port is this port.
    #[arg(long)]
    pub to_port: Vec<u16>,
    /// Only records sent by this pod (`source.k8s.pod.name`, or the pod of a transmitting
    /// device or a client connection).
    #[arg(long)]
    pub from_pod: Vec<String>,
    /// Only records received by this pod (`destination.k8s.pod.name`, or the pod of a
    /// receiving device or a server connection).
    #[arg(long)]
    pub to_pod: Vec<String>,
    /// Only this transport: tcp, udp, icmp, ... (`network.transport`).
    #[arg(long)]
    pub protocol: Vec<String>,
    /// Only records of this network interface (`network.interface.name`).
    #[arg(long)]
    pub interface: Vec<String>,
    /// Only these record types.
    #[arg(long = "type", value_enum)]
    pub kind: Vec<Kind>,
    /// Only records of this process (`process.executable.name`).
    #[arg(long)]
    pub process: Vec<String>,
    /// Only records of this process id.
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Only records of this container: its name, or its id or a prefix of it.
    #[arg(long)]
    pub container: Vec<String>,
    /// Only records of this network namespace: its name (`periscope.netns.name`) or inode.
    #[arg(long)]
    pub netns: Vec<String>,
}

/// The record types the observe stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Packets and bytes of a traffic series over one interval.
    Flow,
    /// A TCP connection (its span: open/close, process, RTT, bytes), or a count of connections
    /// opened/closed in one interval (`connections`).
    Connection,
    /// A DNS lookup.
    Dns,
    /// Packets the kernel dropped, by reason, over one interval.
    Drop,
    /// A microburst.
    Burst,
}

impl Kind {
    fn matches(self, kind: &str) -> bool {
        match self {
            Kind::Flow => kind == "flow",
            Kind::Connection => kind == "connection" || kind == "connections",
            Kind::Dns => kind == "dns",
            Kind::Drop => kind == "drop",
            Kind::Burst => kind == "burst",
        }
    }
}

fn text(r: &Value, field: &str) -> Option<String> {
    match r.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attr(r: &Value, key: &str) -> Option<String> {
    r.get("attributes")?
        .get(key)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// True when the option is unset or the value is one of its values.
fn any<T: PartialEq>(wanted: &[T], got: Option<T>) -> bool {
    wanted.is_empty() || got.is_some_and(|g| wanted.contains(&g))
}

/// Which side of the traffic the record's own pod is on.
fn sends(r: &Value) -> bool {
    text(r, "direction").as_deref() == Some("transmit")
        || text(r, "role").as_deref() == Some("client")
}

impl Filter {
    /// Whether a record passes every filter. Notices (`lost`, `error`) always pass.
    pub fn matches(&self, r: &Value) -> bool {
        let kind = text(r, "type").unwrap_or_default();
        if kind == "lost" || kind == "error" || kind == "live" {
            return true;
        }
        let port = |f: &str| {
            r.get(f)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        };
        let pod = text(r, "pod");
        let side_pod = |attribute: &str, sender: bool| {
            attr(r, attribute).or_else(|| pod.clone().filter(|_| sends(r) == sender))
        };
        (self.kind.is_empty() || self.kind.iter().any(|k| k.matches(&kind)))
            && any(&self.pod, pod.clone())
            && any(&self.namespace, text(r, "namespace"))
            && any(&self.from_ip, text(r, "src_ip"))
            && any(&self.to_ip, text(r, "dst_ip"))
            && any(&self.from_port, port("src_port"))
            && any(&self.to_port, port("dst_port"))
            && any(&self.from_pod, side_pod("source.k8s.pod.name", true))
            && any(&self.to_pod, side_pod("destination.k8s.pod.name", false))
            && any(
                &self
                    .protocol
                    .iter()
                    .map(|p| p.to_ascii_lowercase())
                    .collect::<Vec<_>>(),
                text(r, "protocol").map(|p| p.to_ascii_lowercase()),
            )
            && any(&self.interface, text(r, "interface"))
            && any(&self.process, text(r, "process"))
            && any(
                &self.pid,
                r.get("pid")
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok()),
            )
            && (self.container.is_empty()
                || self.container.iter().any(|c| {
                    text(r, "container").as_deref() == Some(c.as_str())
                        || text(r, "container_id")
                            .is_some_and(|id| !c.is_empty() && id.starts_with(c.as_str()))
                }))
            && (self.netns.is_empty()
                || self.netns.iter().any(|n| {
                    text(r, "netns").as_deref() == Some(n.as_str())
                        || text(r, "netns_inode").as_deref() == Some(n.as_str())
                }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flow() -> Value {
        json!({"type": "flow", "time_ns": 1, "netns": "ns-a", "netns_inode": 4026532000u64,
               "interface": "veth0", "direction": "transmit", "protocol": "udp",
               "src_ip": "10.1.0.1", "dst_ip": "10.1.0.2", "src_port": 4000, "dst_port": 53,
               "pod": "web-1", "namespace": "shop", "process": "curl", "pid": 42,
               "container": "web", "container_id": "3f2a9c", "packets": 3, "bytes": 300,
               "attributes": {}})
    }

    #[test]
    fn empty_matches_all_and_each_filter_selects() {
        let r = flow();
        assert!(Filter::default().matches(&r));
        let cases: Vec<(Filter, Filter)> = vec![
            (
                Filter {
                    pod: vec!["web-1".into()],
                    ..Default::default()
                },
                Filter {
                    pod: vec!["web-2".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    namespace: vec!["shop".into()],
                    ..Default::default()
                },
                Filter {
                    namespace: vec!["kube-system".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    from_ip: vec!["10.1.0.1".into()],
                    ..Default::default()
                },
                Filter {
                    from_ip: vec!["10.1.0.2".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    to_ip: vec!["10.1.0.2".into()],
                    ..Default::default()
                },
                Filter {
                    to_ip: vec!["10.1.0.1".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    from_port: vec![4000],
                    ..Default::default()
                },
                Filter {
                    from_port: vec![53],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    to_port: vec![53, 80],
                    ..Default::default()
                },
                Filter {
                    to_port: vec![4000],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    from_pod: vec!["web-1".into()],
                    ..Default::default()
                },
                Filter {
                    to_pod: vec!["web-1".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    protocol: vec!["UDP".into()],
                    ..Default::default()
                },
                Filter {
                    protocol: vec!["tcp".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    interface: vec!["veth0".into()],
                    ..Default::default()
                },
                Filter {
                    interface: vec!["eth0".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    kind: vec![Kind::Dns, Kind::Flow],
                    ..Default::default()
                },
                Filter {
                    kind: vec![Kind::Connection],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    process: vec!["curl".into()],
                    ..Default::default()
                },
                Filter {
                    process: vec!["cur".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    pid: vec![42],
                    ..Default::default()
                },
                Filter {
                    pid: vec![43],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    container: vec!["3f2a".into()],
                    ..Default::default()
                },
                Filter {
                    container: vec!["we".into()],
                    ..Default::default()
                },
            ),
            (
                Filter {
                    netns: vec!["4026532000".into()],
                    ..Default::default()
                },
                Filter {
                    netns: vec!["ns-b".into()],
                    ..Default::default()
                },
            ),
        ];
        for (yes, no) in cases {
            assert!(yes.matches(&r), "{yes:?}");
            assert!(!no.matches(&r), "{no:?}");
        }
    }

    #[test]
    fn filters_combine_with_and_and_miss_absent_fields() {
        let r = flow();
        let both = Filter {
            netns: vec!["ns-a".into()],
            to_port: vec![80],
            ..Default::default()
        };
        assert!(!both.matches(&r));
        let mut bare = flow();
        bare.as_object_mut().map(|o| o.remove("pod"));
        assert!(!Filter {
            pod: vec!["web-1".into()],
            ..Default::default()
        }
        .matches(&bare));
        let lost = json!({"type": "lost", "lost": 3});
        assert!(Filter {
            pod: vec!["x".into()],
            ..Default::default()
        }
        .matches(&lost));
    }
}
