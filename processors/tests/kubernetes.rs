//! The identity processor's Kubernetes source against an API server that speaks the real
//! list/watch protocol (testkit's `FakeKubeApi`, over HTTP with a kubeconfig): the first
//! list, changes by watch, bookmarks, a relist after 410 Gone, an API down at start and one
//! going down mid-watch, a slow API; then the processor itself naming a pod's telemetry and
//! the pods and Services at the other end.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_pipeline::component::{Emitter, Processor};
use periscope_pipeline::model::{
    Attributes, KeyValue, Payload, Span, SpanKind, SpanStatus, Telemetry, TracesBatch,
};
use periscope_pipeline::telemetry::ComponentCounters;
use periscope_pipeline::SocketTable;
use periscope_processors::identity::kubernetes::{KubernetesSource, Store};
use periscope_processors::identity::{
    ContainerOptions, Identity, IdentityConfig, KubernetesOptions, NetnsOptions,
};
use periscope_testkit::kube_api::{pod, service, FakeKubeApi, Resource};
use periscope_testkit::process::eventually;
use periscope_testkit::TestDir;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn uid(n: u32) -> String {
    format!("{n:08x}-1111-2222-3333-444455556666")
}

fn cid(n: u32) -> String {
    format!("{n:064x}")
}

fn options(api: &FakeKubeApi, dir: &TestDir, peers: bool) -> KubernetesOptions {
    KubernetesOptions {
        enabled: true,
        node_name: Some(NODE.into()),
        kubeconfig: Some(api.kubeconfig(dir.path())),
        labels: vec!["app".into(), "team.example.com/*".into()],
        annotations: vec!["owner".into()],
        peers,
    }
}

fn start(api: &FakeKubeApi, dir: &TestDir, peers: bool) -> KubernetesSource {
    KubernetesSource::start(&options(api, dir, peers), "identity", Arc::default())
        .expect("source starts")
}

fn synced(s: &KubernetesSource, n: u64) -> Result<(), String> {
    let got = s.status().synced.load(Ordering::Relaxed);
    (got >= n)
        .then_some(())
        .ok_or(format!("{got} lists done, want {n}"))
}

/// `check` on the store until it passes.
fn until(s: &KubernetesSource, what: &str, check: impl Fn(&Store) -> bool) {
    eventually(WAIT, || {
        check(&s.store())
            .then_some(())
            .ok_or_else(|| format!("{what}: status {:?}", s.status()))
    });
}

fn name_of(store: &Store, uid: &str) -> Option<String> {
    store.pod(uid).map(|p| p.name.to_string())
}

