//! Tests of the latency processor: samples, de-duplication, request/response pairing,
//! temporality, cardinality, and the agreement of explicit and exponential histograms.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use periscope_pipeline::config::{problems, PositiveDuration};
use periscope_pipeline::model::{EventBatch, NetnsId, ProcessRef};
use periscope_pipeline::model::{MetricsBatch, Number, Telemetry};

use crate::testing::{at_least_one, overflow_warnings, warnings, Rng};

mod churn;

const MS: u64 = 1_000_000;

fn ev(cookie: u64, kind: SocketEventKind, hook: SocketHook, ts: u64) -> SocketEvent {
    SocketEvent {
        timestamp_ns: ts,
        cookie,
        netns: NetnsId {
            inode: 4026532000,
            cookie: 7,
        },
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        remote_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        local_port: 40000 + cookie as u16,
        remote_port: 80,
        kind,
        hook,
        transport: Transport::Tcp,
        ..Default::default()
    }
}

fn established(cookie: u64, hook: SocketHook, connect_ns: u64, srtt_us: u32) -> SocketEvent {
    SocketEvent {
        role: SocketRole::Client,
        duration_ns: connect_ns,
        srtt_us,
        process: ProcessRef {
            pid: 42,
            tid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        },
        ..ev(cookie, SocketEventKind::Established, hook, 1000)
    }
}

fn config() -> LatencyConfig {
    LatencyConfig {
        histograms: vec![HistogramKind::Explicit, HistogramKind::Exponential],
        ..Default::default()
    }
}

fn processor(config: LatencyConfig) -> Latency {
    Latency::new(config, "latency".into()).expect("valid config")
}

fn feed(p: &mut Latency, events: &[SocketEvent]) {
    let mut out = Emitter::default();
    p.process(
        Payload::Events(EventBatch {
            events: events.iter().copied().map(Event::Socket).collect(),
        }),
        &mut out,
    );
    let passed = out.take();
    assert_eq!(passed.len(), 1, "the events are passed on");
    assert_eq!(passed[0].item_count(), events.len());
}

