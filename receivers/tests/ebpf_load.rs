//! The embedded eBPF object in the running kernel: the verifier accepts every program, and
//! attached to a veth pair between two network namespaces made by the test, the programs
//! count and record exactly the packets the test sent.
//!
//! Needs root on a BPF-capable kernel (with TCX, 6.6+) and iproute2. Without root these tests
//! skip with a one-line reason, except when `CI` is set: then they fail.
//!
//! Traffic stays inside the two namespaces the test creates (10.200.0.0/24 and
//! fd00:7e57::/64 on the veth between them); both are deleted when the test ends, even when it
//! fails, so the tests can run again at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Btf, Ebpf};
use periscope_pipeline::model::{Direction, NetworkType, PacketEvent, Transport};
use periscope_receivers::netdev::{decode_packet, load_packet};
use periscope_receivers::shared::ebpf::records::*;
use periscope_receivers::shared::ebpf::{
    names, BootClock, Config, DevCounters, DevKey, PacketRecord, Stats,
};

use periscope_testkit::pcapgen::checksum;
use periscope_testkit::receiver::error_chain;
use periscope_testkit::{bpf_capable, Netns};

fn load(config: &Config, btf: &Btf) -> Ebpf {
    load_packet(config, Some(btf)).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

fn xdp<'a>(bpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    bpf.program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn classifier<'a>(bpf: &'a mut Ebpf, name: &str) -> &'a mut SchedClassifier {
    bpf.program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_verifier_accepts_every_program() {
    if !bpf_capable("the_verifier_accepts_every_program") {
        return;
    }
    let t = Instant::now();
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let btf_parse = t.elapsed();
    let config = Config {
        netns_cookie: 0x1234_5678_9abc_def0,
        netns_inode: 4026531840,
        flags: PERISCOPE_CFG_RECORDS,
        ..Config::default()
    };
    let t = Instant::now();
    drop(aya::EbpfLoader::new());
    let loader_new = t.elapsed();
    let t = Instant::now();
    let mut bpf = load(&config, &btf);
    let object_load = t.elapsed();

    let t = Instant::now();
    xdp(&mut bpf, names::XDP)
        .load()
        .unwrap_or_else(|e| panic!("{}: {}", names::XDP, error_chain(&e)));
    for name in [names::TC_INGRESS, names::TC_EGRESS] {
        classifier(&mut bpf, name)
            .load()
            .unwrap_or_else(|e| panic!("{name}: {}", error_chain(&e)));
    }
    let programs_load = t.elapsed();

    // With burst detection on, its code is live: the verifier sees it too.
    let mut bursts = load(
        &Config {
            flags: PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_BURSTS,
            ..config
        },
        &btf,
    );
    xdp(&mut bursts, names::XDP)
        .load()
        .unwrap_or_else(|e| panic!("{} with bursts: {}", names::XDP, error_chain(&e)));
    for name in [names::TC_INGRESS, names::TC_EGRESS] {
        classifier(&mut bursts, name)
            .load()
            .unwrap_or_else(|e| panic!("{name} with bursts: {}", error_chain(&e)));
    }
    drop(bursts);

    // The loader's config reached the object's .rodata (which holds periscope_config, then
    // periscope_burst_config with the object's defaults).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Rodata {
        config: Config,
        bursts: periscope_receivers::shared::ebpf::BurstConfig,
    }
    // SAFETY: two Pod structs without padding between them (24 bytes, then 8-aligned).
    unsafe impl aya::Pod for Rodata {}
    let rodata: Array<&MapData, Rodata> =
        Array::try_from(bpf.map(".rodata").expect(".rodata map")).expect(".rodata as Config");
    let read = rodata.get(&0, 0).expect("read .rodata");
    assert_eq!(read.config, config);
    assert_eq!((read.bursts.buckets, read.bursts.bucket_ns), (10, 100_000));
    // The maps are what the Rust side expects them to be.
    PerCpuHashMap::<_, DevKey, DevCounters>::try_from(bpf.map(names::COUNTERS).unwrap())
        .expect("counters map");
    PerCpuArray::<_, Stats>::try_from(bpf.map(names::STATS).unwrap()).expect("stats map");
    RingBuf::try_from(bpf.map(names::EVENTS).unwrap()).expect("ring buffer");
    eprintln!(
        "kernel BTF parse {btf_parse:?}; EbpfLoader::new() alone {loader_new:?} (it parses \
         the kernel BTF itself, even when .btf() is given one); object load (maps, \
         relocations) {object_load:?}; 3 programs through the verifier {programs_load:?}"
    );
}

// ---- namespaces and traffic ---------------------------------------------------------------

/// The namespace's inode and cookie, as a program's [`Config`].
fn config(ns: &Netns) -> Config {
    Config {
        netns_cookie: ns.cookie(),
        netns_inode: ns.inode() as u32,
        flags: PERISCOPE_CFG_RECORDS,
        ..Config::default()
    }
}

/// Sends `count` ICMP echo requests (56 bytes of data, like ping) to `dst` from the calling
/// thread's namespace and returns how many replies came back.
fn ping(dst: Ipv4Addr, count: u16, ident: u16) -> usize {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval of the given size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let mut replies = 0;
    for seq in 1..=count {
        let mut pkt = [0u8; 64];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..].fill(0x5a);
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: valid buffer and address of the given lengths.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(n, 64, "sendto: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut buf = [0u8; 256];
            // SAFETY: valid buffer of the given length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            // A raw socket gets the IP header too.
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let icmp = &buf[ihl..n as usize];
            if icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                replies += 1;
                break;
            }
        }
    }
    replies
}

