//! Pod names from the Kubernetes API in the real agent, end to end: `periscope run` with the
//! `sockops`, `tcp_udp` and `cgroup_skb` receivers and `processors: [connections, flow,
//! identity]`, the identity processor's `kubernetes` source (with `peers: true`) pointed by a
//! kubeconfig at testkit's fake API server.
//!
//! What a node looks like from the kernel's side: a client "pod" (a network namespace and a
//! cgroup shaped like containerd's CRI makes under the systemd driver,
//! `kubepods-burstable-pod<uid with _>.slice/cri-containerd-<64 hex>.scope`) and a server
//! "pod" (a namespace) joined by a veth pair. The fake API serves the client pod (same uid and
//! container id, owned by ReplicaSet `web-5d4f8b9c7`, on this node) and the server pod (its
//! address, StatefulSet `db`, on another node). Every CLIENT connection span of the client
//! must carry the pod's name, namespace, ReplicaSet and Deployment, and the server pod's name,
//! namespace and owner as the peer; the client cgroup's `periscope.cgroup.packets` series the
//! pod's name, namespace and Deployment.
//!
//! Cleans up also when it fails, fresh names each run. Needs root, `ip` and `python3`; skips
//! otherwise, except under CI.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use periscope_receivers::socket::find_cgroup2;
use periscope_testkit::cgroup::{command_in, container_id, pod_uid, Cgroups};
use periscope_testkit::kube_api::{pod, FakeKubeApi, Resource};
use periscope_testkit::otlp::{read_metrics, read_spans, sum_series, Series, Span};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{eventually, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::{require_root_and_tools, test_name, veth_pair, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip", "python3"];
const PORT: u16 = 9311;
const CONNECTIONS: usize = 6;
const NODE: &str = "node-e2e";
const CLIENT_ADDR: &str = "10.217.1.1";
const SERVER_ADDR: &str = "10.217.1.2";

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

fn check_spans(
    rows: &[Span],
    netns_inode: u64,
    ports: &[i64],
    want: &[(&str, String)],
) -> Result<(), String> {
    let mine: BTreeMap<i64, &Span> = rows
        .iter()
        .filter(|s| s.kind == 3 && s.text("periscope.netns.inode") == Some(netns_inode.to_string()))
        .filter_map(|s| Some((s.text("network.local.port")?.parse().ok()?, s)))
        .collect();
    for port in ports {
        let s = mine
            .get(port)
            .ok_or_else(|| format!("no client span for port {port}"))?;
        for (key, value) in want {
            if s.text(key).as_ref() != Some(value) {
                return Err(format!(
                    "span of port {port}: {key} is {:?}, want {value:?}; span: {:?}",
                    s.text(key),
                    s.texts()
                ));
            }
        }
    }
    Ok(())
}

fn check_series(series: &[Series], cgroup_id: u64, want: &[(&str, String)]) -> Result<(), String> {
    let id = cgroup_id.to_string();
    let mine: Vec<&Series> = series
        .iter()
        .filter(|s| s.attr("periscope.cgroup.id") == Some(id.as_str()) && s.value > 0)
        .collect();
    let named: Vec<&&Series> = mine
        .iter()
        .filter(|s| s.attr("k8s.pod.name").is_some())
        .collect();
    if named.is_empty() {
        return Err(format!(
            "no periscope.cgroup.packets series of cgroup {id} with a pod name: {mine:?}"
        ));
    }
    for s in named {
        for (key, value) in want {
            if s.attr(key) != Some(value.as_str()) {
                return Err(format!(
                    "cgroup {id}: {key} is {:?}, want {value:?}: {s:?}",
                    s.attr(key)
                ));
            }
        }
    }
    Ok(())
}

/// A node: the client pod (namespace, CRI cgroup, a server pod's namespace beside it), the
/// fake API serving both pods, an agent watching it.
struct Scene {
    dir: TestDir,
    api: FakeKubeApi,
    srv: Netns,
    pd: Netns,
    tree: Cgroups,
    parent: std::path::PathBuf,
    cri_cgroup: std::path::PathBuf,
    pod_uid: String,
    pod_name: String,
    cri_id: String,
    config: std::path::PathBuf,
    metrics_out: std::path::PathBuf,
    traces_out: std::path::PathBuf,
}

impl Scene {
    fn new(name: &str) -> Scene {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let salt = RUN.fetch_add(1, Ordering::Relaxed) as u64;
        let dir = TestDir::new(name);
        let cg2 = find_cgroup2().expect("a cgroup v2 mount");
        let srv = Netns::new();
        let pd = Netns::new();
        for ns in [&srv, &pd] {
            ns.disable_ipv6();
        }
        veth_pair(
            &pd,
            "kc0",
            &format!("{CLIENT_ADDR}/24"),
            &srv,
            "ks0",
            &format!("{SERVER_ADDR}/24"),
        );
        let cri_id = container_id(salt * 3 + 1);
        let u = container_id(salt * 3 + 2);
        let pod_uid = pod_uid(&u);
        let mut tree = Cgroups::new();
        let parent =
            tree.mkdir(cg2.join(format!("periscope-k8s-{}-{salt}.slice", std::process::id())));
        let pod_slice = tree.mkdir(parent.join(format!(
            "kubepods-burstable-pod{}.slice",
            pod_uid.replace('-', "_")
        )));
        let cri_cgroup = tree.mkdir(pod_slice.join(format!("cri-containerd-{cri_id}.scope")));

        // The API: the client pod on this node, the server pod on another (its address
        // only matters, with peers on).
        let api = FakeKubeApi::start();
        let pod_name = format!("web-5d4f8b9c7-{}", &u[32..37]);
        let mut web = pod(
            "shop",
            &pod_name,
            &pod_uid,
            NODE,
            Some(CLIENT_ADDR),
            Some(("ReplicaSet", "web-5d4f8b9c7")),
            &[&cri_id],
        );
        web["metadata"]["labels"]["pod-template-hash"] = "5d4f8b9c7".into();
        api.apply(Resource::Pods, web);
        api.apply(
            Resource::Pods,
            pod(
                "data",
                "db-0",
                &container_id(salt * 3 + 3)[..36],
                "node-other",
                Some(SERVER_ADDR),
                Some(("StatefulSet", "db")),
                &[],
            ),
        );
        let kubeconfig = api.kubeconfig(dir.path());
        let metrics_out = dir.join("metrics.jsonl");
        let traces_out = dir.join("traces.jsonl");
        let config = dir.write(
            "agent.yaml",
            format!(
                "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms}}\n  cgroup_skb: {{counters_interval: 200ms}}\n\
                 processors:\n  connections: {{interval: 200ms}}\n  flow: {{interval: 200ms}}\n  \
                 identity: {{kubernetes: {{enabled: true, node_name: {NODE}, kubeconfig: {}, peers: true, labels: [app]}}}}\n\
                 exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  file/traces: {{path: {}, flush_interval: 100ms}}\n\
                 service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp, cgroup_skb], processors: [connections, flow, identity], exporters: [file/metrics]}}\n    \
                 traces: {{receivers: [sockops, tcp_udp], processors: [connections, flow, identity], exporters: [file/traces]}}\n  \
                 telemetry: {{logs: {{level: info}}, metrics: {{enabled: true, interval: 500ms, exporters: [file/metrics]}}}}\n",
                yaml_path(&kubeconfig),
                yaml_path(&metrics_out),
                yaml_path(&traces_out)
            ),
        );
        Scene {
            dir,
            api,
            srv,
            pd,
            tree,
            parent,
            cri_cgroup,
            pod_uid,
            pod_name,
            cri_id,
            config,
            metrics_out,
            traces_out,
        }
    }

    fn start_agent(&self) -> Background {
        let mut agent = start_agent(&self.config, "periscope");
        agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
            let log = p.stderr();
            log.contains("sockops attached")
                && log.contains("cgroup_skb attached")
                && log.contains("watching Kubernetes pods")
        });
        agent
    }

    fn server(&self) -> Background {
        let server_py = self
            .dir
            .write("server.py", tcp_server(128, SERVER_PER_CONNECTION));
        Background::serve(
            self.srv
                .exec("python3")
                .arg(&server_py)
                .args(["0.0.0.0", &PORT.to_string()]),
            "server",
        )
    }

    /// A client in the pod's cgroup and namespace: its process and connections' ports.
    fn client(&self) -> (Background, Vec<i64>) {
        let client_py = self.dir.write("client.py", CLIENT);
        let mut client = Background::spawn(
            command_in(&self.cri_cgroup, &self.pd, "python3")
                .arg(&client_py)
                .arg(SERVER_ADDR)
                .arg(PORT.to_string())
                .arg(CONNECTIONS.to_string()),
            "client",
        );
        client.wait_until(Duration::from_secs(30), "its connections", |p| {
            p.stdout().contains('\n')
        });
        let out = client.stdout();
        let ports: Vec<i64> = out
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().expect("port"))
            .collect();
        assert_eq!(ports.len(), CONNECTIONS, "client output: {out}");
        (client, ports)
    }

    /// What the pod's own telemetry must carry.
    fn own(&self) -> Vec<(&'static str, String)> {
        let s = |v: &str| v.to_string();
        vec![
            ("k8s.pod.uid", self.pod_uid.clone()),
            ("k8s.pod.name", self.pod_name.clone()),
            ("k8s.namespace.name", s("shop")),
            ("k8s.node.name", s(NODE)),
            ("k8s.replicaset.name", s("web-5d4f8b9c7")),
            ("k8s.deployment.name", s("web")),
            ("k8s.pod.label.app", self.pod_name.clone()),
            ("container.id", self.cri_id.clone()),
        ]
    }

    /// And what its client spans must carry besides: the server pod.
    fn span_want(&self) -> Vec<(&'static str, String)> {
        let mut want = self.own();
        want.extend([
            ("k8s.peer.pod.name", "db-0".to_string()),
            ("k8s.peer.namespace.name", "data".to_string()),
            ("k8s.peer.owner.kind", "StatefulSet".to_string()),
            ("k8s.peer.owner.name", "db".to_string()),
        ]);
        want
    }

    fn stop(self, agent: Background) -> String {
        let out = stop_agent(agent, Duration::from_secs(20));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!log.contains("panicked"), "agent: {log}");
        let Scene { tree, parent, .. } = self;
        drop(tree);
        assert!(!parent.exists(), "the test's cgroups were not removed");
        log
    }
}

