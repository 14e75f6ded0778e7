//! The processor end to end over telemetry it is handed, against a fake cgroup tree, a fake
//! namespace directory, a fake Docker state directory and this test's own process.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use periscope_pipeline::component::ComponentConfig;
use periscope_pipeline::config::problems;
use periscope_pipeline::model::{
    Event, EventBatch, Metric, MetricsBatch, Number, NumberPoint, ProcessRef, SocketEvent, Span,
    SpanKind, SpanStatus, Temporality, TracesBatch,
};

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

struct Fixture {
    root: PathBuf,
    docker_cgroup: u64,
    pod_cgroup: u64,
    netns_inode: u32,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!(
            "periscope-identity-proc-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let docker = root.join(format!("cgroup/system.slice/docker-{ID}.scope"));
        let pod = root.join(format!(
            "cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        ));
        std::fs::create_dir_all(&docker).expect("mkdir");
        std::fs::create_dir_all(&pod).expect("mkdir");
        std::fs::create_dir_all(root.join("netns")).expect("mkdir");
        std::fs::write(root.join("netns/pod-a"), "").expect("netns file");
        let state = root.join(format!("docker/containers/{ID}"));
        std::fs::create_dir_all(&state).expect("mkdir");
        std::fs::write(
            state.join("config.v2.json"),
            r#"{"Name":"/checkout-1","Config":{"Image":"shop/checkout:2.1"}}"#,
        )
        .expect("state");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        Fixture {
            docker_cgroup: ino(&docker),
            pod_cgroup: ino(&pod),
            netns_inode: ino(&root.join("netns/pod-a")) as u32,
            root,
        }
    }

    fn config(&self) -> IdentityConfig {
        IdentityConfig {
            container: ContainerOptions {
                cgroup_root: Some(self.root.join("cgroup")),
                docker_root: self.root.join("docker"),
                ..ContainerOptions::default()
            },
            netns: NetnsOptions {
                directories: vec![self.root.join("netns")],
                containers: false,
                ..NetnsOptions::default()
            },
            ..IdentityConfig::default()
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn identity(config: &IdentityConfig, sockets: SocketTable) -> (Identity, Arc<ComponentCounters>) {
    let counters = Arc::new(ComponentCounters::default());
    (Identity::new(config, sockets, counters.clone()), counters)
}

fn span(attrs: Attributes) -> Telemetry {
    span_at(attrs, periscope_pipeline::telemetry::now_ns())
}

/// A span that began at `start_ns`.
fn span_at(attrs: Attributes, start_ns: u64) -> Telemetry {
    Telemetry::Traces(TracesBatch {
        resource: Default::default(),
        scope: Default::default(),
        spans: vec![Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: [0; 8],
            name: "tcp.connection".into(),
            kind: SpanKind::Client,
            start_time_ns: start_ns,
            end_time_ns: start_ns + 1,
            attributes: attrs,
            events: Vec::new(),
            status: SpanStatus::Unset,
        }],
    })
}

fn metric(attrs: Vec<Attributes>) -> Telemetry {
    Telemetry::Metrics(MetricsBatch {
        resource: Default::default(),
        scope: Default::default(),
        metrics: vec![Metric {
            name: "periscope.network.packets".into(),
            description: "".into(),
            unit: "{packet}".into(),
            data: MetricData::Sum {
                points: attrs
                    .into_iter()
                    .map(|attributes| NumberPoint {
                        attributes,
                        start_time_ns: 0,
                        time_ns: 1,
                        value: Number::Int(1),
                    })
                    .collect(),
                temporality: Temporality::Cumulative,
                monotonic: true,
            },
        }],
    })
}

fn run(p: &mut Identity, t: Telemetry) -> Vec<Attributes> {
    let mut out = Emitter::default();
    p.process(Payload::Telemetry(t), &mut out);
    let mut result = Vec::new();
    for payload in out.take() {
        match payload {
            Payload::Telemetry(Telemetry::Traces(t)) => {
                result.extend(t.spans.into_iter().map(|s| s.attributes))
            }
            Payload::Telemetry(Telemetry::Metrics(m)) => {
                for metric in m.metrics {
                    if let MetricData::Sum { points, .. } = metric.data {
                        result.extend(points.into_iter().map(|p| p.attributes));
                    }
                }
            }
            Payload::Events(_) | Payload::Shared(_) => panic!("no events expected"),
        }
    }
    result
}

fn get<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue::String(v.to_string().into()))
}

#[test]
fn events_pass_through_untouched() {
    let f = Fixture::new("events");
    let (mut p, _) = identity(&f.config(), SocketTable::default());
    let batch = EventBatch {
        events: vec![Event::Socket(SocketEvent::default())],
    };
    let mut out = Emitter::default();
    p.process(Payload::Events(batch.clone()), &mut out);
    assert_eq!(out.take(), vec![Payload::Events(batch)]);
}

#[test]
fn spans_get_process_container_and_namespace() {
    let f = Fixture::new("spans");
    let (mut p, counters) = identity(&f.config(), SocketTable::default());
    let me = std::process::id();
    let attrs = vec![
        KeyValue::new(names::ATTR_NETNS_INODE, i64::from(f.netns_inode)),
        KeyValue::new(names::ATTR_CGROUP_ID, f.docker_cgroup as i64),
        KeyValue::new(names::ATTR_PROCESS_PID, i64::from(me)),
        KeyValue::new(names::ATTR_PROCESS_NAME, "comm-16-bytes"),
    ];
    let out = run(&mut p, span(attrs));
    let a = &out[0];
    let exe = std::env::current_exe().expect("exe");
    let exe_name = exe
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        get(a, names::ATTR_PROCESS_NAME).cloned(),
        s(&exe_name),
        "replaced comm"
    );
    assert_eq!(
        get(a, names::ATTR_PROCESS_EXECUTABLE_PATH).cloned(),
        s(exe.to_str().expect("utf-8"))
    );
    assert!(get(a, names::ATTR_PROCESS_OWNER).is_some());
    assert!(get(a, names::ATTR_PROCESS_COMMAND_LINE).is_none(), "opt-in");
    assert_eq!(get(a, names::ATTR_CONTAINER_ID).cloned(), s(ID));
    assert_eq!(get(a, names::ATTR_CONTAINER_RUNTIME).cloned(), s("docker"));
    assert_eq!(get(a, names::ATTR_CONTAINER_NAME).cloned(), s("checkout-1"));
    assert_eq!(
        get(a, names::ATTR_CONTAINER_IMAGE_NAME).cloned(),
        s("shop/checkout")
    );
    assert_eq!(
        get(a, names::ATTR_CGROUP_PATH).cloned(),
        s(&format!("/system.slice/docker-{ID}.scope"))
    );
    assert_eq!(get(a, names::ATTR_NETNS_NAME).cloned(), s("pod-a"));
    assert!(get(a, names::ATTR_K8S_POD_UID).is_none());
    assert_eq!(counters.values().errors, 0);
    assert_eq!(p.failed_lookups(), FailedLookups::default());
}

#[test]
fn metric_points_get_pods_from_cgroup_ids_and_processes_from_the_socket_table() {
    let f = Fixture::new("metrics");
    let sockets = SocketTable::default();
    let me = std::process::id();
    let (a, b) = (
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    );
    sockets.learn(&SocketEvent {
        cookie: 9,
        netns: periscope_pipeline::model::NetnsId {
            inode: f.netns_inode,
            cookie: 0,
        },
        cgroup_id: f.pod_cgroup,
        process: ProcessRef {
            pid: me,
            tid: me,
            comm: *b"tester\0\0\0\0\0\0\0\0\0\0",
        },
        transport: Transport::Tcp,
        local_addr: a,
        local_port: 40000,
        remote_addr: b,
        remote_port: 80,
        ..SocketEvent::default()
    });
    let (mut p, _) = identity(&f.config(), sockets);
    // A span with the socket's cookie but no process (a server's accepted socket, say).
    let by_cookie = run(
        &mut p,
        span(vec![KeyValue::new(names::ATTR_SOCKET_COOKIE, 9i64)]),
    );
    assert_eq!(
        get(&by_cookie[0], names::ATTR_PROCESS_PID).cloned(),
        Some(AnyValue::Int(i64::from(me)))
    );
    assert_eq!(
        get(&by_cookie[0], names::ATTR_CONTAINER_RUNTIME).cloned(),
        s("cri-o")
    );
    let unknown_cookie = vec![KeyValue::new(names::ATTR_SOCKET_COOKIE, 10i64)];
    assert_eq!(run(&mut p, span(unknown_cookie.clone()))[0], unknown_cookie);
    let cgroup_point = vec![
        KeyValue::new(names::ATTR_CGROUP_ID, f.pod_cgroup as i64),
        KeyValue::new(names::ATTR_IO_DIRECTION, "transmit"),
    ];
    // A received packet: the socket's remote end is the packet's source.
    let flow_point = vec![
        KeyValue::new(names::ATTR_NETNS_INODE, i64::from(f.netns_inode)),
        KeyValue::new(names::ATTR_TRANSPORT, "tcp"),
        KeyValue::new(names::ATTR_SOURCE_ADDRESS, "10.0.0.2"),
        KeyValue::new(names::ATTR_SOURCE_PORT, 80i64),
        KeyValue::new(names::ATTR_DESTINATION_ADDRESS, "10.0.0.1"),
        KeyValue::new(names::ATTR_DESTINATION_PORT, 40000i64),
    ];
    let out = run(&mut p, metric(vec![cgroup_point, flow_point]));
    let c = &out[0];
    assert_eq!(get(c, names::ATTR_CONTAINER_ID).cloned(), s(ID));
    assert_eq!(get(c, names::ATTR_CONTAINER_RUNTIME).cloned(), s("cri-o"));
    assert_eq!(get(c, names::ATTR_K8S_POD_UID).cloned(), s(UID));
    assert_eq!(
        get(c, names::ATTR_K8S_POD_QOS_CLASS).cloned(),
        s("besteffort")
    );
    assert!(get(c, names::ATTR_CONTAINER_NAME).is_none(), "not Docker's");
    let fl = &out[1];
    assert_eq!(
        get(fl, names::ATTR_PROCESS_PID).cloned(),
        Some(AnyValue::Int(i64::from(me)))
    );
    assert_eq!(
        get(fl, names::ATTR_CGROUP_ID).cloned(),
        Some(AnyValue::Int(f.pod_cgroup as i64))
    );
    assert_eq!(get(fl, names::ATTR_K8S_POD_UID).cloned(), s(UID));
    assert!(get(fl, names::ATTR_PROCESS_EXECUTABLE_PATH).is_some());
    assert_eq!(get(fl, names::ATTR_NETNS_NAME).cloned(), s("pod-a"));
}

#[test]
fn unknown_ids_degrade_to_the_ids_and_are_counted_once() {
    let f = Fixture::new("unknown");
    let (mut p, counters) = identity(&f.config(), SocketTable::default());
    let attrs = vec![
        KeyValue::new(names::ATTR_NETNS_INODE, 4_000_000_000i64),
        KeyValue::new(names::ATTR_CGROUP_ID, 123_456_789i64),
        KeyValue::new(names::ATTR_PROCESS_PID, 2_000_000_000i64),
        KeyValue::new(names::ATTR_PROCESS_NAME, "gone"),
    ];
    for _ in 0..3 {
        let out = run(&mut p, span(attrs.clone()));
        assert_eq!(out[0], attrs, "unchanged");
    }
    assert_eq!(
        p.failed_lookups(),
        FailedLookups {
            processes: 1,
            cgroups: 1,
            namespaces: 1,
            pods: 0
        }
    );
    assert_eq!(counters.values().errors, 3);
    // Garbage values of the wrong type or range are ignored.
    let garbage = vec![
        KeyValue::new(names::ATTR_NETNS_INODE, "x"),
        KeyValue::new(names::ATTR_CGROUP_ID, -1i64),
        KeyValue::new(names::ATTR_PROCESS_PID, i64::MIN),
        KeyValue::new(names::ATTR_TRANSPORT, "tcp"),
        KeyValue::new(names::ATTR_SOURCE_ADDRESS, "not an address"),
        KeyValue::new(names::ATTR_SOURCE_PORT, 70000i64),
    ];
    assert_eq!(run(&mut p, span(garbage.clone()))[0], garbage);
}

#[test]
fn exclude_and_metric_attributes_choose_what_is_added() {
    let f = Fixture::new("choose");
    let config = IdentityConfig {
        exclude: vec![names::ATTR_CONTAINER_IMAGE_NAME.to_string()],
        metric_attributes: Some(vec![names::ATTR_CONTAINER_ID.to_string()]),
        process: ProcessOptions {
            command_line: true,
            ..ProcessOptions::default()
        },
        ..f.config()
    };
    assert!(config.validate().is_ok());
    let (mut p, _) = identity(&config, SocketTable::default());
    let attrs = vec![
        KeyValue::new(names::ATTR_NETNS_INODE, i64::from(f.netns_inode)),
        KeyValue::new(names::ATTR_CGROUP_ID, f.docker_cgroup as i64),
        KeyValue::new(names::ATTR_PROCESS_PID, i64::from(std::process::id())),
    ];
    let sp = &run(&mut p, span(attrs.clone()))[0];
    assert!(
        get(sp, names::ATTR_CONTAINER_IMAGE_NAME).is_none(),
        "excluded"
    );
    assert_eq!(
        get(sp, names::ATTR_CONTAINER_NAME).cloned(),
        s("checkout-1")
    );
    assert!(
        get(sp, names::ATTR_PROCESS_COMMAND_LINE).is_some(),
        "opted in"
    );
    let m = &run(&mut p, metric(vec![attrs.clone()]))[0];
    let added: Vec<&str> = m[attrs.len()..].iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(added, vec![names::ATTR_CONTAINER_ID]);
    // Everything off: nothing changes.
    let off = IdentityConfig {
        process: ProcessOptions {
            enabled: false,
            ..ProcessOptions::default()
        },
        container: ContainerOptions {
            enabled: false,
            ..ContainerOptions::default()
        },
        netns: NetnsOptions {
            enabled: false,
            ..NetnsOptions::default()
        },
        ..IdentityConfig::default()
    };
    let (mut p, _) = identity(&off, SocketTable::default());
    assert_eq!(run(&mut p, span(attrs.clone()))[0], attrs);
}

#[test]
fn validation_names_unknown_attributes_and_bad_values() {
    // As `periscope validate` reads it: `validate`'s problems and the values the option types
    // refuse, all at once.
    let problems = problems::<IdentityConfig>(
        "exclude: [container.idd, k8s.pod.label.app, k8s.pod.label.]
metric_attributes: [k8s.pod.nam, k8s.pod.name, k8s.peer.pod.name]
cache_capacity: 0
sweep_interval: 0s
kubernetes: {node_name: ' ', labels: [app, 'a[b'], annotations: ['x/*']}
",
    );
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "exclude[0]",
            "exclude[2]",
            "metric_attributes[0]",
            "cache_capacity",
            "sweep_interval",
            "kubernetes.labels[1]",
            "kubernetes.node_name"
        ]
    );
    assert!(problems[0].message.contains("container.id,"));
    assert!(IdentityConfig::default().validate().is_ok());
}

