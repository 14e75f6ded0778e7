//! The sending worker: takes batches from the queue, merges them into requests, sends them
//! with retries, and accounts for every item (delivered, rejected or dropped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::mpsc;

use periscope_pipeline::model::Telemetry;
use periscope_pipeline::telemetry::ComponentCounters;

use super::config::{BatchConfig, OtlpConfig, Protocol, RetryConfig};
use super::grpc::GrpcTransport;
use super::http::HttpTransport;
use super::retry::{Backoff, Outcome};
use super::{Msg, OtlpStats};
use crate::otlp_proto;

/// gRPC or HTTP.
pub enum Transport {
    Grpc(Box<GrpcTransport>),
    Http(Box<HttpTransport>),
}

impl Transport {
    /// Must run inside the worker's runtime (the gRPC channel spawns its task there).
    pub fn new(config: &OtlpConfig) -> anyhow::Result<Self> {
        Ok(match config.protocol {
            Protocol::Grpc => Transport::Grpc(Box::new(GrpcTransport::new(config)?)),
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                Transport::Http(Box::new(HttpTransport::new(config)?))
            }
        })
    }

    async fn send(&mut self, req: &Request) -> Outcome {
        match (self, req) {
            // tonic takes the message by value; a retry needs it again.
            (Transport::Grpc(t), Request::Metrics(r)) => t.send_metrics(r.clone()).await,
            (Transport::Grpc(t), Request::Traces(r)) => t.send_traces(r.clone()).await,
            (Transport::Http(t), Request::Metrics(r)) => t.send_metrics(r).await,
            (Transport::Http(t), Request::Traces(r)) => t.send_traces(r).await,
        }
    }
}

enum Request {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// State shared between the exporter (producer) and the worker.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by `flush` and `drop`: retries stop at this instant.
    deadline: Mutex<Option<Instant>>,
    /// Set by `drop`: stop sending; what is still queued is counted as dropped.
    abort: AtomicBool,
}