#[test]
fn lists_then_follows_adds_changes_and_deletes_of_this_nodes_pods() {
    let dir = TestDir::new("k8s_follow");
    let api = FakeKubeApi::start();
    for n in 0..3 {
        api.apply(
            Resource::Pods,
            pod(
                "shop",
                &format!("web-5d4f8b9c7-{n}"),
                &uid(n),
                NODE,
                None,
                Some(("ReplicaSet", "web-5d4f8b9c7")),
                &[&cid(n)],
            ),
        );
    }
    api.apply(
        Resource::Pods,
        pod(
            "shop",
            "elsewhere",
            &uid(99),
            "node-b",
            None,
            None,
            &[&cid(99)],
        ),
    );
    let s = start(&api, &dir, false);
    eventually(WAIT, || synced(&s, 1));
    {
        let store = s.store();
        assert_eq!(store.pods(), 3, "this node's pods only");
        let p = store.pod(&uid(1)).expect("pod 1 by uid");
        assert_eq!(&*p.name, "web-5d4f8b9c7-1");
        assert_eq!(&*p.namespace, "shop");
        assert_eq!(&*p.node, NODE);
        let w: Vec<(&str, &str)> = p.workload.iter().map(|(k, v)| (*k, &**v)).collect();
        assert_eq!(
            w,
            [
                ("k8s.replicaset.name", "web-5d4f8b9c7"),
                ("k8s.deployment.name", "web")
            ]
        );
        let extra: Vec<(&str, &str)> = p.extra.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(extra, [("k8s.pod.label.app", "web-5d4f8b9c7-1")]);
        assert_eq!(
            store.pod_of_container(&cid(2)).map(|p| &*p.uid),
            Some(uid(2).as_str())
        );
        assert!(store.pod(&uid(99)).is_none() && store.pod_of_container(&cid(99)).is_none());
        assert_eq!(store.peers(), 0, "no peers unless asked for");
    }
    // The requests a kube-apiserver would see: a list and a watch of this node's pods, with
    // bookmarks asked for.
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "{reqs:?}"
    );
    eventually(WAIT, || {
        (api.open_watches() == 1)
            .then_some(())
            .ok_or("no watch open".into())
    });

    // Added, changed (another owner, a label and an annotation), deleted.
    let mut changed = pod(
        "shop",
        "db-0",
        &uid(7),
        NODE,
        None,
        Some(("StatefulSet", "db")),
        &[&cid(7)],
    );
    api.apply(Resource::Pods, changed.clone());
    until(&s, "pod 7 added", |st| {
        name_of(st, &uid(7)).as_deref() == Some("db-0")
    });
    changed["metadata"]["labels"]["team.example.com/tier"] = "data".into();
    changed["metadata"]["annotations"] = serde_json::json!({"owner": "alice", "other": "x"});
    changed["status"]["containerStatuses"][0]["containerID"] =
        format!("containerd://{}", cid(8)).into();
    api.apply(Resource::Pods, changed);
    until(&s, "pod 7 changed", |st| {
        st.pod_of_container(&cid(8))
            .is_some_and(|p| p.extra.len() == 3)
            && st.pod_of_container(&cid(7)).is_none()
    });
    {
        let store = s.store();
        let p = store.pod(&uid(7)).expect("pod 7");
        let extra: Vec<(&str, &str)> = p.extra.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            extra,
            [
                ("k8s.pod.label.app", "db-0"),
                ("k8s.pod.label.team.example.com/tier", "data"),
                ("k8s.pod.annotation.owner", "alice")
            ]
        );
        assert_eq!(
            p.workload
                .iter()
                .map(|(k, v)| (*k, &**v))
                .collect::<Vec<_>>(),
            [("k8s.statefulset.name", "db")]
        );
    }
    assert!(api.delete(Resource::Pods, "shop", "web-5d4f8b9c7-0"));
    until(&s, "pod 0 deleted", |st| {
        st.pod(&uid(0)).is_none() && st.pod_of_container(&cid(0)).is_none() && st.pods() == 3
    });
    // A pod of another node changing is not this watch's business.
    api.apply(
        Resource::Pods,
        pod(
            "shop",
            "elsewhere",
            &uid(99),
            "node-b",
            None,
            Some(("DaemonSet", "x")),
            &[],
        ),
    );
    assert_eq!(api.lists(Resource::Pods), 1, "no relist");
    assert!(
        s.status().errors.load(Ordering::Relaxed) == 0,
        "{:?}",
        s.status()
    );
}

#[test]
fn resumes_from_a_bookmark_without_relisting() {
    let dir = TestDir::new("k8s_bookmark");
    let api = FakeKubeApi::start();
    api.apply(
        Resource::Pods,
        pod("default", "a", &uid(1), NODE, None, None, &[]),
    );
    let s = start(&api, &dir, false);
    eventually(WAIT, || synced(&s, 1));
    eventually(WAIT, || {
        (api.open_watches() == 1)
            .then_some(())
            .ok_or("no watch open".into())
    });
    // Other nodes' pods move the resourceVersion on; this watch sees none of them.
    for n in 10..20 {
        api.apply(
            Resource::Pods,
            pod(
                "default",
                &format!("b{n}"),
                &uid(n),
                "node-b",
                None,
                None,
                &[],
            ),
        );
    }
    let rv = api.resource_version();
    api.bookmark();
    // The history before now is gone: only a watch resumed from the bookmark's version is
    // served; one from the version of the list would get 410 and relist.
    // Time for the watch to read it (a local stream; nothing shows it was read).
    std::thread::sleep(Duration::from_secs(1));
    api.compact();
    api.close_watches();
    eventually(WAIT, || {
        (api.watches(Resource::Pods) >= 2 && api.open_watches() == 1)
            .then_some(())
            .ok_or("not watching again".into())
    });
    let reqs = api.requests();
    let last = reqs
        .iter()
        .rev()
        .find(|r| r.contains("watch=true"))
        .expect("a watch");
    assert!(
        last.contains(&format!("resourceVersion={rv}")),
        "resumed at {last}, bookmark was {rv}"
    );
    assert_eq!(api.lists(Resource::Pods), 1, "relisted: {reqs:#?}");
    api.apply(
        Resource::Pods,
        pod("default", "c", &uid(3), NODE, None, None, &[]),
    );
    until(&s, "pod c added after the resume", |st| {
        name_of(st, &uid(3)).as_deref() == Some("c")
    });
}