#[test]
fn namespaces_are_named_by_cookie_from_what_was_captured_while_they_were_alive() {
    let f = Fixture::new("captured");
    let namespaces = periscope_pipeline::NamespaceTable::default();
    let (p, _) = identity(&f.config(), SocketTable::default());
    let mut p = p.with_namespaces(namespaces.clone());
    let inode = 4026532500u32;
    let pod_cgroup = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    );
    let a = NetnsId { inode, cookie: 41 };
    let b = NetnsId { inode, cookie: 42 };
    namespaces.insert(
        a,
        periscope_pipeline::NamespaceInfo {
            name: Some("pod-a".into()),
            cgroup: Some(pod_cgroup),
            cgroup_late: false,
        },
    );
    // pod-a is deleted, its inode goes to pod-b.
    namespaces.retire(&a);
    namespaces.insert(
        b,
        periscope_pipeline::NamespaceInfo {
            name: Some("pod-b".into()),
            cgroup: None,
            cgroup_late: false,
        },
    );
    let point = |cookie: i64| {
        vec![
            KeyValue::new(names::ATTR_NETNS_INODE, i64::from(inode)),
            KeyValue::new(names::ATTR_NETNS_COOKIE, cookie),
        ]
    };
    let out = run(&mut p, metric(vec![point(41), point(42)]));
    assert_eq!(get(&out[0], names::ATTR_NETNS_NAME).cloned(), s("pod-a"));
    assert_eq!(get(&out[0], names::ATTR_K8S_POD_UID).cloned(), s(UID));
    assert_eq!(get(&out[1], names::ATTR_NETNS_NAME).cloned(), s("pod-b"));
    assert!(get(&out[1], names::ATTR_K8S_POD_UID).is_none());
    // A name the series captured itself stays.
    let mut own = point(42);
    own.push(KeyValue::new(names::ATTR_NETNS_NAME, "captured"));
    let out = run(&mut p, metric(vec![own]));
    assert_eq!(get(&out[0], names::ATTR_NETNS_NAME).cloned(), s("captured"));
}

