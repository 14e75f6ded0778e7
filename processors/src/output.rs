//! What every processor sends its telemetry with: its scope, the batches, span ids, and
//! counts as OTLP integers.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use periscope_pipeline::component::Emitter;
use periscope_pipeline::model::Metric;
use periscope_pipeline::model::{MetricsBatch, Number, Scope, Span, Telemetry, TracesBatch};

/// The instrumentation scope of processor `id`'s telemetry: `periscope/<id><suffix>`.
pub(crate) fn scope(id: &str, suffix: &str) -> Scope {
    Scope {
        name: Cow::Owned(format!("periscope/{id}{suffix}")),
        version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
    }
}

/// Sends `metrics` as one batch of `scope`, unless there are none.
pub(crate) fn send_metrics(out: &mut Emitter, scope: Scope, metrics: Vec<Metric>) {
    if !metrics.is_empty() {
        out.telemetry(Telemetry::Metrics(MetricsBatch {
            resource: Default::default(),
            scope,
            metrics,
        }));
    }
}

/// Sends the `spans` made so far as one batch of `scope`, unless there are none.
pub(crate) fn send_spans(out: &mut Emitter, scope: Scope, spans: &mut Vec<Span>) {
    if !spans.is_empty() {
        out.telemetry(Telemetry::Traces(TracesBatch {
            resource: Default::default(),
            scope,
            spans: std::mem::take(spans),
        }));
    }
}

/// A count as an OTLP integer (the largest one past `i64::MAX`).
pub(crate) fn int(v: u64) -> Number {
    Number::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Trace and span ids: unique within a run, different between runs.
#[derive(Debug)]
pub(crate) struct SpanIds {
    keys: RandomState,
    counter: u64,
}

impl SpanIds {
    pub(crate) fn new() -> Self {
        SpanIds {
            keys: RandomState::new(),
            counter: 0,
        }
    }

    /// A new trace id and span id, hashed from `seed` (e.g. a socket cookie or a start time)
    /// and a counter.
    pub(crate) fn next(&mut self, seed: u64) -> ([u8; 16], [u8; 8]) {
        self.counter += 1;
        let mut h = self.keys.build_hasher();
        h.write_u64(seed);
        h.write_u64(self.counter);
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        h.write_u64(b);
        let c = h.finish();
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&a.to_be_bytes());
        trace[8..].copy_from_slice(&b.to_be_bytes());
        (trace, c.to_be_bytes())
    }
}