#[test]
fn a_410_gone_relists() {
    let dir = TestDir::new("k8s_gone");
    let api = FakeKubeApi::start();
    api.apply(
        Resource::Pods,
        pod("default", "a", &uid(1), NODE, None, None, &[]),
    );
    let s = start(&api, &dir, false);
    eventually(WAIT, || synced(&s, 1));
    eventually(WAIT, || {
        (api.open_watches() == 1)
            .then_some(())
            .ok_or("no watch open".into())
    });
    api.expire_watches();
    eventually(WAIT, || synced(&s, 2));
    assert_eq!(api.lists(Resource::Pods), 2, "{:#?}", api.requests());
    assert!(
        s.status().errors.load(Ordering::Relaxed) >= 1,
        "the 410 is counted"
    );
    assert_eq!(name_of(&s.store(), &uid(1)).as_deref(), Some("a"));
    api.apply(
        Resource::Pods,
        pod("default", "b", &uid(2), NODE, None, None, &[]),
    );
    until(&s, "pod b added after the relist", |st| st.pods() == 2);
}

#[test]
fn api_down_mid_watch_resumes_and_relists_what_it_missed() {
    let dir = TestDir::new("k8s_midwatch");
    let api = FakeKubeApi::start();
    for n in 1..=3 {
        api.apply(
            Resource::Pods,
            pod("default", &format!("p{n}"), &uid(n), NODE, None, None, &[]),
        );
    }
    let s = start(&api, &dir, false);
    eventually(WAIT, || synced(&s, 1));
    eventually(WAIT, || {
        (api.open_watches() == 1)
            .then_some(())
            .ok_or("no watch open".into())
    });
    api.set_down(true);
    // While it is down: p2 deleted, p4 added, and the history compacted (a long outage).
    assert!(api.delete(Resource::Pods, "default", "p2"));
    api.apply(
        Resource::Pods,
        pod("default", "p4", &uid(4), NODE, None, None, &[]),
    );
    api.compact();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        s.status().errors.load(Ordering::Relaxed) >= 1,
        "the outage is counted: {:?}",
        s.status()
    );
    assert_eq!(
        s.store().pods(),
        3,
        "what was known stays while the API is down"
    );
    api.set_down(false);
    until(&s, "p2 forgotten and p4 known after the relist", |st| {
        st.pod(&uid(2)).is_none() && st.pod(&uid(4)).is_some() && st.pods() == 3
    });
    assert!(api.lists(Resource::Pods) >= 2);
}

#[test]
fn api_down_at_start_then_up() {
    let dir = TestDir::new("k8s_down_at_start");
    let api = FakeKubeApi::start();
    api.apply(
        Resource::Pods,
        pod("default", "a", &uid(1), NODE, None, None, &[]),
    );
    api.set_down(true);
    let s = start(&api, &dir, false);
    eventually(WAIT, || {
        (s.status().errors.load(Ordering::Relaxed) >= 2)
            .then_some(())
            .ok_or("no retries".into())
    });
    assert_eq!(s.store().pods(), 0);
    api.set_down(false);
    eventually(WAIT, || synced(&s, 1));
    assert_eq!(name_of(&s.store(), &uid(1)).as_deref(), Some("a"));
}

#[test]
fn a_slow_api_never_blocks_lookups() {
    let dir = TestDir::new("k8s_slow");
    let api = FakeKubeApi::start();
    api.apply(
        Resource::Pods,
        pod("default", "a", &uid(1), NODE, None, None, &[]),
    );
    api.set_slow(Duration::from_secs(2));
    let s = start(&api, &dir, false);
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    while t.elapsed() < Duration::from_millis(1500) {
        let t0 = Instant::now();
        assert!(s.store().pod(&uid(1)).is_none(), "not listed yet");
        slowest = slowest.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        slowest < Duration::from_millis(200),
        "a lookup took {slowest:?}"
    );
    eventually(WAIT, || synced(&s, 1));
    assert_eq!(name_of(&s.store(), &uid(1)).as_deref(), Some("a"));
}

