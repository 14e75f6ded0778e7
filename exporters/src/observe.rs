//! The `observe` exporter: a bounded ring of recent records (flows, connections, DNS lookups,
//! drops, bursts) made from the telemetry that reaches it, served on a unix socket as
//! newline-delimited JSON to any number of clients (`periscope observe`, `periscope top`).
//!
//! Every client has its own bounded queue, filled without blocking by `export`: a client that
//! does not keep up loses records (counted, and told once a second) and never slows the
//! pipeline. The protocol is in docs/exporters.md.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Exporter, ExporterConfig, Invalid,
};
use periscope_pipeline::model::{
    AnyValue, Attributes, MetricData, Number, Span, SpanStatus, Telemetry, Temporality,
};
use periscope_pipeline::telemetry::{now_ns, ComponentCounters};

/// Serves the recent records on a unix socket for `periscope observe` and `periscope top`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// The unix socket to listen on; its directory is created if missing. Default
    /// `/run/periscope/observe.sock`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Permission bits of the socket (octal, as in `chmod`): who may connect. Default `0660`
    /// (the owner and its group).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// How many recent records the agent keeps for clients that ask for history (`--last`,
    /// `--since`). Default 4096.
    #[serde(default = "default_ring_size")]
    pub ring_size: usize,
    /// Records queued per client; a client whose queue is full loses the newer records (it is
    /// told how many once a second). Default 4096.
    #[serde(default = "default_client_queue")]
    pub client_queue: usize,
    /// Clients served at once; more are refused with an error line. Default 16.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/periscope/observe.sock")
}
fn default_mode() -> String {
    "0660".into()
}
fn default_ring_size() -> usize {
    4096
}
fn default_client_queue() -> usize {
    4096
}
fn default_max_clients() -> usize {
    16
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            socket: default_socket(),
            mode: default_mode(),
            ring_size: default_ring_size(),
            client_queue: default_client_queue(),
            max_clients: default_max_clients(),
        }
    }
}