impl Shared {
    pub fn set_deadline(&self, at: Instant) {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }
    pub fn clear_deadline(&self) {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.set_deadline(Instant::now());
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Logs at most once per interval, counting what it left out.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        RateLimitedLog {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now, `n` lines having been left out before it.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Self::EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The consumer side of the sending queue.
pub(crate) struct Worker {
    pub id: String,
    pub rx: mpsc::Receiver<Msg>,
    pub transport: Transport,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub stats: Arc<OtlpStats>,
    pub counters: Arc<ComponentCounters>,
    pub shared: Arc<Shared>,
}

/// What the worker collected for one round of requests.
#[derive(Default)]
struct Pending {
    metrics: ExportMetricsServiceRequest,
    metric_items: u64,
    traces: ExportTraceServiceRequest,
    span_items: u64,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Pending {
    fn items(&self) -> u64 {
        self.metric_items + self.span_items
    }

    fn add(&mut self, t: Telemetry) {
        let n = t.item_count() as u64;
        match t {
            Telemetry::Metrics(m) => {
                self.metrics
                    .resource_metrics
                    .push(otlp_proto::resource_metrics(m));
                self.metric_items += n;
            }
            Telemetry::Traces(s) => {
                self.traces
                    .resource_spans
                    .push(otlp_proto::resource_spans(s));
                self.span_items += n;
            }
        }
    }
}

impl Worker {
    pub async fn run(mut self) {
        let mut failures = RateLimitedLog::new();
        let mut partial = RateLimitedLog::new();
        loop {
            let mut pending = Pending::default();
            // Wait for the first message; a closed queue ends the worker.
            match self.rx.recv().await {
                None => break,
                Some(m) => self.take(m, &mut pending),
            }
            if self.shared.aborted() {
                self.drop_pending(pending);
                break;
            }
            // Gather more until the batch is full, its timeout passes, or a flush asks.
            let until = Instant::now() + self.batch.timeout.0;
            while pending.flushes.is_empty() && pending.items() < self.batch.max_size.get() as u64 {
                let next = if self.batch.timeout.0.is_zero() {
                    self.rx.try_recv().ok()
                } else {
                    tokio::time::timeout_at(until.into(), self.rx.recv())
                        .await
                        .ok()
                        .flatten()
                };
                match next {
                    Some(m) => self.take(m, &mut pending),
                    None => break,
                }
            }
            if pending.metric_items > 0 || !pending.metrics.resource_metrics.is_empty() {
                let req = Request::Metrics(std::mem::take(&mut pending.metrics));
                self.deliver(req, pending.metric_items, &mut failures, &mut partial)
                    .await;
            }
            if pending.span_items > 0 || !pending.traces.resource_spans.is_empty() {
                let req = Request::Traces(std::mem::take(&mut pending.traces));
                self.deliver(req, pending.span_items, &mut failures, &mut partial)
                    .await;
            }
            for f in pending.flushes {
                let _ = f.send(());
            }
        }
    }

    fn drop_pending(&self, pending: Pending) {
        let n = pending.items();
        self.stats.dropped_failed.fetch_add(n, Ordering::Relaxed);
        self.counters.add_dropped(n);
    }

    fn take(&self, m: Msg, pending: &mut Pending) {
        match m {
            Msg::Data(t) => {
                self.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                pending.add(t);
            }
            Msg::Flush(done) => pending.flushes.push(done),
        }
    }

    /// Sends one request, retrying as configured, and accounts for its `items`.
    async fn deliver(
        &mut self,
        req: Request,
        items: u64,
        failures: &mut RateLimitedLog,
        partial: &mut RateLimitedLog,
    ) {
        let started = Instant::now();
        let mut backoff = Backoff::new(
            self.retry.initial_interval.0,
            self.retry.max_interval.0.max(self.retry.initial_interval.0),
        );
        let signal = match req {
            Request::Metrics(_) => "data points",
            Request::Traces(_) => "spans",
        };
        loop {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.transport.send(&req).await {
                Outcome::Accepted { rejected, message } => {
                    let rejected = rejected.min(items);
                    self.stats
                        .delivered
                        .fetch_add(items - rejected, Ordering::Relaxed);
                    if rejected > 0 {
                        self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                        self.counters.add_dropped(rejected);
                    }
                    if rejected > 0 || !message.is_empty() {
                        if let Some(skipped) = partial.allow() {
                            tracing::warn!(
                                exporter = %self.id, rejected, message = %message,
                                "otlp: the backend rejected {rejected} of {items} {signal}{}",
                                suppressed(skipped)
                            );
                        }
                    }
                    return;
                }
                Outcome::Permanent { reason } => {
                    self.give_up(items, signal, &reason, "not retryable", failures);
                    return;
                }
                Outcome::Retryable { reason, after } => {
                    if !self.retry.enabled {
                        self.give_up(items, signal, &reason, "retries are disabled", failures);
                        return;
                    }
                    let delay = backoff.next_delay(after);
                    let now = Instant::now();
                    let max = self.retry.max_elapsed_time.0;
                    if !max.is_zero() && now + delay > started + max {
                        self.give_up(
                            items,
                            signal,
                            &reason,
                            &format!("retried for {:?}", now - started),
                            failures,
                        );
                        return;
                    }
                    if let Some(d) = self.shared.deadline() {
                        if now + delay > d {
                            self.give_up(items, signal, &reason, "shutting down", failures);
                            return;
                        }
                    }
                    if let Some(skipped) = failures.allow() {
                        tracing::warn!(
                            exporter = %self.id, error = %reason,
                            "otlp: request failed; retrying in {delay:?}{}", suppressed(skipped)
                        );
                    }
                    self.sleep_or_deadline(delay).await;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sleeps `delay`, waking early when a shutdown deadline is set that passes first.
    async fn sleep_or_deadline(&self, delay: Duration) {
        let end = Instant::now() + delay;
        while Instant::now() < end {
            let step = (end - Instant::now()).min(Duration::from_millis(100));
            tokio::time::sleep(step).await;
            if let Some(d) = self.shared.deadline() {
                if Instant::now() >= d {
                    return;
                }
            }
        }
    }

    fn give_up(
        &self,
        items: u64,
        signal: &str,
        reason: &str,
        why: &str,
        failures: &mut RateLimitedLog,
    ) {
        self.stats
            .dropped_failed
            .fetch_add(items, Ordering::Relaxed);
        self.counters.add_dropped(items);
        self.counters.add_errors(1);
        if let Some(skipped) = failures.allow() {
            tracing::warn!(
                exporter = %self.id, error = %reason,
                "otlp: dropped {items} {signal} ({why}){}", suppressed(skipped)
            );
        }
    }
}

fn suppressed(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar messages suppressed)")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Whatever is still queued when the worker ends is dropped: count it.
        self.rx.close();
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Data(t) = m {
                let n = t.item_count() as u64;
                self.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped_failed.fetch_add(n, Ordering::Relaxed);
                self.counters.add_dropped(n);
            }
        }
    }
}
