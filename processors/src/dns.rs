//! The `dns` processor: DNS events (from `pcap`, or `xdp`/`tcx` with `always_emit_dns: true`)
//! → lookups. A query is matched to its response by namespace, transport, message id, client
//! address and port, and server address and port; the time between them (both seen at the
//! same hook) is a `dns.lookup.duration` sample, and a span `dns.lookup` for traces
//! pipelines. A query without a response within `timeout` is a lookup with
//! `error.type=timeout`. The answers' addresses are learned, per namespace and for their TTL,
//! into the shared DNS table, from which `identity` (after `flow` and `connections`) adds
//! `dns.question.name` and `periscope.dns.server.address` to series and spans whose
//! destination or peer is such an address.
//!
//! Time is event time: timeouts and TTLs run on the packets' timestamps, advanced by the
//! wall-clock time since the latest event when nothing arrives, so that replayed captures
//! behave as the live traffic did.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Processor, ProcessorConfig,
};
use periscope_pipeline::config::{Boundaries, ConfigDuration, PositiveDuration};
use periscope_pipeline::model::{
    AnyValue, DnsEvent, Event, HistogramPoint, KeyValue, Metric, MetricData, NetnsId, NumberPoint,
    Payload, Span, SpanKind, SpanStatus, Temporality, Transport,
};
use periscope_pipeline::telemetry::{names, now_ns};
use periscope_pipeline::{DnsTable, NamespaceTable};

use crate::device_names::push_netns;
use crate::gone::{self, Grace};
use crate::latency::Recorder;
use crate::output::{self, SpanIds};
use crate::series::{SeriesTable, TableOptions};

/// DNS lookups from DNS events: the `dns.lookup.duration` histogram (seconds) with
/// `dns.question.name`, `dns.question.type`, `dns.response_code` and, for lookups without an
/// answer, `error.type=timeout`; a `dns.lookup` span per lookup; and, for `identity`, which
/// name each answered address came from (per namespace, for its TTL). Consumes DNS events and
/// passes every other event on: put it first (before `flow`, which consumes every event).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// How often the histogram and spans are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta`.
    #[serde(default)]
    pub temporality: Temporality,
    /// A query without a response this long after it is a timed-out lookup; default 5s.
    #[serde(default = "default_timeout")]
    pub timeout: PositiveDuration,
    /// Put `dns.question.name` on the histogram's series (a series per name: mind
    /// `cardinality_limit`); spans always carry it. Default true.
    #[serde(default = "default_true")]
    pub question_name_attribute: bool,
    /// A span per lookup; default true.
    #[serde(default = "default_true")]
    pub spans: bool,
    /// Histogram bucket boundaries, seconds, strictly increasing; default 0.5 ms … 10 s.
    #[serde(default = "default_boundaries")]
    pub boundaries: Boundaries,
    /// Answered addresses stay in the address → name map at least this long, whatever their
    /// TTL (local servers often answer with TTL 0, and connections follow the lookup);
    /// default 60s.
    #[serde(default = "default_min_ttl")]
    pub min_ttl: ConfigDuration,
    /// Most queries awaiting their response; further queries are not tracked (counted as
    /// dropped). Default 65536.
    #[serde(default = "default_max_pending")]
    pub max_pending: NonZeroUsize,
    /// Most series; further lookups are counted in one `otel.metric.overflow=true` series.
    /// Default 2000.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_timeout() -> PositiveDuration {
    PositiveDuration::from_secs(5)
}
fn default_true() -> bool {
    true
}
fn default_min_ttl() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}
fn default_max_pending() -> NonZeroUsize {
    const { NonZeroUsize::new(65536).unwrap() }
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(2000).unwrap() }
}
/// Default bucket boundaries of `dns.lookup.duration`, seconds.
pub const DEFAULT_BOUNDARIES: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
fn default_boundaries() -> Boundaries {
    Boundaries::new(DEFAULT_BOUNDARIES.to_vec()).expect("the default bounds increase")
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            interval: default_interval(),
            temporality: Temporality::default(),
            timeout: default_timeout(),
            question_name_attribute: true,
            spans: true,
            boundaries: default_boundaries(),
            min_ttl: default_min_ttl(),
            max_pending: default_max_pending(),
            cardinality_limit: default_cardinality_limit(),
        }
    }
}

impl ComponentConfig for DnsConfig {
    const TYPE: &'static str = "dns";
}

impl ProcessorConfig for DnsConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Dns::new(
                DnsConfig {
                    // Not in a metrics pipeline, which drops them.
                    spans: self.spans && ctx.carries_spans(),
                    ..self.clone()
                },
                ctx.dns.clone(),
                ctx.id.to_string(),
            )
            .with_namespaces(ctx.namespaces.clone()),
        ))
    }
}

