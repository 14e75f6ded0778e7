//! Pods come and go (issue 12): the real agent (`tcx` + `sockops` + `tcp_udp` →
//! `connections`, `flow`, `identity` → OTLP/JSON files) while ≥ 42 pods are created one after
//! another, 7 of each of the six patterns of `testkit::pods` (veth made outside and moved in,
//! made inside with the node end moved out, `ip link add … netns`, macvlan moved in, a
//! namespace held by a process only, a namespace bind-mounted late), interleaved. Each pod
//! sends 20 UDP datagrams and one TCP connection to the node 300 ms after its devices are up
//! and is deleted about 150 ms later.
//!
//! For every pod: the packets on its `eth0` (transmit) and on its node-side device (receive)
//! equal the ground truth (UDP: what the generator sent; UDP + TCP and all packets: what the
//! kernel counted on the device), under the real device names, the pod's namespace cookie,
//! inode and name (`periscope.netns.name`; none for a process-held namespace); one connection
//! span, of its connection, named after it; nothing named after it in another namespace; no
//! `if<N>` device name anywhere. Namespace inodes must have been reused during the run (more
//! pods are made, up to 84, until they are), so that attribution by inode alone would show.
//! The expected-vs-got table is printed before anything is asserted.
//!
//! Needs root, `ip`, `nsenter`, `unshare`; skips otherwise, except under CI.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use periscope_testkit::otlp::{read_metrics, read_spans, sum_series};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::pods::check::{
    by_pattern, check, if_n_names, lenient_sums, reused_inodes, table,
};
use periscope_testkit::pods::{churn, churn_agent_config, ns, Node, PodRecord, Traffic};
use periscope_testkit::{bpf_capable, require_tools, TestDir};

const TOOLS: &[&str] = &["ip", "nsenter", "unshare"];
const PODS: u64 = 42;
const MAX_PODS: u64 = 84;

#[test]
fn every_pod_counted_under_its_own_names_through_churn() {
    const TEST: &str = "every_pod_counted_under_its_own_names_through_churn";
    if !(bpf_capable(TEST) && require_tools(TEST, TOOLS)) {
        return;
    }
    let dir = TestDir::new("churn_agent");
    let node = Node::new(0);
    let (node_cookie, node_inode) = (node.cookie(), node.inode());
    let metrics = dir.join("metrics.jsonl");
    let traces = dir.join("traces.jsonl");
    let cfg = dir.write("agent.yaml", churn_agent_config(&metrics, &traces, "info"));
    let mut agent = start_agent(&cfg, "periscope (churn)");
    agent.wait_until(
        Duration::from_secs(60),
        "the socket receivers attached",
        |p| {
            let log = p.stderr();
            log.contains("sockops attached") && log.contains("tcp_udp: ")
        },
    );
    // Ready when the node's `lo` counts a probe.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ino = node_inode.to_string();
    loop {
        ns::run_in(&node.path(), || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
            let _ = s.send_to(b"probe", SocketAddrV4::new([127, 0, 0, 1].into(), 9));
        });
        let seen = sum_series(&read_metrics(&metrics), "periscope.network.packets")
            .iter()
            .any(|s| {
                s.attr("periscope.netns.inode") == Some(ino.as_str())
                    && s.attr("network.interface.name") == Some("lo")
                    && s.value > 0
            });
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline && !agent.has_exited(),
            "the agent did not count the node's lo\n--- agent log ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let t = Traffic::default();
    let started = Instant::now();
    let mut pods: Vec<PodRecord> = churn(&node, 0, PODS, &t);
    while reused_inodes(&pods).is_empty() && (pods.len() as u64) < MAX_PODS {
        let n = pods.len() as u64;
        pods.extend(churn(&node, n, 6, &t));
    }
    eprintln!(
        "{} pods in {:?} (longest life {:?})",
        pods.len(),
        started.elapsed(),
        pods.iter().map(|p| p.lifetime).max().unwrap_or_default()
    );
    // Final points of the last pods, then stop.
    std::thread::sleep(Duration::from_secs(3));
    let out = stop_agent(agent, Duration::from_secs(30));
    let log = String::from_utf8_lossy(&out.stderr);

    let (packets, went_down) = lenient_sums(&read_metrics(&metrics), "periscope.network.packets");
    let spans: Vec<_> = read_spans(&traces)
        .into_iter()
        .filter(|s| s.name == "tcp.connection")
        .collect();
    let checks = check(&pods, node_cookie, node_inode, &packets, &spans);
    let reused = reused_inodes(&pods);
    let lost_names = if_n_names(&packets);
    eprintln!(
        "node {} inode {node_inode} cookie {node_cookie}\n{}",
        node.name(),
        table(&checks)
    );
    for (pattern, (exact, total)) in by_pattern(&checks) {
        eprintln!("{:<10} {exact}/{total} exact", pattern.name());
    }
    let exact = checks.iter().filter(|c| c.exact()).count();
    eprintln!(
        "{exact}/{} pods exact; inodes reused: {}; if<N> series: {}; series that went down: {}",
        checks.len(),
        reused
            .iter()
            .map(|(i, p)| format!("{i}×{}", p.len()))
            .collect::<Vec<_>>()
            .join(" "),
        lost_names.len(),
        went_down.len()
    );
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    assert!(
        pods.iter()
            .all(|p| p.udp_sent == t.udp && p.tcp_port.is_some()),
        "the generator itself failed (not the agent): {pods:#?}"
    );
    assert!(
        !reused.is_empty(),
        "no namespace inode was reused in {} pods: the run cannot show attribution by inode",
        pods.len()
    );
    assert!(
        lost_names.is_empty(),
        "series under if<N> names (inode/cookie/name): {lost_names:?}"
    );
    assert!(
        went_down.is_empty(),
        "cumulative series that went down without a new start (two namespaces in one series?): {went_down:#?}"
    );
    assert_eq!(
        exact,
        checks.len(),
        "pods not counted exactly under their own names (table above)"
    );
}