#[test]
fn peers_name_pods_and_services_cluster_wide() {
    let dir = TestDir::new("k8s_peers");
    let api = FakeKubeApi::start();
    api.apply(
        Resource::Pods,
        pod(
            "shop",
            "web-5d4f8b9c7-x",
            &uid(1),
            NODE,
            Some("10.1.0.5"),
            Some(("ReplicaSet", "web-5d4f8b9c7")),
            &[&cid(1)],
        ),
    );
    api.apply(
        Resource::Pods,
        pod(
            "data",
            "db-0",
            &uid(2),
            "node-b",
            Some("10.1.1.7"),
            Some(("StatefulSet", "db")),
            &[],
        ),
    );
    api.apply(
        Resource::Pods,
        pod(
            "data",
            "bare",
            &uid(3),
            "node-b",
            Some("10.1.1.8"),
            None,
            &[],
        ),
    );
    let mut host = pod(
        "kube-system",
        "proxy",
        &uid(4),
        "node-b",
        Some("192.168.0.2"),
        Some(("DaemonSet", "proxy")),
        &[],
    );
    host["spec"]["hostNetwork"] = true.into();
    api.apply(Resource::Pods, host);
    api.apply(
        Resource::Services,
        service("data", "db", &uid(50), "10.96.0.10"),
    );
    api.apply(
        Resource::Services,
        service("data", "headless", &uid(51), "None"),
    );
    let s = start(&api, &dir, true);
    eventually(WAIT, || synced(&s, 2));
    let peer = |ip: &str| {
        s.store().peer(ip.parse::<IpAddr>().expect("ip")).map(|p| {
            (
                p.pod.as_deref().map(str::to_string),
                p.namespace.to_string(),
                p.owner.as_ref().map(|(k, n)| format!("{k}/{n}")),
                p.service.as_deref().map(str::to_string),
            )
        })
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        peer("10.1.1.7"),
        Some((some("db-0"), "data".into(), some("StatefulSet/db"), None))
    );
    assert_eq!(
        peer("10.1.0.5"),
        Some((
            some("web-5d4f8b9c7-x"),
            "shop".into(),
            some("Deployment/web"),
            None
        ))
    );
    assert_eq!(
        peer("10.1.1.8"),
        Some((some("bare"), "data".into(), some("Pod/bare"), None))
    );
    assert_eq!(
        peer("10.96.0.10"),
        Some((None, "data".into(), None, some("db")))
    );
    assert_eq!(
        peer("192.168.0.2"),
        None,
        "a host-network pod names no address"
    );
    assert_eq!(s.store().peers(), 4);
    assert_eq!(
        s.store().pods(),
        1,
        "this node's pods only get full metadata"
    );
    // The cluster-wide watches have no field selector.
    assert!(
        api.requests()
            .iter()
            .all(|r| !r.contains("fieldSelector=spec")),
        "{:#?}",
        api.requests()
    );
    // A pod's address taken over by a new pod before the old one's deletion is seen.
    api.apply(
        Resource::Pods,
        pod(
            "data",
            "db-1",
            &uid(5),
            "node-b",
            Some("10.1.1.8"),
            Some(("StatefulSet", "db")),
            &[],
        ),
    );
    until(&s, "10.1.1.8 is db-1's", |st| {
        st.peer("10.1.1.8".parse().unwrap())
            .and_then(|p| p.pod.as_deref().map(|n| n == "db-1"))
            == Some(true)
    });
    api.delete(Resource::Pods, "data", "bare");
    api.delete(Resource::Services, "data", "db");
    until(&s, "the service is gone", |st| {
        st.peer("10.96.0.10".parse().unwrap()).is_none()
    });
    until(&s, "db-1 keeps its address", |st| {
        st.peer("10.1.1.8".parse().unwrap()).is_some()
    });
}

fn span(attrs: Attributes) -> Telemetry {
    Telemetry::Traces(TracesBatch {
        resource: Default::default(),
        scope: Default::default(),
        spans: vec![Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: [0; 8],
            name: "tcp.connection".into(),
            kind: SpanKind::Client,
            start_time_ns: 1,
            end_time_ns: 2,
            attributes: attrs,
            events: Vec::new(),
            status: SpanStatus::Unset,
        }],
    })
}

