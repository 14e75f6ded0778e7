//! `periscope validate` on malformed configs: each fails with exit code 1 and a message that
//! names the file, line, column, key path and what would be valid.
//!
//! Each file in `tests/invalid-configs/` starts with `# expect: LINE:COL PATH | MESSAGE`, where
//! PATH is the key path (`-` for none) and MESSAGE a part of the error text.

use std::path::{Path, PathBuf};
use std::process::Command;

fn periscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_periscope"))
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid-configs")
}

struct Expectation {
    line: usize,
    column: usize,
    path: Option<String>,
    message: String,
}

fn expectation(file: &Path) -> Expectation {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let header = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", file.display()));
    let (place, message) = header.split_once(" | ").expect("`LOCATION PATH | MESSAGE`");
    let (position, path) = place.split_once(' ').expect("`LINE:COL PATH`");
    let (line, column) = position.split_once(':').expect("LINE:COL");
    Expectation {
        line: line.parse().expect("line number"),
        column: column.parse().expect("column number"),
        path: (path != "-").then(|| path.to_string()),
        message: message.to_string(),
    }
}

#[test]
fn every_malformed_config_fails_with_a_located_message() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected at least 15 malformed configs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let exp = expectation(file);
        let out = periscope()
            .args(["validate", "-c"])
            .arg(file)
            .env_remove("PERISCOPE_TEST_SURELY_UNSET")
            .output()
            .expect("run periscope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut prefix = format!("{}:{}:{}: ", file.display(), exp.line, exp.column);
        if let Some(p) = &exp.path {
            prefix.push_str(&format!("{p}: "));
        }
        let matching_line = stderr
            .lines()
            .find(|l| l.contains(&prefix) && l.contains(&exp.message));
        if out.status.code() != Some(1) || matching_line.is_none() || stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {:?}; wanted a line containing `{prefix}` and `{}`; stderr:\n{stderr}",
                file.display(),
                out.status.code(),
                exp.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let dir = std::env::temp_dir().join(format!("periscope-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("many.yaml");
    std::fs::write(
        &file,
        "receivers:\n  pcap: {path: a.pcap, sped: max}\nprocessors:\n  flow: {interval: -1s, flow_atributes: true}\n  flw/x: {}\nexporters:\n  file: {path: out.jsonl}\nservice:\n  pipelines:\n    metrics: {receivers: [pcap], processors: [flow], exporters: [file, debug]}\n",
    )
    .expect("write config");
    let out = periscope()
        .args(["validate", "-c"])
        .arg(&file)
        .output()
        .expect("run periscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        ":2:24: receivers.pcap.sped: unknown option `sped`; did you mean `speed`?",
        ":4:20: processors.flow.interval: `-1s` is negative",
        ":4:25: processors.flow.flow_atributes: unknown option",
        ":5:3: processors.flw/x: unknown processor type `flw`; did you mean `flow`?",
        ":10:72: service.pipelines.metrics.exporters.1: exporter `debug` is not defined",
        "the config has 5 errors",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_file_is_named() {
    let out = periscope()
        .args(["validate", "-c", "/nonexistent/periscope.yaml"])
        .output()
        .expect("run periscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(
            "/nonexistent/periscope.yaml: cannot read the config file: No such file or directory"
        ),
        "{stderr}"
    );
}

#[test]
fn shipped_configs_are_valid() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&configs).expect("configs folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        n += 1;
        let out = periscope()
            .args(["validate", "-c"])
            .arg(&path)
            .output()
            .expect("run periscope");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(n >= 1, "no configs found in {}", configs.display());
}

#[test]
fn components_lists_every_type_with_documented_options() {
    let out = periscope()
        .arg("components")
        .output()
        .expect("run periscope");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for t in ["pcap", "synthetic", "flow", "file", "debug"] {
        assert!(
            stdout.contains(&format!("\n  {t}\n")),
            "`{t}` missing:\n{stdout}"
        );
    }
    let out = periscope()
        .args(["components", "--json"])
        .output()
        .expect("run periscope");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON schemas");
    let mut undocumented = Vec::new();
    for (name, schema) in all.as_object().expect("object") {
        if schema.get("description").is_none() {
            undocumented.push(name.clone());
        }
        for (opt, prop) in schema
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            if prop.get("description").is_none() {
                undocumented.push(format!("{name}.{opt}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "options without docs: {undocumented:?}"
    );
}
