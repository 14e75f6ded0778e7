//! Flows joined with their sockets: the kernel's per-flow totals go into the socket table
//! (for the `connections` processor's spans), and each TCP 5-tuple series whose socket the
//! table knows gets the socket's smoothed RTT (`periscope.network.flow.rtt`) and retransmit
//! total (`periscope.network.flow.retransmits`), as gauges with the series' attributes.
//! A flow belongs to a socket when it was seen on a device of the socket's own namespace and
//! its addresses and ports are the socket's, either way round; flows seen in other namespaces
//! (a pod's traffic on the node-side veth), of sockets the table never heard of (no
//! `connections` processor, sockets opened before the agent and idle since), or past the
//! table's capacity carry nothing.

use std::borrow::Cow;

use periscope_pipeline::model::{
    FlowCounters, KeyValue, Metric, MetricData, Number, NumberPoint, Transport,
};
use periscope_pipeline::telemetry::names;
use periscope_pipeline::SocketTable;

use super::SeriesKey;

/// Gives the socket table one flow's exact totals (TCP only: the sockets joined are TCP).
pub(super) fn record_flow(sockets: &SocketTable, f: &FlowCounters) {
    if f.transport != Transport::Tcp {
        return;
    }
    sockets.flow_totals(
        f.device,
        f.direction,
        f.transport,
        (f.src_addr, f.src_port),
        (f.dst_addr, f.dst_port),
        [f.packets, f.bytes],
        f.last,
    );
}

/// The RTT and retransmit gauges of the series in `rows` whose socket the table knows.
pub(super) fn socket_metrics<'a>(
    sockets: &SocketTable,
    rows: impl Iterator<Item = (&'a SeriesKey, Vec<KeyValue>)>,
    start: u64,
    now: u64,
) -> Vec<Metric> {
    let mut rtt = Vec::new();
    let mut retransmits = Vec::new();
    for (k, attributes) in rows {
        if k.transport != Transport::Tcp {
            continue;
        }
        let Some(s) = sockets.stats_by_tuple(
            k.device.netns,
            k.transport,
            (k.src_addr, k.src_port),
            (k.dst_addr, k.dst_port),
        ) else {
            continue;
        };
        if s.srtt_us > 0 {
            rtt.push(NumberPoint {
                attributes: attributes.clone(),
                start_time_ns: start,
                time_ns: now,
                value: Number::Double(f64::from(s.srtt_us) / 1e6),
            });
        }
        retransmits.push(NumberPoint {
            attributes,
            start_time_ns: start,
            time_ns: now,
            value: Number::Int(i64::from(s.total_retrans)),
        });
    }
    let mut out = Vec::new();
    if !rtt.is_empty() {
        out.push(Metric {
            name: Cow::Borrowed(names::NETWORK_FLOW_RTT),
            description: Cow::Borrowed("Smoothed RTT of the TCP socket that owns the flow."),
            unit: Cow::Borrowed("s"),
            data: MetricData::Gauge { points: rtt },
        });
    }
    if !retransmits.is_empty() {
        out.push(Metric {
            name: Cow::Borrowed(names::NETWORK_FLOW_RETRANSMITS),
            description: Cow::Borrowed(
                "Segments the TCP socket that owns the flow retransmitted so far.",
            ),
            unit: Cow::Borrowed("{segment}"),
            data: MetricData::Gauge {
                points: retransmits,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use periscope_pipeline::component::{Emitter, Processor};
    use periscope_pipeline::devices::DeviceTable;
    use periscope_pipeline::model::{
        Direction, Event, EventBatch, FlowCounters, MetricData, NetnsId, Number, Payload,
        SocketEvent, SocketEventKind, Telemetry, Transport,
    };
    use periscope_pipeline::telemetry::names;
    use periscope_pipeline::SocketTable;

    use crate::flow::{Flow, FlowConfig};

    const NS: NetnsId = NetnsId {
        inode: 3,
        cookie: 4,
    };

    fn a(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 62, 0, last))
    }

    fn flow(direction: Direction, src: (IpAddr, u16), dst: (IpAddr, u16), packets: u64) -> Event {
        let mut f = FlowCounters {
            direction,
            transport: Transport::Tcp,
            src_addr: src.0,
            src_port: src.1,
            dst_addr: dst.0,
            dst_port: dst.1,
            packets,
            bytes: packets * 100,
            ..FlowCounters::default()
        };
        f.device.netns = NS;
        f.device.ifindex = 2;
        Event::FlowCounters(f)
    }

    #[test]
    fn a_tcp_flow_carries_its_sockets_rtt_and_retransmits_and_gives_the_socket_its_counts() {
        let sockets = SocketTable::default();
        let config = FlowConfig {
            flow_attributes: true,
            ..FlowConfig::default()
        };
        let mut f =
            Flow::new(config, DeviceTable::default(), "flow".into()).with_sockets(sockets.clone());
        let (l, r) = ((a(1), 40000), (a(2), 80));
        sockets.observe_stats(&SocketEvent {
            netns: NS,
            transport: Transport::Tcp,
            kind: SocketEventKind::Close,
            local_addr: l.0,
            local_port: l.1,
            remote_addr: r.0,
            remote_port: r.1,
            srtt_us: 250,
            total_retrans: 3,
            ..SocketEvent::default()
        });
        let mut out = Emitter::default();
        let events = vec![
            flow(Direction::Egress, l, r, 4),
            flow(Direction::Ingress, r, l, 5),
            // Not this socket's: another port.
            flow(Direction::Egress, (a(1), 40001), r, 1),
        ];
        f.process(Payload::Events(EventBatch { events }), &mut out);
        f.flush(&mut out);
        let t = sockets
            .device_totals(NS, Transport::Tcp, l, r)
            .expect("the socket's device counts");
        assert_eq!(
            (
                t.packets_sent,
                t.bytes_sent,
                t.packets_received,
                t.bytes_received
            ),
            (4, 400, 5, 500)
        );
        let metrics: Vec<_> = out
            .take()
            .into_iter()
            .filter_map(|p| match p {
                Payload::Telemetry(Telemetry::Metrics(m)) => Some(m.metrics),
                _ => None,
            })
            .flatten()
            .collect();
        let gauge = |name: &str| -> Vec<Number> {
            metrics
                .iter()
                .filter(|m| m.name == name)
                .flat_map(|m| match &m.data {
                    MetricData::Gauge { points } => points.iter().map(|p| p.value).collect(),
                    _ => Vec::new(),
                })
                .collect()
        };
        // Both directions of the socket's flow, not the other port's.
        assert_eq!(
            gauge(names::NETWORK_FLOW_RTT),
            vec![Number::Double(0.00025); 2]
        );
        assert_eq!(
            gauge(names::NETWORK_FLOW_RETRANSMITS),
            vec![Number::Int(3); 2]
        );
    }
}