/// Every metric emitted at a flush, by scope.
fn flush(p: &mut Latency) -> Vec<MetricsBatch> {
    let mut out = Emitter::default();
    p.flush(&mut out);
    out.take()
        .into_iter()
        .map(|t| match t {
            Payload::Telemetry(Telemetry::Metrics(m)) => m,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn histograms(batches: &[MetricsBatch], name: &str) -> Vec<HistogramPoint> {
    batches
        .iter()
        .flat_map(|b| &b.metrics)
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            MetricData::Histogram { points, .. } => points.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn exponentials(batches: &[MetricsBatch], name: &str) -> Vec<ExponentialHistogramPoint> {
    batches
        .iter()
        .flat_map(|b| &b.metrics)
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            MetricData::ExponentialHistogram { points, .. } => points.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn count(batches: &[MetricsBatch], name: &str) -> u64 {
    histograms(batches, name).iter().map(|p| p.count).sum()
}

fn sum(batches: &[MetricsBatch], name: &str) -> f64 {
    histograms(batches, name)
        .iter()
        .map(|p| p.sum.unwrap_or(0.0))
        .sum()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

use periscope_pipeline::model::AnyValue;

#[test]
fn established_and_close_from_two_receivers_count_once() {
    let mut p = processor(config());
    // sockops and the tracepoint both report the handshake and the close of socket 1.
    feed(
        &mut p,
        &[
            established(1, SocketHook::Sockops, 250_000, 60),
            established(1, SocketHook::Tracepoint, 250_000, 60),
            SocketEvent {
                srtt_us: 80,
                ..ev(1, SocketEventKind::Rtt, SocketHook::Sockops, 2000)
            },
            SocketEvent {
                srtt_us: 90,
                ..ev(1, SocketEventKind::Rtt, SocketHook::Sockops, 3000)
            },
            SocketEvent {
                srtt_us: 100,
                ..ev(1, SocketEventKind::Close, SocketHook::Tracepoint, 4000)
            },
            SocketEvent {
                srtt_us: 100,
                ..ev(1, SocketEventKind::Close, SocketHook::Sockops, 4000)
            },
        ],
    );
    // A record of the other receiver that arrives after the close changes nothing.
    feed(
        &mut p,
        &[established(1, SocketHook::Tracepoint, 250_000, 60)],
    );
    // A server socket: RTT samples, no connect duration.
    feed(
        &mut p,
        &[SocketEvent {
            role: SocketRole::Server,
            duration_ns: 0,
            ..established(2, SocketHook::Sockops, 0, 70)
        }],
    );
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_CONNECT_DURATION), 1);
    assert!((sum(&out, names::TCP_CONNECT_DURATION) - 250e-6).abs() < 1e-12);
    // established 60 + rtt 80 + rtt 90 + close 100 (client), established 70 (server).
    assert_eq!(count(&out, names::TCP_RTT), 5);
    assert!((sum(&out, names::TCP_RTT) - 400e-6).abs() < 1e-12);
    let rtt = histograms(&out, names::TCP_RTT);
    let roles: Vec<_> = rtt
        .iter()
        .map(|p| attr(&p.attributes, names::ATTR_CONNECTION_ROLE).cloned())
        .collect();
    assert_eq!(roles.len(), 2, "{roles:?}");
    let client = rtt
        .iter()
        .find(|p| attr(&p.attributes, names::ATTR_CONNECTION_ROLE) == Some(&"client".into()))
        .expect("client series");
    assert_eq!(client.count, 4);
    assert_eq!((client.min, client.max), (Some(60e-6), Some(100e-6)));
    assert_eq!(
        attr(&client.attributes, names::ATTR_NETNS_INODE),
        Some(&AnyValue::Int(4026532000))
    );
}

#[test]
fn rtt_samples_can_be_limited_to_the_handshake() {
    let mut p = processor(LatencyConfig {
        rtt_samples: vec![RttSample::Established],
        ..config()
    });
    feed(
        &mut p,
        &[
            established(1, SocketHook::Sockops, 1, 60),
            SocketEvent {
                srtt_us: 80,
                ..ev(1, SocketEventKind::Rtt, SocketHook::Sockops, 2000)
            },
            SocketEvent {
                srtt_us: 100,
                ..ev(1, SocketEventKind::Close, SocketHook::Sockops, 4000)
            },
        ],
    );
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_RTT), 1);
    assert!((sum(&out, names::TCP_RTT) - 60e-6).abs() < 1e-12);
}

fn io(cookie: u64, kind: SocketEventKind, hook: SocketHook, ts: u64) -> SocketEvent {
    ev(cookie, kind, hook, ts)
}

#[test]
fn response_pairs_the_first_send_with_the_first_receive_after_it() {
    use SocketEventKind::{Receive as R, Send as S};
    let tp = SocketHook::Tracepoint;
    let mut p = processor(config());
    feed(&mut p, &[established(1, SocketHook::Sockops, 1000, 50)]);
    feed(
        &mut p,
        &[
            // Two sends (one request), the answer in two reads: one sample of 20 ms.
            io(1, S, tp, 100 * MS),
            io(1, S, tp, 101 * MS),
            io(1, R, tp, 120 * MS),
            io(1, R, tp, 121 * MS),
            // The next request: 35 ms.
            io(1, S, tp, 200 * MS),
            io(1, R, tp, 235 * MS),
            // A receive with no request before it is no sample.
            io(1, R, tp, 300 * MS),
            // sk_msg/sk_skb records of the same socket are ignored: it uses the calls.
            io(1, S, SocketHook::SkMsg, 400 * MS),
            io(1, R, SocketHook::SkSkb, 401 * MS),
        ],
    );
    // Socket 2 reports through sk_msg/sk_skb (first seen that way); its tracepoint records
    // are ignored.
    feed(&mut p, &[established(2, SocketHook::Sockops, 1000, 50)]);
    feed(
        &mut p,
        &[
            io(2, S, SocketHook::SkMsg, 500 * MS),
            io(2, S, tp, 500 * MS + 10),
            io(2, R, SocketHook::SkSkb, 510 * MS),
            io(2, R, tp, 511 * MS),
        ],
    );
    // A server socket: not measured by default.
    feed(
        &mut p,
        &[
            SocketEvent {
                role: SocketRole::Server,
                ..established(3, SocketHook::Sockops, 0, 50)
            },
            io(3, R, tp, 600 * MS),
            io(3, S, tp, 620 * MS),
            io(3, R, tp, 700 * MS),
        ],
    );
    let out = flush(&mut p);
    let points = histograms(&out, names::TCP_RESPONSE_DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count, 3);
    assert!(
        (points[0].sum.unwrap() - 0.065).abs() < 1e-9,
        "{:?}",
        points[0].sum
    );
    assert_eq!((points[0].min, points[0].max), (Some(0.01), Some(0.035)));

    // With servers included, the server socket gives one sample (80 ms think time).
    let mut p = processor(LatencyConfig {
        response_roles: vec![Role::Server],
        ..config()
    });
    feed(
        &mut p,
        &[
            SocketEvent {
                role: SocketRole::Server,
                ..established(3, SocketHook::Sockops, 0, 50)
            },
            io(3, R, tp, 600 * MS),
            io(3, S, tp, 620 * MS),
            io(3, R, tp, 700 * MS),
        ],
    );
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_RESPONSE_DURATION), 1);
    assert!((sum(&out, names::TCP_RESPONSE_DURATION) - 0.08).abs() < 1e-9);
}

