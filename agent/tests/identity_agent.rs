//! The `identity` processor in the real agent, end to end: `periscope run` with the `sockops`,
//! `tcp_udp`, `cgroup_skb` and `tcx` receivers and `processors: [connections, flow, identity]`,
//! exporting metrics and traces to files.
//!
//! The test builds what a container host looks like from the kernel's side:
//!
//! - three network namespaces made with `ip netns add`: a server, a "Docker container" and a
//!   "Kubernetes pod", the two clients joined to the server by veth pairs;
//! - cgroup v2 directories under a test-specific parent, shaped like Docker's
//!   (`docker-<64 hex>.scope`) and like a burstable pod's container under containerd's CRI
//!   (`kubepods-burstable-pod<uid with _>.slice/cri-containerd-<64 hex>.scope`);
//! - a Docker state directory holding the "container"'s `config.v2.json` (name and image).
//!
//! A Python client in each cgroup and namespace opens connections to the server, then stays
//! alive. Every CLIENT connection span of each must carry the container id and runtime the
//! cgroup path encodes (and for the pod its uid and QoS class; for Docker the name and image
//! from the state file), the client's executable name and path as `/proc/PID/exe` says while
//! it runs, its owner, and the `ip netns` name of its namespace. The `periscope.cgroup.packets`
//! series of each cgroup must carry the same container and pod, and the packet-level flows
//! (`tcx` records aggregated per 5-tuple by `flow` with `flow_attributes: true`) of each
//! client connection must carry the client's pid, executable, container and pod, found
//! through the socket table from the 5-tuple and namespace alone.
//!
//! Cleans up (kills the clients, removes the cgroups and namespaces) also when it fails, and
//! uses fresh names each run. Needs root, `ip` and `python3`; skips otherwise, except under CI.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use periscope_receivers::socket::find_cgroup2;
use periscope_testkit::cgroup::{command_in, container_id, inode, pod_uid, Cgroups};
use periscope_testkit::otlp::{read_metrics, read_spans, sum_series, Series, Span};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{eventually, output_with_timeout, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::{require_root_and_tools, test_name, veth_pair, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip", "python3"];
const PORT: u16 = 9310;
const CONNECTIONS: usize = 8;

/// What the server does with each connection (see `tcp_server`).
const SERVER_PER_CONNECTION: &str = r#"
c.recv(64)
c.sendall(b"ok")
c.close()
"#;

const CLIENT: &str = r#"
import os, socket, sys, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ports = []
for _ in range(n):
    s = socket.socket()
    s.connect((dst, port))
    ports.append(s.getsockname()[1])
    s.sendall(b"hello")
    s.recv(16)
    s.close()
    time.sleep(0.01)
print(os.getpid(), " ".join(map(str, ports)), flush=True)
time.sleep(600)
"#;

fn metric_series(path: &Path, metric: &str) -> Vec<Series> {
    sum_series(&read_metrics(path), metric)
}

/// A client process in a cgroup and a namespace.
struct Client {
    process: Background,
    pid: u32,
    ports: Vec<i64>,
    exe: String,
    netns: String,
    netns_inode: i64,
    cgroup_id: i64,
}

fn start_client(cgroup: &Path, ns: &Netns, script: &Path, server: &str) -> Client {
    let mut process = Background::spawn(
        command_in(cgroup, ns, "python3")
            .arg(script)
            .arg(server)
            .arg(PORT.to_string())
            .arg(CONNECTIONS.to_string()),
        "client",
    );
    process.wait_until(Duration::from_secs(30), "its connections", |p| {
        p.stdout().contains('\n')
    });
    let out = process.stdout();
    let mut fields = out.split_whitespace();
    let pid: u32 = fields
        .next()
        .and_then(|p| p.parse().ok())
        .expect("client pid");
    let ports: Vec<i64> = fields.map(|p| p.parse().expect("port")).collect();
    assert_eq!(ports.len(), CONNECTIONS, "client output: {out}");
    assert_eq!(pid, process.pid(), "sh and ip exec the client: one pid");
    // The ground truth: what the kernel says the client runs, read while it runs.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .expect("readlink /proc/PID/exe")
        .to_string_lossy()
        .into_owned();
    let in_cgroup = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("cgroup.procs");
    assert!(
        in_cgroup.split_whitespace().any(|p| p == pid.to_string()),
        "client {pid} not in {}",
        cgroup.display()
    );
    Client {
        process,
        pid,
        ports,
        exe,
        netns: ns.name().to_string(),
        netns_inode: ns.inode() as i64,
        cgroup_id: inode(cgroup) as i64,
    }
}

/// What one client's telemetry must carry.
struct Expected<'a> {
    container_id: &'a str,
    runtime: &'a str,
    pod: Option<(&'a str, &'a str)>,
    name_and_image: Option<(&'a str, &'a str)>,
    cgroup_leaf: String,
}

fn check_spans(rows: &[Span], c: &Client, e: &Expected) -> Result<(), String> {
    let mine: BTreeMap<i64, &Span> = rows
        .iter()
        .filter(|s| {
            s.kind == 3 && s.text("periscope.netns.inode") == Some(c.netns_inode.to_string())
        })
        .filter_map(|s| Some((s.text("network.local.port")?.parse().ok()?, s)))
        .collect();
    let exe_name = Path::new(&c.exe)
        .file_name()
        .expect("exe name")
        .to_string_lossy()
        .into_owned();
    for port in &c.ports {
        let s = mine
            .get(port)
            .ok_or_else(|| format!("no client span for port {port} of {}", c.netns))?;
        let want: Vec<(&str, Option<String>)> = vec![
            ("process.pid", Some(c.pid.to_string())),
            ("periscope.cgroup.id", Some(c.cgroup_id.to_string())),
            ("process.executable.name", Some(exe_name.clone())),
            ("process.executable.path", Some(c.exe.clone())),
            ("process.owner", Some("root".to_string())),
            ("periscope.netns.name", Some(c.netns.clone())),
            ("container.id", Some(e.container_id.to_string())),
            ("container.runtime", Some(e.runtime.to_string())),
            ("k8s.pod.uid", e.pod.map(|p| p.0.to_string())),
            ("k8s.pod.qos_class", e.pod.map(|p| p.1.to_string())),
            ("container.name", e.name_and_image.map(|n| n.0.to_string())),
            (
                "container.image.name",
                e.name_and_image.map(|n| n.1.to_string()),
            ),
        ];
        for (key, value) in want {
            if s.text(key) != value {
                return Err(format!(
                    "span of port {port} in {}: {key} is {:?}, want {value:?}; span: {:?}",
                    c.netns,
                    s.text(key),
                    s.texts()
                ));
            }
        }
        let path = s.text("periscope.cgroup.path").unwrap_or_default();
        if !path.ends_with(&e.cgroup_leaf) {
            return Err(format!(
                "cgroup path {path:?} does not end in {}",
                e.cgroup_leaf
            ));
        }
        if s.text("process.command_line").is_some() {
            return Err("process.command_line is opt-in".into());
        }
    }
    Ok(())
}

fn check_cgroup_series(series: &[Series], c: &Client, e: &Expected) -> Result<(), String> {
    let id = c.cgroup_id.to_string();
    let mine: Vec<&Series> = series
        .iter()
        .filter(|s| s.attr("periscope.cgroup.id") == Some(id.as_str()))
        .collect();
    let enriched: Vec<&&Series> = mine
        .iter()
        .filter(|s| s.attr("container.id").is_some())
        .collect();
    if enriched.is_empty() {
        return Err(format!(
            "no enriched periscope.cgroup.packets series for cgroup {id}: {mine:?}"
        ));
    }
    for s in &enriched {
        let ok = s.attr("container.id") == Some(e.container_id)
            && s.attr("container.runtime") == Some(e.runtime)
            && s.attr("k8s.pod.uid") == e.pod.map(|p| p.0)
            && s.attr("k8s.pod.qos_class") == e.pod.map(|p| p.1);
        if !ok {
            return Err(format!("cgroup {id}: wrong identity on {s:?}"));
        }
    }
    let packets: i64 = enriched.iter().map(|s| s.value).sum();
    if packets == 0 {
        return Err(format!("cgroup {id}: no packets counted"));
    }
    Ok(())
}

fn check_flows(series: &[Series], c: &Client, e: &Expected) -> Result<(), String> {
    let ns = c.netns_inode.to_string();
    let pid = c.pid.to_string();
    let exe_name = Path::new(&c.exe)
        .file_name()
        .expect("exe name")
        .to_string_lossy()
        .into_owned();
    for port in &c.ports {
        let port = port.to_string();
        let mine: Vec<&Series> = series
            .iter()
            .filter(|s| {
                s.attr("periscope.netns.inode") == Some(ns.as_str())
                    && s.attr("network.transport") == Some("tcp")
                    && s.attr("source.port") == Some(port.as_str())
            })
            .collect();
        let enriched: Vec<&&Series> = mine
            .iter()
            .filter(|s| s.attr("process.pid").is_some())
            .collect();
        if enriched.is_empty() {
            return Err(format!(
                "no flow series of port {port} in {} with a process: {mine:?}",
                c.netns
            ));
        }
        for s in enriched {
            let ok = s.attr("process.pid") == Some(pid.as_str())
                && s.attr("periscope.cgroup.id") == Some(c.cgroup_id.to_string().as_str())
                && s.attr("process.executable.name") == Some(exe_name.as_str())
                && s.attr("process.executable.path") == Some(c.exe.as_str())
                && s.attr("container.id") == Some(e.container_id)
                && s.attr("container.runtime") == Some(e.runtime)
                && s.attr("k8s.pod.uid") == e.pod.map(|p| p.0)
                && s.attr("periscope.netns.name") == Some(c.netns.as_str());
            if !ok || s.value == 0 {
                return Err(format!(
                    "flow of port {port} in {}: wrong identity on {s:?}",
                    c.netns
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn identity_names_processes_containers_pods_and_namespaces() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let dir = TestDir::new("identity_agent");
    let cg2 = find_cgroup2().expect("a cgroup v2 mount");

    // Namespaces: a server, a "Docker container" and a "pod", made before the agent starts.
    let srv = Netns::new();
    let dk = Netns::new();
    let pd = Netns::new();
    for ns in [&srv, &dk, &pd] {
        ns.disable_ipv6();
    }
    veth_pair(&dk, "id0", "10.215.1.1/24", &srv, "is0", "10.215.1.2/24");
    veth_pair(&pd, "id1", "10.215.2.1/24", &srv, "is1", "10.215.2.2/24");

    // cgroups shaped like Docker's and like a burstable pod's CRI container.
    let salt = RUN.fetch_add(1, Ordering::Relaxed) as u64;
    let docker_id = container_id(salt * 2 + 1);
    let cri_id = container_id(salt * 2 + 2);
    let uid_hex = container_id(salt * 2 + 3);
    let pod_uid = pod_uid(&uid_hex);
    let mut tree = Cgroups::new();
    let parent = tree.mkdir(cg2.join(format!(
        "periscope-identity-{}-{salt}.slice",
        std::process::id()
    )));
    let docker_leaf = format!("docker-{docker_id}.scope");
    let docker_cgroup = tree.mkdir(parent.join(&docker_leaf));
    let pod_slice = tree.mkdir(parent.join(format!(
        "kubepods-burstable-pod{}.slice",
        pod_uid.replace('-', "_")
    )));
    let cri_leaf = format!("cri-containerd-{cri_id}.scope");
    let cri_cgroup = tree.mkdir(pod_slice.join(&cri_leaf));

    // Docker's state on disk for the "container".
    let docker_root = dir.join("docker");
    let state = docker_root.join("containers").join(&docker_id);
    std::fs::create_dir_all(&state).expect("mkdir docker state");
    std::fs::write(
        state.join("config.v2.json"),
        format!(r#"{{"ID":"{docker_id}","Name":"/web-1","Config":{{"Image":"nginx:1.25","Cmd":["nginx"]}},"State":{{"Running":true}}}}"#),
    )
    .expect("write config.v2.json");

    let metrics_out = dir.join("metrics.jsonl");
    let traces_out = dir.join("traces.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms}}\n  cgroup_skb: {{counters_interval: 200ms}}\n  \
             tcx: {{namespaces: [{}, {}], interfaces: {{include: [id0, id1]}}, direction: [egress], counters_interval: 200ms}}\n\
             processors:\n  connections: {{interval: 200ms}}\n  flow: {{interval: 200ms, flow_attributes: true}}\n  identity: {{container: {{docker_root: {}}}}}\n\
             exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  file/traces: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp, cgroup_skb, tcx], processors: [connections, flow, identity], exporters: [file/metrics]}}\n    \
             traces: {{receivers: [sockops, tcp_udp], processors: [connections, flow, identity], exporters: [file/traces]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            dk.name(),
            pd.name(),
            yaml_path(&docker_root),
            yaml_path(&metrics_out),
            yaml_path(&traces_out)
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
        let log = p.stderr();
        log.contains("sockops attached")
            && log.contains("tcp_udp: ")
            && log.contains("cgroup_skb attached")
    });

    // The tcx hooks count once attached: probe until both clients' devices are counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dk_ino, pd_ino) = (dk.inode().to_string(), pd.inode().to_string());
    loop {
        for (ns, dst) in [(&dk, "10.215.1.2"), (&pd, "10.215.2.2")] {
            let _ = output_with_timeout(
                ns.exec("python3").arg("-c").arg(format!(
                    "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'probe', ('{dst}', 9))"
                )),
                Duration::from_secs(10),
            );
        }
        let counted = metric_series(&metrics_out, "periscope.network.packets");
        let seen = |ino: &str| {
            counted
                .iter()
                .any(|s| s.attr("periscope.netns.inode") == Some(ino) && s.value > 0)
        };
        if seen(&dk_ino) && seen(&pd_ino) {
            break;
        }
        assert!(
            Instant::now() < deadline && !agent.has_exited(),
            "tcx did not count the probes\n--- agent log ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let server_py = dir.write("server.py", tcp_server(128, SERVER_PER_CONNECTION));
    let client_py = dir.write("client.py", CLIENT);
    let server = Background::serve(
        srv.exec("python3")
            .arg(&server_py)
            .args(["0.0.0.0", &PORT.to_string()]),
        "server",
    );

    let docker_client = start_client(&docker_cgroup, &dk, &client_py, "10.215.1.2");
    let pod_client = start_client(&cri_cgroup, &pd, &client_py, "10.215.2.2");
    eprintln!(
        "docker client pid {} ({}) in cgroup {}; pod client pid {} in cgroup {}",
        docker_client.pid,
        docker_client.exe,
        docker_client.cgroup_id,
        pod_client.pid,
        pod_client.cgroup_id
    );

    let docker = Expected {
        container_id: &docker_id,
        runtime: "docker",
        pod: None,
        name_and_image: Some(("web-1", "nginx")),
        cgroup_leaf: format!("/{docker_leaf}"),
    };
    let pod = Expected {
        container_id: &cri_id,
        runtime: "containerd",
        pod: Some((&pod_uid, "burstable")),
        name_and_image: None,
        cgroup_leaf: format!(
            "/{}/{cri_leaf}",
            pod_slice.file_name().unwrap().to_string_lossy()
        ),
    };

    // Every client span, enriched, while the clients still run.
    eventually(Duration::from_secs(30), || {
        let rows = read_spans(&traces_out);
        check_spans(&rows, &docker_client, &docker)
            .and_then(|()| check_spans(&rows, &pod_client, &pod))
            .map_err(|e| format!("{e}\n--- agent log ---\n{}", agent.stderr()))
    });
    eprintln!(
        "{} client spans of each client carry process, container, pod and namespace identity",
        CONNECTIONS
    );

    // The per-cgroup traffic series of both cgroups carry the same container and pod.
    eventually(Duration::from_secs(30), || {
        let series = metric_series(&metrics_out, "periscope.cgroup.packets");
        check_cgroup_series(&series, &docker_client, &docker)
            .and_then(|()| check_cgroup_series(&series, &pod_client, &pod))
    });
    // Packet-level flows (tcx records, per 5-tuple) of the clients' connections carry the
    // socket's owner, found through the socket table: pid, executable, container, pod.
    eventually(Duration::from_secs(30), || {
        let series = metric_series(&metrics_out, "periscope.network.packets");
        check_flows(&series, &docker_client, &docker)
            .and_then(|()| check_flows(&series, &pod_client, &pod))
    });
    eprintln!(
        "the packet-level flows of all {} client connections carry their owner's identity",
        2 * CONNECTIONS
    );
    // Connection counts per namespace carry its name.
    let conns = metric_series(&metrics_out, "periscope.tcp.connections");
    for c in [&docker_client, &pod_client] {
        let ns = c.netns_inode.to_string();
        let named: Vec<&Series> = conns
            .iter()
            .filter(|s| s.attr("periscope.netns.inode") == Some(ns.as_str()))
            .collect();
        assert!(!named.is_empty(), "no connection series in {}", c.netns);
        assert!(
            named
                .iter()
                .all(|s| s.attr("periscope.netns.name") == Some(c.netns.as_str())),
            "connection series of {} without its name: {named:?}",
            c.netns
        );
    }

    drop(docker_client.process);
    drop(pod_client.process);
    drop(server);
    let out = stop_agent(agent, Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("panicked"), "agent: {log}");
    drop(tree);
    assert!(!parent.exists(), "the test's cgroups were not removed");
}
