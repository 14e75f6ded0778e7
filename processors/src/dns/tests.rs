use std::net::{IpAddr, Ipv4Addr};

use periscope_pipeline::model::{AnyValue, DeviceRef, EventBatch, NetnsId, PacketEvent};

use super::*;
use crate::testing::{at_least_one, overflow_warnings, warnings};
use periscope_pipeline::model::{MetricsBatch, Number, Telemetry};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53));
const MS: u64 = 1_000_000;

fn ns(inode: u32) -> NetnsId {
    NetnsId { inode, cookie: 0 }
}

fn query(table: &DnsTable, netns: u32, id: u16, name: &str, ts: u64) -> DnsEvent {
    DnsEvent {
        timestamp_ns: ts,
        device: DeviceRef {
            netns: NetnsId {
                inode: netns,
                cookie: 0,
            },
            ifindex: 2,
        },
        src_addr: CLIENT,
        dst_addr: SERVER,
        src_port: 40000 + id,
        dst_port: 53,
        id,
        qtype: 1,
        name: table.intern(name),
        ..DnsEvent::default()
    }
}

fn response(q: &DnsEvent, ts: u64, rcode: u8, answers: &[IpAddr], ttl: u32) -> DnsEvent {
    let mut r = DnsEvent {
        timestamp_ns: ts,
        src_addr: q.dst_addr,
        dst_addr: q.src_addr,
        src_port: q.dst_port,
        dst_port: q.src_port,
        is_response: true,
        rcode,
        answer_ttl: ttl,
        ..*q
    };
    for a in answers {
        r.push_answer(*a);
    }
    r
}

fn run(p: &mut Dns, events: Vec<DnsEvent>) -> Vec<Payload> {
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(events.len() + 1);
    batch.push(Event::Packet(PacketEvent::default()));
    for e in events {
        batch.push(Event::Dns(e));
    }
    p.process(Payload::Events(batch), &mut out);
    out.take()
}

fn flush(p: &mut Dns) -> (Vec<HistogramPoint>, Vec<Span>) {
    let mut out = Emitter::default();
    p.flush(&mut out);
    let mut points = Vec::new();
    let mut spans = Vec::new();
    for payload in out.take() {
        match payload {
            Payload::Telemetry(Telemetry::Metrics(m)) => {
                for metric in m.metrics {
                    if let MetricData::Histogram { points: p, .. } = metric.data {
                        assert_eq!(metric.name, names::DNS_LOOKUP_DURATION);
                        points.extend(p);
                    }
                }
            }
            Payload::Telemetry(Telemetry::Traces(t)) => spans.extend(t.spans),
            Payload::Events(_) | Payload::Shared(_) => panic!("events at flush"),
        }
    }
    (points, spans)
}

fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    a.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn processor(table: &DnsTable) -> Dns {
    let config = DnsConfig {
        timeout: PositiveDuration::from_secs(2),
        ..DnsConfig::default()
    };
    Dns::new(config, table.clone(), "dns".into())
}

