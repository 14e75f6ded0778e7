//! The runs: a receiver's batches through a bare channel, and a config run by the real
//! topology.

use anyhow::{anyhow, bail, Context};

use periscope_bench::joined;
use periscope_pipeline::component::registry::AnyConfig;
use periscope_pipeline::component::{BuildContext, ComponentId, Kind, Registry};
use periscope_pipeline::config::{self, yaml};
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{bounded, EdgeSender, EventOutput, StopSignal, WhenFull};
use periscope_pipeline::model::{EventBatch, Payload};
use periscope_pipeline::topology;

use crate::measure::{Measure, Stopwatch};
use crate::mix::MixConfig;

/// Every component periscope has, and the bench's `bench_mix` receiver.
pub fn registry() -> Registry {
    periscope::components::registry().receiver::<MixConfig>()
}

/// Receiver `kind` with config `yaml` (built outside a topology) into one crossbeam channel,
/// to a consumer that reads every event and does nothing else. Expects `events` events.
pub fn bare(kind: &str, yaml: &str, events: u64) -> anyhow::Result<Measure> {
    let registry = registry();
    let node = yaml::parse(yaml).map_err(|e| anyhow!("{}", e.message))?;
    let AnyConfig::Receiver(config) = registry
        .get(Kind::Receiver, kind)
        .with_context(|| format!("no {kind} receiver"))?
        .parse(&node, &[])
        .map_err(|e| anyhow!("{e}"))?
    else {
        bail!("{kind} is not a receiver");
    };
    let (tx, rx) = bounded(64);
    let ctx = BuildContext::standalone(ComponentId::parse(kind).map_err(|e| anyhow!(e))?);
    let counters = std::sync::Arc::clone(&ctx.counters);
    let receiver = config.build(&ctx)?;
    let watch = Stopwatch::start();
    let consumer = std::thread::spawn(move || {
        let (mut n, mut stamps) = (0u64, 0u64);
        for payload in rx {
            if let Payload::Events(batch) = payload {
                for e in &batch.events {
                    n += 1;
                    stamps = stamps.wrapping_add(e.timestamp_ns());
                }
            }
        }
        (n, stamps)
    });
    let edge = EdgeSender::new(tx, WhenFull::Block, counters.clone());
    let mut output = EventOutput::new(vec![edge], counters, EventBatch::DEFAULT_CAPACITY);
    receiver.run(&mut output, &StopSignal::default())?;
    drop(output);
    let (n, stamps) = joined(consumer.join(), "consumer")?;
    let measure = watch.stop(events);
    if n != events {
        bail!("bare consumer saw {n} events, expected {events}");
    }
    std::hint::black_box(stamps);
    Ok(measure)
}

/// Runs `config` (a whole periscope config) by the real topology until its receivers end;
/// checks that processor `first` received `events` events.
pub fn pipeline(config_text: &str, first: &str, events: u64) -> anyhow::Result<Measure> {
    let config =
        config::load_str(config_text, None, &registry(), &|_| None).map_err(|e| anyhow!("{e}"))?;
    let devices = DeviceTable::default();
    let topology = topology::build(&config, &devices)?;
    let telemetry = topology.self_telemetry();
    let (_keep, shutdown) = crossbeam_channel::bounded::<()>(1);
    let watch = Stopwatch::start();
    let report = topology.run(shutdown)?;
    let measure = watch.stop(events);
    if !report.is_success() {
        bail!("pipeline run failed: {report:?}");
    }
    let received: u64 = telemetry
        .values()
        .iter()
        .filter(|(kind, id, ..)| *kind == "processor" && id == first)
        .map(|(.., v)| v.received)
        .sum();
    if received != events {
        bail!("processor {first} received {received} events, expected {events}");
    }
    Ok(measure)
}

/// An error unless the file exporter's output at `out` names every metric in `expected`: each
/// processor of the chain did its work, not just passed the events on.
pub fn check_output(out: &std::path::Path, expected: &[&str]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|name| !text.contains(&format!("\"{name}\"")))
        .collect();
    if !missing.is_empty() {
        bail!("the chain's output lacks {}", missing.join(", "));
    }
    Ok(())
}
