//! `tcx` with `expedite_rcu: true`: the host's `/sys/kernel/rcu_expedited` is 1 while the
//! agent runs and back to what it was after it stops; devices still get attached.
//!
//! Needs root, `ip` and `python3`; skips otherwise, except under CI.

use std::time::Duration;

use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Netns, TestDir};

const KNOB: &str = "/sys/kernel/rcu_expedited";

fn knob() -> String {
    std::fs::read_to_string(KNOB)
        .unwrap_or_else(|e| panic!("{KNOB}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn expedite_rcu_is_set_while_running_and_put_back() {
    let test = test_name!();
    if !require_root_and_tools(test, &["ip", "python3"]) {
        return;
    }
    let before = knob();
    if before != "0" {
        eprintln!("skipping {test}: {KNOB} is already {before} on this host");
        return;
    }
    // Whatever happens to the agent, the host gets its setting back.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(KNOB, "0");
        }
    }
    let _restore = Restore;
    let dir = TestDir::new("tcx_expedite");
    let ns = Netns::new();
    let out = dir.join("out.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  tcx: {{namespaces: [{}], events: none, expedite_rcu: true, counters_interval: 200ms}}\n\
             processors:\n  flow: {{interval: 200ms}}\n\
             exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow], exporters: [file]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            ns.name(),
            yaml_path(&out)
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    agent.wait_until(Duration::from_secs(60), "running", |p| {
        p.stderr().contains("periscope is running")
    });
    assert_eq!(knob(), "1", "{KNOB} while the agent runs");
    // The namespace's `lo` gets attached and counts a datagram sent over it.
    agent.wait_until(Duration::from_secs(20), "lo counted", |_| {
        let _ = ns
            .exec("python3")
            .args([
                "-c",
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
            ])
            .output();
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("\"lo\""))
    });
    stop_agent(agent, Duration::from_secs(30));
    assert_eq!(knob(), "0", "{KNOB} after the agent stopped");
}