#[test]
fn a_span_older_than_its_pids_process_keeps_what_the_kernel_reported() {
    let f = Fixture::new("reused-pid");
    let (mut p, _) = identity(&f.config(), SocketTable::default());
    let me = i64::from(std::process::id());
    let attrs = || {
        vec![
            KeyValue::new(names::ATTR_PROCESS_PID, me),
            KeyValue::new(names::ATTR_PROCESS_NAME, "old-comm"),
        ]
    };
    // This process started long after 2001: a span from then was another process's.
    let out = run(&mut p, span_at(attrs(), 1_000_000_000_000_000_000));
    assert_eq!(
        get(&out[0], names::ATTR_PROCESS_NAME).cloned(),
        s("old-comm")
    );
    assert!(get(&out[0], names::ATTR_PROCESS_EXECUTABLE_PATH).is_none());
    let out = run(&mut p, span(attrs()));
    assert!(
        get(&out[0], names::ATTR_PROCESS_EXECUTABLE_PATH).is_some(),
        "a span of now is this process's"
    );
}

/// A server's accepted socket has no process, and on a cgroup v1/hybrid host a cgroup id the
/// agent cannot walk to: its namespace's container names it. A cgroup that resolves to no
/// container (a host process that entered the namespace) keeps it unnamed.
#[test]
fn an_accepted_socket_with_an_unknown_cgroup_takes_its_namespaces_container() {
    let f = Fixture::new("accepted");
    let host = f.root.join("cgroup/user.slice");
    std::fs::create_dir_all(&host).expect("mkdir");
    let host_cgroup = std::fs::metadata(&host).expect("stat").ino();
    // pid 7 of a fake /proc lives in Docker container ID, in namespace 4026533111.
    let proc_root = f.root.join("proc");
    let ns_inode = 4_026_533_111u32;
    std::fs::create_dir_all(proc_root.join("7/ns")).expect("mkdir");
    std::os::unix::fs::symlink(format!("net:[{ns_inode}]"), proc_root.join("7/ns/net"))
        .expect("link");
    std::fs::write(
        proc_root.join("7/cgroup"),
        format!("12:memory:/docker/{ID}\n0::/system.slice/docker-{ID}.scope\n"),
    )
    .expect("cgroup");
    let mut config = f.config();
    config.proc_root = proc_root;
    config.netns.containers = true;
    let (mut p, _) = identity(&config, SocketTable::default());
    let attrs = |cgroup: u64| {
        vec![
            KeyValue::new(names::ATTR_NETNS_INODE, i64::from(ns_inode)),
            KeyValue::new(names::ATTR_CGROUP_ID, cgroup as i64),
        ]
    };
    let unknown = run(&mut p, span(attrs(987_654_321)));
    assert_eq!(get(&unknown[0], names::ATTR_CONTAINER_ID).cloned(), s(ID));
    assert_eq!(
        get(&unknown[0], names::ATTR_CONTAINER_NAME).cloned(),
        s("checkout-1")
    );
    let host_process = run(&mut p, span(attrs(host_cgroup)));
    assert!(
        get(&host_process[0], names::ATTR_CONTAINER_ID).is_none(),
        "{host_process:?}"
    );
    // A series (no cgroup, no process) in that namespace: its container, as before.
    let series = run(
        &mut p,
        span(vec![KeyValue::new(
            names::ATTR_NETNS_INODE,
            i64::from(ns_inode),
        )]),
    );
    assert_eq!(get(&series[0], names::ATTR_CONTAINER_ID).cloned(), s(ID));
}