#[test]
fn response_survives_a_close_that_overtakes_the_last_receive() {
    use SocketEventKind::{Receive as R, Send as S};
    let tp = SocketHook::Tracepoint;
    let mut p = processor(config());
    feed(
        &mut p,
        &[
            established(1, SocketHook::Tracepoint, 1000, 50),
            io(1, S, tp, 100 * MS),
        ],
    );
    // sockops' close arrives before the tracepoint batch with the answer.
    feed(
        &mut p,
        &[ev(1, SocketEventKind::Close, SocketHook::Sockops, 130 * MS)],
    );
    feed(&mut p, &[io(1, R, tp, 120 * MS)]);
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_RESPONSE_DURATION), 1);
}

#[test]
fn udp_and_unknown_roles_are_not_measured_by_default() {
    use SocketEventKind::{Receive as R, Send as S};
    let tp = SocketHook::Tracepoint;
    let mut p = processor(config());
    feed(
        &mut p,
        &[
            SocketEvent {
                transport: Transport::Udp,
                ..io(9, S, tp, MS)
            },
            SocketEvent {
                transport: Transport::Udp,
                ..io(9, R, tp, 2 * MS)
            },
            // Socket 8 was never seen opening: role unknown.
            io(8, S, tp, MS),
            io(8, R, tp, 2 * MS),
        ],
    );
    assert_eq!(count(&flush(&mut p), names::TCP_RESPONSE_DURATION), 0);
    let mut p = processor(LatencyConfig {
        response_roles: vec![Role::Client, Role::Unknown],
        ..config()
    });
    feed(&mut p, &[io(8, S, tp, MS), io(8, R, tp, 2 * MS)]);
    assert_eq!(count(&flush(&mut p), names::TCP_RESPONSE_DURATION), 1);
}

