//! Tests of the store: accumulation, limits, histograms, expiry.

use super::*;
use periscope_pipeline::model::{ExponentialBuckets, KeyValue, Metric, NumberPoint};

fn batch(metrics: Vec<Metric>) -> MetricsBatch {
    MetricsBatch {
        resource: Resource {
            attributes: vec![
                KeyValue::new("service.name", "periscope"),
                KeyValue::new("host.name", "node-1"),
            ],
        },
        scope: Scope {
            name: "flow".into(),
            version: "0.1.0".into(),
        },
        metrics,
    }
}

fn sum(v: i64, t: Temporality) -> Metric {
    Metric {
        name: "periscope.network.packets".into(),
        description: "Packets \"seen\".".into(),
        unit: "{packet}".into(),
        data: MetricData::Sum {
            points: vec![NumberPoint {
                attributes: vec![KeyValue::new("network.transport", "tcp")],
                start_time_ns: 1,
                time_ns: 2,
                value: Number::Int(v),
            }],
            temporality: t,
            monotonic: true,
        },
    }
}

#[test]
fn deltas_accumulate_cumulatives_replace() {
    let mut s = Store::new(100, Duration::ZERO);
    s.ingest(&batch(vec![sum(5, Temporality::Delta)]));
    s.ingest(&batch(vec![sum(7, Temporality::Delta)]));
    let text = s.render(false);
    assert!(
        text.contains("periscope_network_packets_total{job=\"periscope\",network_transport=\"tcp\",otel_scope_name=\"flow\",otel_scope_version=\"0.1.0\"} 12\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE periscope_network_packets_total counter\n"));
    assert!(
        text.contains("target_info{host_name=\"node-1\",job=\"periscope\"} 1\n"),
        "{text}"
    );
    let om = s.render(true);
    assert!(
        om.contains("# TYPE periscope_network_packets counter\n"),
        "{om}"
    );
    assert!(
        om.contains("# HELP periscope_network_packets Packets \\\"seen\\\".\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"));
    let mut s = Store::new(100, Duration::ZERO);
    s.ingest(&batch(vec![sum(5, Temporality::Cumulative)]));
    s.ingest(&batch(vec![sum(7, Temporality::Cumulative)]));
    assert!(s.render(false).contains("} 7\n"));
}

#[test]
fn series_limit_counts_refusals() {
    let mut s = Store::new(1, Duration::ZERO);
    let mut m = sum(1, Temporality::Cumulative);
    if let MetricData::Sum { points, .. } = &mut m.data {
        let mut p2 = points[0].clone();
        p2.attributes = vec![KeyValue::new("network.transport", "udp")];
        points.push(p2);
    }
    let r = s.ingest(&batch(vec![m]));
    assert_eq!(r.over_limit, 1);
    assert_eq!(s.series(), 1);
}

#[test]
fn exponential_buckets_become_explicit() {
    let p = ExponentialHistogramPoint {
        attributes: vec![],
        start_time_ns: 0,
        time_ns: 0,
        count: 6,
        sum: Some(10.0),
        min: None,
        max: None,
        scale: 0,
        zero_count: 1,
        positive: ExponentialBuckets {
            offset: 1,
            bucket_counts: vec![2, 1],
        },
        negative: ExponentialBuckets {
            offset: 0,
            bucket_counts: vec![1, 1],
        },
    };
    let (bounds, counts) = explicit_from_exponential(&p);
    assert_eq!(bounds, vec![-2.0, -1.0, 0.0, 4.0, 8.0]);
    assert_eq!(counts, vec![1, 1, 1, 2, 1, 0]);
}

fn at(v: i64, time_s: u64) -> Metric {
    let mut m = sum(v, Temporality::Cumulative);
    if let MetricData::Sum { points, .. } = &mut m.data {
        points[0].time_ns = time_s * 1_000_000_000;
    }
    m
}

#[test]
fn a_cumulative_series_that_misses_its_intervals_expires() {
    let mut s = Store::new(100, Duration::from_secs(300));
    let t0 = Instant::now();
    // Points every 10 s (their own times), then none: the source went away.
    s.ingest(&batch(vec![at(1, 100)]));
    s.ingest(&batch(vec![at(2, 110)]));
    s.expire_at(t0 + Duration::from_secs(20));
    assert_eq!(s.series(), 1, "two intervals missed: still served");
    s.expire_at(t0 + Duration::from_secs(26));
    assert_eq!(
        s.series(),
        0,
        "2.5 intervals missed: gone, long before expire_after"
    );
}

#[test]
fn deltas_gauges_and_series_of_unknown_cadence_wait_for_expire_after() {
    let mut s = Store::new(100, Duration::from_secs(300));
    let t0 = Instant::now();
    let mut delta = at(1, 100);
    delta.name = "periscope.delta".into();
    if let MetricData::Sum { temporality, .. } = &mut delta.data {
        *temporality = Temporality::Delta;
    }
    let mut later = delta.clone();
    if let MetricData::Sum { points, .. } = &mut later.data {
        points[0].time_ns = 110_000_000_000;
    }
    s.ingest(&batch(vec![delta, at(1, 100)]));
    s.ingest(&batch(vec![later]));
    s.expire_at(t0 + Duration::from_secs(100));
    assert_eq!(
        s.series(),
        2,
        "a delta series is idle, not gone; one point tells no cadence"
    );
    s.expire_at(t0 + Duration::from_secs(301));
    assert_eq!(s.series(), 0);
}

#[test]
fn point_labels_are_those_of_a_map_per_point() {
    let base = vec![
        (
            "job".to_string(),
            vec![(String::new(), "ns/periscope".to_string())],
        ),
        (
            "instance".to_string(),
            vec![(String::new(), "node-1".to_string())],
        ),
    ];
    let scopes = [
        vec![("otel_scope_name".to_string(), "flow".to_string())],
        vec![("job".to_string(), "replaced".to_string())],
        vec![],
    ];
    let attrs: Vec<Attributes> = vec![
        vec![],
        vec![KeyValue::new("network.transport", "tcp")],
        // Keys that sanitize alike, in both orders, and one that sorts first.
        vec![
            KeyValue::new("a.b", "1"),
            KeyValue::new("a_b", "2"),
            KeyValue::new("0x", "3"),
        ],
        vec![KeyValue::new("a_b", "2"), KeyValue::new("a.b", "1")],
        vec![KeyValue::new("job", "attr"), KeyValue::new("_x", "4")],
        // Values to escape, and values that are not strings.
        vec![
            KeyValue::new("q", "a\"b\\c\nd"),
            KeyValue::new("n", 42i64),
            KeyValue::new("d", 0.5f64),
            KeyValue::new("b", true),
        ],
    ];
    let mut names = LabelNames::default();
    for scope in &scopes {
        for a in &attrs {
            let mut map: BTreeMap<String, Vec<(String, String)>> = base.iter().cloned().collect();
            for (k, v) in scope {
                map.insert(k.clone(), vec![(String::new(), v.clone())]);
            }
            add_attributes(&mut map, a);
            let want = render_labels(&finish(map));
            let fixed = fixed_parts(&base, scope);
            let (mut parts, mut got) = (Vec::new(), String::new());
            // Twice: sanitized names come from the cache the second time.
            for _ in 0..2 {
                write_point_labels(&mut names, &fixed, a, &mut parts, &mut got);
                assert_eq!(got, want, "{scope:?} {a:?}");
            }
        }
    }
}
