//! The receiver's own telemetry of attachment (docs/metrics.md, "The agent itself"): devices
//! attached now, failures by reason, how long a device waits to be attached, links released.

use std::time::Duration;

use periscope_pipeline::model::KeyValue;
use periscope_pipeline::telemetry::instruments::{
    Counter, Gauge, Histogram, InstrumentInfo, Instruments,
};
use periscope_pipeline::telemetry::names;

use super::outcome::FailureReason;

/// Upper bounds of the attach-duration histogram, seconds: 1 ms (expedited RCU) to 10 s.
const DURATION_BOUNDS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Handles of the instruments, registered with the receiver's component counters.
pub(super) struct AttachTelemetry {
    pub(super) attached: Gauge,
    failures: Vec<(FailureReason, Counter)>,
    duration: Histogram,
    pub(super) released: Counter,
}

impl AttachTelemetry {
    pub(super) fn register(instruments: &Instruments) -> AttachTelemetry {
        let info = |name, description, unit, attributes| InstrumentInfo {
            name,
            description,
            unit,
            attributes,
        };
        AttachTelemetry {
            attached: instruments.gauge(info(
                names::NETDEV_DEVICES_ATTACHED,
                "Devices with the receiver's programs attached now.",
                "{device}",
                Vec::new(),
            )),
            failures: FailureReason::ALL
                .iter()
                .map(|r| {
                    let c = instruments.counter(info(
                        names::NETDEV_ATTACH_FAILURES,
                        "Attachments that failed, by reason (devices that vanished meanwhile \
                         are not counted).",
                        "{failure}",
                        vec![KeyValue::new(names::ATTR_NETDEV_FAILURE_REASON, r.as_str())],
                    ));
                    (*r, c)
                })
                .collect(),
            duration: instruments.histogram(
                info(
                    names::NETDEV_ATTACH_DURATION,
                    "From a device reported to the receiver to its programs attached.",
                    "s",
                    Vec::new(),
                ),
                &DURATION_BOUNDS,
            ),
            released: instruments.counter(info(
                names::NETDEV_LINKS_RELEASED,
                "Links let go of: devices and namespaces that went away, and at stop.",
                "{link}",
                Vec::new(),
            )),
        }
    }

    pub(super) fn failed(&self, reason: FailureReason) {
        if let Some((_, c)) = self.failures.iter().find(|(r, _)| *r == reason) {
            c.add(1);
        }
    }

    pub(super) fn attached_after(&self, d: Duration) {
        self.duration.record(d.as_secs_f64());
    }
}
