//! An OTLP/gRPC sink on 127.0.0.1 that decodes with the official protobuf definitions and
//! keeps what it receives, and the small things tests ask of what it received.

use std::net::{SocketAddr, TcpListener, TcpStream};
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

/// What the sink received.
#[derive(Default, Debug)]
pub struct Received {
    /// The resource metrics of every request, in order.
    pub metrics: Vec<ResourceMetrics>,
    /// The resource spans of every request, in order.
    pub spans: Vec<ResourceSpans>,
    /// How many metrics requests came.
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

    /// Every span with its resource, flattened.
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

/// How many data points a metric holds.
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

/// The value of attribute `key`.
pub fn attr_value(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone())
}

/// The value of attribute `key` if it is an integer.
pub fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr_value(attrs, key)? {
        Value::IntValue(i) => Some(i),
        _ => None,
    }
}

/// The value of attribute `key` rendered as text (strings, integers, booleans, doubles).
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
    /// The port it listens on.
    pub port: u16,
    /// What it received so far.
    pub received: Arc<Mutex<Received>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// A plaintext sink on `port`.
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
