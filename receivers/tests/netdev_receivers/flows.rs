//! The kernel flow table (`flows: {enabled: true}`): per-5-tuple totals equal tshark's per
//! flow on the same device, flows end when idle (evicted), and a flood of distinct 5-tuples
//! fills the table without losing a count (the rest in the overflow counters) or growing
//! user space past its bound.

use std::collections::BTreeMap;
use std::net::IpAddr;

use periscope_pipeline::model::{FlowCounters, NetworkType};
use periscope_receivers::netdev::FlowsConfig;
use periscope_testkit::capture::GroundTruth;

use super::*;

/// `tcx` with flows on (`table_size` flows tracked, `slots` kernel slots per CPU), no packet
/// records, counters every 200 ms (a drain of the kernel slots each).
fn tcx_flows(id: &str, table_size: u32, slots: u32, idle_timeout: ConfigDuration) -> Running {
    Running::start(
        move |ctx| {
            TcxConfig {
                events: EventsMode::None,
                counters_interval: ConfigDuration::from_millis(200),
                flows: FlowsConfig {
                    enabled: true,
                    table_size,
                    slots,
                    idle_timeout,
                },
                ..TcxConfig::default()
            }
            .build_receiver(ctx)
        },
        id,
    )
}

/// The last point of every flow of one device, both directions.
fn last_flows(events: &[Event], dev: DeviceRef) -> HashMap<FlowKey, FlowCounters> {
    let mut m = HashMap::new();
    for e in events {
        if let Event::FlowCounters(f) = e {
            if f.device == dev {
                m.insert(flow_key(f), *f);
            }
        }
    }
    m
}

/// (direction, transport, src, sport, dst, dport).
type FlowKey = (Direction, Transport, IpAddr, u16, IpAddr, u16);

fn flow_key(f: &FlowCounters) -> FlowKey {
    (
        f.direction,
        f.transport,
        f.src_addr,
        f.src_port,
        f.dst_addr,
        f.dst_port,
    )
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
        Transport::Icmp => "icmp",
        Transport::Icmpv6 => "icmpv6",
        Transport::Other => "other",
    }
}

fn dev_ref(ns: &Netns, dev: &str) -> DeviceRef {
    DeviceRef {
        netns: namespace(ns).id,
        ifindex: device(ns, dev).ifindex,
    }
}

