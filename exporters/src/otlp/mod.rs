//! The `otlp` exporter: metrics and traces to any OpenTelemetry backend over OTLP/gRPC,
//! OTLP/HTTP with protobuf bodies, or OTLP/HTTP with JSON bodies.
//!
//! `export` only puts the batch into a bounded sending queue (a full queue refuses the batch
//! and the framework counts its items as dropped). A worker thread with a small tokio runtime
//! of its own takes batches from the queue, merges several into one request (`batch`), sends
//! it and retries what the OTLP specification calls retryable with exponential backoff and
//! jitter (`retry_on_failure`). Items it gives up on are counted as dropped on the exporter's
//! counters; items a backend rejects in a partial-success response too.
//!
//! Modules: [`config`] (the options), [`queue`] (the worker: batching, retries, accounting),
//! [`grpc`] and [`http`] (the transports), [`retry`] (backoff and what is retryable).

pub mod config;
pub mod grpc;
pub mod http;
pub mod queue;
pub mod retry;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use periscope_pipeline::component::{BuildContext, Exporter, ExporterConfig};
use periscope_pipeline::model::{KeyValue, Resource, Telemetry};
use periscope_pipeline::telemetry::names;

pub use config::{
    BatchConfig, Compression, OtlpConfig, Protocol, QueueConfig, RetryConfig, TlsConfig,
};

pub use periscope_pipeline::telemetry::names::{RESOURCE_HOST_ID, RESOURCE_K8S_NODE_NAME};

/// What the exporter did, for tests and diagnostics. All counts are items (data points or
/// spans) unless named otherwise.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Items accepted into the sending queue.
    pub enqueued: AtomicU64,
    /// Items refused because the sending queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Items the backend accepted (requests that succeeded, minus rejected items).
    pub delivered: AtomicU64,
    /// Items given up on after a permanent error or when retries ran out.
    pub dropped_failed: AtomicU64,
    /// Items the backend rejected in a partial-success response.
    pub rejected: AtomicU64,
    /// Requests sent (first attempts and retries).
    pub requests: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Batches in the sending queue right now.
    pub queue_len: AtomicUsize,
    /// The most batches the sending queue ever held.
    pub queue_peak: AtomicUsize,
}

impl OtlpStats {
    fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
    /// `(enqueued, dropped_queue_full, delivered, dropped_failed, rejected)`.
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        (
            Self::get(&self.enqueued),
            Self::get(&self.dropped_queue_full),
            Self::get(&self.delivered),
            Self::get(&self.dropped_failed),
            Self::get(&self.rejected),
        )
    }
}

/// A message on the sending queue.
pub(crate) enum Msg {
    Data(Telemetry),
    /// Send what is held now and answer once everything queued before this is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The running `otlp` exporter: the producer side of the sending queue.
pub struct OtlpExporter {
    id: String,
    tx: Option<mpsc::Sender<Msg>>,
    stats: Arc<OtlpStats>,
    shared: Arc<queue::Shared>,
    extra_resource: Vec<KeyValue>,
    flush_timeout: Duration,
    queue_size: usize,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl OtlpConfig {
    /// Builds the exporter with its concrete type (tests read its [`OtlpStats`]).
    pub fn build_exporter(&self, ctx: &BuildContext) -> anyhow::Result<OtlpExporter> {
        let (tx, rx) = mpsc::channel(self.sending_queue.queue_size.get());
        let stats = Arc::new(OtlpStats::default());
        let shared = Arc::new(queue::Shared::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the otlp exporter's runtime")?;
        let transport = {
            // The gRPC channel spawns its connection task on the current runtime.
            let _enter = runtime.enter();
            queue::Transport::new(self)
                .with_context(|| format!("otlp exporter `{}` for {}", ctx.id, self.endpoint))?
        };
        let worker = queue::Worker {
            id: ctx.id.to_string(),
            rx,
            transport,
            batch: self.batch.clone(),
            retry: self.retry_on_failure.clone(),
            stats: stats.clone(),
            counters: ctx.counters.clone(),
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("{}-send", ctx.id))
            .spawn(move || runtime.block_on(worker.run()))
            .context("cannot start the otlp exporter's thread")?;
        Ok(OtlpExporter {
            id: ctx.id.to_string(),
            tx: Some(tx),
            stats,
            shared,
            extra_resource: extra_resource_attributes(),
            flush_timeout: self.timeout.get().max(Duration::from_secs(1)),
            queue_size: self.sending_queue.queue_size.get(),
            worker: Some(handle),
        })
    }
}

impl ExporterConfig for OtlpConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        Ok(Box::new(self.build_exporter(ctx)?))
    }
}

/// `host.id` from `/etc/machine-id` and `k8s.node.name` from `K8S_NODE_NAME`, when available.
fn extra_resource_attributes() -> Vec<KeyValue> {
    let mut out = Vec::new();
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if !id.is_empty() {
            out.push(KeyValue::new(RESOURCE_HOST_ID, id.to_string()));
        }
    }
    if let Ok(node) = std::env::var("K8S_NODE_NAME") {
        if !node.is_empty() {
            out.push(KeyValue::new(RESOURCE_K8S_NODE_NAME, node));
        }
    }
    out
}