#[test]
fn matches_queries_to_responses_and_passes_other_events_on() {
    let table = DnsTable::default();
    let mut p = processor(&table);
    let q1 = query(&table, 7, 1, "a.example", 1_000 * MS);
    let q2 = query(&table, 7, 2, "b.example", 1_001 * MS);
    let r2 = response(&q2, 1_004 * MS, 3, &[], 0);
    let r1 = response(
        &q1,
        1_010 * MS,
        0,
        &[IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))],
        300,
    );
    // The same query again (another device in the namespace) does not start a second lookup.
    let out = run(&mut p, vec![q1, q2, q1, r2, r1, r1]);
    match &out[..] {
        [Payload::Events(b)] => assert_eq!(b.events.len(), 1, "DNS events are consumed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.stats(), (2, 0, 0, 1));
    let (points, spans) = flush(&mut p);
    assert_eq!(points.len(), 2);
    let a = points
        .iter()
        .find(|pt| attr(&pt.attributes, names::ATTR_DNS_QUESTION_NAME) == Some(&"a.example".into()))
        .unwrap();
    assert_eq!(a.count, 1);
    assert!((a.sum.unwrap() - 0.010).abs() < 1e-9, "{:?}", a.sum);
    assert_eq!(
        attr(&a.attributes, names::ATTR_DNS_RESPONSE_CODE),
        Some(&"noerror".into())
    );
    assert_eq!(
        attr(&a.attributes, names::ATTR_DNS_QUESTION_TYPE),
        Some(&"A".into())
    );
    let b = points
        .iter()
        .find(|pt| attr(&pt.attributes, names::ATTR_DNS_QUESTION_NAME) == Some(&"b.example".into()))
        .unwrap();
    assert_eq!(
        attr(&b.attributes, names::ATTR_DNS_RESPONSE_CODE),
        Some(&"nxdomain".into())
    );
    assert_eq!(
        attr(&b.attributes, names::ATTR_ERROR_TYPE),
        Some(&"nxdomain".into())
    );
    assert_eq!(spans.len(), 2);
    assert!(spans
        .iter()
        .all(|s| s.kind == SpanKind::Client && s.name == names::SPAN_DNS_LOOKUP));
    let s1 = spans
        .iter()
        .find(|s| s.start_time_ns == 1_000 * MS)
        .unwrap();
    assert_eq!(s1.end_time_ns, 1_010 * MS);
    assert_eq!(
        attr(&s1.attributes, names::ATTR_DNS_SERVER_ADDRESS),
        Some(&"10.0.0.53".into())
    );
    // The answer is in the table, for the namespace that looked it up.
    let r = table
        .resolve(ns(7), IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)))
        .unwrap();
    assert_eq!((&*r.name, r.server), ("a.example", SERVER));
    assert!(table
        .resolve(ns(8), IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)))
        .is_none());
}

#[test]
fn unanswered_queries_time_out_by_event_time() {
    let table = DnsTable::default();
    let mut p = processor(&table);
    let q = query(&table, 7, 1, "silent.example", 1_000 * MS);
    run(&mut p, vec![q]);
    assert_eq!(p.stats().0, 0, "still pending");
    // A later event 2 s on (event time) times it out.
    let other = query(&table, 7, 2, "later.example", 3_000 * MS);
    run(&mut p, vec![other]);
    assert_eq!(p.stats(), (1, 1, 0, 0));
    // A response after the timeout is not a lookup any more.
    run(&mut p, vec![response(&q, 3_500 * MS, 0, &[], 0)]);
    assert_eq!(p.stats(), (1, 1, 0, 1));
    let (points, spans) = flush(&mut p);
    let t = points
        .iter()
        .find(|pt| attr(&pt.attributes, names::ATTR_ERROR_TYPE) == Some(&"timeout".into()))
        .unwrap();
    assert_eq!(t.count, 1);
    assert!((t.sum.unwrap() - 2.0).abs() < 1e-9);
    assert_eq!(attr(&t.attributes, names::ATTR_DNS_RESPONSE_CODE), None);
    let s = &spans[0];
    assert_eq!(s.status, SpanStatus::Error("timeout".into()));
    assert_eq!(s.end_time_ns - s.start_time_ns, 2_000 * MS);
}

#[test]
fn answers_expire_with_their_ttl_but_not_before_min_ttl() {
    let table = DnsTable::default();
    let mut p = Dns::new(
        DnsConfig {
            min_ttl: ConfigDuration(Duration::from_secs(1)),
            ..DnsConfig::default()
        },
        table.clone(),
        "dns".into(),
    );
    let addr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 1));
    let q = query(&table, 7, 1, "short.example", 1_000 * MS);
    run(&mut p, vec![q, response(&q, 1_001 * MS, 0, &[addr], 5)]);
    assert!(table.resolve(ns(7), addr).is_some());
    table.observe_time(5_000 * MS);
    assert!(table.resolve(ns(7), addr).is_some(), "within the 5 s TTL");
    table.observe_time(6_002 * MS);
    assert!(table.resolve(ns(7), addr).is_none(), "TTL over");
    // TTL 0: kept for min_ttl.
    let q = query(&table, 7, 2, "zero.example", 7_000 * MS);
    run(&mut p, vec![q, response(&q, 7_001 * MS, 0, &[addr], 0)]);
    table.observe_time(7_900 * MS);
    assert_eq!(
        table
            .resolve(ns(7), addr)
            .map(|r| r.name.to_string())
            .as_deref(),
        Some("zero.example")
    );
    table.observe_time(8_002 * MS);
    assert!(table.resolve(ns(7), addr).is_none());
}

