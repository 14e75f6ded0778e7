//! The packet programs' parser and accounting, driven by `BPF_PROG_TEST_RUN` with crafted
//! frames: no device and no traffic, the kernel runs the program on the bytes given.
//!
//! Needs root on a BPF-capable kernel; without root these tests skip with a one-line reason,
//! except when `CI` is set: then they fail.

use std::collections::HashMap;

use aya::maps::{PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};
use periscope_receivers::netdev::{load_packet, packet_object};
use periscope_receivers::shared::ebpf::records::*;
use periscope_receivers::shared::ebpf::{
    names, Config, DevCounters, DevKey, PacketRecord, Record, Stats,
};

use periscope_testkit::bpf_capable;
use periscope_testkit::receiver::error_chain;

const CONFIG: Config = Config {
    netns_cookie: 77,
    netns_inode: 4026530000,
    flags: PERISCOPE_CFG_RECORDS,
    sample_rate: 0,
    dns_ports: [5353, 0, 0, 0],
    flow_slot_mask: 0,
};

/// The object with its XDP and TC egress programs loaded.
fn loaded(bpf: Ebpf) -> Ebpf {
    let mut bpf = bpf;
    let xdp: &mut Xdp = bpf.program_mut(names::XDP).unwrap().try_into().unwrap();
    xdp.load().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let tc: &mut SchedClassifier = bpf
        .program_mut(names::TC_EGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    tc.load().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    bpf
}

/// Runs a program `repeat` times on `frame`; returns what it returned.
fn run(bpf: &Ebpf, program: &str, frame: &[u8], repeat: u32) -> (i32, u64) {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    let result = match bpf.program(program).unwrap() {
        aya::programs::Program::Xdp(p) => p.test_run(opts),
        aya::programs::Program::SchedClassifier(p) => p.test_run(opts),
        _ => unreachable!(),
    }
    .unwrap_or_else(|e| {
        panic!(
            "test run of {program} on {} bytes: {}",
            frame.len(),
            error_chain(&e)
        )
    });
    (
        result.return_value as i32,
        result.duration.as_nanos() as u64,
    )
}

fn drain(bpf: &mut Ebpf) -> Vec<PacketRecord> {
    let mut ring = RingBuf::try_from(bpf.map_mut(names::EVENTS).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(PacketRecord::from_bytes(&item).expect("record size"));
    }
    out
}

fn counters(bpf: &Ebpf) -> HashMap<DevKey, DevCounters> {
    let map = PerCpuHashMap::<_, DevKey, DevCounters>::try_from(bpf.map(names::COUNTERS).unwrap())
        .unwrap();
    // Keys carry the L4 protocol; these tests compare per device, direction and hook.
    let mut out: HashMap<DevKey, DevCounters> = HashMap::new();
    for kv in map.iter() {
        let (mut k, per_cpu) = kv.unwrap();
        k.l4_proto = 0;
        let sum = out.entry(k).or_default();
        per_cpu.iter().for_each(|c| sum.add(c));
    }
    out
}

fn stats(bpf: &Ebpf) -> Stats {
    let map = PerCpuArray::<_, Stats>::try_from(bpf.map(names::STATS).unwrap()).unwrap();
    let mut sum = Stats::default();
    map.get(&0, 0).unwrap().iter().for_each(|s| sum.add(s));
    sum
}

// ---- frames -------------------------------------------------------------------------------

const XDP_PASS: i32 = 2;
const TCX_NEXT: i32 = -1;

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn vlan(f: &mut Vec<u8>, vid: u16, inner: u16) {
    f.extend_from_slice(&(0x2000 | vid).to_be_bytes()); // priority 1
    f.extend_from_slice(&inner.to_be_bytes());
}

fn ipv4(f: &mut Vec<u8>, proto: u8, options: usize, frag_off: u16, payload: usize) {
    let ihl = 5 + options / 4;
    let total = (ihl * 4 + payload) as u16;
    f.push(0x40 | ihl as u8);
    f.push(0);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&frag_off.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
    f.extend(std::iter::repeat_n(1u8, options)); // NOPs
}

const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn ipv6(f: &mut Vec<u8>, next: u8, payload: usize) {
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&V6_SRC);
    f.extend_from_slice(&V6_DST);
}