/// UDP from `sockets` source ports of pod1 to pod2:7000, `per_socket` datagrams each, of
/// sizes that differ per port (so that a count landing in the wrong flow shows in bytes).
fn udp_from_many_ports(t: &Topology, sockets: u16, per_socket: usize) {
    t.pod1.run(|| {
        let to = SocketAddr::from((POD2, 7000));
        for i in 0..sockets {
            let s = UdpSocket::bind(SocketAddr::from((POD1, 20000 + i))).expect("bind");
            let payload = vec![0x5a; 20 + usize::from(i % 200)];
            for _ in 0..per_socket {
                s.send_to(&payload, to).expect("send");
            }
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
}

#[test]
fn per_flow_totals_from_the_kernel_equal_tsharks_per_flow_and_idle_flows_end() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "per_flow_totals_from_the_kernel_equal_tsharks_per_flow_and_idle_flows_end",
    )) else {
        return;
    };
    const SOCKETS: u16 = 1200;
    const PER_SOCKET: usize = 3;
    let topo = Topology::new();
    let tcx = tcx_flows("tcx/flows", 16384, 4096, ConfigDuration::from_secs(1));
    tcx.add(&topo.pod2);
    // A socket on the port: no ICMP port-unreachable replies (whose quoted headers tshark
    // would report as ports).
    let sink = topo
        .pod2
        .run(|| UdpSocket::bind(SocketAddr::from((POD2, 7000))).expect("bind in pod2"));
    let capture = Capture::start(&topo.pod2, "eth0");
    udp_from_many_ports(&topo, SOCKETS, PER_SOCKET);
    // Quiet, then long enough for every flow to be idle past 1 s and evicted.
    std::thread::sleep(Duration::from_millis(2500));
    let file = capture.dumpcap.file().to_path_buf();
    capture.dumpcap.stop();
    let truth = GroundTruth::read(&file);
    let events = tcx.stop();
    drop(sink);

    let eth0 = dev_ref(&topo.pod2, "eth0");
    let flows = last_flows(&events, eth0);
    // Both directions of the device, keyed as tshark's per-flow statistics are.
    let mut ours: BTreeMap<[String; 5], (u64, u64)> = BTreeMap::new();
    let mut ended = 0;
    for f in flows.values() {
        if f.network == NetworkType::Other {
            continue; // tshark's per-flow table is of IP packets
        }
        let e = ours
            .entry([
                transport_name(f.transport).to_string(),
                f.src_addr.to_string(),
                f.src_port.to_string(),
                f.dst_addr.to_string(),
                f.dst_port.to_string(),
            ])
            .or_default();
        e.0 += f.packets;
        e.1 += f.bytes;
        ended += usize::from(f.last);
        assert!(
            f.first_seen_ns <= f.last_seen_ns && f.first_seen_ns > 0,
            "first/last seen: {f:?}"
        );
    }
    let theirs: BTreeMap<[String; 5], (u64, u64)> = truth
        .by_flow()
        .into_iter()
        .map(|(k, t)| (k, (t.packets, t.bytes)))
        .collect();
    let udp_flows = ours.keys().filter(|k| k[0] == "udp").count();
    assert!(
        udp_flows >= usize::from(SOCKETS),
        "{udp_flows} UDP flows, sent from {SOCKETS} ports"
    );
    for (k, v) in &theirs {
        assert_eq!(ours.get(k), Some(v), "flow {k:?}: ours vs tshark");
    }
    // The capture starts after the attachment: a stray packet in between (a neighbour
    // probe, a late reply to the warm-up) is ours alone; none of the test's traffic may be.
    let extra: Vec<_> = ours
        .iter()
        .filter(|(k, _)| !theirs.contains_key(*k))
        .collect();
    assert!(
        extra.iter().all(|(k, _)| k[4] != "7000" && k[2] != "7000"),
        "flows of the test's traffic tshark did not see: {extra:?}"
    );
    if !extra.is_empty() {
        eprintln!("flows before the capture started (not compared): {extra:?}");
    }
    // Idle for 1 s: every flow ended (evicted), with its totals.
    assert_eq!(
        ended,
        flows
            .values()
            .filter(|f| f.network != NetworkType::Other)
            .count()
    );
    // Nothing overflowed; the flows add up to the device's exact counters.
    let counters = last_counters(&events);
    let mut dev_total = (0, 0);
    for c in counters.values().filter(|c| c.device == eth0) {
        assert!(c.flows, "{c:?}");
        assert_eq!((c.flows_overflow_packets, c.flows_overflow_bytes), (0, 0));
        dev_total.0 += c.packets;
        dev_total.1 += c.bytes;
    }
    let flow_total = flows
        .values()
        .fold((0, 0), |t, f| (t.0 + f.packets, t.1 + f.bytes));
    assert_eq!(flow_total, dev_total, "flows vs device counters");
    eprintln!(
        "{} flows on pod2 eth0 ({udp_flows} UDP) = tshark's per flow; all ended when idle; \
         flows sum to the device counters {dev_total:?}",
        ours.len()
    );
}

