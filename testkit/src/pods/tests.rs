//! The pods themselves, without an agent: every pattern wires a working `eth0`, the ground
//! truth adds up (what the pod's `eth0` sent is what its node end received), inodes and cookies
//! are read, and nothing is left behind (twice in a row).

use super::*;
use crate::skip::{require_root, require_tools};

#[test]
fn every_pattern_makes_a_pod_that_talks_to_the_node_and_leaves_nothing() {
    const TEST: &str = "every_pattern_makes_a_pod_that_talks_to_the_node_and_leaves_nothing";
    if !(require_root(TEST) && require_tools(TEST, &["ip", "nsenter", "unshare"])) {
        return;
    }
    for round in 0..2 {
        let node = Node::new(100 + round);
        let t = Traffic {
            probe_every: Some(Duration::from_millis(20)),
            ..Traffic::default()
        };
        let recs = churn(&node, 1000 + round * 6, 6, &t);
        for r in &recs {
            let tx = r.eth0_end.tx_packets - r.eth0_before.tx_packets;
            let rx = r.node_dev_end.rx_packets - r.node_dev_before.rx_packets;
            eprintln!(
                "{} {:<10} inode {} cookie {} up {:?} life {:?} udp {} tcp {:?} probes {} eth0 tx {tx} node rx {rx}",
                r.name,
                r.pattern.name(),
                r.inode,
                r.cookie,
                r.up_after,
                r.lifetime,
                r.udp_sent,
                r.tcp_port,
                r.probes_sent
            );
            assert_eq!(r.udp_sent, 20, "{r:?}");
            assert!(r.tcp_port.is_some(), "no TCP answer: {r:?}");
            assert!(r.probes_sent > 5, "{r:?}");
            assert!(tx >= 20 + 5, "eth0 sent too little: {r:?}");
            assert_eq!(
                tx, rx,
                "what eth0 sent is what its node end received: {r:?}"
            );
            assert!(r.lifetime < Duration::from_secs(2), "{r:?}");
            assert!(r.inode != 0 && r.cookie != 0);
        }
        assert!(node.udp_received() >= 6 * 20);
        let cookies: std::collections::BTreeSet<u64> = recs.iter().map(|r| r.cookie).collect();
        assert_eq!(cookies.len(), recs.len(), "cookies are unique");
        drop(node);
        let left: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&ns::run_prefix()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "namespaces left: {left:?}");
    }
}
