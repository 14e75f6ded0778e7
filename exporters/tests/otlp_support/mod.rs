//! Helpers for the otlp and prometheus exporter tests: an OTLP/gRPC sink that decodes with the
//! official protobuf definitions, a guard for child processes (rotel, prometheus), a free
//! port, a tiny HTTP GET, and the "tool missing" rule (skip with a reason, panic under CI).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A tool the test needs is missing: skip with a one-line reason, unless `CI` is set.
pub fn missing(what: &str, install: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing (install: {install}); CI must run this test");
    }
    eprintln!("skipped: {what} is missing (install: {install})");
}

/// rotel's binary from the PyPI package, if installed.
pub fn rotel_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel,os;print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = PathBuf::from(dir.trim()).join("rotel-agent");
    bin.is_file().then_some(bin)
}

/// Kills and reaps the child when dropped (also when the test panics).
pub struct ChildGuard(pub Child, pub &'static str);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts rotel receiving OTLP on `grpc` and `http`, forwarding over OTLP/gRPC to `sink`.
pub fn start_rotel(bin: &PathBuf, grpc: u16, http: u16, sink: u16) -> ChildGuard {
    let child = Command::new(bin)
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            &format!("http://127.0.0.1:{sink}"),
            "--otlp-exporter-protocol",
            "grpc",
            "--batch-timeout",
            "100ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rotel starts");
    let guard = ChildGuard(child, "rotel");
    assert!(
        wait_for_port(grpc, Duration::from_secs(15)) && wait_for_port(http, Duration::from_secs(5)),
        "rotel did not listen on {grpc}/{http}"
    );
    guard
}

/// What the sink received.
#[derive(Default, Debug)]
pub struct Received {
    pub metrics: Vec<ResourceMetrics>,
    pub spans: Vec<ResourceSpans>,
    pub metric_requests: usize,
}

impl Received {
    /// Every metric with its resource, flattened.
    pub fn all_metrics(&self) -> Vec<(&ResourceMetrics, &Metric)> {
        self.metrics
            .iter()
            .flat_map(|rm| {
                rm.scope_metrics
                    .iter()
                    .flat_map(move |sm| sm.metrics.iter().map(move |m| (rm, m)))
            })
            .collect()
    }

    pub fn all_spans(&self) -> Vec<(&ResourceSpans, &Span)> {
        self.spans
            .iter()
            .flat_map(|rs| {
                rs.scope_spans
                    .iter()
                    .flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s)))
            })
            .collect()
    }

    /// Data points of every metric whose resource has `key=value`.
    pub fn points_with_resource(&self, key: &str, value: &str) -> usize {
        self.all_metrics()
            .into_iter()
            .filter(|(rm, _)| {
                rm.resource
                    .as_ref()
                    .is_some_and(|r| str_attr(&r.attributes, key) == Some(value.to_string()))
            })
            .map(|(_, m)| point_count(m))
            .sum()
    }
}

pub fn point_count(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

pub fn attr_value(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone())
}

pub fn str_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr_value(attrs, key)? {
        Value::StringValue(s) => Some(s),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

#[derive(Clone, Default)]
struct SinkService(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl MetricsService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut r = self.0.lock().unwrap();
        r.metric_requests += 1;
        r.metrics.extend(request.into_inner().resource_metrics);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap()
            .spans
            .extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC server on 127.0.0.1 that keeps what it receives. Stops when dropped.
pub struct Sink {
    pub port: u16,
    pub received: Arc<Mutex<Received>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start(port: u16) -> Sink {
        Self::start_with(port, Arc::default())
    }

    /// A sink on `port` adding to `received` (to restart a stopped sink).
    pub fn start_with(port: u16, received: Arc<Mutex<Received>>) -> Sink {
        Self::start_tls(port, received, None)
    }

    /// A sink serving TLS (with `tls`) or plaintext.
    pub fn start_tls(
        port: u16,
        received: Arc<Mutex<Received>>,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Sink {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = SinkService(received.clone());
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let metrics = MetricsServiceServer::new(service.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                let traces = TraceServiceServer::new(service)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    builder = builder.tls_config(tls).expect("server TLS");
                }
                let server = builder
                    .add_service(metrics)
                    .add_service(traces)
                    .serve_with_shutdown(addr, async {
                        let _ = stopped.await;
                    });
                let _ = tokio::time::timeout(Duration::from_secs(3600), server).await;
            });
            // Dropping the runtime closes whatever connections are left.
        });
        assert!(
            wait_for_port(port, Duration::from_secs(5)),
            "the sink did not listen on {port}"
        );
        Sink {
            port,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Polls until `done` holds for what was received, at most `within`.
    pub fn wait_for(&self, within: Duration, done: impl Fn(&Received) -> bool) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(&self.received.lock().unwrap())
    }

    /// Stops the server (bounded: connections still open are cut after a moment).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let end = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `GET path` on 127.0.0.1:`port`; returns (status, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
