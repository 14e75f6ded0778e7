//! OpenTelemetry → Prometheus names, as the OpenTelemetry "Prometheus and OpenMetrics
//! Compatibility" specification says: `.` and other invalid characters become `_`, the unit
//! becomes a suffix (`_bytes`, `_seconds`, `_bytes_per_second`; `{packet}` annotations are
//! dropped), gauges with unit `1` get `_ratio`, monotonic sums `_total` (added when rendered).

/// Replaces every character outside `[a-zA-Z0-9_:]` with `_`, collapses runs of `_`, and
/// prefixes `_` when the name starts with a digit.
pub fn sanitize_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A label name: invalid characters become `_`; a leading digit gets `key_` in front, a
/// single leading `_` gets `key` (names starting with `__` are reserved by Prometheus).
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        return "key_".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') {
        // `_x` → `key_x`; `__x` (reserved by Prometheus) → `key__x`.
        out.insert_str(0, "key");
    }
    out
}

fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "bit" => "bits",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Removes `{...}` annotations (`{packet}`, `By{frame}` → `By`).
fn strip_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The Prometheus unit word for a UCUM unit (`By` → `bytes`, `By/s` → `bytes_per_second`,
/// `{packet}` → none, `1` → none: the caller adds `_ratio` for gauges).
pub fn unit_suffix(unit: &str) -> Option<String> {
    let unit = strip_annotations(unit);
    if unit.is_empty() || unit == "1" {
        return None;
    }
    let word = |u: &str, per: bool| -> String {
        let known = if per { per_unit_word(u) } else { unit_word(u) };
        match known {
            Some(w) => w.to_string(),
            None => sanitize_metric_name(u).trim_matches('_').to_string(),
        }
    };
    let s = match unit.split_once('/') {
        Some((a, b)) => {
            let (a, b) = (word(a, false), word(b, true));
            match (a.is_empty(), b.is_empty()) {
                (false, false) => format!("{a}_per_{b}"),
                (false, true) => a,
                (true, false) => format!("per_{b}"),
                (true, true) => String::new(),
            }
        }
        None => word(&unit, false),
    };
    (!s.is_empty()).then_some(s)
}

/// The kind of Prometheus metric a name is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// Monotonic sums: the name returned has no `_total`; renderers add it.
    Counter,
    Gauge,
    Histogram,
}

/// The Prometheus family name of an OpenTelemetry metric, without `_total`.
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> String {
    let mut out = sanitize_metric_name(name);
    if kind == NameKind::Counter {
        while let Some(stripped) = out.strip_suffix("_total") {
            out = stripped.to_string();
        }
    }
    if let Some(u) = unit_suffix(unit) {
        if !out.ends_with(&format!("_{u}")) && out != u {
            out.push('_');
            out.push_str(&u);
        }
    }
    if kind == NameKind::Gauge && strip_annotations(unit) == "1" && !out.ends_with("_ratio") {
        out.push_str("_ratio");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_spec() {
        use NameKind::*;
        assert_eq!(
            metric_name("periscope.network.packets", "{packet}", Counter),
            "periscope_network_packets"
        );
        assert_eq!(
            metric_name("periscope.network.bytes", "By", Counter),
            "periscope_network_bytes"
        );
        assert_eq!(
            metric_name("network.rtt", "s", Histogram),
            "network_rtt_seconds"
        );
        assert_eq!(metric_name("queue.fill", "1", Gauge), "queue_fill_ratio");
        assert_eq!(metric_name("queue.fill", "1", Counter), "queue_fill");
        assert_eq!(
            metric_name("throughput", "By/s", Gauge),
            "throughput_bytes_per_second"
        );
        assert_eq!(metric_name("requests_total", "", Counter), "requests");
        assert_eq!(
            metric_name("2xx..count", "ms", Gauge),
            "_2xx_count_milliseconds"
        );
        assert_eq!(metric_name("temp", "Cel", Gauge), "temp_celsius");
        assert_eq!(metric_name("x", "foo", Gauge), "x_foo");
    }

    #[test]
    fn label_names() {
        assert_eq!(
            sanitize_label_name("network.transport"),
            "network_transport"
        );
        assert_eq!(sanitize_label_name("0abc"), "key_0abc");
        assert_eq!(sanitize_label_name("_abc"), "key_abc");
        assert_eq!(sanitize_label_name("__x"), "key__x");
        assert_eq!(sanitize_label_name("k8s.pod-name"), "k8s_pod_name");
    }
}
