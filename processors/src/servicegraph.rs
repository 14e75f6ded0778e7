//! The `servicegraph` processor: TCP connections → a service graph, as the metrics of the
//! OpenTelemetry Collector's servicegraph connector (so Grafana's service graph and Jaeger's
//! SPM draw it), per (client workload, server workload, server port).
//!
//! What is an edge's request, and when it counts:
//! - **A request is a TCP connection.** The client's socket counts it when it closes:
//!   `traces_service_graph_request_total`, `..._failed_total` when the connect failed (the
//!   socket left `syn_sent`), the connection's life in `..._client_seconds`, its connect
//!   latency, bytes (the kernel's `bytes_sent` to the server, `bytes_received` from it) and
//!   retransmits. A server socket records its own life in `..._server_seconds` when it
//!   closes; when its client is not on this host (a virtual node), it counts the request,
//!   bytes and retransmits instead. When the server is not observed here, the client's life
//!   is recorded in `..._server_seconds` too (what Grafana draws as the edge's latency).
//! - **Response times** are recorded as they happen, on the client socket: the first send
//!   after the last receive (or the socket's first send) starts a request, the first receive
//!   after it is the answer (as the `latency` processor measures them; only with receivers
//!   that report sends and receives: `tcp_udp` `send_receive: tcp`/`all`, or `sk_msg`).
//! - Both ends are named by [`workloads`]: the socket's own workload from identity, the other
//!   end from the sockets this host showed at its address and port, else a virtual node.
//!
//! Sockets whose role was never seen (opened before the agent, and not reported by a
//! receiver that knows the role) are not in the graph. Several receivers reporting one socket
//! count once (by socket cookie).

mod config;
mod edge;
mod workloads;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use periscope_pipeline::component::{BuildContext, Emitter, Processor, ProcessorConfig};
use periscope_pipeline::model::{
    Event, Payload, SocketEvent, SocketEventKind, SocketHook, SocketRole, Temporality, Transport,
};
use periscope_pipeline::telemetry::{now_ns, ComponentCounters};

use crate::identity::Identity;
use crate::output;
use crate::series::{SeriesTable, TableOptions};

pub use config::ServiceGraphConfig;
use edge::{EdgeKey, EdgeStats};
use workloads::{Ids, Workloads};

impl ProcessorConfig for ServiceGraphConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        let identity = Identity::new(&self.identity, ctx.sockets.clone(), ctx.counters.clone())
            .with_dns(ctx.dns.clone())
            .with_namespaces(ctx.namespaces.clone())
            .with_kubernetes(&self.identity, &ctx.id.to_string())?;
        Ok(Box::new(ServiceGraph::new(
            self,
            identity,
            ctx.counters.clone(),
            ctx.id.to_string(),
        )))
    }

    fn must_precede(&self) -> &'static [&'static str] {
        // They consume the socket events this processor reads.
        &["connections", "flow"]
    }
}

/// Cookies of recently closed sockets remembered, so that a second receiver's report of the
/// same socket does not count it again.
const RECENTLY_CLOSED: usize = 16384;

/// A socket idle this long is forgotten (its close was never reported: e.g. its namespace
/// went away).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `TCP_LISTEN`, as the kernel numbers TCP states.
const TCP_LISTEN: u8 = 10;

/// `TCP_SYN_SENT`: a socket that closes from it never connected.
const TCP_SYN_SENT: u8 = 2;

/// How long a closed socket waits before it is counted: records of it from other receivers
/// (read from their own ring buffers, on their own timers) may still come.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How often the names looked up are looked up again.
const REFRESH_NAMES: Duration = Duration::from_secs(60);

/// Where a socket's sends and receives come from; a socket sticks to the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IoSource {
    Messages,
    Calls,
}

/// A TCP socket between its start and its close.
#[derive(Clone, Debug)]
struct Sock {
    ids: Ids,
    role: SocketRole,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    start_ns: u64,
    connect_ns: u64,
    io: Option<IoSource>,
    pending_send_ns: Option<u64>,
    seen: Instant,
    /// Its endpoint was given to [`Workloads::learn`] with what is known now.
    learned: bool,
    /// Its first close record, when it closed.
    close: Option<SocketEvent>,
}

/// The running processor.
pub struct ServiceGraph {
    scope_name: String,
    interval: Duration,
    temporality: Temporality,
    bounds: Vec<f64>,
    bounds_ns: Vec<u64>,
    max_sockets: usize,
    edges: SeriesTable<EdgeKey, EdgeStats>,
    sockets: FxHashMap<u64, Sock>,
    closed: FxHashSet<u64>,
    closed_order: VecDeque<u64>,
    /// Sockets closed, in order, waiting `CLOSE_LINGER` to be counted.
    closing: VecDeque<(Instant, u64)>,
    workloads: Workloads,
    counters: Arc<ComponentCounters>,
    warned_full: bool,
    next_emit: Instant,
    next_refresh: Instant,
}