#[test]
fn pending_queries_and_series_stay_bounded() {
    let table = DnsTable::default();
    let mut p = Dns::new(
        DnsConfig {
            max_pending: at_least_one(3),
            cardinality_limit: at_least_one(2),
            ..DnsConfig::default()
        },
        table.clone(),
        "dns".into(),
    );
    let qs: Vec<DnsEvent> = (0..5)
        .map(|i| {
            query(
                &table,
                7,
                i,
                &format!("n{i}.example"),
                1_000 * MS + u64::from(i),
            )
        })
        .collect();
    run(&mut p, qs.clone());
    assert_eq!(p.stats().2, 2, "two queries past max_pending");
    let rs = qs
        .iter()
        .map(|q| response(q, 1_100 * MS, 0, &[], 0))
        .collect();
    run(&mut p, rs);
    assert_eq!(p.stats().0, 3);
    let (points, _) = flush(&mut p);
    assert_eq!(points.len(), 3, "two series and the overflow series");
    assert!(points
        .iter()
        .any(|pt| attr(&pt.attributes, names::ATTR_OVERFLOW) == Some(&AnyValue::Bool(true))));
}

#[test]
fn the_question_name_can_be_left_off_the_series() {
    let table = DnsTable::default();
    let mut p = Dns::new(
        DnsConfig {
            question_name_attribute: false,
            ..DnsConfig::default()
        },
        table.clone(),
        "dns".into(),
    );
    let a = query(&table, 7, 1, "a.example", 1_000 * MS);
    let b = query(&table, 7, 2, "b.example", 1_000 * MS);
    run(
        &mut p,
        vec![
            a,
            b,
            response(&a, 1_001 * MS, 0, &[], 0),
            response(&b, 1_002 * MS, 0, &[], 0),
        ],
    );
    let (points, spans) = flush(&mut p);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count, 2);
    assert_eq!(
        attr(&points[0].attributes, names::ATTR_DNS_QUESTION_NAME),
        None
    );
    assert!(spans
        .iter()
        .all(|s| attr(&s.attributes, names::ATTR_DNS_QUESTION_NAME).is_some()));
}

/// `identity` (after `flow` and `connections`) names resolved destinations and peers.
#[test]
fn identity_adds_the_question_name_to_resolved_destinations() {
    use crate::identity::{
        ContainerOptions, Identity, IdentityConfig, NetnsOptions, ProcessOptions,
    };
    use periscope_pipeline::telemetry::ComponentCounters;

    let table = DnsTable::default();
    let mut p = processor(&table);
    let addr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    let q = query(&table, 7, 1, "db.internal", 1_000 * MS);
    run(&mut p, vec![q, response(&q, 1_001 * MS, 0, &[addr], 30)]);

    let config = IdentityConfig {
        process: ProcessOptions {
            enabled: false,
            ..ProcessOptions::default()
        },
        container: ContainerOptions {
            enabled: false,
            ..ContainerOptions::default()
        },
        netns: NetnsOptions {
            enabled: false,
            ..NetnsOptions::default()
        },
        ..IdentityConfig::default()
    };
    let mut identity = Identity::new(
        &config,
        Default::default(),
        Arc::new(ComponentCounters::default()),
    )
    .with_dns(table.clone());
    let point = |netns: i64, dst: &str| NumberPoint {
        attributes: vec![
            KeyValue::new(names::ATTR_NETNS_INODE, netns),
            KeyValue::new(names::ATTR_DESTINATION_ADDRESS, dst.to_string()),
        ],
        start_time_ns: 0,
        time_ns: 0,
        value: Number::Int(1),
    };
    let flows = Telemetry::Metrics(MetricsBatch {
        resource: Default::default(),
        scope: Default::default(),
        metrics: vec![Metric {
            name: Cow::Borrowed(names::NETWORK_PACKETS),
            description: Cow::Borrowed(""),
            unit: Cow::Borrowed("{packet}"),
            data: MetricData::Sum {
                points: vec![
                    point(7, "10.9.9.9"),
                    point(8, "10.9.9.9"),
                    point(7, "10.9.9.8"),
                ],
                temporality: Temporality::Cumulative,
                monotonic: true,
            },
        }],
    });
    let mut out = Emitter::default();
    identity.process(Payload::Telemetry(flows), &mut out);
    let Some(Payload::Telemetry(Telemetry::Metrics(m))) = out.take().pop() else {
        panic!("no metrics");
    };
    let MetricData::Sum { points, .. } = &m.metrics[0].data else {
        panic!();
    };
    assert_eq!(
        attr(&points[0].attributes, names::ATTR_DNS_QUESTION_NAME),
        Some(&"db.internal".into())
    );
    assert_eq!(
        attr(&points[0].attributes, names::ATTR_DNS_SERVER_ADDRESS),
        Some(&"10.0.0.53".into())
    );
    assert_eq!(
        attr(&points[1].attributes, names::ATTR_DNS_QUESTION_NAME),
        None,
        "other netns"
    );
    assert_eq!(
        attr(&points[2].attributes, names::ATTR_DNS_QUESTION_NAME),
        None,
        "not resolved"
    );
}