#[test]
fn pods_and_their_peers_are_named_from_the_kubernetes_api() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let scene = Scene::new("k8s_agent");
    let api = &scene.api;
    let agent = scene.start_agent();
    // Both lists (pods and Services) served, one watch each for both pipelines.
    eventually(Duration::from_secs(30), || {
        (api.lists(Resource::Pods) == 1
            && api.lists(Resource::Services) == 1
            && api.open_watches() == 2)
            .then_some(())
            .ok_or_else(|| format!("not watching yet: {:?}\n{}", api.requests(), agent.stderr()))
    });
    let server = scene.server();
    let (client, ports) = scene.client();
    let cgroup_id = periscope_testkit::cgroup::inode(&scene.cri_cgroup);
    let (own, span_want) = (scene.own(), scene.span_want());
    eventually(Duration::from_secs(30), || {
        check_spans(
            &read_spans(&scene.traces_out),
            scene.pd.inode(),
            &ports,
            &span_want,
        )
        .map_err(|e| format!("{e}\n--- agent log ---\n{}", agent.stderr()))
    });
    eprintln!(
        "{CONNECTIONS} client spans carry the pod {}, its Deployment and the peer pod db-0",
        scene.pod_name
    );
    eventually(Duration::from_secs(30), || {
        let series = sum_series(
            &read_metrics(&scene.metrics_out),
            "periscope.cgroup.packets",
        );
        check_series(&series, cgroup_id, &own)
    });
    drop(client);
    drop(server);
    let log = scene.stop(agent);
    assert!(!log.contains("not watched"), "the watch failed: {log}");
}