impl ServiceGraph {
    pub fn new(
        config: &ServiceGraphConfig,
        identity: Identity,
        counters: Arc<ComponentCounters>,
        scope_name: String,
    ) -> Self {
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        let now = Instant::now();
        ServiceGraph {
            interval: config.interval.get(),
            temporality: config.temporality,
            bounds: config.boundaries.to_vec(),
            bounds_ns: config
                .boundaries
                .iter()
                .map(|s| (s * 1e9).round() as u64)
                .collect(),
            max_sockets: config.max_sockets.get(),
            edges: SeriesTable::new(
                &options,
                periscope_pipeline::telemetry::names::SERVICE_GRAPH_REQUEST_TOTAL,
            ),
            sockets: FxHashMap::default(),
            closed: FxHashSet::default(),
            closed_order: VecDeque::new(),
            closing: VecDeque::new(),
            workloads: Workloads::new(
                identity,
                &config.identity.proc_root,
                config.max_endpoints.get(),
                config.identity.cache_capacity.get(),
            ),
            counters,
            warned_full: false,
            next_emit: now + config.interval.get(),
            next_refresh: now + REFRESH_NAMES,
            scope_name,
        }
    }

    /// Sockets tracked, endpoints remembered and edges held: what churn must not grow.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.sockets.len(),
            self.workloads.endpoints(),
            self.edges.len(),
        )
    }

    fn on_socket(&mut self, e: &SocketEvent) {
        if e.transport != Transport::Tcp || self.closed.contains(&e.cookie) {
            return;
        }
        if !self.sockets.contains_key(&e.cookie) {
            if self.sockets.len() >= self.max_sockets {
                self.counters.add_dropped(1);
                if !self.warned_full {
                    self.warned_full = true;
                    tracing::warn!(processor = %self.scope_name, max_sockets = self.max_sockets, "more sockets than max_sockets: events of further sockets are not in the service graph (counted as dropped)");
                }
                return;
            }
            self.sockets.insert(
                e.cookie,
                Sock {
                    ids: Ids {
                        netns: e.netns,
                        cgroup_id: e.cgroup_id,
                        pid: 0,
                        comm: [0; 16],
                    },
                    role: e.role,
                    local: (e.local_addr, e.local_port),
                    remote: (e.remote_addr, e.remote_port),
                    start_ns: e.timestamp_ns,
                    connect_ns: 0,
                    io: None,
                    pending_send_ns: None,
                    seen: Instant::now(),
                    learned: false,
                    close: None,
                },
            );
        }
        let Some(s) = self.sockets.get_mut(&e.cookie) else {
            return;
        };
        s.seen = Instant::now();
        if s.ids.pid == 0 && e.process.is_known() {
            s.ids.pid = e.process.pid;
            s.ids.comm = e.process.comm;
            s.learned = false;
        }
        if s.ids.cgroup_id == 0 {
            s.ids.cgroup_id = e.cgroup_id;
        }
        if s.role == SocketRole::Unknown {
            s.role = e.role;
        }
        // The tracepoint's connect fires before the local port is chosen.
        if s.local.1 == 0 && e.local_port != 0 {
            s.local = (e.local_addr, e.local_port);
            s.remote = (e.remote_addr, e.remote_port);
            s.learned = false;
        }
        // Receivers report one socket in any order: it began at the earliest.
        s.start_ns = s.start_ns.min(e.timestamp_ns);
        if e.kind == SocketEventKind::Established && e.role == SocketRole::Client {
            if s.connect_ns == 0 {
                s.connect_ns = e.duration_ns;
            }
            s.start_ns = s.start_ns.min(e.timestamp_ns.saturating_sub(e.duration_ns));
        }
        // What the endpoint maps learn, once per socket (and again when its pid is known).
        let learn = (!s.learned && s.local.1 != 0).then_some((s.ids, s.local));
        s.learned |= learn.is_some();
        let mut response = None;
        if let SocketEventKind::Send | SocketEventKind::Receive = e.kind {
            let source = match e.hook {
                SocketHook::SkMsg | SocketHook::SkSkb => IoSource::Messages,
                _ => IoSource::Calls,
            };
            if *s.io.get_or_insert(source) == source {
                if e.kind == SocketEventKind::Send {
                    s.pending_send_ns.get_or_insert(e.timestamp_ns);
                } else if let Some(sent) = s.pending_send_ns.take() {
                    if s.role == SocketRole::Client {
                        response = Some(e.timestamp_ns.saturating_sub(sent));
                    }
                }
            }
        }
        if let Some((ids, local)) = learn {
            self.workloads.learn(ids, local.0, local.1);
        }
        if let Some(ns) = response {
            let s = self.sockets[&e.cookie].clone();
            let key = self.client_edge(&s);
            let bounds = &self.bounds_ns;
            self.edges
                .value(key, EdgeStats::default)
                .response
                .record(bounds, ns);
        }
        // Counted `CLOSE_LINGER` after its first close record: another receiver's records of
        // it (sends and receives, answers) may still be on their way.
        if e.kind == SocketEventKind::Close {
            if let Some(s) = self
                .sockets
                .get_mut(&e.cookie)
                .filter(|s| s.close.is_none())
            {
                s.close = Some(*e);
                self.closing.push_back((Instant::now(), e.cookie));
            }
        }
    }

    /// Counts the sockets whose close is `CLOSE_LINGER` old (`all`: every closed one).
    fn finish_closed(&mut self, now: Instant, all: bool) {
        while let Some(&(at, cookie)) = self.closing.front() {
            if !all && now.duration_since(at) < CLOSE_LINGER {
                break;
            }
            self.closing.pop_front();
            if let Some(s) = self.sockets.remove(&cookie) {
                if let Some(close) = s.close {
                    self.on_close(&s, &close);
                }
            }
            self.remember_closed(cookie);
        }
    }

    /// The edge of a client socket.
    fn client_edge(&mut self, s: &Sock) -> EdgeKey {
        let client = self.workloads.name(s.ids, s.start_ns);
        let (server, virtual_node) =
            self.workloads
                .peer(s.ids.netns, s.remote.0, s.remote.1, s.start_ns);
        EdgeKey {
            client,
            server,
            port: s.remote.1,
            virtual_node,
        }
    }

    fn on_close(&mut self, s: &Sock, e: &SocketEvent) {
        // A listener's close is no connection.
        if e.old_state == TCP_LISTEN {
            return;
        }
        let life = if e.duration_ns > 0 {
            e.duration_ns
        } else {
            e.timestamp_ns.saturating_sub(s.start_ns)
        };
        match s.role {
            SocketRole::Client => {
                let key = self.client_edge(s);
                let server_observed = !key.virtual_node;
                let bounds = &self.bounds_ns;
                let stats = self.edges.value(key, EdgeStats::default);
                stats.requests += 1;
                // A close from `syn_sent`: the connect failed.
                if e.old_state == TCP_SYN_SENT {
                    stats.failed += 1;
                }
                stats.client.record(bounds, life);
                if !server_observed {
                    stats.server.record(bounds, life);
                }
                if s.connect_ns > 0 {
                    stats.connect.record(bounds, s.connect_ns);
                }
                stats.bytes_to_server += e.bytes_sent;
                stats.bytes_to_client += e.bytes_received;
                stats.retransmits += u64::from(e.total_retrans);
            }
            SocketRole::Server => {
                let server = self.workloads.name(s.ids, s.start_ns);
                let (client, virtual_node) =
                    self.workloads
                        .peer(s.ids.netns, s.remote.0, s.remote.1, s.start_ns);
                let key = EdgeKey {
                    client,
                    server,
                    port: s.local.1,
                    virtual_node,
                };
                let bounds = &self.bounds_ns;
                let stats = self.edges.value(key, EdgeStats::default);
                stats.server.record(bounds, life);
                if virtual_node {
                    // The client is not on this host: nobody else counts the request.
                    stats.requests += 1;
                    stats.bytes_to_server += e.bytes_received;
                    stats.bytes_to_client += e.bytes_sent;
                    stats.retransmits += u64::from(e.total_retrans);
                }
            }
            SocketRole::Unknown => {}
        }
    }

    /// Remembers a closed cookie, so that another receiver's report of it is not counted.
    fn remember_closed(&mut self, cookie: u64) {
        if !self.closed.insert(cookie) {
            return;
        }
        self.closed_order.push_back(cookie);
        while self.closed_order.len() > RECENTLY_CLOSED {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }

    fn emit(&mut self, out: &mut Emitter, all: bool) {
        self.finish_closed(Instant::now(), all);
        let now = now_ns();
        let metrics = edge::metrics(&self.edges, &self.bounds, self.temporality, now);
        self.edges.finish_collect(now);
        output::send_metrics(out, output::scope(&self.scope_name, ""), metrics);
    }
}

impl Processor for ServiceGraph {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        if let Payload::Events(batch) = &payload {
            for event in &batch.events {
                if let Event::Socket(s) = event {
                    self.on_socket(s);
                }
            }
        }
        // Every event goes on: `connections` and `latency` read the same socket events.
        out.payload(payload);
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_emit)
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        self.emit(out, false);
        self.next_emit = now + self.interval;
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH_NAMES;
            self.workloads.refresh();
            self.sockets
                .retain(|_, s| s.close.is_some() || now.duration_since(s.seen) < IDLE_TIMEOUT);
        }
        // The identity lookups' own upkeep (exited processes, reused pids).
        if self
            .workloads
            .identity()
            .next_tick()
            .is_some_and(|t| now >= t)
        {
            self.workloads.identity().tick(now, out);
        }
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.emit(out, true);
    }
}

#[cfg(test)]
mod tests;