/// The name of a QTYPE, as `dns.question.type` carries it.
pub fn qtype_name(t: u16) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return Cow::Owned(t.to_string()),
    })
}

/// The name of an RCODE, as `dns.response_code` (and `error.type`) carry it.
pub fn rcode_name(r: u8) -> Cow<'static, str> {
    Cow::Borrowed(match r {
        0 => "noerror",
        1 => "formerr",
        2 => "servfail",
        3 => "nxdomain",
        4 => "notimp",
        5 => "refused",
        _ => return Cow::Owned(r.to_string()),
    })
}

/// What matches a response to its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LookupKey {
    netns: NetnsId,
    transport: Transport,
    id: u16,
    client: (IpAddr, u16),
    server: (IpAddr, u16),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    ts_ns: u64,
    name: u32,
    qtype: u16,
}

/// The attributes a series is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    netns: NetnsId,
    name: Option<Arc<str>>,
    qtype: u16,
    /// `None`: timed out.
    rcode: Option<u8>,
}

/// The running processor.
pub struct Dns {
    config: DnsConfig,
    table: DnsTable,
    scope_name: String,
    pending: FxHashMap<LookupKey, Pending>,
    /// Queries in arrival order, for timeouts (entries already answered are skipped).
    order: VecDeque<(u64, LookupKey)>,
    series: SeriesTable<SeriesKey, Recorder>,
    spans: Vec<Span>,
    /// The latest event time and when it arrived.
    clock: Option<(u64, Instant)>,
    /// When the processor started: the start of the cumulative untracked-queries sum.
    created_ns: u64,
    next_emit: Instant,
    ids: SpanIds,
    lookups: u64,
    timeouts: u64,
    untracked: u64,
    unmatched_responses: u64,
    /// Queries whose namespace went away before their response or timeout: not lookups.
    abandoned: u64,
    /// Which namespaces are gone (filled by the receivers).
    namespaces: NamespaceTable,
    /// Namespaces found gone: their series end after one grace collect.
    grace: Grace<NetnsId>,
}

impl Dns {
    pub fn new(config: DnsConfig, table: DnsTable, scope_name: String) -> Self {
        let next_emit = Instant::now() + config.interval.get();
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Dns {
            series: SeriesTable::new(&options, names::DNS_LOOKUP_DURATION),
            config,
            table,
            scope_name,
            pending: FxHashMap::default(),
            order: VecDeque::new(),
            spans: Vec::new(),
            clock: None,
            created_ns: now_ns(),
            next_emit,
            ids: SpanIds::new(),
            lookups: 0,
            timeouts: 0,
            untracked: 0,
            unmatched_responses: 0,
            abandoned: 0,
            namespaces: NamespaceTable::default(),
            grace: Grace::default(),
        }
    }

    /// Tells gone namespaces from `namespaces` (filled by the receivers): their unanswered
    /// queries are not timeouts, their series end. Without it no namespace is ever gone.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Queries dropped because their namespace went away before an answer.
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Series held: what churn must not grow.
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Lookups completed (answered or timed out), timed out, queries not tracked (too many
    /// pending), and responses without a query.
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        (
            self.lookups,
            self.timeouts,
            self.untracked,
            self.unmatched_responses,
        )
    }

    /// Event time now: the latest event's, plus the wall-clock time since it arrived.
    fn event_now(&self, now: Instant) -> u64 {
        self.clock.map_or(0, |(ts, at)| {
            ts.saturating_add(now.saturating_duration_since(at).as_nanos() as u64)
        })
    }

    fn on_dns(&mut self, d: &DnsEvent, now: Instant) {
        if self.clock.is_none_or(|(ts, _)| d.timestamp_ns >= ts) {
            self.clock = Some((d.timestamp_ns, now));
        }
        let netns = d.device.netns;
        if !d.is_response {
            let key = LookupKey {
                netns,
                transport: d.transport,
                id: d.id,
                client: (d.src_addr, d.src_port),
                server: (d.dst_addr, d.dst_port),
            };
            if self.pending.contains_key(&key) {
                // The same query seen again in this namespace (a second device, a
                // retransmission): the first sighting starts the lookup.
                return;
            }
            if self.pending.len() >= self.config.max_pending.get() {
                self.untracked += 1;
                return;
            }
            self.pending.insert(
                key,
                Pending {
                    ts_ns: d.timestamp_ns,
                    name: d.name,
                    qtype: d.qtype,
                },
            );
            self.order.push_back((d.timestamp_ns, key));
            return;
        }
        // A response: learn its answers, then end its lookup.
        let name = self.table.name(d.name);
        self.table.observe_time(d.timestamp_ns);
        if let Some(name) = &name {
            let ttl = Duration::from_secs(u64::from(d.answer_ttl)).max(self.config.min_ttl.0);
            for i in 0..usize::from(d.answer_count) {
                if let Some(addr) = d.answer(i) {
                    self.table.learn(
                        netns,
                        addr,
                        name.clone(),
                        d.src_addr,
                        d.timestamp_ns,
                        ttl.as_nanos() as u64,
                    );
                }
            }
        }
        let key = LookupKey {
            netns,
            transport: d.transport,
            id: d.id,
            client: (d.dst_addr, d.dst_port),
            server: (d.src_addr, d.src_port),
        };
        let Some(q) = self.pending.remove(&key) else {
            self.unmatched_responses += 1;
            return;
        };
        let end = d.timestamp_ns.max(q.ts_ns);
        self.complete(&key, &q, Some(d.rcode), end);
    }