#[test]
fn series_past_the_limit_fold_into_one_overflow_series_with_one_warning() {
    // Names 1..=5 looked up 1..=5 times each, each its own series; room for 2.
    let table = DnsTable::default();
    let ((points, _), logged) = warnings(|| {
        let mut p = Dns::new(
            DnsConfig {
                cardinality_limit: at_least_one(2),
                ..DnsConfig::default()
            },
            table.clone(),
            "dns".into(),
        );
        let mut id = 0;
        for n in 1..=5u16 {
            for _ in 0..n {
                id += 1;
                let q = query(&table, 7, id, &format!("n{n}.example"), 1_000 * MS);
                let r = response(&q, 1_001 * MS, 0, &[], 0);
                run(&mut p, vec![q, r]);
            }
        }
        flush(&mut p)
    });
    let (overflow, series): (Vec<_>, Vec<_>) = points
        .iter()
        .partition(|pt| attr(&pt.attributes, names::ATTR_OVERFLOW) == Some(&AnyValue::Bool(true)));
    assert_eq!(series.len(), 2);
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].attributes.len(), 1, "no other attributes");
    assert_eq!(overflow[0].count, 3 + 4 + 5, "names 3 to 5");
    assert_eq!(
        points.iter().map(|pt| pt.count).sum::<u64>(),
        15,
        "totals preserved"
    );
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

#[test]
fn a_deleted_pods_last_query_is_not_a_timeout_and_its_series_retire() {
    use periscope_pipeline::NamespaceInfo;
    let table = DnsTable::default();
    let namespaces = NamespaceTable::default();
    let mut p = processor(&table).with_namespaces(namespaces.clone());
    // Namespace 7 (cookie 0 in these events) is a pod, namespace 8 stays.
    for inode in [7, 8] {
        namespaces.insert(ns(inode), NamespaceInfo::default());
    }
    let answered = query(&table, 7, 1, "a.example", 1_000 * MS);
    run(
        &mut p,
        vec![answered, response(&answered, 1_001 * MS, 0, &[], 0)],
    );
    let cut_off = query(&table, 7, 2, "b.example", 1_002 * MS);
    let unanswered = query(&table, 8, 3, "c.example", 1_002 * MS);
    run(&mut p, vec![cut_off, unanswered]);
    namespaces.retire(&ns(7));
    // Event time moves past the timeout.
    run(&mut p, vec![query(&table, 8, 4, "d.example", 4_000 * MS)]);
    assert_eq!(p.stats().1, 1, "only the live namespace's query timed out");
    assert_eq!(p.abandoned(), 1);
    let mut out = Emitter::default();
    p.tick(Instant::now(), &mut out);
    assert_eq!(p.series_len(), 2, "a grace collect first");
    p.tick(Instant::now(), &mut out);
    assert_eq!(p.series_len(), 1, "the gone namespace's series retired");
}
