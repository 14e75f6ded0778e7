//! Mass deletion: 100 pod namespaces and their node namespace deleted at once; every link the
//! receiver held on them must be let go of within 5 s (issue 12: 179 links were still held
//! after 5 s).

use std::collections::BTreeSet;
use std::io::Write as _;

use periscope_testkit::bpf::{links, periscope_programs};

use super::churn::{device_ref, fresh, Agent};
use super::*;

const PODS: usize = 100;

#[test]
fn a_hundred_namespaces_deleted_at_once_release_their_links_within_5s() {
    let _serial = serial_root!();
    let node_name = Netns::unique_name();
    let pod_names: Vec<String> = (0..PODS).map(|_| Netns::unique_name()).collect();
    let mut listed: Vec<&str> = vec![&node_name];
    listed.extend(pod_names.iter().map(String::as_str));
    let programs_before = periscope_programs();
    let agent = Agent::listed(&listed);
    let node = fresh(&node_name);
    let pods: Vec<Netns> = pod_names.iter().map(|n| Netns::create(n)).collect();
    // One `ip -batch` for the 100 veth pairs.
    let dir = periscope_testkit::TestDir::new("churn-release");
    let batch = dir.join("veths");
    let mut f = std::fs::File::create(&batch).expect("batch file");
    for (i, p) in pod_names.iter().enumerate() {
        writeln!(f, "link add cqm{i} type veth peer name eth0 netns {p}").expect("write");
    }
    drop(f);
    run_ok(
        Command::new("ip")
            .args(["-n", &node_name, "-batch"])
            .arg(&batch),
        Duration::from_secs(30),
    );
    for (i, pod) in pods.iter().enumerate() {
        agent.wait_attached(device_ref(pod, "eth0"), "eth0");
        agent.wait_attached(device_ref(&node, &format!("cqm{i}")), &format!("cqm{i}"));
    }
    // Ours: programs that appeared since the agent started, and their links.
    let ours: BTreeSet<u64> = periscope_programs()
        .difference(&programs_before)
        .copied()
        .collect();
    let held = |ours: &BTreeSet<u64>| -> usize {
        links().iter().filter(|(_, p)| ours.contains(p)).count()
    };
    let attached = held(&ours);
    // lo and eth0 of each pod, lo and 100 veth ends in the node: 2 hooks each.
    assert!(
        attached >= (2 * PODS + 1 + PODS) * 2,
        "only {attached} links before the deletion"
    );
    let del = dir.join("del");
    let mut f = std::fs::File::create(&del).expect("batch file");
    for n in pod_names.iter().chain([&node_name]) {
        writeln!(f, "netns del {n}").expect("write");
    }
    drop(f);
    let t = Instant::now();
    run_ok(
        Command::new("ip").arg("-batch").arg(&del),
        Duration::from_secs(30),
    );
    let deleting = t.elapsed();
    // Deleted already: the guards have nothing left to do.
    std::mem::forget(pods);
    std::mem::forget(node);
    let mut left = attached;
    while left > 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        left = held(&ours);
        if std::env::var_os("CHURN_TRACE").is_some() {
            eprintln!("{:?}: {left} links held", t.elapsed());
        }
    }
    let took = t.elapsed();
    eprintln!(
        "{} namespaces deleted at once (`ip -batch` took {deleting:?}): {attached} links \
         released {took:?} after it started ({left} left)",
        PODS + 1
    );
    drop(agent.stop());
    assert_eq!(left, 0, "links still held after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "{attached} links took {took:?} to be released"
    );
}
