//! What tshark reads from the same files, and how fast files replay.

use super::*;

/// What tshark reads from the same files, where tshark is installed.
#[test]
fn tshark_agrees() {
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "tshark is missing in CI");
        eprintln!("skipped: tshark is not installed");
        return;
    }
    let dir = TestDir::new("tshark");
    let classic = dir.join("eth.pcap");
    ethernet_file(&classic);
    let ng = dir.join("multi.pcapng");
    write_pcapng(&ng);
    for path in [classic, ng] {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(["-n", "-T", "fields", "-E", "separator=|"])
            .args(["-e", "frame.len", "-e", "frame.time_epoch"])
            .args([
                "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
            ])
            .args([
                "-e",
                "tcp.srcport",
                "-e",
                "udp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "udp.dstport",
            ])
            .args(["-e", "tcp.flags"])
            .output()
            .expect("run tshark");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let ours = replay_ok(&path).events;
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), ours.len(), "{}:\n{text}", path.display());
        for (line, ev) in lines.iter().zip(&ours) {
            let f: Vec<&str> = line.split('|').collect();
            let addr = |a: &str, b: &str| {
                if a.is_empty() {
                    b.to_string()
                } else {
                    a.to_string()
                }
            };
            let shown = |ip: IpAddr| match ev.network {
                NetworkType::Other => String::new(),
                _ => ip.to_string(),
            };
            let port = |p: u16| match ev.transport {
                Transport::Tcp | Transport::Udp => p.to_string(),
                _ => String::new(),
            };
            assert_eq!(f[0], ev.length.to_string(), "frame.len: {line}");
            // tshark shows no time for a simple packet block (it has none); we give it the
            // previous packet's.
            if !f[1].is_empty() {
                let time: f64 = f[1].parse().expect("time");
                let ours = ev.timestamp_ns as f64 / 1e9;
                assert!((time - ours).abs() < 1e-6, "time: {line} vs {ev:?}");
            }
            assert_eq!(addr(f[2], f[3]), shown(ev.src_addr), "src: {line}");
            assert_eq!(addr(f[4], f[5]), shown(ev.dst_addr), "dst: {line}");
            assert_eq!(addr(f[6], f[7]), port(ev.src_port), "sport: {line}");
            assert_eq!(addr(f[8], f[9]), port(ev.dst_port), "dport: {line}");
            if ev.transport == Transport::Tcp {
                assert_eq!(f[10], format!("0x{:04x}", ev.tcp_flags), "flags: {line}");
            }
        }
    }
}

/// Replay speed of a classic and a pcapng file through a bare channel: `cargo test --release
/// -p periscope-receivers --test pcap -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run in release"]
fn replay_throughput() {
    const N: u64 = 1_000_000;
    let dir = TestDir::new("throughput");
    let classic = dir.join("big.pcap");
    let frames = [tcp_syn(), vlan_udp(), tcp6_fin(), arp()];
    let packets: Vec<_> = (0..N)
        .map(|i| pkt(T0 + i * 1000, frames[i as usize % 4].clone()))
        .collect();
    write_pcap(
        &classic,
        Endianness::Little,
        TsResolution::NanoSecond,
        DataLink::ETHERNET,
        &packets,
    );
    let ng = dir.join("big.pcapng");
    let mut w = PcapNgWriter::new(std::io::BufWriter::new(File::create(&ng).expect("create")))
        .expect("shb");
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .expect("idb");
    for p in &packets {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(p.ts_ns / 1000),
            original_len: p.orig_len,
            data: Cow::Borrowed(&p.data),
            options: vec![EnhancedPacketOption::Flags(1)],
        })
        .expect("epb");
    }
    drop(w);
    for path in [classic, ng] {
        let receiver = pcap_config(&path).build(&context("pcap")).expect("build");
        let (n, elapsed) = count_events(receiver);
        let secs = elapsed.as_secs_f64();
        eprintln!(
            "{}: {n} packets in {secs:.3} s: {:.2} M packets/s",
            path.display(),
            n as f64 / secs / 1e6
        );
        assert_eq!(n as u64, N);
    }
}