fn enrich(p: &mut Identity, attrs: Attributes) -> Vec<(String, String)> {
    let mut out = Emitter::default();
    p.process(Payload::Telemetry(span(attrs)), &mut out);
    let mut kv = Vec::new();
    for payload in out.take() {
        if let Payload::Telemetry(Telemetry::Traces(t)) = payload {
            for s in t.spans {
                for a in s.attributes {
                    if a.key.starts_with("k8s.") {
                        kv.push((a.key.to_string(), a.value.to_string()));
                    }
                }
            }
        }
    }
    kv.sort();
    kv
}

#[test]
fn the_processor_names_a_pods_telemetry_and_its_peers() {
    let dir = TestDir::new("k8s_processor");
    // A cgroup tree as containerd's CRI makes it under the systemd driver.
    let pod_uid = uid(1);
    let container = cid(1);
    let leaf = dir.join(format!(
        "cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope",
        pod_uid.replace('-', "_")
    ));
    std::fs::create_dir_all(&leaf).expect("mkdir");
    let cgroup_id = std::fs::metadata(&leaf).expect("stat").ino() as i64;
    // And a pod the API will not know.
    let other = dir.join(format!(
        "cgroup/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope",
        uid(9).replace('-', "_"),
        cid(9)
    ));
    std::fs::create_dir_all(&other).expect("mkdir");
    let other_id = std::fs::metadata(&other).expect("stat").ino() as i64;
    let api = FakeKubeApi::start();
    let mut web = pod(
        "shop",
        "web-5d4f8b9c7-q2x",
        &pod_uid,
        NODE,
        Some("10.1.0.5"),
        Some(("ReplicaSet", "web-5d4f8b9c7")),
        &[&container],
    );
    web["metadata"]["labels"]["pod-template-hash"] = "5d4f8b9c7".into();
    api.apply(Resource::Pods, web);
    api.apply(
        Resource::Pods,
        pod(
            "data",
            "db-0",
            &uid(2),
            "node-b",
            Some("10.1.1.7"),
            Some(("StatefulSet", "db")),
            &[],
        ),
    );
    api.apply(
        Resource::Services,
        service("data", "db", &uid(50), "10.96.0.10"),
    );
    let config = IdentityConfig {
        container: ContainerOptions {
            cgroup_root: Some(dir.join("cgroup")),
            docker_root: dir.join("docker"),
            ..ContainerOptions::default()
        },
        netns: NetnsOptions {
            enabled: false,
            ..NetnsOptions::default()
        },
        kubernetes: options(&api, &dir, true),
        exclude: vec!["k8s.pod.label.pod-template-hash".into()],
        ..IdentityConfig::default()
    };
    let counters = Arc::new(ComponentCounters::default());
    let mut p = Identity::new(&config, SocketTable::default(), counters.clone())
        .with_kubernetes(&config, "identity")
        .expect("starts");
    let source = p.kubernetes().expect("a source");
    eventually(WAIT, || synced(source, 2));
    let attrs = |peer: &str| {
        vec![
            KeyValue::new("periscope.cgroup.id", cgroup_id),
            KeyValue::new("network.peer.address", peer.to_string()),
        ]
    };
    let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    let own = [
        ("k8s.pod.uid", pod_uid.as_str()),
        ("k8s.pod.qos_class", "burstable"),
        ("k8s.pod.name", "web-5d4f8b9c7-q2x"),
        ("k8s.namespace.name", "shop"),
        ("k8s.node.name", NODE),
        ("k8s.replicaset.name", "web-5d4f8b9c7"),
        ("k8s.deployment.name", "web"),
        ("k8s.pod.label.app", "web-5d4f8b9c7-q2x"),
    ];
    let to_pod = [
        ("k8s.peer.pod.name", "db-0"),
        ("k8s.peer.namespace.name", "data"),
        ("k8s.peer.owner.kind", "StatefulSet"),
        ("k8s.peer.owner.name", "db"),
    ];
    assert_eq!(
        enrich(&mut p, attrs("10.1.1.7")),
        kv(&[&own[..], &to_pod[..]].concat())
    );
    let to_service = [
        ("k8s.peer.namespace.name", "data"),
        ("k8s.peer.service.name", "db"),
    ];
    assert_eq!(
        enrich(&mut p, attrs("10.96.0.10")),
        kv(&[&own[..], &to_service[..]].concat())
    );
    assert_eq!(
        enrich(&mut p, attrs("192.0.2.1")),
        kv(&own),
        "an address outside the cluster"
    );
    // Flows: the destination, unless it is the series' own pod (then the source).
    let flow = |src: &str, dst: &str| {
        vec![
            KeyValue::new("periscope.cgroup.id", cgroup_id),
            KeyValue::new("source.address", src.to_string()),
            KeyValue::new("destination.address", dst.to_string()),
        ]
    };
    let both = kv(&[&own[..], &to_pod[..]].concat());
    assert_eq!(enrich(&mut p, flow("10.1.0.5", "10.1.1.7")), both, "sent");
    assert_eq!(
        enrich(&mut p, flow("10.1.1.7", "10.1.0.5")),
        both,
        "received"
    );
    assert_eq!(counters.values().errors, 0);

    // A pod the API does not know (yet): its ids stay, the miss is counted once.
    for _ in 0..3 {
        let got = enrich(&mut p, vec![KeyValue::new("periscope.cgroup.id", other_id)]);
        assert_eq!(
            got,
            kv(&[
                ("k8s.pod.uid", &uid(9)),
                ("k8s.pod.qos_class", "guaranteed")
            ])
        );
    }
    assert_eq!(p.failed_lookups().pods, 1);
    assert_eq!(counters.values().errors, 1);
}

