//! OTLP/HTTP against a scripted backend: `503` with `Retry-After` is retried after the time
//! the server asked for, a partial success is counted as rejected, a `400` is not retried, and
//! the request carries the configured headers, content type and a gzip'd protobuf body.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use periscope_exporters::otlp::{OtlpConfig, Protocol};
use periscope_pipeline::component::ComponentConfig;
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};

struct Seen {
    at: Instant,
    head: String,
    body: Vec<u8>,
}

/// Answers each request with the next scripted response (status, extra headers, body).
fn scripted(script: Vec<(u16, &'static str, Vec<u8>)>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, headers, body) in script {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            let (head, mut req_body) = loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return;
                }
                raw.extend_from_slice(&buf[..n]);
                if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (
                        String::from_utf8_lossy(&raw[..i]).into_owned(),
                        raw[i + 4..].to_vec(),
                    );
                }
            };
            let len = periscope_testkit::http::content_length(&head);
            while req_body.len() < len {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req_body.extend_from_slice(&buf[..n]);
            }
            log.lock().unwrap().push(Seen {
                at: Instant::now(),
                head,
                body: req_body,
            });
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                _ => "Service Unavailable",
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-protobuf\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (port, seen)
}

#[test]
fn http_retry_after_partial_success_and_permanent_errors() {
    let partial = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 2,
            error_message: "2 points had no name".into(),
        }),
    }
    .encode_to_vec();
    let (port, seen) = scripted(vec![
        (503, "Retry-After: 1\r\n", Vec::new()),
        (200, "", partial),
        (400, "", b"bad request".to_vec()),
    ]);
    let mut config = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        protocol: Protocol::HttpProtobuf,
        ..OtlpConfig::default()
    };
    config
        .headers
        .insert("authorization".into(), "Bearer t0ken".into());
    config.batch.timeout = ConfigDuration::from_millis(0);
    config.timeout = PositiveDuration::from_secs(5);
    config.retry_on_failure.initial_interval = ConfigDuration::from_millis(50);
    config.retry_on_failure.max_interval = ConfigDuration::from_millis(100);
    config.validate().expect("valid");
    let ctx = periscope_testkit::context("otlp/http");
    let mut exporter = config.build_exporter(&ctx).expect("builds");
    let stats = exporter.stats();

    periscope_testkit::telemetry::send_metrics(&mut exporter);
    periscope_testkit::telemetry::send_metrics(&mut exporter);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "503 retried once, 400 not retried");
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/metrics http/1.1"), "{head}");
    assert!(head.contains("authorization: bearer t0ken"), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf"),
        "{head}"
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(seen[0].body.as_slice())
        .read_to_end(&mut raw)
        .expect("gzip body");
    let req = ExportMetricsServiceRequest::decode(raw.as_slice()).expect("protobuf body");
    let names: Vec<_> = req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "periscope.network.packets",
            "periscope.queue.fill",
            "network.rtt",
            "periscope.burst.size"
        ]
    );

    let (enqueued, full, delivered, failed, rejected) = stats.totals();
    assert_eq!(
        (enqueued, full, delivered, failed, rejected),
        (12, 0, 4, 6, 2)
    );
    assert_eq!(ctx.counters.values().dropped, 8, "rejected + failed");
    assert_eq!(stats.retries.load(std::sync::atomic::Ordering::Relaxed), 1);
}