#[test]
fn cumulative_keeps_counting_and_delta_starts_over() {
    for temporality in [Temporality::Cumulative, Temporality::Delta] {
        let mut p = processor(LatencyConfig {
            temporality,
            attributes: vec![names::ATTR_PEER_PORT.into()],
            ..config()
        });
        feed(&mut p, &[established(1, SocketHook::Sockops, MS, 50)]);
        let first = flush(&mut p);
        let second_events = [
            established(2, SocketHook::Sockops, 2 * MS, 50),
            established(3, SocketHook::Sockops, 3 * MS, 50),
        ];
        feed(&mut p, &second_events);
        let second = flush(&mut p);
        // A third period without samples.
        let third = flush(&mut p);
        let c = |o: &[MetricsBatch]| count(o, names::TCP_CONNECT_DURATION);
        let s = |o: &[MetricsBatch]| sum(o, names::TCP_CONNECT_DURATION);
        assert_eq!(c(&first), 1);
        let (h1, h2) = (
            &histograms(&first, names::TCP_CONNECT_DURATION)[0],
            &histograms(&second, names::TCP_CONNECT_DURATION)[0],
        );
        match temporality {
            Temporality::Cumulative => {
                assert_eq!((c(&second), c(&third)), (3, 3));
                assert!((s(&second) - 6e-3).abs() < 1e-12);
                assert_eq!(h1.start_time_ns, h2.start_time_ns);
                assert_eq!(h2.min, Some(1e-3));
                let e = &exponentials(&second, names::TCP_CONNECT_DURATION)[0];
                assert_eq!(e.count, 3);
            }
            Temporality::Delta => {
                assert_eq!((c(&second), c(&third)), (2, 0));
                assert!((s(&second) - 5e-3).abs() < 1e-12);
                assert_eq!(
                    h2.start_time_ns, h1.time_ns,
                    "a delta point starts where the last ended"
                );
                assert_eq!(h2.min, Some(2e-3));
                let e = &exponentials(&second, names::TCP_CONNECT_DURATION)[0];
                assert_eq!(e.count, 2);
                assert!(histograms(&third, names::TCP_CONNECT_DURATION).is_empty());
            }
        }
        for batches in [&first, &second] {
            for b in batches.iter() {
                for m in &b.metrics {
                    let t = match &m.data {
                        MetricData::Histogram { temporality, .. }
                        | MetricData::ExponentialHistogram { temporality, .. } => *temporality,
                        _ => continue,
                    };
                    assert_eq!(t, temporality);
                }
            }
        }
    }
}

#[test]
fn series_past_the_cardinality_limit_go_to_the_overflow_series() {
    let mut p = processor(LatencyConfig {
        attributes: vec![names::ATTR_LOCAL_PORT.into()],
        cardinality_limit: at_least_one(2),
        ..config()
    });
    let events: Vec<SocketEvent> = (1..=5)
        .map(|c| established(c, SocketHook::Sockops, c * MS, 50))
        .collect();
    feed(&mut p, &events);
    let out = flush(&mut p);
    for points in [
        histograms(&out, names::TCP_CONNECT_DURATION)
            .into_iter()
            .map(|p| (p.attributes, p.count))
            .collect::<Vec<_>>(),
        exponentials(&out, names::TCP_CONNECT_DURATION)
            .into_iter()
            .map(|p| (p.attributes, p.count))
            .collect(),
    ] {
        assert_eq!(points.len(), 3, "{points:?}");
        let overflow: Vec<_> = points
            .iter()
            .filter(|(a, _)| attr(a, names::ATTR_OVERFLOW) == Some(&AnyValue::Bool(true)))
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].1, 3, "sockets 3, 4 and 5");
        assert_eq!(
            overflow[0].0.len(),
            1,
            "the overflow series has no other attributes"
        );
        assert_eq!(points.iter().map(|(_, c)| c).sum::<u64>(), 5);
    }
}

