//! SIGTERM/SIGINT: the agent stops its receivers, drains, flushes every exporter and exits 0;
//! every event the receiver sent is in the final flow metrics.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("periscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Sum of the last reported value of `metric` over its series whose attributes contain
/// `key=value` (string) — from OTLP/JSON lines, latest line wins per series.
fn last_sum(lines: &str, metric: &str, key: &str, value: &str) -> Option<i64> {
    let mut latest = std::collections::BTreeMap::new();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).expect("each line is JSON");
        for rm in v["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"] != metric {
                        continue;
                    }
                    for p in m["sum"]["dataPoints"].as_array().into_iter().flatten() {
                        let attrs = p["attributes"].to_string();
                        let matches = key.is_empty()
                            || p["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|a| a["key"] == key && a["value"]["stringValue"] == value);
                        if matches {
                            let n: i64 = p["asInt"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .expect("asInt");
                            latest.insert(attrs, n);
                        }
                    }
                }
            }
        }
    }
    (!latest.is_empty()).then(|| latest.values().sum())
}

fn stop_with(signal: &str) {
    let dir = temp_dir(&format!("signal-{signal}"));
    let out = dir.join("metrics.jsonl");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  synthetic: {{rate: 20000, flows: 8}}\nprocessors:\n  flow: {{interval: 1h}}\nexporters:\n  file: {{path: {}}}\nservice:\n  pipelines:\n    metrics: {{receivers: [synthetic], processors: [flow], exporters: [file]}}\n  telemetry: {{metrics: {{interval: 1h}}}}\n  shutdown_timeout: 5s\n",
            out.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start periscope");
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let sent_at = Instant::now();
    let deadline = sent_at + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("periscope did not exit within 10 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent_at.elapsed();
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap_or_default();
    assert!(exit.success(), "exit {exit:?} after SIG{signal}:\n{stderr}");
    assert!(took < Duration::from_secs(5), "drain took {took:?}");

    let lines = std::fs::read_to_string(&out).expect("file exporter output");
    // Ground truth: what the receiver itself says it sent, in the final self-telemetry snapshot.
    let sent = last_sum(
        &lines,
        "periscope.component.sent",
        "periscope.component.id",
        "synthetic",
    )
    .expect("final periscope.component.sent of the synthetic receiver");
    let packets =
        last_sum(&lines, "periscope.network.packets", "", "").expect("final flow metrics");
    let bytes = last_sum(&lines, "periscope.network.bytes", "", "").expect("final flow metrics");
    assert!(sent > 10_000, "about 1.5 s at 20k/s, got {sent}");
    assert_eq!(
        packets, sent,
        "every event sent before the stop reached the flow metrics"
    );
    assert_eq!(bytes, sent * 512, "synthetic frames are 512 bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_drains_and_flushes() {
    stop_with("TERM");
}

#[test]
fn sigint_drains_and_flushes() {
    stop_with("INT");
}