/// A node-side veth's series carries the ids of its peer namespace's container and pod (the
/// flow processor captured them with the series): identity names them, by id only.
#[test]
fn a_node_side_devices_peer_container_is_named_from_its_id() {
    let f = Fixture::new("peer");
    let config = f.config();
    let (mut p, _) = identity(&config, SocketTable::default());
    let series = |id: &str| {
        metric(vec![vec![
            KeyValue::new(names::ATTR_NETNS_INODE, i64::from(f.netns_inode)),
            KeyValue::new(names::ATTR_PEER_NETNS_INODE, 4_026_533_222i64),
            KeyValue::new(names::ATTR_PEER_CONTAINER_ID, id.to_string()),
        ]])
    };
    let out = run(&mut p, series(ID));
    let a = &out[0];
    assert_eq!(
        get(a, names::ATTR_PEER_CONTAINER_NAME).cloned(),
        s("checkout-1")
    );
    // The device's own namespace keeps its own name; no container of its own.
    assert_eq!(get(a, names::ATTR_NETNS_NAME).cloned(), s("pod-a"));
    assert!(get(a, names::ATTR_CONTAINER_ID).is_none(), "{a:?}");
    // An id the runtime does not know: nothing added.
    let other = "f".repeat(64);
    let none = run(&mut p, series(&other));
    assert!(get(&none[0], names::ATTR_PEER_CONTAINER_NAME).is_none());
    // Excluded: not added.
    let mut off = config.clone();
    off.exclude = vec![names::ATTR_PEER_CONTAINER_NAME.to_string()];
    let (mut p, _) = identity(&off, SocketTable::default());
    let out = run(&mut p, series(ID));
    assert!(get(&out[0], names::ATTR_PEER_CONTAINER_NAME).is_none());
}