#[test]
fn sockets_past_max_sockets_are_counted_not_recorded() {
    let mut p = processor(LatencyConfig {
        max_sockets: at_least_one(2),
        ..config()
    });
    let events: Vec<SocketEvent> = (1..=5)
        .map(|c| established(c, SocketHook::Sockops, c * MS, 50))
        .collect();
    feed(&mut p, &events);
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_CONNECT_DURATION), 2);
    let untracked: Vec<i64> = out
        .iter()
        .flat_map(|b| &b.metrics)
        .filter(|m| m.name == names::LATENCY_EVENTS_UNTRACKED)
        .flat_map(|m| {
            match &m.data {
                MetricData::Sum { points, .. } => points.iter().map(|p| match p.value {
                    Number::Int(i) => i,
                    Number::Double(d) => d as i64,
                }),
                _ => panic!("a sum"),
            }
            .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(untracked, vec![3]);
}

#[test]
fn attributes_come_in_the_configured_order() {
    let mut p = processor(LatencyConfig {
        attributes: vec![
            names::ATTR_PEER_PORT.into(),
            names::ATTR_PROCESS_NAME.into(),
            names::ATTR_PROCESS_PID.into(),
            names::ATTR_NETWORK_TYPE.into(),
            names::ATTR_LOCAL_ADDRESS.into(),
        ],
        ..config()
    });
    feed(&mut p, &[established(1, SocketHook::Sockops, MS, 50)]);
    let out = flush(&mut p);
    let h = &histograms(&out, names::TCP_CONNECT_DURATION)[0];
    assert_eq!(
        h.attributes,
        vec![
            KeyValue::new(names::ATTR_PEER_PORT, 80u16),
            KeyValue::new(names::ATTR_PROCESS_NAME, "curl"),
            KeyValue::new(names::ATTR_PROCESS_PID, 42u32),
            KeyValue::new(names::ATTR_NETWORK_TYPE, "ipv4"),
            KeyValue::new(names::ATTR_LOCAL_ADDRESS, "10.0.0.1"),
        ]
    );
}

#[test]
fn both_kinds_come_in_their_own_scopes_and_agree() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut p = processor(config());
    let mut events = Vec::new();
    let mut exact_sum = 0u128;
    for c in 1..=2000u64 {
        let ns = rng.latency_ns();
        exact_sum += u128::from(ns);
        events.push(established(c, SocketHook::Sockops, ns, 50));
    }
    feed(&mut p, &events);
    let out = flush(&mut p);
    let scopes: Vec<&str> = out.iter().map(|b| b.scope.name.as_ref()).collect();
    assert_eq!(
        scopes,
        ["periscope/latency/exponential", "periscope/latency"]
    );
    let h = &histograms(&out, names::TCP_CONNECT_DURATION)[0];
    let e = &exponentials(&out, names::TCP_CONNECT_DURATION)[0];
    assert_eq!(h.count, 2000);
    assert_eq!(e.count, 2000);
    assert_eq!(h.bucket_counts.iter().sum::<u64>(), 2000);
    assert_eq!(
        e.zero_count + e.positive.bucket_counts.iter().sum::<u64>(),
        2000
    );
    assert_eq!(h.sum, e.sum);
    assert!((h.sum.unwrap() - exact_sum as f64 * 1e-9).abs() < 1e-9);
    assert_eq!((h.min, h.max), (e.min, e.max));
    // 10 µs … 2 s in 160 buckets: scale 3 (log2(2e5) ≈ 17.6 octaves · 8 = 141 buckets).
    assert_eq!(e.scale, 3);
    assert!(e.positive.bucket_counts.len() <= 160);
    // The explicit counts at each bound agree with the exponential ones at the nearest
    // exponential boundaries below and above it (exponential buckets are coarser here).
    let mut cum_e = Vec::new();
    let mut acc = e.zero_count;
    for c in &e.positive.bucket_counts {
        acc += c;
        cum_e.push(acc);
    }
    let le_exp = |x: f64| -> u64 {
        // Values ≤ the upper boundary of the bucket holding x, and ≤ the lower boundary.
        let i = exponential::index(x, e.scale) - e.positive.offset;
        if i < 0 {
            e.zero_count
        } else {
            cum_e[(i as usize).min(cum_e.len() - 1)]
        }
    };
    let mut cum_h = 0;
    for (i, b) in h.explicit_bounds.iter().enumerate() {
        cum_h += h.bucket_counts[i];
        // The hdrhistogram behind the explicit buckets is exact to 1% (2 significant
        // figures): a value up to 1% above a bound may be counted below it.
        let upper = le_exp(*b * 1.01);
        let lower = le_exp(*b * 0.99 / exponential::lower_boundary(1, e.scale)); // a bucket below
        assert!(
            lower <= cum_h && cum_h <= upper,
            "≤ {b}: explicit {cum_h}, exponential between {lower} and {upper}"
        );
    }
}