/// Adds what the resource lacks: `service.name`, `service.version`, `host.id`,
/// `k8s.node.name`. Attributes already present are kept as they are.
pub fn complete_resource(resource: &mut Resource, extra: &[KeyValue]) {
    let has = |r: &Resource, k: &str| r.attributes.iter().any(|a| a.key == k);
    if !has(resource, names::RESOURCE_SERVICE_NAME) {
        resource
            .attributes
            .push(KeyValue::new(names::RESOURCE_SERVICE_NAME, "periscope"));
    }
    if !has(resource, names::RESOURCE_SERVICE_VERSION) {
        resource.attributes.push(KeyValue::new(
            names::RESOURCE_SERVICE_VERSION,
            env!("CARGO_PKG_VERSION"),
        ));
    }
    for kv in extra {
        if !has(resource, &kv.key) {
            resource.attributes.push(kv.clone());
        }
    }
}

impl OtlpExporter {
    /// What the exporter did so far.
    pub fn stats(&self) -> Arc<OtlpStats> {
        self.stats.clone()
    }

    /// The sending queue's capacity in batches.
    pub fn queue_size(&self) -> usize {
        self.queue_size
    }
}

impl Exporter for OtlpExporter {
    fn export(&mut self, mut telemetry: Telemetry) -> anyhow::Result<()> {
        match &mut telemetry {
            Telemetry::Metrics(m) => complete_resource(&mut m.resource, &self.extra_resource),
            Telemetry::Traces(t) => complete_resource(&mut t.resource, &self.extra_resource),
        }
        let n = telemetry.item_count() as u64;
        let Some(tx) = &self.tx else {
            anyhow::bail!("the otlp exporter `{}` is shut down", self.id);
        };
        // Count before sending so that the worker never sees the length below zero.
        let len = self.stats.queue_len.fetch_add(1, Ordering::Relaxed) + 1;
        match tx.try_send(Msg::Data(telemetry)) {
            Ok(()) => {
                self.stats.queue_peak.fetch_max(len, Ordering::Relaxed);
                self.stats.enqueued.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                self.stats
                    .dropped_queue_full
                    .fetch_add(n, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => anyhow::bail!(
                        "otlp exporter `{}`: the sending queue is full ({} batches); the backend \
                         is too slow or unreachable",
                        self.id,
                        self.queue_size
                    ),
                    mpsc::error::TrySendError::Closed(_) => {
                        anyhow::bail!("otlp exporter `{}`: the sending worker stopped", self.id)
                    }
                }
            }
        }
    }

    /// Waits until everything queued so far is sent (or given up on), at most `timeout`
    /// (and at least one second). Retries stop at that deadline; what is left is counted
    /// as dropped.
    fn flush(&mut self) -> anyhow::Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let deadline = Instant::now() + self.flush_timeout;
        self.shared.set_deadline(deadline);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut msg = Msg::Flush(done_tx);
        // The queue may be full: wait for room, up to the deadline.
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(self.flush_timed_out()),
            }
        }
        let mut done_rx = done_rx;
        loop {
            match done_rx.try_recv() {
                Ok(()) => break,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                    if Instant::now() < deadline + Duration::from_millis(500) =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return Err(self.flush_timed_out()),
            }
        }
        self.shared.clear_deadline();
        Ok(())
    }
}

impl OtlpExporter {
    /// The error of a flush that ran out of time (the retry deadline is cleared).
    fn flush_timed_out(&self) -> anyhow::Error {
        self.shared.clear_deadline();
        anyhow::anyhow!(
            "otlp exporter `{}`: could not drain the sending queue within {:?}",
            self.id,
            self.flush_timeout
        )
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        // Stop retrying, let the worker count what is left as dropped, and wait for it (an
        // in-flight request ends within `timeout`).
        self.shared.abort();
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_is_completed_not_overwritten() {
        let mut r = Resource {
            attributes: vec![
                KeyValue::new("service.name", "custom"),
                KeyValue::new("host.id", "from-pipeline"),
            ],
        };
        let extra = vec![
            KeyValue::new(RESOURCE_HOST_ID, "machine"),
            KeyValue::new(RESOURCE_K8S_NODE_NAME, "node-7"),
        ];
        complete_resource(&mut r, &extra);
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|a| a.key == k)
                .map(|a| a.value.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("custom"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get("host.id").as_deref(), Some("from-pipeline"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-7"));
        assert_eq!(r.attributes.len(), 4);
    }
}
