//! The `connections` processor: socket events and drops → connection, retransmit, UDP and drop
//! counters, and a span per TCP connection from connect/accept to close.
//!
//! Several receivers may report the same socket (sockops and tcp_udp both see the TCP state
//! machine): a connection is counted once per socket cookie, whichever reports it first, and
//! what the others add (the process, RTT) is merged in.

mod config;
mod conn;
mod join;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use periscope_pipeline::component::{BuildContext, Emitter, Processor, ProcessorConfig};
use periscope_pipeline::model::{
    tcp_state_name, DropEvent, Event, KeyValue, Metric, MetricData, NetnsId, NumberPoint, Payload,
    SocketEvent, SocketEventKind, SocketRole, Span, Temporality, Transport,
};
use periscope_pipeline::telemetry::{names, now_ns};
use periscope_pipeline::{NamespaceTable, SocketTable};

use crate::device_names::push_netns;
use crate::gone::{self, Finished, Grace};
use crate::output::{self, SpanIds};
use crate::series::{TableOptions, TotalsTable};

pub use config::ConnectionsConfig;
use conn::Conn;
use join::PendingSpans;

impl ProcessorConfig for ConnectionsConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Connections::new(
                ConnectionsConfig {
                    // Not in a metrics pipeline, which drops them.
                    spans: self.spans && ctx.carries_spans(),
                    ..self.clone()
                },
                ctx.sockets.clone(),
                ctx.id.to_string(),
            )
            .with_namespaces(ctx.namespaces.clone()),
        ))
    }
}

/// Attributes of a series, as plain values (strings built only at emit time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SeriesKey {
    Connection {
        netns: NetnsId,
        opened: bool,
        role: SocketRole,
        state: u8,
        socket: Option<(IpAddr, u16, IpAddr, u16)>,
    },
    Retransmit {
        netns: NetnsId,
        role: SocketRole,
    },
    Datagram {
        netns: NetnsId,
        sent: bool,
        socket: Option<(IpAddr, u16, IpAddr, u16)>,
    },
    Drop {
        netns: NetnsId,
        reason: &'static str,
        transport: Transport,
    },
}

/// `periscope.connection.end` of a connection span that ended without a close record:
/// `netns_gone`, its namespace went away.
const ATTR_CONNECTION_END: &str = "periscope.connection.end";

impl SeriesKey {
    /// The namespace the series is about.
    fn netns(&self) -> NetnsId {
        match self {
            SeriesKey::Connection { netns, .. }
            | SeriesKey::Retransmit { netns, .. }
            | SeriesKey::Datagram { netns, .. }
            | SeriesKey::Drop { netns, .. } => *netns,
        }
    }

    /// Which of the four metrics the series belongs to.
    fn metric(&self) -> usize {
        match self {
            SeriesKey::Connection { .. } => 0,
            SeriesKey::Retransmit { .. } => 1,
            SeriesKey::Datagram { .. } => 2,
            SeriesKey::Drop { .. } => 3,
        }
    }
}

/// Name, description and unit of the four metrics, in [`SeriesKey::metric`] order.
const META: [(&str, &str, &str); 4] = [
    (
        names::TCP_CONNECTIONS,
        "TCP connections opened (handshake completed) and closed.",
        "{connection}",
    ),
    (
        names::TCP_RETRANSMITS,
        "TCP segments retransmitted.",
        "{segment}",
    ),
    (
        names::UDP_DATAGRAMS,
        "UDP datagrams sent and received (send and receive calls).",
        "{datagram}",
    ),
    (
        names::DROPS,
        "IP packets the kernel dropped, by reason.",
        "{packet}",
    ),
];

/// Cookies of recently closed connections remembered, so that a second receiver's close of
/// the same socket is not counted twice.
const RECENTLY_CLOSED: usize = 16384;

