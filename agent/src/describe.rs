//! `periscope components`: each component type with its documented options, read from the
//! JSON schema of its config struct (whose doc comments are the documentation).

use std::fmt::Write;

use serde_json::Value;

use periscope_pipeline::component::{ComponentType, Kind, Registry};

/// A human-readable listing of every type (or only `only`).
pub fn describe(registry: &Registry, only: Option<&str>) -> String {
    let mut out = String::new();
    for kind in [Kind::Receiver, Kind::Processor, Kind::Exporter] {
        let types: Vec<&ComponentType> = registry
            .iter()
            .filter(|t| t.kind == kind && only.is_none_or(|o| o == t.type_name))
            .collect();
        if types.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}:", kind.section());
        for t in types {
            describe_type(&mut out, t);
        }
    }
    out
}

fn describe_type(out: &mut String, t: &ComponentType) {
    let schema = t.schema();
    let root = schema.as_value();
    let summary = root
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = writeln!(out, "  {}", t.type_name);
    for line in summary.lines() {
        let _ = writeln!(out, "      {line}");
    }
    let required: Vec<&str> = root
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = root.get("properties").and_then(Value::as_object) {
        let _ = writeln!(out, "    options:");
        for (name, prop) in props {
            let ty = type_of(root, prop);
            let mut head = format!("      {name}: {ty}");
            if required.contains(&name.as_str()) {
                head.push_str(" (required)");
            } else if let Some(d) = prop.get("default") {
                let _ = write!(head, " (default: {})", render_default(d));
            }
            let _ = writeln!(out, "{head}");
            if let Some(desc) = prop.get("description").and_then(Value::as_str) {
                for line in desc.lines() {
                    let _ = writeln!(out, "          {line}");
                }
            }
        }
    } else {
        let _ = writeln!(out, "    options: none");
    }
    let _ = writeln!(out);
}

fn render_default(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs").and_then(|d| d.get(name)))
            .unwrap_or(v),
        None => v,
    }
}

/// A short type description: `string`, `integer`, `max | realtime`, `list of string`.
fn type_of(root: &Value, v: &Value) -> String {
    if v.get("$ref")
        .and_then(Value::as_str)
        .is_some_and(|r| r.ends_with("/Duration"))
    {
        return "duration".into();
    }
    let v = resolve(root, v);
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(render_default)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(c) = v.get("const") {
        return render_default(c);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = v.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = options
                .iter()
                .map(|o| type_of(root, o))
                .filter(|s| s != "null")
                .collect();
            return parts.join(" | ");
        }
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = v
                .get("items")
                .map(|i| type_of(root, i))
                .unwrap_or_else(|| "value".into());
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" => "mapping".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "value".into(),
    }
}
