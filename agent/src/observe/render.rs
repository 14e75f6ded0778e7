//! How `periscope observe` prints records: one line each (compact), aligned columns (table),
//! JSON lines, or top-talker tables (`--aggregate-by`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

/// `-o`: how records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One short line per record.
    Compact,
    /// Aligned columns with a header.
    Table,
    /// The agent's JSON, one object per line (field names in docs/exporters.md).
    Json,
}

/// `--aggregate-by`: what the top-talker table groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Aggregate {
    /// Kubernetes pod (`namespace/pod`).
    Pod,
    /// Kubernetes namespace.
    Namespace,
    /// Network namespace (name, else inode).
    Netns,
    /// Process name.
    Process,
    /// Network interface (`interface@netns`).
    Device,
}

fn s(r: &Value, field: &str) -> String {
    match r.get(field) {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(r: &Value, field: &str) -> u64 {
    r.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// `hh:mm:ss.mmm` UTC.
fn clock(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

fn endpoint(r: &Value, ip: &str, port: &str) -> String {
    match (s(r, ip), s(r, port)) {
        (a, p) if a.is_empty() => p,
        (a, p) if p.is_empty() => a,
        (a, p) if a.contains(':') => format!("[{a}]:{p}"),
        (a, p) => format!("{a}:{p}"),
    }
}

/// Where the record happened: pod, else netns; with the process and device when known.
fn place(r: &Value) -> String {
    let mut p = match (s(r, "namespace"), s(r, "pod")) {
        (ns, pod) if !pod.is_empty() && !ns.is_empty() => format!("{ns}/{pod}"),
        (_, pod) if !pod.is_empty() => pod,
        _ => match s(r, "netns") {
            n if n.is_empty() => s(r, "netns_inode"),
            n => n,
        },
    };
    let iface = s(r, "interface");
    if !iface.is_empty() {
        // A node-side veth: the pod (else container) it serves.
        let serves = match (s(r, "peer_pod"), s(r, "peer_container")) {
            (pod, _) if !pod.is_empty() => pod,
            (_, c) => c,
        };
        p = if serves.is_empty() {
            format!("{iface}@{p}")
        } else {
            format!("{iface}→{serves}@{p}")
        };
    }
    let process = s(r, "process");
    if !process.is_empty() {
        let _ = write!(p, " {process}[{}]", s(r, "pid"));
    }
    p
}

/// What the record says, by type.
fn detail(r: &Value) -> String {
    match s(r, "type").as_str() {
        "flow" => format!(
            "{} {} pkts {} bytes in {:.1}s",
            s(r, "direction"),
            n(r, "packets"),
            n(r, "bytes"),
            n(r, "interval_ns") as f64 / 1e9
        ),
        "connection" => {
            let mut d = format!(
                "{} {} rtt={}us sent={} recv={} {:.3}ms",
                s(r, "role"),
                s(r, "event"),
                s(r, "rtt_us"),
                s(r, "bytes_sent"),
                s(r, "bytes_received"),
                n(r, "duration_ns") as f64 / 1e6
            );
            if r.get("error").is_some() {
                let _ = write!(d, " error={}", s(r, "error"));
            }
            d
        }
        "connections" => format!("{} {} x{}", s(r, "role"), s(r, "event"), n(r, "count")),
        "dns" => format!(
            "{} rcode={} {:.3}ms {}",
            s(r, "dns_name"),
            s(r, "rcode"),
            n(r, "duration_ns") as f64 / 1e6,
            s(r, "error")
        ),
        "drop" => format!("{} x{}", s(r, "reason"), n(r, "count")),
        "burst" => format!(
            "{} pkts {} bytes peak {} pps over {:.3}ms",
            s(r, "packets"),
            s(r, "bytes"),
            s(r, "peak_pps"),
            n(r, "duration_ns") as f64 / 1e6
        ),
        _ => String::new(),
    }
}

fn colour_of(kind: &str) -> &'static str {
    match kind {
        "flow" => "\x1b[36m",
        "connection" | "connections" => "\x1b[32m",
        "dns" => "\x1b[35m",
        "drop" => "\x1b[31m",
        "burst" => "\x1b[33m",
        _ => "\x1b[1m",
    }
}

pub fn table_header(colour: bool) -> String {
    let h = format!(
        "{:<12} {:<11} {:<40} {:<5} {:<22} {:<22} DETAIL",
        "TIME", "TYPE", "WHERE", "PROTO", "SOURCE", "DESTINATION"
    );
    if colour {
        format!("\x1b[1m{h}\x1b[0m")
    } else {
        h
    }
}

/// Prints one record (or a `lost` notice) in `format`.
pub fn write(out: &mut impl Write, format: Output, r: &Value, colour: bool) -> std::io::Result<()> {
    let kind = s(r, "type");
    if format == Output::Json {
        return writeln!(out, "{r}");
    }
    if kind == "lost" {
        return writeln!(
            out,
            "{} lost {} records: this client did not keep up (total {})",
            clock(n(r, "time_ns")),
            n(r, "lost"),
            n(r, "lost_total")
        );
    }
    let (on, off) = if colour {
        (colour_of(&kind), "\x1b[0m")
    } else {
        ("", "")
    };
    let time = clock(n(r, "time_ns"));
    let (src, dst) = (
        endpoint(r, "src_ip", "src_port"),
        endpoint(r, "dst_ip", "dst_port"),
    );
    match format {
        Output::Table => writeln!(
            out,
            "{time:<12} {on}{kind:<11}{off} {:<40} {:<5} {src:<22} {dst:<22} {}",
            place(r),
            s(r, "protocol"),
            detail(r)
        ),
        _ => {
            let arrow = if src.is_empty() && dst.is_empty() {
                String::new()
            } else {
                format!(" {src} -> {dst}")
            };
            writeln!(
                out,
                "{time} {on}{kind}{off} {} {}{arrow} {}",
                place(r),
                s(r, "protocol"),
                detail(r)
            )
        }
    }
}

/// What the top-talker tables add up per key.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub packets: u64,
    pub bytes: u64,
    pub opened: u64,
    pub failed: u64,
    pub drops: u64,
    pub dns: u64,
    pub dns_errors: u64,
    pub bursts: u64,
    pub rtt_us: Vec<u64>,
}

/// The top-talker table of `--aggregate-by`.
pub struct Table {
    key: Aggregate,
    rows: HashMap<String, Row>,
    /// The time the flow records cover: earliest interval start, latest end (ns).
    window: Option<(u64, u64)>,
}

/// A record's key for `by`, if it has one.
pub fn key_of(r: &Value, by: Aggregate) -> Option<String> {
    let k = match by {
        Aggregate::Pod => match (s(r, "namespace"), s(r, "pod")) {
            (_, p) if p.is_empty() => return None,
            (ns, p) if ns.is_empty() => p,
            (ns, p) => format!("{ns}/{p}"),
        },
        Aggregate::Namespace => s(r, "namespace"),
        Aggregate::Netns => match s(r, "netns") {
            n if n.is_empty() => s(r, "netns_inode"),
            n => n,
        },
        Aggregate::Process => s(r, "process"),
        Aggregate::Device => match s(r, "interface") {
            i if i.is_empty() => return None,
            i => match s(r, "netns") {
                n if n.is_empty() => format!("{i}@{}", s(r, "netns_inode")),
                n => format!("{i}@{n}"),
            },
        },
    };
    (!k.is_empty()).then_some(k)
}

impl Table {
    pub fn new(key: Aggregate) -> Self {
        Table {
            key,
            rows: HashMap::new(),
            window: None,
        }
    }

    pub fn add(&mut self, r: &Value) {
        let kind = s(r, "type");
        if kind == "flow" {
            let end = n(r, "time_ns");
            let start = end.saturating_sub(n(r, "interval_ns"));
            self.window = Some(match self.window {
                None => (start, end),
                Some((a, b)) => (a.min(start), b.max(end)),
            });
        }
        let Some(key) = key_of(r, self.key) else {
            return;
        };
        let row = self.rows.entry(key).or_default();
        match kind.as_str() {
            "flow" => {
                row.packets += n(r, "packets");
                row.bytes += n(r, "bytes");
            }
            // Opened connections are counted from the `connections` series (a span would
            // count them twice); spans give failures and RTTs.
            "connection" if s(r, "event") == "closed" || r.get("error").is_some() => {
                if r.get("error").is_some() {
                    row.failed += 1;
                }
                if let Some(rtt) = r.get("rtt_us").and_then(Value::as_u64) {
                    row.rtt_us.push(rtt);
                }
            }
            "connections" if s(r, "event") == "opened" => row.opened += n(r, "count"),
            "drop" => row.drops += n(r, "count"),
            "dns" => {
                row.dns += 1;
                if r.get("error").is_some()
                    || !matches!(s(r, "rcode").as_str(), "" | "NOERROR" | "0")
                {
                    row.dns_errors += 1;
                }
            }
            "burst" => row.bursts += 1,
            _ => {}
        }
    }

    /// Seconds the flow records cover (at least one).
    pub fn seconds(&self) -> f64 {
        self.window
            .map_or(1.0, |(a, b)| ((b - a) as f64 / 1e9).max(1.0))
    }

    pub fn rows(&self) -> Vec<(String, Row)> {
        let mut rows: Vec<_> = self
            .rows
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rows.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
        rows
    }

    /// The `limit` busiest keys by bytes, as text.
    pub fn render(&self, limit: usize) -> String {
        let secs = self.seconds();
        let mut t = format!(
            "{:<32} {:>12} {:>12} {:>10} {:>10} {:>7} {:>9} {:>10}\n",
            format!("{:?}", self.key).to_uppercase(),
            "BYTES/S",
            "PKTS/S",
            "BYTES",
            "PACKETS",
            "CONNS",
            "RTT_P50",
            "DROPS"
        );
        for (k, r) in self.rows().into_iter().take(limit) {
            let _ = writeln!(
                t,
                "{k:<32} {:>12.1} {:>12.1} {:>10} {:>10} {:>7} {:>9} {:>10}",
                r.bytes as f64 / secs,
                r.packets as f64 / secs,
                r.bytes,
                r.packets,
                r.opened,
                percentile(&r.rtt_us, 50).map_or("-".into(), |v| format!("{v}us")),
                r.drops
            );
        }
        t
    }
}

/// The p-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[u64], p: u64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p as usize * v.len()).div_ceil(100)).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_sums_per_key_and_rates_over_the_window() {
        let mut t = Table::new(Aggregate::Netns);
        for (ns, bytes, end) in [("a", 1000, 10), ("b", 3000, 10), ("a", 1000, 12)] {
            t.add(
                &json!({"type": "flow", "netns": ns, "packets": 1, "bytes": bytes,
                          "time_ns": end * 1_000_000_000u64, "interval_ns": 2_000_000_000u64}),
            );
        }
        let rows = t.rows();
        assert_eq!(rows[0].0, "b");
        assert_eq!(rows[1].1.bytes, 2000);
        assert_eq!(t.seconds(), 4.0);
        assert!(t.render(10).contains("b "));
    }

    #[test]
    fn a_node_side_veth_is_placed_with_the_pod_it_serves() {
        let r = serde_json::json!({"netns": "host", "interface": "veth3a9f",
                                   "peer_pod": "checkout-7d9f-x2x4z", "peer_container": "c"});
        assert_eq!(place(&r), "veth3a9f→checkout-7d9f-x2x4z@host");
        let r =
            serde_json::json!({"netns": "host", "interface": "veth3a9f", "peer_container": "web"});
        assert_eq!(place(&r), "veth3a9f→web@host");
        let r = serde_json::json!({"netns": "pod-a", "interface": "eth0", "peer_netns": "host"});
        assert_eq!(place(&r), "eth0@pod-a");
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[5, 1, 3], 50), Some(3));
        assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 99), Some(99));
    }
}