/// The API down when the agent starts: it runs, its spans carry the pod uid from the cgroup
/// path only, the failures are counted; once the API is up, the next spans carry the names.
#[test]
fn the_agent_runs_without_the_api_and_names_pods_once_it_answers() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let scene = Scene::new("k8s_agent_down");
    scene.api.set_down(true);
    let mut agent = scene.start_agent();
    agent.wait_until(Duration::from_secs(30), "the watch failing", |p| {
        p.stderr().contains("are not watched")
    });
    let server = scene.server();
    let (client, ports) = scene.client();
    let uid_only = vec![("k8s.pod.uid", scene.pod_uid.clone())];
    eventually(Duration::from_secs(30), || {
        check_spans(
            &read_spans(&scene.traces_out),
            scene.pd.inode(),
            &ports,
            &uid_only,
        )
    });
    let rows = read_spans(&scene.traces_out);
    assert!(
        rows.iter().all(|s| s.text("k8s.pod.name").is_none()),
        "a pod named while the API was down"
    );
    eventually(Duration::from_secs(30), || {
        let errors: i64 = sum_series(
            &read_metrics(&scene.metrics_out),
            "periscope.component.errors",
        )
        .iter()
        .filter(|s| s.attr("periscope.component.id") == Some("identity"))
        .map(|s| s.value)
        .max()
        .unwrap_or(0);
        (errors > 0)
            .then_some(())
            .ok_or(format!("no identity errors counted: {errors}"))
    });
    drop(client);

    scene.api.set_down(false);
    agent.wait_until(Duration::from_secs(60), "the API answering again", |p| {
        p.stderr().matches("answers again").count() == 2
    });
    let (client, ports) = scene.client();
    let span_want = scene.span_want();
    eventually(Duration::from_secs(30), || {
        check_spans(
            &read_spans(&scene.traces_out),
            scene.pd.inode(),
            &ports,
            &span_want,
        )
        .map_err(|e| format!("{e}\n--- agent log ---\n{}", agent.stderr()))
    });
    drop(client);
    drop(server);
    let log = scene.stop(agent);
    assert!(
        !log.contains("ERROR"),
        "an outage of the API is a warning: {log}"
    );
}