#[test]
fn invalid_configs_name_the_option() {
    // As `periscope validate` reads it: values the option types refuse, then `validate`.
    let problems = problems::<LatencyConfig>(
        "interval: 0s
attributes: [network.peer.port, k8s.pod.name, network.peer.port]
histograms: []
boundaries: [0.1, 0.05, NaN]
max_size: 1
max_scale: 21
significant_figures: 6
cardinality_limit: 0
max_sockets: 0
",
    );
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "interval",
            "attributes.1",
            "attributes.2",
            "histograms",
            "boundaries.1",
            "boundaries.2",
            "max_size",
            "max_scale",
            "significant_figures",
            "cardinality_limit",
            "max_sockets"
        ]
    );
    assert!(problems[1]
        .message
        .contains("allowed: periscope.netns.inode"));
    assert!(LatencyConfig::default().validate().is_ok());
    let bad = LatencyConfig {
        attributes: vec!["k8s.pod.name".into()],
        max_size: 1,
        ..Default::default()
    };
    assert!(Latency::new(bad, "x".into()).is_err());
}

#[test]
fn closed_and_idle_sockets_are_forgotten() {
    let mut p = processor(LatencyConfig {
        idle_timeout: PositiveDuration::from_secs(60),
        ..config()
    });
    let t0 = Instant::now();
    p.on_socket(&established(1, SocketHook::Sockops, MS, 50), t0);
    p.on_socket(
        &ev(1, SocketEventKind::Close, SocketHook::Sockops, 5 * MS),
        t0,
    );
    p.on_socket(&established(2, SocketHook::Sockops, MS, 50), t0);
    // Within the linger time the closed socket is still known.
    p.expire(t0 + Duration::from_secs(1));
    assert!(p.sockets.contains_key(&1));
    p.expire(t0 + CLOSED_LINGER + Duration::from_millis(1));
    assert!(
        !p.sockets.contains_key(&1),
        "closed socket forgotten after the linger"
    );
    assert!(p.closed.contains(&1), "its cookie is remembered");
    // A very late record of the closed socket starts nothing and counts nothing.
    p.on_socket(&established(1, SocketHook::Tracepoint, MS, 50), t0);
    assert!(!p.sockets.contains_key(&1));
    // Socket 2 stays until it has been idle for idle_timeout.
    p.expire_idle(t0 + Duration::from_secs(59));
    assert!(p.sockets.contains_key(&2));
    p.expire_idle(t0 + Duration::from_secs(61));
    assert!(p.sockets.is_empty());
    let out = flush(&mut p);
    assert_eq!(count(&out, names::TCP_CONNECT_DURATION), 2);
}

#[test]
fn series_past_the_limit_fold_into_one_overflow_series_with_one_warning() {
    // Sockets 1..=6 connect in 1..=6 ms, each its own series; room for 2. (No RTT: each
    // metric's table warns once, this test is about one.)
    let (out, logged) = warnings(|| {
        let mut p = processor(LatencyConfig {
            attributes: vec![names::ATTR_LOCAL_PORT.into()],
            cardinality_limit: at_least_one(2),
            ..config()
        });
        let events: Vec<SocketEvent> = (1..=6)
            .map(|c| established(c, SocketHook::Sockops, c * MS, 0))
            .collect();
        feed(&mut p, &events);
        flush(&mut p)
    });
    let points = histograms(&out, names::TCP_CONNECT_DURATION);
    let (overflow, series): (Vec<_>, Vec<_>) = points
        .iter()
        .partition(|p| attr(&p.attributes, names::ATTR_OVERFLOW) == Some(&AnyValue::Bool(true)));
    assert_eq!(series.len(), 2);
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].count, 4, "sockets 3 to 6");
    let overflow_sum = overflow[0].sum.unwrap_or(0.0);
    assert!((overflow_sum - 0.018).abs() < 1e-9, "{overflow_sum}");
    assert_eq!(
        count(&out, names::TCP_CONNECT_DURATION),
        6,
        "totals preserved"
    );
    assert!((sum(&out, names::TCP_CONNECT_DURATION) - 0.021).abs() < 1e-9);
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}