/// The running processor.
pub struct Connections {
    config: ConfigSnapshot,
    sockets: SocketTable,
    scope_name: String,
    /// The four metrics' series (see [`SeriesKey::metric`]): running totals, so that a delta
    /// point is the increase since the last one and an idle series is still emitted.
    series: [TotalsTable<SeriesKey, u64>; 4],
    open: FxHashMap<u64, Conn>,
    /// The kernel's retransmit total last seen per TCP socket.
    retrans_seen: FxHashMap<u64, u32>,
    closed: FxHashSet<u64>,
    closed_order: VecDeque<u64>,
    spans: Vec<Span>,
    /// Spans of closed connections waiting `flow_join_delay` for the devices' counts.
    pending: PendingSpans,
    ids: SpanIds,
    next_emit: Instant,
    untracked: u64,
    /// Names of namespaces, captured when a connection opens; which namespaces are gone.
    namespaces: NamespaceTable,
    /// Namespaces found gone: their series and open connections end after one grace collect.
    grace: Grace<NetnsId>,
    /// Namespaces whose series ended: late events of them make no new series.
    finished: Finished<NetnsId>,
}

struct ConfigSnapshot {
    interval: Duration,
    temporality: Temporality,
    spans: bool,
    report_open_after: Duration,
    socket_attributes: bool,
    max_connections: usize,
}

impl Connections {
    pub fn new(config: ConnectionsConfig, sockets: SocketTable, scope_name: String) -> Self {
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Connections {
            next_emit: Instant::now() + config.interval.get(),
            config: ConfigSnapshot {
                interval: config.interval.get(),
                temporality: config.temporality,
                spans: config.spans,
                report_open_after: config.report_open_after.get(),
                socket_attributes: config.socket_attributes,
                max_connections: config.max_connections.get(),
            },
            sockets,
            scope_name,
            series: META.map(|(name, _, _)| TotalsTable::new(&options, name)),
            open: FxHashMap::default(),
            retrans_seen: FxHashMap::default(),
            closed: FxHashSet::default(),
            closed_order: VecDeque::new(),
            spans: Vec::new(),
            pending: PendingSpans::new(config.flow_join_delay.0),
            ids: SpanIds::new(),
            untracked: 0,
            namespaces: NamespaceTable::default(),
            grace: Grace::default(),
            finished: Finished::default(),
        }
    }

