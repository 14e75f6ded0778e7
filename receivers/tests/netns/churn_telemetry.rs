//! The receiver's own telemetry of attachment, as the agent exports it: devices attached now,
//! failures by reason, attach durations, links released — checked against what the test
//! made and deleted.

use periscope_pipeline::component::ReceiverConfig;
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::edge::{EdgeSender, EventOutput, StopSignal, WhenFull};
use periscope_pipeline::model::{EventBatch, MetricData, Number};
use periscope_pipeline::telemetry::{names, SelfTelemetry};
use periscope_receivers::netdev::NamespacesConfig;
use periscope_receivers::tcx::TcxConfig;
use periscope_testkit::context;

use super::churn::fresh;
use super::*;

/// The value of an int gauge or sum (summed over its series), or a histogram's count.
fn value(st: &SelfTelemetry, name: &str) -> i64 {
    st.metrics()
        .metrics
        .iter()
        .filter(|m| m.name == name)
        .map(|m| match &m.data {
            MetricData::Gauge { points } | MetricData::Sum { points, .. } => points
                .iter()
                .map(|p| match p.value {
                    Number::Int(v) => v,
                    Number::Double(v) => v as i64,
                })
                .sum::<i64>(),
            MetricData::Histogram { points, .. } => points.iter().map(|p| p.count as i64).sum(),
            other => panic!("{name}: {other:?}"),
        })
        .sum()
}

fn wait_value(st: &SelfTelemetry, name: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = value(st, name);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {v}, expected {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn attachment_telemetry_follows_devices_and_links() {
    let _serial = serial_root!();
    let (node_name, pod_name) = (Netns::unique_name(), Netns::unique_name());
    let st = SelfTelemetry::default();
    let counters = st.register("receiver", "tcx/churn", None);
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let mut output = EventOutput::new(
        vec![EdgeSender::new(tx, WhenFull::Block, counters.clone())],
        counters,
        EventBatch::DEFAULT_CAPACITY,
    );
    let collector = std::thread::spawn(move || rx.iter().count());
    let receiver = TcxConfig {
        namespaces: NamespacesConfig::Listed(vec![node_name.clone(), pod_name.clone()]),
        counters_interval: ConfigDuration::from_millis(100),
        ..TcxConfig::default()
    }
    .build(&context("tcx/churn"))
    .expect("build");
    let stop = StopSignal::default();
    let s = stop.clone();
    let thread = std::thread::spawn(move || receiver.run(&mut output, &s));

    let node = fresh(&node_name);
    let pod = fresh(&pod_name);
    node.ip(&[
        "link", "add", "cqt", "type", "veth", "peer", "name", "eth0", "netns", &pod_name,
    ]);
    // lo and cqt in the node, lo and eth0 in the pod; two hooks each.
    wait_value(&st, names::NETDEV_DEVICES_ATTACHED, 4);
    assert!(value(&st, names::NETDEV_ATTACH_DURATION) >= 4);
    assert_eq!(value(&st, names::NETDEV_ATTACH_FAILURES), 0);
    assert_eq!(value(&st, names::NETDEV_LINKS_RELEASED), 0);
    // The pod goes: its lo and eth0, and the node's end of the pair with it.
    drop(pod);
    wait_value(&st, names::NETDEV_DEVICES_ATTACHED, 1);
    wait_value(&st, names::NETDEV_LINKS_RELEASED, 6);
    stop.raise();
    thread.join().expect("receiver thread").expect("receiver");
    // No traffic was made: whatever came is drained (the output must not block).
    let _ = collector.join().expect("collector");
    // The node's lo at stop.
    assert_eq!(value(&st, names::NETDEV_LINKS_RELEASED), 8);
    drop(node);
}
