//! `speed: realtime` keeps the capture's gaps and stops promptly when asked.

use super::*;

#[test]
fn realtime_keeps_the_gaps() {
    let dir = TestDir::new("realtime");
    let path = dir.join("slow.pcap");
    let packets: Vec<_> = (0..3u64)
        .map(|i| pkt(T0 + i * 100_000_000, tcp_syn()))
        .collect();
    write_ethernet_pcap(&path, &packets);

    let fast = replay_ok(&path);
    assert_eq!(fast.events.len(), 3);
    assert!(
        fast.elapsed < Duration::from_millis(150),
        "max speed took {:?}",
        fast.elapsed
    );

    let config = PcapConfig {
        path: path.clone(),
        speed: Speed::Realtime,
        dns_ports: Vec::new(),
    };
    let slow = run(&config, StopSignal::default()).expect("build");
    slow.result.expect("realtime replay");
    assert_eq!(slow.events.len(), 3);
    assert!(
        slow.elapsed >= Duration::from_millis(180),
        "realtime took {:?}",
        slow.elapsed
    );
    assert!(
        slow.elapsed < Duration::from_secs(2),
        "realtime took {:?}",
        slow.elapsed
    );
    // Each packet went out when it was due, not at the end.
    assert!(slow.batches >= 3, "{} batches", slow.batches);
}

#[test]
fn realtime_stops_promptly() {
    let dir = TestDir::new("stop");
    let path = dir.join("gap.pcap");
    let packets = [pkt(T0, tcp_syn()), pkt(T0 + 3_600_000_000_000, tcp_syn())];
    write_ethernet_pcap(&path, &packets);
    let stop = StopSignal::default();
    let raiser = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        raiser.raise();
    });
    let config = PcapConfig {
        path,
        speed: Speed::Realtime,
        dns_ports: Vec::new(),
    };
    let r = run(&config, stop).expect("build");
    r.result.expect("a stopped replay is not an error");
    assert_eq!(r.events.len(), 1);
    assert!(r.elapsed < Duration::from_secs(1), "took {:?}", r.elapsed);
}