/// `count` UDP datagrams from pod1 to pod2 through a raw socket, each with its own source
/// port and source address (one distinct 5-tuple per datagram), batched with sendmmsg.
/// Returns how many the kernel accepted.
fn flood_distinct_tuples(t: &Topology, count: u32) -> u64 {
    t.pod1.run(move || {
        // SAFETY: plain socket(2)/sendmmsg(2)/close(2) on buffers that outlive the calls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            const BATCH: usize = 256;
            const LEN: usize = 20 + 8 + 4;
            let mut bufs = vec![[0u8; LEN]; BATCH];
            let dst = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(POD2),
                },
                sin_zero: [0; 8],
            };
            let mut iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
            let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
            for b in bufs.iter_mut() {
                iovs.push(libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: LEN,
                });
            }
            for iov in iovs.iter_mut() {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_name = &dst as *const _ as *mut libc::c_void;
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                msgs.push(m);
            }
            let mut sent = 0u64;
            let mut n = 0u32;
            while n < count {
                let k = (count - n).min(BATCH as u32) as usize;
                for (j, b) in bufs.iter_mut().take(k).enumerate() {
                    let i = n + j as u32;
                    // 10.201.0.1 with the tuple's high bits in the port and address: the
                    // source is pod1's /24 peer space, routed by the veth as any packet.
                    let sport = (i & 0xffff) as u16;
                    let src = [10, 201, 1 + (i >> 16) as u8 % 200, 1];
                    b[0] = 0x45;
                    b[2..4].copy_from_slice(&(LEN as u16).to_be_bytes());
                    b[8] = 64;
                    b[9] = 17;
                    b[12..16].copy_from_slice(&src);
                    b[16..20].copy_from_slice(&POD2);
                    b[20..22].copy_from_slice(&sport.to_be_bytes());
                    b[22..24].copy_from_slice(&9u16.to_be_bytes());
                    b[24..26].copy_from_slice(&12u16.to_be_bytes());
                }
                let r = libc::sendmmsg(fd, msgs.as_mut_ptr(), k as u32, 0);
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        std::thread::yield_now();
                        continue;
                    }
                    panic!("sendmmsg: {e}");
                }
                sent += r as u64;
                n += r as u32;
            }
            libc::close(fd);
            sent
        }
    })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_a_million_distinct_flows_overflows_exactly_and_keeps_memory_bounded() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "a_flood_of_a_million_distinct_flows_overflows_exactly_and_keeps_memory_bounded",
    )) else {
        return;
    };
    const FLOWS: u32 = 1_000_000;
    const TABLE: u32 = 65536;
    /// What the receiver and the test's event collection may add to the process: the
    /// harvest holds at most TABLE flows (~200 bytes each) and each harvest sends at most
    /// TABLE points (collected here, ~120 bytes each, a few harvests).
    const RSS_BOUND_KIB: u64 = 128 * 1024;
    let topo = Topology::new();
    // pod2 has no route back to 10.201.1-16.1: it drops the datagrams without a reply.
    let tcx = tcx_flows("tcx/flood", TABLE, TABLE, ConfigDuration::from_secs(60));
    tcx.add(&topo.pod1);
    let rss_before = rss_kib();
    let t = Instant::now();
    let sent = flood_distinct_tuples(&topo, FLOWS);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(600));
    let rss_after = rss_kib();
    let events = tcx.stop();
    assert_eq!(sent, u64::from(FLOWS));

    let eth0 = dev_ref(&topo.pod1, "eth0");
    let flows = last_flows(&events, eth0);
    let udp_out: Vec<&FlowCounters> = flows
        .values()
        .filter(|f| f.direction == Direction::Egress && f.transport == Transport::Udp)
        .collect();
    let counters = last_counters(&events);
    let c = counters
        .get(&(eth0, Direction::Egress, Transport::Udp))
        .expect("pod1 eth0 egress UDP counters");
    // Device totals exact: every datagram the generator sent.
    assert_eq!(c.packets, u64::from(FLOWS), "device counters vs generator");
    assert_eq!(
        c.bytes,
        u64::from(FLOWS) * (14 + 32),
        "device bytes vs generator"
    );
    // The table held what it could (it may hold a few other flows of the device too), the
    // overflow counters carry the rest: nothing lost.
    assert!(
        udp_out.len() <= TABLE as usize && udp_out.len() + 16 >= TABLE as usize,
        "{} flows in a table of {TABLE}",
        udp_out.len()
    );
    let in_flows = udp_out
        .iter()
        .fold((0, 0), |t, f| (t.0 + f.packets, t.1 + f.bytes));
    assert_eq!(
        in_flows.0 + c.flows_overflow_packets,
        c.packets,
        "flows + overflow vs device packets"
    );
    assert_eq!(in_flows.1 + c.flows_overflow_bytes, c.bytes);
    assert!(c.flows_overflow_packets >= u64::from(FLOWS - TABLE));
    let grew = rss_after.saturating_sub(rss_before);
    assert!(
        grew < RSS_BOUND_KIB,
        "RSS grew by {grew} KiB during the flood (bound {RSS_BOUND_KIB} KiB)"
    );
    eprintln!(
        "{FLOWS} distinct 5-tuples in {took:?}: {} flows in the table, {} packets in the \
         overflow counters, device totals exact; RSS grew {grew} KiB",
        udp_out.len(),
        c.flows_overflow_packets
    );
}

