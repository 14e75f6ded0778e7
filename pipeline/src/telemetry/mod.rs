//! The agent's own telemetry: per-component counters and the resource that identifies us.

pub mod instruments;
pub mod names;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use instruments::Instruments;

use crate::model::{
    KeyValue, Metric, MetricData, MetricsBatch, Number, NumberPoint, Resource, Scope, Temporality,
};

/// Counters of one component instance. Relaxed atomics: totals, not ordering.
#[derive(Debug, Default)]
pub struct ComponentCounters {
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    instruments: Instruments,
}

/// A point-in-time copy of [`ComponentCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
    pub errors: u64,
}

impl ComponentCounters {
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }
    /// The component's own gauges, counters and histograms, exported with these counters.
    pub fn instruments(&self) -> &Instruments {
        &self.instruments
    }
    pub fn values(&self) -> CounterValues {
        CounterValues {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// `receiver`, `processor`, `exporter` or `pipeline`.
    kind: &'static str,
    id: String,
    pipeline: Option<String>,
    counters: Arc<ComponentCounters>,
}

/// All counters of a running agent.
#[derive(Debug, Clone)]
pub struct SelfTelemetry {
    entries: Arc<Mutex<Vec<Entry>>>,
    start_ns: u64,
}

impl Default for SelfTelemetry {
    fn default() -> Self {
        SelfTelemetry {
            entries: Arc::default(),
            start_ns: now_ns(),
        }
    }
}

impl SelfTelemetry {
    /// Counters for a component (`pipeline` is set for processors, one instance per pipeline).
    pub fn register(
        &self,
        kind: &'static str,
        id: &str,
        pipeline: Option<&str>,
    ) -> Arc<ComponentCounters> {
        let counters = Arc::new(ComponentCounters::default());
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(Entry {
                kind,
                id: id.to_string(),
                pipeline: pipeline.map(str::to_string),
                counters: counters.clone(),
            });
        }
        counters
    }

    /// Current values, for logs and tests: (kind, id, pipeline, values).
    pub fn values(&self) -> Vec<(&'static str, String, Option<String>, CounterValues)> {
        self.entries
            .lock()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e.kind,
                            e.id.clone(),
                            e.pipeline.clone(),
                            e.counters.values(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The counters as cumulative `periscope.component.*` sums.
    pub fn metrics(&self) -> MetricsBatch {
        let now = now_ns();
        let values = self.values();
        let make =
            |name: &'static str, description: &'static str, pick: fn(&CounterValues) -> u64| {
                let points = values
                    .iter()
                    .map(|(kind, id, pipeline, v)| {
                        let mut attributes = vec![
                            KeyValue::new(names::ATTR_COMPONENT_KIND, *kind),
                            KeyValue::new(names::ATTR_COMPONENT_ID, id.clone()),
                        ];
                        if let Some(p) = pipeline {
                            attributes.push(KeyValue::new(names::ATTR_PIPELINE_ID, p.clone()));
                        }
                        NumberPoint {
                            attributes,
                            start_time_ns: self.start_ns,
                            time_ns: now,
                            value: Number::Int(i64::try_from(pick(v)).unwrap_or(i64::MAX)),
                        }
                    })
                    .collect();
                Metric {
                    name: Cow::Borrowed(name),
                    description: Cow::Borrowed(description),
                    unit: Cow::Borrowed(if name == names::COMPONENT_ERRORS {
                        "{error}"
                    } else {
                        "{item}"
                    }),
                    data: MetricData::Sum {
                        points,
                        temporality: Temporality::Cumulative,
                        monotonic: true,
                    },
                }
            };
        let mut batch = MetricsBatch {
            resource: Resource::default(),
            scope: Scope {
                name: Cow::Borrowed("periscope"),
                version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            },
            metrics: vec![
                make(
                    names::COMPONENT_RECEIVED,
                    "Items a component received.",
                    |v| v.received,
                ),
                make(
                    names::COMPONENT_SENT,
                    "Items a component handed downstream.",
                    |v| v.sent,
                ),
                make(
                    names::COMPONENT_DROPPED,
                    "Items a component or its outgoing queue dropped.",
                    |v| v.dropped,
                ),
                make(
                    names::COMPONENT_ERRORS,
                    "Errors a component ran into.",
                    |v| v.errors,
                ),
            ],
        };
        self.add_instruments(&mut batch.metrics, now);
        batch
    }

    /// Appends every component's own instruments, the points of one metric name together.
    fn add_instruments(&self, metrics: &mut Vec<Metric>, now: u64) {
        let Ok(entries) = self.entries.lock() else {
            return;
        };
        for e in entries.iter() {
            let mut component = vec![
                KeyValue::new(names::ATTR_COMPONENT_KIND, e.kind),
                KeyValue::new(names::ATTR_COMPONENT_ID, e.id.clone()),
            ];
            if let Some(p) = &e.pipeline {
                component.push(KeyValue::new(names::ATTR_PIPELINE_ID, p.clone()));
            }
            for (info, data) in e
                .counters
                .instruments
                .points(&component, self.start_ns, now)
            {
                let rest = match metrics.iter_mut().find(|m| m.name == info.name) {
                    Some(m) => m.data.append(data),
                    None => Some(data),
                };
                // The first of this name (or, by mistake, one of another kind: exported apart
                // rather than lost).
                if let Some(data) = rest {
                    metrics.push(Metric {
                        name: Cow::Borrowed(info.name),
                        description: Cow::Borrowed(info.description),
                        unit: Cow::Borrowed(info.unit),
                        data,
                    });
                }
            }
        }
    }
}

/// The resource every batch carries: `service.name=periscope`, version, host name.
pub fn agent_resource() -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new(names::RESOURCE_SERVICE_NAME, "periscope"),
        KeyValue::new(names::RESOURCE_SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
    ];
    if !host.is_empty() {
        attributes.push(KeyValue::new(names::RESOURCE_HOST_NAME, host));
    }
    Resource { attributes }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