/// In a cluster the API is HTTPS: the TLS client (rustls with ring) builds, and an API that
/// does not answer is retried and counted, not fatal.
#[test]
fn an_https_api_builds_a_tls_client() {
    let dir = TestDir::new("k8s_https");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let kubeconfig = dir.write(
        "kubeconfig",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n\
             users:\n- name: u\n  user: {{token: secret}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n"
        ),
    );
    let options = KubernetesOptions {
        enabled: true,
        node_name: Some(NODE.into()),
        kubeconfig: Some(kubeconfig),
        ..KubernetesOptions::default()
    };
    let s = KubernetesSource::start(&options, "identity", Arc::default()).expect("starts");
    eventually(WAIT, || {
        (s.status().errors.load(Ordering::Relaxed) >= 1)
            .then_some(())
            .ok_or("no failed request counted".into())
    });
    assert_eq!(s.store().pods(), 0);
}

/// What the configuration got wrong fails at start, saying what to set.
#[test]
fn no_node_name_or_kubeconfig_is_an_error_at_start() {
    let dir = TestDir::new("k8s_errors");
    let missing = KubernetesOptions {
        enabled: true,
        node_name: Some(NODE.into()),
        kubeconfig: Some(dir.join("nope")),
        ..KubernetesOptions::default()
    };
    let e = KubernetesSource::start(&missing, "identity", Arc::default())
        .err()
        .expect("a missing kubeconfig fails");
    assert!(
        format!("{e:#}").contains("cannot read the kubeconfig"),
        "{e:#}"
    );
    if std::env::var_os("K8S_NODE_NAME").is_none() {
        let no_node = KubernetesOptions {
            enabled: true,
            ..KubernetesOptions::default()
        };
        let e = KubernetesSource::start(&no_node, "identity", Arc::default())
            .err()
            .expect("no node name fails");
        assert!(format!("{e:#}").contains("K8S_NODE_NAME"), "{e:#}");
    }
}

/// More pods than a page (the watcher asks for 500 at a time): the list is read page by page,
/// with the continue token, and every pod is kept.
#[test]
fn a_long_list_is_read_in_pages() {
    let dir = TestDir::new("k8s_pages");
    let api = FakeKubeApi::start();
    for n in 0..1203 {
        api.apply(
            Resource::Pods,
            pod(
                "default",
                &format!("p{n}"),
                &uid(n),
                NODE,
                None,
                None,
                &[&cid(n)],
            ),
        );
    }
    let s = start(&api, &dir, false);
    eventually(WAIT, || synced(&s, 1));
    assert_eq!(s.store().pods(), 1203);
    assert_eq!(api.lists(Resource::Pods), 3, "{:#?}", api.requests());
    let reqs = api.requests();
    assert!(
        reqs.iter().any(|r| r.contains("continue=")),
        "no continue token used: {reqs:#?}"
    );
}