    /// Reads namespaces' names and whether they are gone from `namespaces` (filled by the
    /// receivers); without it no namespace is ever gone.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Series held and connections open: what churn must not grow.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.series.iter().map(TotalsTable::len).sum(),
            self.open.len(),
        )
    }

    fn count(&mut self, key: SeriesKey, n: u64) {
        let table = &mut self.series[key.metric()];
        // A new series of a namespace whose series ended: a late event, not counted.
        if !table.contains(&key) && self.finished.contains(&key.netns()) {
            return;
        }
        table.add(key, n);
    }

    /// Ends what is about namespaces gone for a whole collect: their series (one last point)
    /// and their open connections (a span ending now, `periscope.connection.end=netns_gone`).
    fn end_gone_namespaces(&mut self, now_wall: u64) {
        let mut sources = FxHashSet::default();
        for t in &self.series {
            sources.extend(t.keys().map(SeriesKey::netns));
        }
        sources.extend(self.open.values().map(|c| c.first.netns));
        let table = self.namespaces.clone();
        let due: FxHashSet<NetnsId> = self
            .grace
            .due(sources, |n| gone::netns_gone(&table, n))
            .into_iter()
            .collect();
        if due.is_empty() {
            return;
        }
        for t in &mut self.series {
            t.retire_if(|k| due.contains(&k.netns()));
        }
        let ended: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, c)| due.contains(&c.first.netns))
            .map(|(cookie, _)| *cookie)
            .collect();
        for cookie in ended {
            let Some(c) = self.open.remove(&cookie) else {
                continue;
            };
            self.sockets.closed(cookie);
            self.retrans_seen.remove(&cookie);
            self.remember_closed(cookie);
            if self.config.spans {
                let mut span = c.span(None, now_wall);
                span.attributes
                    .retain(|kv| kv.key != conn::ATTR_CONNECTION_OPEN);
                span.attributes
                    .push(KeyValue::new(ATTR_CONNECTION_END, "netns_gone"));
                self.spans.push(span);
            }
        }
        for n in due {
            self.finished.mark(n);
        }
    }

    /// Remembers a closed cookie, so that another receiver's close of it is not counted.
    fn remember_closed(&mut self, cookie: u64) {
        self.closed.insert(cookie);
        self.closed_order.push_back(cookie);
        while self.closed_order.len() > RECENTLY_CLOSED {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }

    fn socket_attrs(&self, e: &SocketEvent) -> Option<(IpAddr, u16, IpAddr, u16)> {
        self.config.socket_attributes.then_some((
            e.local_addr,
            e.local_port,
            e.remote_addr,
            e.remote_port,
        ))
    }

    /// Retransmitted segments, from the kernel's per-socket total (`tcp_sock.total_retrans`,
    /// which moves with the namespace's `TcpRetransSegs`): every event of a TCP socket carries
    /// it, so counting its increases per cookie is exact and counts each segment once, however
    /// many receivers report the socket. A socket first seen mid-life starts from its total
    /// then (retransmissions from before periscope saw it are not counted).
    fn count_retransmits(&mut self, e: &SocketEvent) {
        if e.transport != Transport::Tcp {
            return;
        }
        let opening = matches!(
            e.kind,
            SocketEventKind::Connect | SocketEventKind::Established
        );
        let seen = match self.retrans_seen.get(&e.cookie) {
            Some(&n) => n,
            None if opening => 0,
            None if e.kind == SocketEventKind::Retransmit => {
                e.total_retrans.saturating_sub(e.size.max(1))
            }
            None => e.total_retrans,
        };
        if e.kind == SocketEventKind::Close {
            self.retrans_seen.remove(&e.cookie);
        } else if self.retrans_seen.contains_key(&e.cookie)
            || self.retrans_seen.len() < self.config.max_connections
        {
            self.retrans_seen
                .insert(e.cookie, seen.max(e.total_retrans));
        }
        if e.total_retrans > seen {
            let role = self.open.get(&e.cookie).map_or(e.role, |c| c.first.role);
            self.count(
                SeriesKey::Retransmit {
                    netns: e.netns,
                    role,
                },
                u64::from(e.total_retrans - seen),
            );
        }
    }

    fn on_socket(&mut self, e: &SocketEvent) {
        self.sockets.learn(e);
        self.sockets.observe_stats(e);
        if !self.closed.contains(&e.cookie) {
            self.count_retransmits(e);
        }
        match e.kind {
            SocketEventKind::Connect | SocketEventKind::Established => self.on_open(e),
            SocketEventKind::Close => self.on_close(e),
            SocketEventKind::Rtt => {
                if let Some(c) = self.open.get_mut(&e.cookie) {
                    c.srtt_us = e.srtt_us;
                    c.rttvar_us = e.rttvar_us;
                }
            }
            SocketEventKind::Retransmit => {
                // The count comes from the kernel's running total (see `count_retransmits`);
                // here only the span event, from the hook that owns the connection.
                if let Some(c) = self.open.get_mut(&e.cookie).filter(|_| self.config.spans) {
                    if c.first.hook == e.hook {
                        c.push_event(
                            e.timestamp_ns,
                            "retransmit",
                            vec![KeyValue::new(
                                names::ATTR_TOTAL_RETRANS,
                                i64::from(e.total_retrans),
                            )],
                        );
                    }
                }
            }
            SocketEventKind::StateChange => {
                if let Some(c) = self.open.get_mut(&e.cookie).filter(|_| self.config.spans) {
                    if c.first.hook == e.hook {
                        c.push_event(
                            e.timestamp_ns,
                            "state_change",
                            vec![
                                KeyValue::new(
                                    "periscope.tcp.state.from",
                                    tcp_state_name(e.old_state),
                                ),
                                KeyValue::new("periscope.tcp.state.to", tcp_state_name(e.state)),
                            ],
                        );
                    }
                }
            }
            SocketEventKind::Send | SocketEventKind::Receive => {
                if e.transport == Transport::Udp {
                    let key = SeriesKey::Datagram {
                        netns: e.netns,
                        sent: e.kind == SocketEventKind::Send,
                        socket: self.socket_attrs(e),
                    };
                    self.count(key, 1);
                }
            }
        }
    }

    fn on_open(&mut self, e: &SocketEvent) {
        if e.transport != Transport::Tcp || self.closed.contains(&e.cookie) {
            return;
        }
        let established = e.kind == SocketEventKind::Established;
        let key = SeriesKey::Connection {
            netns: e.netns,
            opened: true,
            role: e.role,
            state: 1,
            socket: self.socket_attrs(e),
        };
        if let Some(c) = self.open.get_mut(&e.cookie) {
            if !c.process.is_known() && e.process.is_known() {
                c.process = e.process;
            }
            // The tracepoint's connect fires before the local port is chosen.
            if c.first.local_port == 0 && e.local_port != 0 {
                c.first.local_addr = e.local_addr;
                c.first.local_port = e.local_port;
                c.first.remote_addr = e.remote_addr;
                c.first.remote_port = e.remote_port;
            }
            if established {
                if e.duration_ns > 0 && c.connect_ns == 0 {
                    c.connect_ns = e.duration_ns;
                }
                if e.srtt_us > 0 {
                    c.srtt_us = e.srtt_us;
                    c.rttvar_us = e.rttvar_us;
                }
                if c.first.role == SocketRole::Unknown {
                    c.first.role = e.role;
                }
                // Counted once, whichever receiver reports it first.
                if !c.counted_open {
                    c.counted_open = true;
                    self.count(key, 1);
                }
            }
            return;
        }
        if established {
            self.count(key, 1);
        }
        if self.open.len() >= self.config.max_connections {
            self.untracked += 1;
            return;
        }
        if self.finished.contains(&e.netns) {
            return;
        }
        // Span ids and the pod's name (the span keeps it after the pod is gone) only for spans:
        // hashing and a copy of the name per connection otherwise.
        let (trace_id, span_id, netns_name) = if self.config.spans {
            let (trace_id, span_id) = self.ids.next(e.cookie);
            let name = self.namespaces.get(&e.netns).and_then(|i| i.name);
            (trace_id, span_id, name)
        } else {
            ([0; 16], [0; 8], None)
        };
        let start_ns = if established && e.duration_ns > 0 {
            e.timestamp_ns.saturating_sub(e.duration_ns)
        } else {
            e.timestamp_ns
        };
        self.open.insert(
            e.cookie,
            Conn {
                start_ns,
                first: *e,
                process: e.process,
                connect_ns: if established { e.duration_ns } else { 0 },
                srtt_us: e.srtt_us,
                rttvar_us: e.rttvar_us,
                events: Vec::new(),
                events_dropped: 0,
                trace_id,
                span_id,
                seen_at: Instant::now(),
                reported_open: false,
                counted_open: established,
                netns_name,
            },
        );
    }

    fn on_close(&mut self, e: &SocketEvent) {
        if e.transport != Transport::Tcp {
            return;
        }
        self.sockets.closed(e.cookie);
        if self.closed.contains(&e.cookie) {
            return;
        }
        self.remember_closed(e.cookie);
        let conn = self.open.remove(&e.cookie);
        let role = conn.as_ref().map_or(e.role, |c| {
            if c.first.role == SocketRole::Unknown {
                e.role
            } else {
                c.first.role
            }
        });
        // A socket that closes without ever being established (failed connect, listener)
        // was never counted as opened; its close is counted with the state it left.
        if e.old_state != 10 {
            let key = SeriesKey::Connection {
                netns: e.netns,
                opened: false,
                role,
                state: e.old_state,
                socket: self.socket_attrs(e),
            };
            self.count(key, 1);
        }
        if !self.config.spans {
            return;
        }
        let Some(mut c) = conn else {
            return;
        };
        if e.srtt_us > 0 {
            c.srtt_us = e.srtt_us;
            c.rttvar_us = e.rttvar_us;
        }
        if !c.process.is_known() && e.process.is_known() {
            c.process = e.process;
        }
        c.first.role = role;
        let span = c.span(Some(e), e.timestamp_ns);
        let f = &c.first;
        self.pending.push(
            span,
            (
                f.netns,
                f.local_addr,
                f.local_port,
                f.remote_addr,
                f.remote_port,
            ),
        );
    }

    fn on_drop(&mut self, d: &DropEvent) {
        self.count(
            SeriesKey::Drop {
                netns: d.netns,
                reason: d.reason,
                transport: d.transport,
            },
            1,
        );
    }

    fn attributes(key: &SeriesKey) -> Vec<KeyValue> {
        let socket = |a: &mut Vec<KeyValue>, s: &Option<(IpAddr, u16, IpAddr, u16)>| {
            if let Some((la, lp, ra, rp)) = s {
                a.push(KeyValue::new(names::ATTR_LOCAL_ADDRESS, la.to_string()));
                a.push(KeyValue::new(names::ATTR_LOCAL_PORT, i64::from(*lp)));
                a.push(KeyValue::new(names::ATTR_PEER_ADDRESS, ra.to_string()));
                a.push(KeyValue::new(names::ATTR_PEER_PORT, i64::from(*rp)));
            }
        };
        let mut a = Vec::with_capacity(8);
        match key {
            SeriesKey::Connection {
                netns,
                opened,
                role,
                state,
                socket: s,
            } => {
                push_netns(&mut a, *netns);
                a.push(KeyValue::new(
                    names::ATTR_TCP_EVENT,
                    if *opened { "opened" } else { "closed" },
                ));
                a.push(KeyValue::new(names::ATTR_CONNECTION_ROLE, role.as_str()));
                a.push(KeyValue::new(
                    names::ATTR_CONNECTION_STATE,
                    tcp_state_name(*state),
                ));
                socket(&mut a, s);
            }
            SeriesKey::Retransmit { netns, role } => {
                push_netns(&mut a, *netns);
                a.push(KeyValue::new(names::ATTR_CONNECTION_ROLE, role.as_str()));
            }
            SeriesKey::Datagram {
                netns,
                sent,
                socket: s,
            } => {
                push_netns(&mut a, *netns);
                a.push(KeyValue::new(
                    names::ATTR_IO_DIRECTION,
                    if *sent { "transmit" } else { "receive" },
                ));
                socket(&mut a, s);
            }
            SeriesKey::Drop {
                netns,
                reason,
                transport,
            } => {
                push_netns(&mut a, *netns);
                a.push(KeyValue::new(names::ATTR_DROP_REASON, *reason));
                a.push(KeyValue::new(names::ATTR_TRANSPORT, transport.as_str()));
            }
        }
        a
    }

    /// Long-open connections as spans that end now (once each).
    fn report_open(&mut self, now_wall: u64) {
        if !self.config.spans {
            return;
        }
        let after = self.config.report_open_after;
        let mut due = Vec::new();
        for c in self.open.values_mut() {
            if !c.reported_open && c.seen_at.elapsed() >= after {
                c.reported_open = true;
                due.push(c.clone());
            }
        }
        for mut c in due {
            // Its own span id: the complete span at close keeps the original.
            let (_, span_id) = self.ids.next(c.first.cookie);
            c.span_id = span_id;
            let span = c.span(None, now_wall);
            self.spans.push(span);
        }
    }

    fn emit(&mut self, out: &mut Emitter, all: bool) {
        let now = now_ns();
        self.end_gone_namespaces(now);
        self.report_open(now);
        self.pending
            .due(Instant::now(), all, &self.sockets, &mut self.spans);
        let scope = output::scope(&self.scope_name, "");
        output::send_spans(out, scope.clone(), &mut self.spans);
        // The four tables start their periods together.
        let start = self.series[0].start_ns();
        let mut metrics = Vec::new();
        for (table, (name, description, unit)) in self.series.iter_mut().zip(META) {
            let points: Vec<NumberPoint> = table
                .iter()
                .map(|(s, value)| NumberPoint {
                    attributes: s.attributes(Self::attributes),
                    start_time_ns: start,
                    time_ns: now,
                    value: output::int(value),
                })
                .collect();
            table.finish_collect(now);
            if points.is_empty() {
                continue;
            }
            metrics.push(Metric {
                name: Cow::Borrowed(name),
                description: Cow::Borrowed(description),
                unit: Cow::Borrowed(unit),
                data: MetricData::Sum {
                    points,
                    temporality: self.config.temporality,
                    monotonic: true,
                },
            });
        }
        if self.untracked > 0 {
            tracing::warn!(processor = %self.scope_name, "{} connections without a span: more than max_connections open", self.untracked);
            self.untracked = 0;
        }
        output::send_metrics(out, scope, metrics);
    }
}

impl Processor for Connections {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(mut batch) => {
                for event in &batch.events {
                    match event {
                        Event::Socket(s) => self.on_socket(s),
                        Event::Drop(d) => self.on_drop(d),
                        _ => {}
                    }
                }
                // What this processor turned into telemetry ends here; the rest (packets,
                // device and cgroup counters) goes on to `flow`. In place: no allocation.
                batch
                    .events
                    .retain(|e| !matches!(e, Event::Socket(_) | Event::Drop(_)));
                if !batch.is_empty() {
                    out.events(batch);
                }
            }
            other => out.payload(other),
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_emit)
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        self.emit(out, false);
        self.next_emit = now + self.config.interval;
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.emit(out, true);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod churn_tests;
