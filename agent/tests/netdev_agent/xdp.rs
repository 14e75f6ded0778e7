//! `xdp` (ingress only, no pins) on pod traffic: exact counts, nothing left after SIGTERM.

use super::*;

#[test]
fn xdp_counts_pod_traffic_exactly_and_leaves_nothing() {
    let Some(_serial) = SERIAL.lock_if(ready("xdp_counts_pod_traffic_exactly_and_leaves_nothing"))
    else {
        return;
    };
    let dir = TestDir::new("netdev-xdp");
    let pods = Pods::new();
    let (a, b) = (pods.a.name(), pods.b.name());
    let (config, out) = agent_config(
        &dir,
        "xdp",
        &format!(
            "  xdp:\n    namespaces: [{a}, {b}]\n    events: none\n    counters_interval: 100ms\n"
        ),
        "xdp",
    );
    let baseline = periscope_programs().last().copied().unwrap_or(0);
    let mut agent = start_agent(&config, "periscope run (xdp)");
    let (ia, ib) = (inode(&pods.a), inode(&pods.b));
    // XDP sees ingress only: the SYN on pb0, the RST on pa0.
    wait_attached(
        &mut agent,
        &out,
        a,
        B_ADDR,
        &[("pa0", "receive", &ia), ("pb0", "receive", &ib)],
    );
    let (n, size) = (500u64, 200usize);
    let (sent, _) = udp(a, A_ADDR, b, B_ADDR, n, size);
    assert_eq!(sent, n);
    let (ours, _) = programs_then_stop(agent, baseline);
    let packets = totals(&series_now(&out, "periscope.network.packets"));
    let bytes = totals(&series_now(&out, "periscope.network.bytes"));
    assert_eq!(
        get(&packets, "pb0", "receive", "udp", &ib),
        n as i64,
        "{packets:#?}"
    );
    assert_eq!(
        get(&bytes, "pb0", "receive", "udp", &ib),
        (n * (size as u64 + L2_OVERHEAD)) as i64,
        "{bytes:#?}"
    );
    let udp_total: i64 = packets
        .iter()
        .filter(|(k, _)| k.2 == "udp")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(udp_total, n as i64, "only pb0 receives UDP: {packets:#?}");
    assert!(
        packets.keys().all(|k| k.3 == ia || k.3 == ib),
        "series from namespaces outside the list: {packets:#?}"
    );
    eprintln!("xdp: {n} UDP datagrams counted exactly on pb0 receive");
    assert_nothing_left(baseline, &ours);
}