/// Every map lookup of the packet programs, in every mode, is inlined by the verifier (array
/// slots: an address computed in place) or calls its map's own function (hashes), never the
/// generic helper: that is what a call site that sees two maps gets, and clang merged the two
/// flow tables' lookups into one call on a selected map until they were kept apart
/// (packet_flow.h). Out of line, each of the 16 probes was a helper call: flows cost 3.0–4.7%
/// more CPU per packet than counters alone in a veth flood (bench-netdev), inlined −0.2–0.4%.
#[test]
fn the_flow_slot_lookups_are_inlined_by_the_verifier() {
    use aya::programs::{SchedClassifier, Xdp};
    use periscope_receivers::netdev::load_packet;
    use periscope_receivers::shared::ebpf::records::{PERISCOPE_CFG_FLOWS, PERISCOPE_CFG_LOCALITY};
    use periscope_receivers::shared::ebpf::{names, Config};
    let test = "the_flow_slot_lookups_are_inlined_by_the_verifier";
    let Some(_serial) = SERIAL.lock_if(bpf_capable(test)) else {
        return;
    };
    use periscope_receivers::shared::ebpf::records::{
        PERISCOPE_CFG_BURSTS, PERISCOPE_CFG_DNS, PERISCOPE_CFG_RECORDS,
    };
    // And every other lookup of the programs, in every mode.
    for flags in [
        0,
        PERISCOPE_CFG_FLOWS,
        PERISCOPE_CFG_FLOWS | PERISCOPE_CFG_LOCALITY,
        PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_DNS | PERISCOPE_CFG_BURSTS | PERISCOPE_CFG_LOCALITY,
    ] {
        let config = Config {
            netns_cookie: 1,
            netns_inode: 1,
            flags,
            sample_rate: 0,
            dns_ports: [0; 4],
            flow_slot_mask: 4095,
        };
        let mut bpf = load_packet(&config, None).expect("load the packet object");
        let mut ids = Vec::new();
        for name in [names::TC_EGRESS, names::TC_INGRESS] {
            let prog: &mut SchedClassifier = bpf
                .program_mut(name)
                .expect("program")
                .try_into()
                .expect("a TC program");
            prog.load().expect("verify");
            ids.push((name, prog.info().expect("info").id()));
        }
        let prog: &mut Xdp = bpf
            .program_mut(names::XDP)
            .expect("program")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("verify");
        ids.push((names::XDP, prog.info().expect("info").id()));
        for (name, id) in ids {
            let insns = bpftool_json(&["prog", "dump", "xlated", "id", &id.to_string()]);
            let insns = insns.as_array().expect("instructions");
            let disasm = |i: &serde_json::Value| i["disasm"].as_str().unwrap_or("").to_string();
            let out_of_line: Vec<String> = insns
                .iter()
                .map(disasm)
                .filter(|d| d.contains("call bpf_map_lookup_elem"))
                .collect();
            assert!(
                insns.len() > 100 && out_of_line.is_empty(),
                "{name} (flags {flags:#x}, {} instructions): lookups left out of line: {out_of_line:?}",
                insns.len()
            );
        }
    }
}