/// An IPv6 extension header of `8 * (len8 + 1)` bytes.
fn ext6(f: &mut Vec<u8>, next: u8, len8: u8) {
    f.extend_from_slice(&[next, len8]);
    f.extend(std::iter::repeat_n(0u8, 6 + 8 * usize::from(len8)));
}

fn frag6(f: &mut Vec<u8>, next: u8, offset8: u16, more: bool) {
    f.extend_from_slice(&[next, 0]);
    f.extend_from_slice(&(offset8 << 3 | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 42]);
}

fn tcp(f: &mut Vec<u8>, sport: u16, dport: u16, flags: u8) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
}

fn udp(f: &mut Vec<u8>, sport: u16, dport: u16, payload: usize) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend(std::iter::repeat_n(0u8, payload));
}

/// What a record should say about a frame (the fields the parser fills).
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    ethertype: u16,
    l4_proto: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    flags: u8,
    vlan_id: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

fn parsed(r: &PacketRecord) -> Parsed {
    Parsed {
        ethertype: r.ethertype,
        l4_proto: r.l4_proto,
        sport: r.sport,
        dport: r.dport,
        tcp_flags: r.tcp_flags,
        flags: r.flags,
        vlan_id: r.vlan_id,
        saddr: r.saddr,
        daddr: r.daddr,
    }
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

const V4_SRC: [u8; 4] = [192, 0, 2, 1];
const V4_DST: [u8; 4] = [198, 51, 100, 7];

fn cases() -> Vec<(&'static str, Vec<u8>, Parsed)> {
    let mut cases = Vec::new();
    let v4_addrs = (v4(V4_SRC), v4(V4_DST));

    let mut f = eth(0x0800);
    ipv4(&mut f, 6, 0, 0, 20);
    tcp(&mut f, 40000, 443, 0x42); // SYN + ECE
    cases.push((
        "IPv4 TCP SYN",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 6,
            sport: 40000,
            dport: 443,
            tcp_flags: 0x42,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0800);
    ipv4(&mut f, 6, 8, 0, 20);
    tcp(&mut f, 1, 2, 0x11); // FIN + ACK
    cases.push((
        "IPv4 with options, TCP FIN",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 6,
            sport: 1,
            dport: 2,
            tcp_flags: 0x11,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x8100);
    vlan(&mut f, 100, 0x0800);
    ipv4(&mut f, 17, 0, 0, 12);
    udp(&mut f, 5353, 53, 4);
    cases.push((
        "802.1Q IPv4 UDP",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 17,
            sport: 5353,
            dport: 53,
            flags: PERISCOPE_PKT_VLAN,
            vlan_id: 100,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x88a8);
    vlan(&mut f, 10, 0x8100);
    vlan(&mut f, 20, 0x86dd);
    ipv6(&mut f, 17, 8);
    udp(&mut f, 1111, 2222, 0);
    cases.push((
        "802.1ad + 802.1Q IPv6 UDP",
        f,
        Parsed {
            ethertype: 0x86dd,
            l4_proto: 17,
            sport: 1111,
            dport: 2222,
            flags: PERISCOPE_PKT_VLAN,
            vlan_id: 10,
            saddr: V6_SRC,
            daddr: V6_DST,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x8100);
    vlan(&mut f, 1, 0x8100);
    vlan(&mut f, 2, 0x8100);
    vlan(&mut f, 3, 0x0800);
    ipv4(&mut f, 17, 0, 0, 8);
    udp(&mut f, 1, 2, 0);
    cases.push((
        "three VLAN tags: more than the parser walks",
        f,
        Parsed {
            ethertype: 0x8100,
            flags: PERISCOPE_PKT_VLAN | PERISCOPE_PKT_TRUNCATED,
            vlan_id: 1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x86dd);
    ipv6(&mut f, 0, 8 + 8 + 20);
    ext6(&mut f, 44, 0); // hop-by-hop
    frag6(&mut f, 6, 0, true); // first fragment
    tcp(&mut f, 80, 50000, 0x18);
    cases.push((
        "IPv6 hop-by-hop + first fragment, TCP",
        f,
        Parsed {
            ethertype: 0x86dd,
            l4_proto: 6,
            sport: 80,
            dport: 50000,
            tcp_flags: 0x18,
            saddr: V6_SRC,
            daddr: V6_DST,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x86dd);
    ipv6(&mut f, 60, 16 + 8 + 8);
    ext6(&mut f, 44, 1); // destination options, 16 bytes
    frag6(&mut f, 17, 100, false); // a later fragment
    udp(&mut f, 9, 9, 0);
    cases.push((
        "IPv6 non-first fragment",
        f,
        Parsed {
            ethertype: 0x86dd,
            l4_proto: 17,
            flags: PERISCOPE_PKT_FRAGMENT,
            saddr: V6_SRC,
            daddr: V6_DST,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x86dd);
    ipv6(&mut f, 0, 5 * 8 + 8);
    for next in [60, 60, 60, 60, 17] {
        ext6(&mut f, next, 0);
    }
    udp(&mut f, 1, 2, 0);
    cases.push((
        "IPv6 with five extension headers",
        f,
        Parsed {
            ethertype: 0x86dd,
            l4_proto: 60,
            flags: PERISCOPE_PKT_TRUNCATED,
            saddr: V6_SRC,
            daddr: V6_DST,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x86dd);
    ipv6(&mut f, 58, 8);
    f.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    cases.push((
        "ICMPv6 echo request",
        f,
        Parsed {
            ethertype: 0x86dd,
            l4_proto: 58,
            sport: 128,
            saddr: V6_SRC,
            daddr: V6_DST,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0800);
    ipv4(&mut f, 17, 0, 0x0010, 8); // fragment offset 16 * 8
    udp(&mut f, 1, 2, 0);
    cases.push((
        "IPv4 non-first fragment",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 17,
            flags: PERISCOPE_PKT_FRAGMENT,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0800);
    ipv4(&mut f, 6, 0, 0, 20);
    f.extend_from_slice(&[0x9c, 0x40, 0x01]); // 3 bytes of a TCP header
    cases.push((
        "IPv4 with a cut TCP header",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 6,
            flags: PERISCOPE_PKT_TRUNCATED,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0800);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1]); // 6 bytes of an IPv4 header
    cases.push((
        "a cut IPv4 header",
        f,
        Parsed {
            ethertype: 0x0800,
            flags: PERISCOPE_PKT_TRUNCATED,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0800);
    ipv4(&mut f, 17, 0, 0, 8);
    f[14] = 0x43; // IHL 3: shorter than an IPv4 header
    udp(&mut f, 1, 2, 0);
    cases.push((
        "IPv4 with a bogus IHL",
        f,
        Parsed {
            ethertype: 0x0800,
            l4_proto: 17,
            flags: PERISCOPE_PKT_TRUNCATED,
            saddr: v4_addrs.0,
            daddr: v4_addrs.1,
            ..Parsed::default()
        },
    ));

    let mut f = eth(0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend(std::iter::repeat_n(0u8, 20));
    cases.push((
        "ARP",
        f,
        Parsed {
            ethertype: 0x0806,
            ..Parsed::default()
        },
    ));

    cases
}

#[test]
fn the_parser_reads_what_each_frame_carries() {
    if !bpf_capable("the_parser_reads_what_each_frame_carries") {
        return;
    }
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mut bpf =
        loaded(load_packet(&CONFIG, Some(&btf)).unwrap_or_else(|e| panic!("{}", error_chain(&e))));
    let mut failures = Vec::new();
    let mut frames = 0u64;
    let mut bytes = 0u64;
    for (what, frame, want) in cases() {
        for (program, verdict, hook, direction) in [
            (
                names::XDP,
                XDP_PASS,
                PERISCOPE_HOOK_XDP,
                PERISCOPE_DIR_INGRESS,
            ),
            (
                names::TC_EGRESS,
                TCX_NEXT,
                PERISCOPE_HOOK_TC,
                PERISCOPE_DIR_EGRESS,
            ),
        ] {
            // The kernel's skb test run refuses an IPv4 frame without a whole IPv4 header
            // (EINVAL); only XDP can be fed one.
            if program == names::TC_EGRESS && what == "a cut IPv4 header" {
                continue;
            }
            let (ret, _) = run(&bpf, program, &frame, 1);
            assert_eq!(
                ret, verdict,
                "{what}: {program} must let every packet through"
            );
            let recs = drain(&mut bpf);
            assert_eq!(recs.len(), 1, "{what}: {program}: one record");
            let r = recs[0];
            assert_eq!(
                (r.kind, r.version, r.hook, r.direction),
                (
                    PERISCOPE_RECORD_PACKET,
                    PERISCOPE_PACKET_VERSION,
                    hook,
                    direction
                ),
                "{what}: {program}"
            );
            assert_eq!(
                (r.netns_cookie, r.netns_inode),
                (CONFIG.netns_cookie, CONFIG.netns_inode)
            );
            assert_eq!(r.len as usize, frame.len(), "{what}: {program}: length");
            // This config does not classify (no PERISCOPE_CFG_LOCALITY): 0, like padding.
            assert_eq!((r.locality, r._pad1), (0, 0), "{what}: padding is zeroed");
            let got = parsed(&r);
            if got != want {
                failures.push(format!(
                    "{what} ({program}):\n  got  {got:?}\n  want {want:?}"
                ));
            }
            frames += 1;
            bytes += frame.len() as u64;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every run was counted, under the test netns's loopback (where test runs happen).
    let counted = counters(&bpf);
    let total = counted.values().fold(DevCounters::default(), |mut acc, c| {
        acc.add(c);
        acc
    });
    assert_eq!(
        total,
        DevCounters {
            packets: frames,
            bytes,
            ..DevCounters::default()
        }
    );
    assert_eq!(counted.len(), 2, "one key per hook: {counted:?}");
    for k in counted.keys() {
        assert_eq!(
            (k.netns_cookie, k.netns_inode),
            (CONFIG.netns_cookie, CONFIG.netns_inode)
        );
        assert_eq!((k.locality, k._pad), (0, [0; 4]));
    }
}

/// A full ring buffer loses records, never counts: every packet is in the counters, and
/// every record that did not fit is counted as lost.
#[test]
fn a_full_ring_buffer_loses_records_but_counts_them() {
    if !bpf_capable("a_full_ring_buffer_loses_records_but_counts_them") {
        return;
    }
    const RING: u32 = 64 * 1024;
    const RUNS: u32 = 5000;
    let mut bpf = loaded(
        EbpfLoader::new()
            .override_global(names::CONFIG, &CONFIG, true)
            .map_max_entries(names::EVENTS, RING)
            .load(packet_object().unwrap())
            .unwrap_or_else(|e| panic!("{}", error_chain(&e))),
    );
    let mut frame = eth(0x0800);
    ipv4(&mut frame, 17, 0, 0, 8);
    udp(&mut frame, 1, 2, 0);
    let (_, ns_per_run) = run(&bpf, names::XDP, &frame, RUNS);
    let recorded = drain(&mut bpf).len() as u64;
    let counted = counters(&bpf);
    assert_eq!(counted.len(), 1);
    let c = counted.values().next().unwrap();
    assert_eq!(c.packets, u64::from(RUNS));
    assert!(
        c.records_lost > 0,
        "{RUNS} records cannot fit in {RING} bytes"
    );
    // 8 bytes of ring-buffer header per 80-byte record.
    assert_eq!(recorded, u64::from(RING) / 88, "records that fit");
    assert_eq!(
        recorded + c.records_lost,
        u64::from(RUNS),
        "recorded + lost"
    );
    assert_eq!(
        stats(&bpf),
        Stats {
            records_lost: c.records_lost,
            counters_map_full: 0
        }
    );
    eprintln!(
        "XDP test run with a record per packet: {ns_per_run} ns/packet; {recorded} recorded, {} \
         lost and counted",
        c.records_lost
    );
}

/// With records off (`periscope_config.flags == 0`) the programs only count.
#[test]
fn counters_only_mode_writes_no_records() {
    if !bpf_capable("counters_only_mode_writes_no_records") {
        return;
    }
    let config = Config { flags: 0, ..CONFIG };
    let mut bpf =
        loaded(load_packet(&config, None).unwrap_or_else(|e| panic!("{}", error_chain(&e))));
    let mut frame = eth(0x0800);
    ipv4(&mut frame, 17, 0, 0, 8);
    udp(&mut frame, 1, 2, 0);
    let (_, ns_per_run) = run(&bpf, names::XDP, &frame, 1000);
    assert_eq!(drain(&mut bpf).len(), 0);
    let c = counters(&bpf);
    let c = c.values().next().expect("a counter");
    assert_eq!(
        (c.packets, c.bytes, c.records_lost),
        (1000, 1000 * frame.len() as u64, 0)
    );
    eprintln!("XDP test run, counters only: {ns_per_run} ns/packet");
}

/// Counters are kept per L4 protocol; `sample_rate` writes about 1 record in N; DNS packets
/// (port 53) are written whatever the sampling when `PERISCOPE_CFG_DNS` is set, even with
/// records off.
#[test]
fn sampling_dns_and_per_transport_counters() {
    if !bpf_capable("sampling_dns_and_per_transport_counters") {
        return;
    }
    const RUNS: u32 = 4000;
    let mut udp_frame = eth(0x0800);
    ipv4(&mut udp_frame, 17, 0, 0, 8);
    udp(&mut udp_frame, 1000, 2000, 0);
    let mut tcp_frame = eth(0x0800);
    ipv4(&mut tcp_frame, 6, 0, 0, 20);
    tcp(&mut tcp_frame, 1000, 2000, 0x10);
    let mut dns_frame = eth(0x0800);
    ipv4(&mut dns_frame, 17, 0, 0, 8);
    udp(&mut dns_frame, 33333, 53, 0);

    // 1 in 8, plus DNS.
    let config = Config {
        flags: PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_DNS,
        sample_rate: 8,
        ..CONFIG
    };
    let mut bpf =
        loaded(load_packet(&config, None).unwrap_or_else(|e| panic!("{}", error_chain(&e))));
    run(&bpf, names::XDP, &udp_frame, RUNS);
    run(&bpf, names::XDP, &tcp_frame, 10);
    run(&bpf, names::XDP, &dns_frame, 50);
    let recs = drain(&mut bpf);
    let sampled = recs
        .iter()
        .filter(|r| r.dport == 2000 && r.l4_proto == 17)
        .count();
    let dns = recs.iter().filter(|r| r.dport == 53).count();
    assert_eq!(dns, 50, "every DNS packet is written");
    let expect = (RUNS / 8) as usize;
    assert!(
        sampled > expect / 2 && sampled < expect * 2,
        "1 in 8 of {RUNS}: {sampled} records"
    );
    // Per-transport keys.
    let map = PerCpuHashMap::<_, DevKey, DevCounters>::try_from(bpf.map(names::COUNTERS).unwrap())
        .unwrap();
    let mut by_proto: HashMap<u8, u64> = HashMap::new();
    for kv in map.iter() {
        let (k, per_cpu) = kv.unwrap();
        *by_proto.entry(k.l4_proto).or_default() += per_cpu.iter().map(|c| c.packets).sum::<u64>();
    }
    assert_eq!(by_proto.get(&17), Some(&u64::from(RUNS + 50)));
    assert_eq!(by_proto.get(&6), Some(&10));

    // Records off, DNS on: only DNS.
    let config = Config {
        flags: PERISCOPE_CFG_DNS,
        sample_rate: 0,
        ..CONFIG
    };
    let mut bpf =
        loaded(load_packet(&config, None).unwrap_or_else(|e| panic!("{}", error_chain(&e))));
    run(&bpf, names::XDP, &udp_frame, 100);
    run(&bpf, names::XDP, &dns_frame, 7);
    // A configured DNS port (CONFIG.dns_ports has 5353) counts as DNS too.
    let mut mdns_frame = eth(0x0800);
    ipv4(&mut mdns_frame, 17, 0, 0, 8);
    udp(&mut mdns_frame, 5353, 40000, 0);
    run(&bpf, names::XDP, &mdns_frame, 3);
    let recs = drain(&mut bpf);
    assert_eq!(recs.len(), 10);
    assert_eq!(recs.iter().filter(|r| r.dport == 53).count(), 7);
    assert_eq!(recs.iter().filter(|r| r.sport == 5353).count(), 3);
    eprintln!("1-in-8 sampling wrote {sampled} of {RUNS} records (expected ~{expect})");
}
