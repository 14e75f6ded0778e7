//! What the `dns` tests read: `dns.lookup.duration` histograms and `dns.lookup` spans from the
//! file exporter's OTLP/JSON, and tshark's view (`dns.time`) of the same packets.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::metric;
use serde_json::Value;

use crate::otlp::{parse_requests, value_text, Attributes};
use crate::process::output_with_timeout;

/// One `dns.lookup.duration` series: its latest (cumulative) count and sum.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookups {
    pub count: u64,
    /// Seconds.
    pub sum: f64,
}

/// The `dns.lookup.duration` series in an OTLP/JSON metrics file, by attribute set (the point
/// with the latest time per series). Lines not yet complete are ignored.
pub fn lookup_histograms(out: &Path) -> BTreeMap<Attributes, Lookups> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut latest: BTreeMap<Attributes, (u64, Lookups)> = BTreeMap::new();
    for rm in parse_requests(complete, &out.display().to_string())
        .iter()
        .flat_map(|r| &r.resource_metrics)
    {
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let Some(metric::Data::Histogram(h)) = &m.data else {
                continue;
            };
            if m.name != "dns.lookup.duration" {
                continue;
            }
            for p in &h.data_points {
                let attrs: Attributes = p
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), value_text(kv)))
                    .collect();
                if latest
                    .get(&attrs)
                    .is_none_or(|(t, _)| *t <= p.time_unix_nano)
                {
                    latest.insert(
                        attrs,
                        (
                            p.time_unix_nano,
                            Lookups {
                                count: p.count,
                                sum: p.sum.unwrap_or(0.0),
                            },
                        ),
                    );
                }
            }
        }
    }
    latest.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// One exported span.
#[derive(Clone, Debug)]
pub struct SpanRow {
    pub name: String,
    pub kind: i64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Attribute values as text.
    pub attrs: Attributes,
    /// `status.code` (2: error).
    pub status: i64,
}

impl SpanRow {
    pub fn duration(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 * 1e-9
    }
}

fn text_of(v: &Value) -> String {
    for k in ["stringValue", "boolValue", "doubleValue"] {
        if let Some(x) = v.get(k) {
            return x.as_str().map_or_else(|| x.to_string(), str::to_string);
        }
    }
    match v.get("intValue") {
        Some(Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
        None => v.to_string(),
    }
}

fn u64_of(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

/// Every span in an OTLP/JSON traces file.
pub fn spans(out: &Path) -> Vec<SpanRow> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut rows = Vec::new();
    for line in text.lines() {
        let Ok(line) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for r in line["resourceSpans"].as_array().into_iter().flatten() {
            for ss in r["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attrs = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| {
                            (
                                kv["key"].as_str().unwrap_or_default().to_string(),
                                text_of(&kv["value"]),
                            )
                        })
                        .collect();
                    rows.push(SpanRow {
                        name: s["name"].as_str().unwrap_or_default().to_string(),
                        kind: s["kind"].as_i64().unwrap_or(0),
                        start_ns: u64_of(&s["startTimeUnixNano"]),
                        end_ns: u64_of(&s["endTimeUnixNano"]),
                        attrs,
                        status: s["status"]["code"].as_i64().unwrap_or(0),
                    });
                }
            }
        }
    }
    rows
}

/// One DNS response as tshark dissects it.
#[derive(Clone, Debug, PartialEq)]
pub struct TsharkResponse {
    pub id: u16,
    pub name: String,
    pub rcode: u8,
    /// `dns.time`: seconds since its query (absent when tshark saw no query).
    pub time: Option<f64>,
}

/// The DNS responses in a capture, with tshark's `dns.time`, in capture order.
pub fn tshark_responses(pcap: &Path, extra: &[&str]) -> Vec<TsharkResponse> {
    let out = output_with_timeout(
        Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(extra)
            .args([
                "-Y",
                "dns.flags.response == 1",
                "-T",
                "fields",
                "-E",
                "occurrence=f",
                "-e",
                "dns.id",
                "-e",
                "dns.qry.name",
                "-e",
                "dns.flags.rcode",
                "-e",
                "dns.time",
            ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let id = f.first()?.trim_start_matches("0x");
            Some(TsharkResponse {
                id: u16::from_str_radix(id, 16).ok()?,
                name: f.get(1)?.to_string(),
                rcode: f.get(2)?.parse().ok()?,
                time: f.get(3).and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}