    /// Records one lookup: answered with `rcode`, or timed out (`None`).
    fn complete(&mut self, key: &LookupKey, q: &Pending, rcode: Option<u8>, end_ns: u64) {
        self.lookups += 1;
        let name = self.table.name(q.name);
        let duration = end_ns.saturating_sub(q.ts_ns);
        let series = SeriesKey {
            netns: key.netns,
            name: name.clone().filter(|_| self.config.question_name_attribute),
            qtype: q.qtype,
            rcode,
        };
        if rcode.is_none() {
            self.timeouts += 1;
        }
        // Timed-out lookups are counted with the timeout as their duration.
        self.series
            .value(series, || Recorder::new(3, None))
            .record(duration);
        if !self.config.spans {
            return;
        }
        let mut a = Vec::with_capacity(12);
        push_netns(&mut a, key.netns);
        a.extend([
            KeyValue::new(names::ATTR_TRANSPORT, key.transport.as_str()),
            KeyValue::new(
                names::ATTR_DNS_QUESTION_TYPE,
                AnyValue::String(qtype_name(q.qtype)),
            ),
            KeyValue::new(names::ATTR_LOCAL_ADDRESS, key.client.0.to_string()),
            KeyValue::new(names::ATTR_LOCAL_PORT, key.client.1),
            KeyValue::new(names::ATTR_DNS_SERVER_ADDRESS, key.server.0.to_string()),
            KeyValue::new(names::ATTR_PEER_PORT, key.server.1),
            KeyValue::new(names::ATTR_DNS_MESSAGE_ID, key.id),
        ]);
        if let Some(n) = name {
            a.push(KeyValue::new(names::ATTR_DNS_QUESTION_NAME, n.to_string()));
        }
        let status = match rcode {
            Some(r) => {
                a.push(KeyValue::new(
                    names::ATTR_DNS_RESPONSE_CODE,
                    AnyValue::String(rcode_name(r)),
                ));
                if r == 0 {
                    SpanStatus::Unset
                } else {
                    a.push(KeyValue::new(
                        names::ATTR_ERROR_TYPE,
                        AnyValue::String(rcode_name(r)),
                    ));
                    SpanStatus::Error(rcode_name(r).into_owned())
                }
            }
            None => {
                a.push(KeyValue::new(names::ATTR_ERROR_TYPE, "timeout"));
                SpanStatus::Error("timeout".into())
            }
        };
        let (trace_id, span_id) = self.ids.next(q.ts_ns);
        self.spans.push(Span {
            trace_id,
            span_id,
            parent_span_id: [0; 8],
            name: Cow::Borrowed(names::SPAN_DNS_LOOKUP),
            kind: SpanKind::Client,
            start_time_ns: q.ts_ns,
            end_time_ns: end_ns,
            attributes: a,
            events: Vec::new(),
            status,
        });
    }

    /// Times out the queries older than `timeout` at event time `now_ns`.
    fn expire(&mut self, now_ns: u64) {
        let timeout = self.config.timeout.get().as_nanos() as u64;
        while let Some(&(ts, key)) = self.order.front() {
            if ts.saturating_add(timeout) > now_ns {
                break;
            }
            self.order.pop_front();
            if let Some(q) = self.pending.get(&key).copied().filter(|q| q.ts_ns == ts) {
                self.pending.remove(&key);
                // A deleted pod's last query was cut off, not left unanswered by its server.
                if gone::netns_gone(&self.namespaces, &key.netns) {
                    self.abandoned += 1;
                    continue;
                }
                self.complete(&key, &q, None, ts.saturating_add(timeout));
            }
        }
        // Answered queries leave stale order entries behind: keep the queue bounded.
        if self.order.len() > 2 * self.config.max_pending.get() {
            let pending = &self.pending;
            self.order
                .retain(|(ts, k)| pending.get(k).is_some_and(|q| q.ts_ns == *ts));
        }
    }

