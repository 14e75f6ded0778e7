//! `bench_mix`: a receiver registered by this bench only, that replays a realistic mix of
//! packet, socket, DNS and burst events generated once at build time. Replaying copies each
//! event out of the pre-made cycle and patches its timestamp (and a socket's cookie, so that
//! every cycle's connections are new ones): the generator costs about what a memcpy does.

use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

use periscope_pipeline::component::{BuildContext, ComponentConfig, Receiver, ReceiverConfig};
use periscope_pipeline::devices::{DeviceInfo, NamespaceInfo};
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{
    BurstEvent, BurstPhase, DeviceRef, Direction, DnsEvent, Event, NetnsId, NetworkType,
    PacketEvent, ProcessRef, SocketEvent, SocketEventKind, SocketHook, SocketRole, Transport,
};
use periscope_pipeline::telemetry::now_ns;

/// Events in one generated cycle (replayed as often as `count` needs).
pub const CYCLE: usize = 1 << 18;
/// Network namespaces (pods), each with two devices.
pub const NAMESPACES: u32 = 16;
pub const DEVICES: u32 = NAMESPACES * 2;
/// Distinct packet 5-tuples.
pub const FLOWS: u32 = 512;
/// TCP connections per cycle: connect, established, two RTT samples, close.
pub const CONNECTIONS: u32 = 2048;
const SOCKET_EVENTS_PER_CONNECTION: usize = 5;
/// DNS query/response pairs per cycle, over `DNS_NAMES` names.
pub const DNS_LOOKUPS: u32 = 1024;
const DNS_NAMES: u32 = 64;
/// Burst start/end pairs per cycle.
pub const BURSTS: u32 = 4;
/// Event time between two consecutive events: 1 µs (a node seeing 1 M events/s).
const STEP_NS: u64 = 1000;

/// Replays the mix until `count` events were sent.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixConfig {
    pub count: u64,
}

impl ComponentConfig for MixConfig {
    const TYPE: &'static str = "bench_mix";
}

impl ReceiverConfig for MixConfig {
    fn is_finite(&self) -> bool {
        true
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(Mix {
            cycle: cycle(ctx),
            count: self.count,
        }))
    }
}

/// What one cycle holds, by kind (for the report).
pub fn composition() -> String {
    let sockets = CONNECTIONS as usize * SOCKET_EVENTS_PER_CONNECTION;
    let dns = 2 * DNS_LOOKUPS as usize;
    let bursts = 2 * BURSTS as usize;
    let packets = CYCLE - sockets - dns - bursts;
    format!(
        "mix per {CYCLE} events: {packets} packets ({FLOWS} 5-tuples, {DEVICES} devices in \
         {NAMESPACES} namespaces), {sockets} socket events ({CONNECTIONS} connections), {dns} DNS \
         ({DNS_LOOKUPS} lookups), {bursts} burst reports"
    )
}

fn netns(i: u32) -> NetnsId {
    NetnsId {
        inode: 4_026_532_000 + i,
        cookie: 1000 + u64::from(i),
    }
}

fn device(i: u32) -> DeviceRef {
    DeviceRef {
        netns: netns(i / 2),
        ifindex: 2 + i % 2,
    }
}

fn pod_addr(ns: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, ns as u8, 2))
}

fn server_addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 100, (i % 32) as u8, 10))
}

const DNS_SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10));