/// Sends `count` datagrams of `size` bytes from `from` (bound in the calling thread's
/// namespace) to `to`; returns the source port.
fn send_udp(from: SocketAddr, to: SocketAddr, count: usize, size: usize) -> u16 {
    let sock = UdpSocket::bind(from).expect("bind UDP sender");
    for _ in 0..count {
        sock.send_to(&vec![0x42; size], to).expect("send UDP");
    }
    sock.local_addr().unwrap().port()
}

fn receive_udp(sock: &UdpSocket, count: usize) -> usize {
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    (0..count)
        .take_while(|_| sock.recv(&mut buf).is_ok())
        .count()
}

// ---- reading the maps ---------------------------------------------------------------------

/// Every record in the ring buffer, as raw records and decoded events.
fn drain(bpf: &mut Ebpf, clock: &BootClock) -> Vec<(PacketRecord, PacketEvent)> {
    let mut ring = RingBuf::try_from(bpf.map_mut(names::EVENTS).unwrap()).expect("ring buffer");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        let rec = PacketRecord::from_bytes(&item).expect("record size");
        let ev = decode_packet(&item, clock).unwrap_or_else(|e| panic!("{e}: {rec:?}"));
        out.push((rec, ev));
    }
    out
}

/// The counters summed over CPUs, by key.
fn counters(bpf: &Ebpf) -> HashMap<DevKey, DevCounters> {
    let map = PerCpuHashMap::<_, DevKey, DevCounters>::try_from(bpf.map(names::COUNTERS).unwrap())
        .expect("counters map");
    // Keys carry the L4 protocol; these tests compare per device, direction and hook.
    let mut out: HashMap<DevKey, DevCounters> = HashMap::new();
    for kv in map.iter() {
        let (mut k, per_cpu) = kv.expect("read counters");
        k.l4_proto = 0;
        let sum = out.entry(k).or_default();
        per_cpu.iter().for_each(|c| sum.add(c));
    }
    out
}

fn stats(bpf: &Ebpf) -> Stats {
    let map = PerCpuArray::<_, Stats>::try_from(bpf.map(names::STATS).unwrap()).expect("stats");
    let mut sum = Stats::default();
    map.get(&0, 0)
        .expect("read stats")
        .iter()
        .for_each(|s| sum.add(s));
    sum
}

/// Checks that each key's counters match its records exactly, and returns its records.
fn records_of(
    what: &str,
    key: DevKey,
    counters: &HashMap<DevKey, DevCounters>,
    records: &[(PacketRecord, PacketEvent)],
) -> Vec<(PacketRecord, PacketEvent)> {
    let c = counters
        .get(&key)
        .unwrap_or_else(|| panic!("{what}: no counters for {key:?}; have {counters:?}"));
    let mine: Vec<_> = records
        .iter()
        .filter(|(r, _)| {
            (
                r.netns_cookie,
                r.netns_inode,
                r.ifindex,
                r.direction,
                r.hook,
            ) == (
                key.netns_cookie,
                key.netns_inode,
                key.ifindex,
                key.direction,
                key.hook,
            )
        })
        .copied()
        .collect();
    assert_eq!(c.records_lost, 0, "{what}: records lost");
    assert_eq!(
        c.packets,
        mine.len() as u64,
        "{what}: packets counted vs records"
    );
    let bytes: u64 = mine.iter().map(|(r, _)| u64::from(r.len)).sum();
    assert_eq!(c.bytes, bytes, "{what}: bytes counted vs record lengths");
    mine
}