impl ComponentConfig for ObserveConfig {
    const TYPE: &'static str = "observe";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut errors = Vec::new();
        if let Err(e) = parse_mode(&self.mode) {
            errors.push(Invalid::new("mode", e));
        }
        for (path, v) in [
            ("ring_size", self.ring_size),
            ("client_queue", self.client_queue),
            ("max_clients", self.max_clients),
        ] {
            if v == 0 {
                errors.push(Invalid::new(path, "must be at least 1"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn parse_mode(mode: &str) -> Result<u32, String> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{mode}` is not octal permission bits (e.g. `0660`)"))
}

impl ExporterConfig for ObserveConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        let mode = parse_mode(&self.mode).map_err(anyhow::Error::msg)?;
        Ok(Box::new(ObserveExporter::start(
            self,
            mode,
            ctx.counters.clone(),
        )?))
    }
}

/// One client's side of the hub: its queue and what it lost since it was last told.
struct Client {
    tx: Sender<Arc<str>>,
    lost: Arc<AtomicU64>,
}

/// The ring and the clients, under one lock so that a client's history and live records meet
/// without a gap or a duplicate.
struct Hub {
    ring: VecDeque<(u64, Arc<str>)>,
    ring_size: usize,
    clients: Vec<Client>,
}

struct Shared {
    hub: Mutex<Hub>,
    stop: AtomicBool,
    counters: Arc<ComponentCounters>,
    client_queue: usize,
    max_clients: usize,
}

/// The running `observe` exporter.
pub struct ObserveExporter {
    shared: Arc<Shared>,
    socket: PathBuf,
    records: Records,
}

impl ObserveExporter {
    fn start(
        config: &ObserveConfig,
        mode: u32,
        counters: Arc<ComponentCounters>,
    ) -> anyhow::Result<Self> {
        let listener = bind(&config.socket, mode)?;
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                ring: VecDeque::with_capacity(config.ring_size.min(65_536)),
                ring_size: config.ring_size,
                clients: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            counters,
            client_queue: config.client_queue,
            max_clients: config.max_clients,
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("observe".into())
            .spawn(move || accept(listener, s))
            .context("cannot start the observe exporter's thread")?;
        tracing::info!(socket = %config.socket.display(), "observe: serving records (`periscope observe`, `periscope top`)");
        Ok(ObserveExporter {
            shared,
            socket: config.socket.clone(),
            records: Records::default(),
        })
    }

    fn publish(&self, lines: Vec<(u64, String)>) {
        let Ok(mut hub) = self.shared.hub.lock() else {
            return;
        };
        for (time, line) in lines {
            let line: Arc<str> = line.into();
            if hub.ring.len() >= hub.ring_size {
                hub.ring.pop_front();
            }
            hub.ring.push_back((time, line.clone()));
            hub.clients.retain(|c| match c.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    c.lost.fetch_add(1, Ordering::Relaxed);
                    self.shared.counters.add_dropped(1);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
        }
    }
}

impl Drop for ObserveExporter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(mut hub) = self.shared.hub.lock() {
            hub.clients.clear();
        }
        // Wakes the accept loop so that it sees `stop`.
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Exporter for ObserveExporter {
    fn export(&mut self, telemetry: Telemetry) -> anyhow::Result<()> {
        self.export_shared(std::sync::Arc::new(telemetry))
    }

    /// Reads the batch only: no copy of a batch other exporters get too.
    fn export_shared(&mut self, telemetry: std::sync::Arc<Telemetry>) -> anyhow::Result<()> {
        let lines = self.records.from_telemetry(&telemetry);
        self.publish(lines);
        Ok(())
    }
}

/// Binds the socket: creates its directory, replaces a stale socket file (refuses if an agent
/// answers on it), sets its mode.
fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("observe: cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "observe: {} is in use by another process (another agent?); stop it or set \
                 `socket:` to another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("observe: cannot remove the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("observe: cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("observe: cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("observe-client".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &s) {
                    tracing::debug!("observe: client: {e:#}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("observe: cannot serve a client: {e}");
        }
    }
}

/// What a client asks for, in its first line.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    /// Send at most this many of the newest records of the ring first (none: all of them).
    replay: Option<usize>,
    /// Only records at or after this time (ns since the epoch).
    since_ns: Option<u64>,
    /// Keep the connection open and send new records as they come.
    follow: bool,
}

fn serve(stream: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the request")?;
    let mut out = std::io::BufWriter::new(&stream);
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let error = json!({"type": "error", "error": format!("bad request: {e}")});
            writeln!(out, "{error}")?;
            return Ok(());
        }
    };
    let lost = Arc::new(AtomicU64::new(0));
    let (tx, rx) = crossbeam_channel::bounded(shared.client_queue);
    let history: Vec<Arc<str>> = {
        let mut hub = shared.hub.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if request.follow && hub.clients.len() >= shared.max_clients {
            let error = json!({"type": "error", "error": format!(
                "the agent serves at most {} clients (observe exporter's max_clients)",
                shared.max_clients)});
            drop(hub);
            writeln!(out, "{error}")?;
            return Ok(());
        }
        let since = request.since_ns.unwrap_or(0);
        let matching = hub.ring.iter().filter(|(t, _)| *t >= since);
        let n = matching.clone().count();
        let skip = request.replay.map_or(0, |r| n.saturating_sub(r));
        let history = matching.skip(skip).map(|(_, l)| l.clone()).collect();
        if request.follow {
            hub.clients.push(Client {
                tx,
                lost: lost.clone(),
            });
        }
        history
    };
    for l in history {
        out.write_all(l.as_bytes())?;
        out.write_all(b"\n")?;
    }
    if !request.follow {
        out.flush()?;
        return Ok(());
    }
    // Where the history ends and live records begin.
    writeln!(out, "{}", json!({"type": "live", "time_ns": now_ns()}))?;
    out.flush()?;
    follow(&mut out, &rx, &lost, shared)
}

/// Writes live records as they come, and once a second how many the client lost.
fn follow(
    out: &mut impl Write,
    rx: &Receiver<Arc<str>>,
    lost: &AtomicU64,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut tick = Instant::now() + Duration::from_secs(1);
    let mut total_lost = 0;
    loop {
        let wait = tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(l) => {
                out.write_all(l.as_bytes())?;
                out.write_all(b"\n")?;
                // Drain what is already queued before flushing.
                loop {
                    match rx.try_recv() {
                        Ok(l) => {
                            out.write_all(l.as_bytes())?;
                            out.write_all(b"\n")?;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return Ok(()),
                    }
                }
                out.flush()?;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if Instant::now() >= tick {
            tick = Instant::now() + Duration::from_secs(1);
            let n = lost.swap(0, Ordering::Relaxed);
            if n > 0 {
                total_lost += n;
                let notice = json!({"type": "lost", "time_ns": now_ns(), "lost": n,
                    "lost_total": total_lost});
                writeln!(out, "{notice}")?;
                out.flush()?;
                tracing::debug!(lost = n, "observe: a slow client lost records");
            }
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }
}

// ---- telemetry → records ----

/// The series whose points become records, and the record type each makes.
const FLOW_PACKETS: &str = "periscope.network.packets";
const FLOW_BYTES: &str = "periscope.network.bytes";
const DROPS: &str = "periscope.drops";
const CONNECTIONS: &str = "periscope.tcp.connections";
/// Last values of cumulative series at most; past it the table starts over (the next point
/// of each series then counts from its start time).
const MAX_SERIES: usize = 100_000;

/// Turns telemetry into records; remembers the last value of each cumulative series to report
/// what happened in each interval.
#[derive(Default)]
pub struct Records {
    /// Keyed by a 64-bit hash of the series' attributes, not the attributes themselves: an
    /// entry per series costs ~40 bytes instead of its whole attribute text (a node's
    /// thousands of series; two series would share an entry with odds of ~1e-10 at 100,000).
    last: HashMap<(&'static str, u64), (u64, u64)>,
}

/// Attribute → record field, for the fields filters and tables use.
const FIELDS: &[(&str, &str)] = &[
    ("k8s.namespace.name", "namespace"),
    ("k8s.pod.name", "pod"),
    ("periscope.netns.name", "netns"),
    ("periscope.netns.inode", "netns_inode"),
    ("network.interface.name", "interface"),
    ("network.io.direction", "direction"),
    ("periscope.workload.direction", "workload_direction"),
    ("periscope.traffic.locality", "locality"),
    ("periscope.peer.netns.name", "peer_netns"),
    ("periscope.peer.k8s.pod.name", "peer_pod"),
    ("periscope.peer.container.name", "peer_container"),
    ("network.transport", "protocol"),
    ("process.executable.name", "process"),
    ("process.pid", "pid"),
    ("container.name", "container"),
    ("container.id", "container_id"),
    ("periscope.connection.role", "role"),
    ("periscope.drop.reason", "reason"),
    ("dns.question.name", "dns_name"),
    ("periscope.tcp.event", "event"),
    ("source.address", "src_ip"),
    ("source.port", "src_port"),
    ("destination.address", "dst_ip"),
    ("destination.port", "dst_port"),
];

fn value(v: &AnyValue) -> Value {
    match v {
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => json!(d),
        AnyValue::Bool(b) => json!(b),
    }
}

fn get<'a>(attributes: &'a Attributes, key: &str) -> Option<&'a AnyValue> {
    attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

/// The common fields of a record: type, time, the named fields, every attribute.
fn record(kind: &str, time_ns: u64, attributes: &Attributes) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("type".into(), kind.into());
    r.insert("time_ns".into(), time_ns.into());
    for (key, field) in FIELDS {
        if let Some(v) = get(attributes, key) {
            r.insert((*field).into(), value(v));
        }
    }
    // Connections: the socket's own view, turned into from → to by its role.
    let (local, peer) = (
        get(attributes, "network.local.address"),
        get(attributes, "network.peer.address"),
    );
    if let (Some(l), Some(p)) = (local, peer) {
        let (lp, pp) = (
            get(attributes, "network.local.port"),
            get(attributes, "network.peer.port"),
        );
        let server = matches!(get(attributes, "periscope.connection.role"),
            Some(AnyValue::String(s)) if s == "server");
        let ((from, fport), (to, tport)) = if server {
            ((p, pp), (l, lp))
        } else {
            ((l, lp), (p, pp))
        };
        r.insert("src_ip".into(), value(from));
        r.insert("dst_ip".into(), value(to));
        if let Some(v) = fport {
            r.insert("src_port".into(), value(v));
        }
        if let Some(v) = tport {
            r.insert("dst_port".into(), value(v));
        }
    }
    let all: Map<String, Value> = attributes
        .iter()
        .map(|a| (a.key.to_string(), value(&a.value)))
        .collect();
    r.insert("attributes".into(), Value::Object(all));
    r
}

fn series_key(attributes: &Attributes) -> String {
    let mut parts: Vec<String> = attributes
        .iter()
        .map(|a| format!("{}={}", a.key, a.value))
        .collect();
    parts.sort_unstable();
    parts.join(",")
}

fn number(n: Number) -> u64 {
    match n {
        Number::Int(i) => i.max(0) as u64,
        Number::Double(d) => d.max(0.0) as u64,
    }
}

impl Records {
    /// What a series point adds since the series' previous point: (count, interval in ns).
    fn delta(
        &mut self,
        metric: &'static str,
        key: &str,
        temporality: Temporality,
        p: &periscope_pipeline::model::NumberPoint,
    ) -> (u64, u64) {
        let value = number(p.value);
        let since_start = (value, p.time_ns.saturating_sub(p.start_time_ns));
        if temporality == Temporality::Delta {
            return since_start;
        }
        if self.last.len() >= MAX_SERIES {
            self.last.clear();
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&key, &mut h);
        let hash = std::hash::Hasher::finish(&h);
        match self.last.insert((metric, hash), (value, p.time_ns)) {
            Some((prev, t)) if prev <= value => (value - prev, p.time_ns.saturating_sub(t)),
            _ => since_start,
        }
    }

    /// The records a batch makes, each as (time, one JSON line).
    pub fn from_telemetry(&mut self, telemetry: &Telemetry) -> Vec<(u64, String)> {
        self.records(telemetry)
            .into_iter()
            .map(|(t, r)| (t, Value::Object(r).to_string()))
            .collect()
    }

    /// The records a batch makes, each with its time.
    pub fn records(&mut self, telemetry: &Telemetry) -> Vec<(u64, Map<String, Value>)> {
        let mut out = Vec::new();
        match telemetry {
            Telemetry::Metrics(b) => {
                // Packets and bytes of one series make one flow record.
                let mut flows: Vec<(String, Map<String, Value>)> = Vec::new();
                for m in &b.metrics {
                    let (name, kind): (&'static str, &str) = match m.name.as_ref() {
                        FLOW_PACKETS => (FLOW_PACKETS, "packets"),
                        FLOW_BYTES => (FLOW_BYTES, "bytes"),
                        DROPS => (DROPS, "drop"),
                        CONNECTIONS => (CONNECTIONS, "connections"),
                        _ => continue,
                    };
                    let MetricData::Sum {
                        points,
                        temporality,
                        ..
                    } = &m.data
                    else {
                        continue;
                    };
                    for p in points {
                        let key = series_key(&p.attributes);
                        let (n, interval) = self.delta(name, &key, *temporality, p);
                        if n == 0 {
                            continue;
                        }
                        match kind {
                            "packets" | "bytes" => {
                                let i = match flows.iter().position(|(k, _)| *k == key) {
                                    Some(i) => i,
                                    None => {
                                        let mut r = record("flow", p.time_ns, &p.attributes);
                                        r.insert("interval_ns".into(), interval.into());
                                        r.insert("packets".into(), 0.into());
                                        r.insert("bytes".into(), 0.into());
                                        flows.push((key, r));
                                        flows.len() - 1
                                    }
                                };
                                flows[i].1.insert(kind.into(), n.into());
                            }
                            // Connection counts are summed by `top`; the spans (when there
                            // is a traces pipeline) carry each connection.
                            "connections" => {
                                let mut r = record("connections", p.time_ns, &p.attributes);
                                r.insert("count".into(), n.into());
                                r.insert("interval_ns".into(), interval.into());
                                out.push((p.time_ns, r));
                            }
                            _ => {
                                let mut r = record("drop", p.time_ns, &p.attributes);
                                r.insert("count".into(), n.into());
                                r.insert("interval_ns".into(), interval.into());
                                out.push((p.time_ns, r));
                            }
                        }
                    }
                }
                for (_, r) in flows {
                    let t = r.get("time_ns").and_then(Value::as_u64).unwrap_or(0);
                    out.push((t, r));
                }
            }
            Telemetry::Traces(b) => {
                for s in &b.spans {
                    if let Some(r) = span_record(s) {
                        out.push((s.end_time_ns, r));
                    }
                }
            }
        }
        out
    }
}

fn span_record(s: &Span) -> Option<Map<String, Value>> {
    let kind = match s.name.as_ref() {
        "tcp.connection" => "connection",
        "dns.lookup" => "dns",
        "network.burst" => "burst",
        _ => return None,
    };
    let mut r = record(kind, s.end_time_ns, &s.attributes);
    r.insert("start_ns".into(), s.start_time_ns.into());
    r.insert(
        "duration_ns".into(),
        s.end_time_ns.saturating_sub(s.start_time_ns).into(),
    );
    if let SpanStatus::Error(m) = &s.status {
        r.insert("error".into(), m.clone().into());
    }
    let copy = |r: &mut Map<String, Value>, key: &str, field: &str| {
        if let Some(v) = get(&s.attributes, key) {
            r.insert(field.into(), value(v));
        }
    };
    match kind {
        "connection" => {
            copy(&mut r, "periscope.tcp.srtt_us", "rtt_us");
            copy(&mut r, "periscope.tcp.bytes_sent", "bytes_sent");
            copy(&mut r, "periscope.tcp.bytes_received", "bytes_received");
            copy(&mut r, "periscope.tcp.retransmits", "retransmits");
            let open = matches!(
                get(&s.attributes, "periscope.connection.open"),
                Some(AnyValue::Bool(true))
            );
            r.insert("event".into(), if open { "open" } else { "closed" }.into());
        }
        "dns" => {
            copy(&mut r, "dns.response.code", "rcode");
            copy(&mut r, "error.type", "error");
        }
        _ => {
            copy(&mut r, "periscope.burst.packets", "packets");
            copy(&mut r, "periscope.burst.bytes", "bytes");
            copy(&mut r, "periscope.burst.peak_pps", "peak_pps");
        }
    }
    Some(r)
}