/// A namespace whose cgroup was learned after it was reported (its first process came later)
/// does not name the namespace's own series: their first points went out without it.
#[test]
fn a_cgroup_learned_late_names_the_namespaces_series_only_if_none_was_named_before() {
    let f = Fixture::new("late");
    let pod_cgroup = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    );
    let netns = NetnsId {
        inode: 4_026_533_500,
        cookie: 9,
    };
    // The cgroup is learned late (`late`) after a series of the namespace was named (`named`)
    // or before; the uid of the point named after it.
    let run_with = |late: bool, named_before: bool| {
        let table = NamespaceTable::default();
        let info = |cgroup: Option<String>| periscope_pipeline::NamespaceInfo {
            name: Some("cni-1".into()),
            cgroup,
            cgroup_late: late,
        };
        table.insert(netns, info(None));
        let (p, _) = identity(&f.config(), SocketTable::default());
        let mut p = p.with_namespaces(table.clone());
        let point = || {
            metric(vec![vec![
                KeyValue::new(names::ATTR_NETNS_INODE, i64::from(netns.inode)),
                KeyValue::new(names::ATTR_NETNS_COOKIE, 9i64),
            ]])
        };
        if named_before {
            let first = run(&mut p, point());
            assert!(get(&first[0], names::ATTR_K8S_POD_UID).is_none());
        }
        table.insert(netns, info(Some(pod_cgroup.clone())));
        get(&run(&mut p, point())[0], names::ATTR_K8S_POD_UID).cloned()
    };
    assert_eq!(run_with(false, false), s(UID));
    assert_eq!(run_with(false, true), s(UID));
    // Late, before any series was named: as good as captured at discovery.
    assert_eq!(run_with(true, false), s(UID));
    // Late, after: the namespace's series keep the attributes they had.
    assert_eq!(run_with(true, true), None);
}