fn key(config: &Config, ifindex: u32, direction: u8, hook: u8) -> DevKey {
    DevKey {
        netns_cookie: config.netns_cookie,
        netns_inode: config.netns_inode,
        ifindex,
        direction,
        hook,
        l4_proto: 0,
        // These loads do not set PERISCOPE_CFG_LOCALITY.
        locality: 0,
        _pad: [0; 4],
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn xdp_and_tcx_links_count_and_record_pings_between_two_namespaces() {
    let test = "xdp_and_tcx_links_count_and_record_pings_between_two_namespaces";
    if !bpf_capable(test) {
        return;
    }
    const PINGS: u16 = 5;
    const DATAGRAMS: usize = 3;
    // Namespaces first: they are dropped (deleted) last, after the programs and links.
    let a = Netns::new();
    let b = Netns::new();
    a.ip(&[
        "link",
        "add",
        "veth-a",
        "type",
        "veth",
        "peer",
        "name",
        "veth-b",
        "netns",
        b.name(),
    ]);
    for (ns, dev, v4, v6) in [
        (&a, "veth-a", "10.200.0.1/24", "fd00:7e57::1/64"),
        (&b, "veth-b", "10.200.0.2/24", "fd00:7e57::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", dev]);
        ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    let (cfg_a, cfg_b) = (config(&a), config(&b));
    let (if_a, if_b) = (a.ifindex("veth-a"), b.ifindex("veth-b"));
    let btf = Btf::from_sys_fs().expect("kernel BTF");

    // XDP on veth-b (namespace b), through a real bpf_link: aya falls back to netlink
    // silently, and only a link can be pinned and resists `ip link set dev X xdp off`.
    let mut bpf_b = load(&cfg_b, &btf);
    // Records start when the first program is attached.
    let start_ns = unix_now_ns();
    let clock = BootClock::now();
    let t = Instant::now();
    let prog = xdp(&mut bpf_b, names::XDP);
    prog.load()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let xdp_link = b.run(|| {
        let id = prog
            .attach("veth-b", XdpMode::default())
            .unwrap_or_else(|e| panic!("attach XDP: {}", error_chain(&e)));
        prog.take_link(id).expect("take XDP link")
    });
    let xdp_link = FdLink::try_from(xdp_link)
        .unwrap_or_else(|e| panic!("XDP attached through netlink, not a bpf_link: {e}"));
    let xdp_attach = t.elapsed();

    // TC on veth-a (namespace a), both directions, as TCX links.
    let mut bpf_a = load(&cfg_a, &btf);
    let t = Instant::now();
    let mut tc_links = Vec::new();
    for (name, attach_type) in [
        (names::TC_INGRESS, TcAttachType::Ingress),
        (names::TC_EGRESS, TcAttachType::Egress),
    ] {
        let prog = classifier(&mut bpf_a, name);
        prog.load()
            .unwrap_or_else(|e| panic!("{name}: {}", error_chain(&e)));
        let link = a.run(|| {
            let id = prog
                .attach_with_options(
                    "veth-a",
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .unwrap_or_else(|e| panic!("attach {name} as TCX: {}", error_chain(&e)));
            prog.take_link(id).expect("take TC link")
        });
        tc_links.push(link);
    }
    let tc_attach = t.elapsed();

    // Traffic: pings from a to b, UDP over IPv4 and IPv6 from a to b.
    let v4_b = SocketAddr::new(IpAddr::from([10, 200, 0, 2]), 7777);
    let v6_b: SocketAddr = "[fd00:7e57::2]:7777".parse().unwrap();
    let (rx4, rx6) = b.run(|| {
        (
            UdpSocket::bind(v4_b).expect("bind in b"),
            UdpSocket::bind(v6_b).expect("bind v6 in b"),
        )
    });
    let ident = (std::process::id() & 0xffff) as u16;
    let (replies, port4, port6) = a.run(|| {
        let replies = ping(Ipv4Addr::new(10, 200, 0, 2), PINGS, ident);
        let port4 = send_udp("10.200.0.1:0".parse().unwrap(), v4_b, DATAGRAMS, 100);
        let port6 = send_udp("[fd00:7e57::1]:0".parse().unwrap(), v6_b, DATAGRAMS, 200);
        (replies, port4, port6)
    });
    assert_eq!(replies, usize::from(PINGS), "echo replies");
    assert_eq!(
        receive_udp(&rx4, DATAGRAMS),
        DATAGRAMS,
        "UDP/IPv4 datagrams received"
    );
    assert_eq!(
        receive_udp(&rx6, DATAGRAMS),
        DATAGRAMS,
        "UDP/IPv6 datagrams received"
    );

    // Detach, then read: nothing changes the maps while they are read.
    drop(xdp_link);
    drop(tc_links);
    let end_ns = unix_now_ns();

    // ---- namespace b: XDP ingress on veth-b.
    let recs_b = drain(&mut bpf_b, &clock);
    let counters_b = counters(&bpf_b);
    assert_eq!(stats(&bpf_b), Stats::default(), "b: stats");
    assert_eq!(
        counters_b.len(),
        1,
        "b: one device, one direction: {counters_b:?}"
    );
    let xdp_in = records_of(
        "XDP ingress veth-b",
        key(&cfg_b, if_b, PERISCOPE_DIR_INGRESS, PERISCOPE_HOOK_XDP),
        &counters_b,
        &recs_b,
    );
    for (_, ev) in &xdp_in {
        assert_eq!(ev.device.netns.inode, cfg_b.netns_inode);
        assert_eq!(ev.device.netns.cookie, cfg_b.netns_cookie);
        assert_eq!(ev.device.ifindex, if_b);
        assert_eq!(ev.direction, Direction::Ingress);
        // The clock offset is measured once; allow for the offset's drift.
        assert!(
            ev.timestamp_ns + 1_000_000 >= start_ns && ev.timestamp_ns <= end_ns + 1_000_000,
            "timestamp {} outside [{start_ns}, {end_ns}]",
            ev.timestamp_ns
        );
    }

    // ---- namespace a: TCX egress and ingress on veth-a.
    let recs_a = drain(&mut bpf_a, &clock);
    let counters_a = counters(&bpf_a);
    assert_eq!(stats(&bpf_a), Stats::default(), "a: stats");
    let tc_out = records_of(
        "TCX egress veth-a",
        key(&cfg_a, if_a, PERISCOPE_DIR_EGRESS, PERISCOPE_HOOK_TC),
        &counters_a,
        &recs_a,
    );
    let tc_in = records_of(
        "TCX ingress veth-a",
        key(&cfg_a, if_a, PERISCOPE_DIR_INGRESS, PERISCOPE_HOOK_TC),
        &counters_a,
        &recs_a,
    );
    assert_eq!(counters_a.len(), 2, "a: {counters_a:?}");

    let ip_a = IpAddr::from([10, 200, 0, 1]);
    let ip_b = IpAddr::from([10, 200, 0, 2]);
    let icmp = |recs: &[(PacketRecord, PacketEvent)], icmp_type: u16, src: IpAddr, dst: IpAddr| {
        recs.iter()
            .filter(|(r, ev)| {
                ev.transport == Transport::Icmp
                    && r.sport == icmp_type
                    && (ev.src_addr, ev.dst_addr) == (src, dst)
            })
            .map(|(_, ev)| {
                // 14 Ethernet + 20 IPv4 + 8 ICMP + 56 data, as ping sends.
                assert_eq!(ev.length, 98, "{ev:?}");
                assert_eq!(ev.network, NetworkType::Ipv4);
            })
            .count()
    };
    let udp = |recs: &[(PacketRecord, PacketEvent)], network: NetworkType, sport: u16| {
        recs.iter()
            .filter(|(_, ev)| {
                ev.transport == Transport::Udp
                    && ev.network == network
                    && (ev.src_port, ev.dst_port) == (sport, 7777)
            })
            .map(|(_, ev)| {
                let expected = match network {
                    NetworkType::Ipv4 => 14 + 20 + 8 + 100,
                    _ => 14 + 40 + 8 + 200,
                };
                assert_eq!(ev.length, expected, "{ev:?}");
            })
            .count()
    };
    let pings = usize::from(PINGS);
    assert_eq!(icmp(&xdp_in, 8, ip_a, ip_b), pings, "XDP: echo requests in");
    assert_eq!(
        icmp(&tc_out, 8, ip_a, ip_b),
        pings,
        "TCX: echo requests out"
    );
    assert_eq!(icmp(&tc_in, 0, ip_b, ip_a), pings, "TCX: echo replies in");
    assert_eq!(
        udp(&xdp_in, NetworkType::Ipv4, port4),
        DATAGRAMS,
        "XDP: UDP/IPv4 in"
    );
    assert_eq!(
        udp(&tc_out, NetworkType::Ipv4, port4),
        DATAGRAMS,
        "TCX: UDP/IPv4 out"
    );
    assert_eq!(
        udp(&xdp_in, NetworkType::Ipv6, port6),
        DATAGRAMS,
        "XDP: UDP/IPv6 in"
    );
    assert_eq!(
        udp(&tc_out, NetworkType::Ipv6, port6),
        DATAGRAMS,
        "TCX: UDP/IPv6 out"
    );
    let v6_dst = recs_b
        .iter()
        .find(|(_, ev)| ev.network == NetworkType::Ipv6 && ev.transport == Transport::Udp)
        .map(|(_, ev)| ev.dst_addr);
    assert_eq!(v6_dst, Some("fd00:7e57::2".parse().unwrap()));

    eprintln!(
        "XDP attach (in netns) {xdp_attach:?}, 2 TCX attaches {tc_attach:?}; \
         b: {} records at XDP ingress; a: {} egress, {} ingress at TCX",
        xdp_in.len(),
        tc_out.len(),
        tc_in.len()
    );
}