    fn attributes(k: &SeriesKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(6);
        push_netns(&mut a, k.netns);
        a.push(KeyValue::new(
            names::ATTR_DNS_QUESTION_TYPE,
            AnyValue::String(qtype_name(k.qtype)),
        ));
        if let Some(n) = &k.name {
            a.push(KeyValue::new(names::ATTR_DNS_QUESTION_NAME, n.to_string()));
        }
        match k.rcode {
            Some(r) => {
                a.push(KeyValue::new(
                    names::ATTR_DNS_RESPONSE_CODE,
                    AnyValue::String(rcode_name(r)),
                ));
                if r != 0 {
                    a.push(KeyValue::new(
                        names::ATTR_ERROR_TYPE,
                        AnyValue::String(rcode_name(r)),
                    ));
                }
            }
            None => a.push(KeyValue::new(names::ATTR_ERROR_TYPE, "timeout")),
        }
        a
    }

    fn point(
        &self,
        r: &Recorder,
        attributes: Vec<KeyValue>,
        start: u64,
        now: u64,
    ) -> HistogramPoint {
        HistogramPoint {
            attributes,
            start_time_ns: start,
            time_ns: now,
            count: r.count(),
            sum: Some(r.sum()),
            min: (r.count() > 0).then(|| r.min()),
            max: (r.count() > 0).then(|| r.max()),
            explicit_bounds: self.config.boundaries.to_vec(),
            bucket_counts: r.explicit_counts(&self.config.boundaries),
        }
    }

    fn emit(&mut self, out: &mut Emitter) {
        let scope = output::scope(&self.scope_name, "");
        output::send_spans(out, scope.clone(), &mut self.spans);
        let now = now_ns();
        let table = self.namespaces.clone();
        let sources: Vec<NetnsId> = self.series.keys().map(|k| k.netns).collect();
        for n in self.grace.due(sources, |n| gone::netns_gone(&table, n)) {
            self.series.retire_if(|k| k.netns == n);
        }
        let start = self.series.start_ns();
        let points: Vec<HistogramPoint> = self
            .series
            .sorted_by_key(SeriesKey::clone)
            .into_iter()
            .map(|(s, r)| self.point(r, s.attributes(Self::attributes), start, now))
            .collect();
        let mut metrics = Vec::new();
        if !points.is_empty() {
            metrics.push(Metric {
                name: Cow::Borrowed(names::DNS_LOOKUP_DURATION),
                description: Cow::Borrowed(
                    "DNS query → response, seen at the same hook; unanswered lookups \
                     (error.type=timeout) count with the timeout as their duration.",
                ),
                unit: Cow::Borrowed("s"),
                data: MetricData::Histogram {
                    points,
                    temporality: self.config.temporality,
                },
            });
        }
        if self.untracked > 0 {
            metrics.push(Metric {
                name: Cow::Borrowed(names::DNS_QUERIES_UNTRACKED),
                description: Cow::Borrowed(
                    "DNS queries not tracked: max_pending queries were already awaiting a response.",
                ),
                unit: Cow::Borrowed("{query}"),
                data: MetricData::Sum {
                    points: vec![NumberPoint {
                        attributes: Vec::new(),
                        start_time_ns: self.created_ns,
                        time_ns: now,
                        value: output::int(self.untracked),
                    }],
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
            });
        }
        self.series.finish_collect(now);
        output::send_metrics(out, scope, metrics);
    }
}

impl Processor for Dns {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(mut batch) => {
                let now = Instant::now();
                // In place, then out of the batch: no copy of the DNS events per batch.
                let mut seen = false;
                for e in &batch.events {
                    if let Event::Dns(d) = e {
                        self.on_dns(d, now);
                        seen = true;
                    }
                }
                if seen {
                    batch.events.retain(|e| !matches!(e, Event::Dns(_)));
                    let t = self.event_now(now);
                    self.expire(t);
                }
                out.events(batch);
            }
            other => out.payload(other),
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_emit)
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        let t = self.event_now(now);
        self.expire(t);
        self.table.observe_time(t);
        self.emit(out);
        self.next_emit = now + self.config.interval.get();
    }

    fn flush(&mut self, out: &mut Emitter) {
        // Queries whose timeout has passed by now are lookups that failed; younger ones may
        // still be answered after the agent stops and are not counted.
        let t = self.event_now(Instant::now());
        self.expire(t);
        self.emit(out);
    }
}

#[cfg(test)]
mod tests;
