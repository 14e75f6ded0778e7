//! Tests of the flow processor with flows counted in the kernel (`FlowCounters`): exact
//! per-5-tuple series, overflow, no double counting of packet records, end of flows and of
//! devices.

use super::*;
use periscope_pipeline::model::{EventBatch, Number, Telemetry};

use crate::testing::at_least_one;

fn tuple_config() -> FlowConfig {
    FlowConfig {
        flow_attributes: true,
        ..FlowConfig::default()
    }
}

fn packet(sport: u16) -> Event {
    let mut p = PacketEvent {
        length: 10,
        transport: Transport::Udp,
        src_port: sport,
        dst_port: 53,
        ..PacketEvent::default()
    };
    p.device.ifindex = 1;
    Event::Packet(p)
}

fn kernel_flow(sport: u16, packets: u64, last: bool) -> Event {
    let mut f = FlowCounters {
        transport: Transport::Udp,
        src_port: sport,
        dst_port: 53,
        packets,
        bytes: packets * 10,
        last,
        ..FlowCounters::default()
    };
    f.device.ifindex = 1;
    Event::FlowCounters(f)
}

fn device_counters(packets: u64, overflow: u64, last: bool) -> Event {
    let mut c = DeviceCounters {
        transport: Transport::Udp,
        packets,
        bytes: packets * 10,
        flows: true,
        flows_overflow_packets: overflow,
        flows_overflow_bytes: overflow * 10,
        last,
        ..DeviceCounters::default()
    };
    c.device.ifindex = 1;
    Event::DeviceCounters(c)
}

fn send(f: &mut Flow, events: Vec<Event>) {
    let mut out = Emitter::default();
    f.process(Payload::Events(EventBatch { events }), &mut out);
}

/// (source port or "overflow", packets) of every `periscope.network.packets` point.
fn packet_points(f: &mut Flow) -> Vec<(String, i64)> {
    let mut out = Emitter::default();
    f.flush(&mut out);
    let mut points = Vec::new();
    for p in out.take() {
        let Payload::Telemetry(Telemetry::Metrics(m)) = p else {
            continue;
        };
        for metric in m.metrics {
            if metric.name != names::NETWORK_PACKETS {
                continue;
            }
            let MetricData::Sum { points: pts, .. } = metric.data else {
                panic!("expected a sum")
            };
            for p in pts {
                let Number::Int(v) = p.value else {
                    panic!("expected ints")
                };
                let name = if p
                    .attributes
                    .contains(&KeyValue::new(names::ATTR_OVERFLOW, true))
                {
                    "overflow".to_string()
                } else {
                    let port = p
                        .attributes
                        .iter()
                        .find(|kv| kv.key == names::ATTR_SOURCE_PORT)
                        .map(|kv| format!("{:?}", kv.value))
                        .unwrap_or_default();
                    port
                };
                points.push((name, v));
            }
        }
    }
    points.sort();
    points
}

#[test]
fn kernel_flows_are_the_exact_series_and_records_are_not_counted_twice() {
    let mut f = flow_with(tuple_config());
    // Records before the kernel's first totals: included in them.
    send(&mut f, vec![packet(1), packet(1), packet(2)]);
    send(
        &mut f,
        vec![
            kernel_flow(1, 5, false),
            kernel_flow(2, 1, false),
            device_counters(9, 3, false),
        ],
    );
    // Records after: the kernel counts them.
    send(&mut f, vec![packet(1), packet(3)]);
    let points = packet_points(&mut f);
    assert_eq!(points.len(), 3, "{points:?}");
    let total: i64 = points.iter().map(|p| p.1).sum();
    assert_eq!(
        total, 9,
        "flows + overflow = the device's packets: {points:?}"
    );
    assert!(points.contains(&("overflow".into(), 3)), "{points:?}");
    assert!(points.iter().any(|p| p.1 == 5), "{points:?}");
}

#[test]
fn kernel_flows_past_the_cardinality_limit_go_to_the_overflow_series() {
    let mut f = flow_with(FlowConfig {
        cardinality_limit: at_least_one(2),
        ..tuple_config()
    });
    send(
        &mut f,
        (0..5)
            .map(|i| kernel_flow(i, 2, false))
            .chain([device_counters(11, 1, false)])
            .collect(),
    );
    let points = packet_points(&mut f);
    assert_eq!(points.len(), 3, "{points:?}");
    assert!(points.contains(&("overflow".into(), 7)), "{points:?}");
}

#[test]
fn ended_flows_and_gone_devices_get_a_final_point_then_retire() {
    let mut f = flow_with(tuple_config());
    send(
        &mut f,
        vec![
            kernel_flow(1, 4, false),
            kernel_flow(2, 2, false),
            device_counters(6, 0, false),
        ],
    );
    assert_eq!(packet_points(&mut f).len(), 2);
    // Flow 1 idle and evicted: its last point, then it is gone.
    send(&mut f, vec![kernel_flow(1, 5, true)]);
    let points = packet_points(&mut f);
    assert_eq!(points.iter().map(|p| p.1).collect::<Vec<_>>(), vec![5, 2]);
    assert_eq!(packet_points(&mut f).len(), 1, "flow 1 retired");
    // The device goes: flows' last points first, then its last counters.
    send(
        &mut f,
        vec![kernel_flow(2, 3, true), device_counters(8, 0, true)],
    );
    assert_eq!(packet_points(&mut f), vec![(points[1].0.clone(), 3)]);
    assert!(packet_points(&mut f).is_empty(), "every series retired");
    // Late records of the gone device start nothing.
    send(&mut f, vec![packet(7)]);
    assert!(packet_points(&mut f).is_empty());
    assert_eq!(f.sizes().0, 0);
}

fn flow_with(config: FlowConfig) -> Flow {
    Flow::new(config, DeviceTable::default(), "flow".into())
}