fn packet(i: u32) -> PacketEvent {
    let udp = i % 4 == 3;
    let dev = i % DEVICES;
    PacketEvent {
        timestamp_ns: 0,
        device: device(dev),
        direction: if i.is_multiple_of(2) {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        network: NetworkType::Ipv4,
        transport: if udp { Transport::Udp } else { Transport::Tcp },
        src_addr: pod_addr(dev / 2),
        dst_addr: server_addr(i),
        src_port: 32768 + i as u16,
        dst_port: if udp {
            53
        } else {
            [80, 443, 8080][(i % 3) as usize]
        },
        length: [66, 512, 1514][(i % 3) as usize],
        tcp_flags: if udp { 0 } else { 0x18 },
        locality: Default::default(),
    }
}

fn socket(c: u32, kind: SocketEventKind, pid: u32) -> SocketEvent {
    let ns = c % NAMESPACES;
    let client = c.is_multiple_of(2);
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    let (state, old_state) = match kind {
        SocketEventKind::Connect => (2, 7),
        SocketEventKind::Close => (7, 1),
        _ => (1, 1),
    };
    SocketEvent {
        cookie: u64::from(c) + 1,
        netns: netns(ns),
        cgroup_id: 0,
        process: ProcessRef {
            pid,
            tid: pid,
            comm,
        },
        local_addr: pod_addr(ns),
        remote_addr: server_addr(c),
        local_port: 40000 + (c % 20000) as u16,
        remote_port: if client { 443 } else { 8080 },
        kind,
        hook: SocketHook::Sockops,
        transport: Transport::Tcp,
        role: if client {
            SocketRole::Client
        } else {
            SocketRole::Server
        },
        state,
        old_state,
        srtt_us: 150 + c % 500,
        rttvar_us: 40,
        duration_ns: match kind {
            SocketEventKind::Established if client => 180_000 + u64::from(c % 97) * 1000,
            _ => 0,
        },
        bytes_sent: 4096,
        bytes_acked: 4096,
        bytes_received: 16384,
        ..SocketEvent::default()
    }
}

fn dns(l: u32, response: bool, name: u32) -> DnsEvent {
    let ns = l % NAMESPACES;
    let (client, server) = ((pod_addr(ns), 50000 + (l % 10000) as u16), (DNS_SERVER, 53));
    let ((src_addr, src_port), (dst_addr, dst_port)) = if response {
        (server, client)
    } else {
        (client, server)
    };
    let mut d = DnsEvent {
        device: device(ns * 2),
        direction: if response {
            Direction::Ingress
        } else {
            Direction::Egress
        },
        src_addr,
        dst_addr,
        src_port,
        dst_port,
        id: l as u16,
        is_response: response,
        qtype: 1,
        name,
        answer_ttl: 30,
        ..DnsEvent::default()
    };
    if response {
        d.push_answer(server_addr(l));
        if l.is_multiple_of(3) {
            d.push_answer(server_addr(l + 1));
        }
    }
    d
}

/// A burst report; `start_ns` holds how long before the report the burst began (the replay
/// makes it a time): 1 ms before its start report, 2.5 ms before its end report 1500 events on.
fn burst(b: u32, phase: BurstPhase) -> BurstEvent {
    BurstEvent {
        phase,
        start_ns: match phase {
            BurstPhase::Start => 1_000_000,
            BurstPhase::End => 2_500_000,
        },
        device: device(b % 2),
        direction: Direction::Ingress,
        cpu: b % 2,
        packets: 5000,
        bytes: 5000 * 1514,
        peak_pps: 2_000_000,
        peak_bytes_per_s: 3_000_000_000,
        ..BurstEvent::default()
    }
}

/// One cycle: the socket, DNS and burst events at spread-out slots among the packets (a
/// connection's events in order, each response shortly after its query). Registers the
/// devices', namespaces' and DNS names the way receivers do.
fn cycle(ctx: &BuildContext) -> Vec<Event> {
    for i in 0..NAMESPACES {
        ctx.namespaces.insert(
            netns(i),
            NamespaceInfo {
                name: Some(format!("pod-{i}")),
                cgroup: None,
                cgroup_late: false,
            },
        );
    }
    for i in 0..DEVICES {
        ctx.devices.insert(
            device(i),
            DeviceInfo {
                name: format!("eth{}", i % 2),
                netns_name: Some(format!("pod-{}", i / 2)),
                ..Default::default()
            },
        );
    }
    let names: Vec<u32> = (0..DNS_NAMES)
        .map(|i| ctx.dns.intern(&format!("svc-{i}.bench.svc.cluster.local")))
        .collect();
    let pid = std::process::id();
    // (slot among the packets, event): stable-sorted by slot.
    let mut special: Vec<(usize, Event)> = Vec::new();
    let span = CYCLE / 8;
    let spread = |k: u32, n: u32, room: usize| k as usize * (CYCLE - room - 1) / n as usize;
    for c in 0..CONNECTIONS {
        let s = spread(c, CONNECTIONS, span);
        use SocketEventKind::*;
        for (offset, kind) in [
            (0, Connect),
            (40, Established),
            (span / 3, Rtt),
            (2 * span / 3, Rtt),
            (span, Close),
        ] {
            special.push((s + offset, Event::Socket(socket(c, kind, pid))));
        }
    }
    for l in 0..DNS_LOOKUPS {
        let s = spread(l, DNS_LOOKUPS, 64);
        let name = names[(l % DNS_NAMES) as usize];
        special.push((s, Event::Dns(dns(l, false, name))));
        special.push((s + 30, Event::Dns(dns(l, true, name))));
    }
    for b in 0..BURSTS {
        let s = spread(b, BURSTS, 2000);
        special.push((s, Event::Burst(burst(b, BurstPhase::Start))));
        special.push((s + 1500, Event::Burst(burst(b, BurstPhase::End))));
    }
    special.sort_by_key(|(slot, _)| *slot);
    let packets = CYCLE - special.len();
    let mut events = Vec::with_capacity(CYCLE);
    let mut next = special.into_iter().peekable();
    for k in 0..packets {
        while let Some((_, e)) = next.next_if(|(slot, _)| *slot <= k) {
            events.push(e);
        }
        events.push(Event::Packet(packet(k as u32 % FLOWS)));
    }
    events.extend(next.map(|(_, e)| e));
    events
}

/// A built `bench_mix` receiver.
pub struct Mix {
    cycle: Vec<Event>,
    count: u64,
}

impl Receiver for Mix {
    fn run(self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        let start_ns = now_ns();
        let (mut produced, mut at, mut round) = (0u64, 0usize, 0u64);
        while produced < self.count && !stop.is_raised() {
            let mut batch = output.new_batch();
            let n = (batch.events.capacity() as u64).min(self.count - produced);
            for _ in 0..n {
                let ts = start_ns + produced * STEP_NS;
                let mut e = self.cycle[at];
                match &mut e {
                    Event::Packet(p) => p.timestamp_ns = ts,
                    Event::Socket(s) => {
                        s.timestamp_ns = ts;
                        s.cookie += round << 32;
                    }
                    Event::Dns(d) => d.timestamp_ns = ts,
                    Event::Burst(b) => {
                        // The cycle holds how long before its report the burst began.
                        b.end_ns = ts;
                        b.start_ns = ts.saturating_sub(b.start_ns);
                    }
                    _ => {}
                }
                batch.push(e);
                produced += 1;
                at += 1;
                if at == self.cycle.len() {
                    at = 0;
                    round += 1;
                }
            }
            output.send(batch);
        }
        Ok(())
    }
}
