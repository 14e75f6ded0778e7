//! Throughput of the pipeline against a bare channel, in one run.
//!
//! 1. pipeline: `synthetic (count: N) → flow → file`, run by the real topology;
//! 2. bare: the same synthetic receiver's batches through one crossbeam channel to a consumer
//!    that reads every event and does nothing else.
//!
//! Prints events/s (wall clock) and events per CPU-second for both, and their ratio; appends
//! the result to `bench-results/pipeline.txt`.
//!
//! Reproduce: `cargo run --release -p periscope-bench --bin bench-pipeline -- [EVENTS] [FLOWS]`

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use periscope_bench::joined;
use periscope_pipeline::component::registry::AnyConfig;
use periscope_pipeline::component::{BuildContext, ComponentId, Kind};
use periscope_pipeline::config::{self, yaml};
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{bounded, EdgeSender, EventOutput, StopSignal, WhenFull};
use periscope_pipeline::model::Payload;
use periscope_pipeline::topology;

/// Counts heap allocations, to show that per-event work allocates nothing (only per batch).
struct CountingAllocator;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only adds a relaxed counter.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Measure {
    wall: Duration,
    cpu: Duration,
    events: u64,
    allocations: u64,
}

impl Measure {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
    fn per_cpu_sec(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64()
    }
    fn allocations_per_event(&self) -> f64 {
        self.allocations as f64 / self.events as f64
    }
}

fn synthetic_yaml(events: u64, flows: u64) -> String {
    format!("{{count: {events}, flows: {flows}, rate: 0}}")
}

fn run_pipeline(events: u64, flows: u64, out: &std::path::Path) -> anyhow::Result<Measure> {
    let text = format!(
        "receivers:\n  synthetic: {}\nprocessors:\n  flow: {{interval: 1h}}\nexporters:\n  file: {{path: {}}}\nservice:\n  pipelines:\n    metrics: {{receivers: [synthetic], processors: [flow], exporters: [file]}}\n  telemetry: {{metrics: {{enabled: false}}, logs: {{level: warn}}}}\n",
        synthetic_yaml(events, flows),
        out.display()
    );
    let config = config::load_str(&text, None, &periscope::components::registry(), &|_| None)
        .map_err(|e| anyhow!("{e}"))?;
    let devices = DeviceTable::default();
    let topology = topology::build(&config, &devices)?;
    let telemetry = topology.self_telemetry();
    let (_keep, shutdown) = crossbeam_channel::bounded::<()>(1);
    let (cpu0, t0, a0) = (cpu_time(), Instant::now(), allocations());
    let report = topology.run(shutdown)?;
    let (wall, cpu, allocations) = (t0.elapsed(), cpu_time() - cpu0, allocations() - a0);
    if !report.is_success() {
        bail!("pipeline run failed: {report:?}");
    }
    let received: u64 = telemetry
        .values()
        .iter()
        .filter(|(kind, ..)| *kind == "processor")
        .map(|(.., v)| v.received)
        .sum();
    if received != events {
        bail!("the flow processor received {received} events, expected {events}");
    }
    Ok(Measure {
        wall,
        cpu,
        events,
        allocations,
    })
}

fn run_bare(events: u64, flows: u64) -> anyhow::Result<Measure> {
    let registry = periscope::components::registry();
    let node = yaml::parse(&synthetic_yaml(events, flows)).map_err(|e| anyhow!("{}", e.message))?;
    let kind = registry
        .get(Kind::Receiver, "synthetic")
        .context("no synthetic receiver")?;
    let AnyConfig::Receiver(config) = kind.parse(&node, &[]).map_err(|e| anyhow!("{e}"))? else {
        bail!("synthetic is not a receiver");
    };
    let (tx, rx) = bounded(64);
    let ctx = BuildContext::standalone(ComponentId::parse("synthetic").map_err(|e| anyhow!(e))?);
    let counters = std::sync::Arc::clone(&ctx.counters);
    let receiver = config.build(&ctx)?;
    let (cpu0, t0, a0) = (cpu_time(), Instant::now(), allocations());
    let consumer = std::thread::spawn(move || {
        let (mut n, mut bytes) = (0u64, 0u64);
        for payload in rx {
            if let Payload::Events(batch) = payload {
                for e in &batch.events {
                    if let periscope_pipeline::model::Event::Packet(p) = e {
                        n += 1;
                        bytes += u64::from(p.length);
                    }
                }
            }
        }
        (n, bytes)
    });
    let edge = EdgeSender::new(tx, WhenFull::Block, counters.clone());
    let mut output = EventOutput::new(
        vec![edge],
        counters,
        periscope_pipeline::model::EventBatch::DEFAULT_CAPACITY,
    );
    receiver.run(&mut output, &StopSignal::default())?;
    drop(output);
    let (n, bytes) = joined(consumer.join(), "consumer")?;
    let (wall, cpu, allocations) = (t0.elapsed(), cpu_time() - cpu0, allocations() - a0);
    if n != events {
        bail!("bare consumer saw {n} events, expected {events}");
    }
    std::hint::black_box(bytes);
    Ok(Measure {
        wall,
        cpu,
        events,
        allocations,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000_000);
    let flows: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let out = std::env::temp_dir().join(format!("periscope-bench-{}.jsonl", std::process::id()));

    eprintln!("bench-pipeline: {events} events over {flows} flows; warming up…");
    run_bare(events / 10, flows)?;
    eprintln!("bench-pipeline: bare channel…");
    let bare = run_bare(events, flows)?;
    eprintln!("bench-pipeline: synthetic → flow → file…");
    let pipe = run_pipeline(events, flows, &out)?;
    let _ = std::fs::remove_file(&out);

    let report = format!(
        "bench-pipeline  events={events} flows={flows} cores={}\n\
         bare channel     {:>8.2} M events/s wall  {:>8.2} M events/CPU-s  ({:.3}s wall, {:.3}s CPU)\n\
         pipeline         {:>8.2} M events/s wall  {:>8.2} M events/CPU-s  ({:.3}s wall, {:.3}s CPU)\n\
         ratio pipeline/bare: {:.3} (wall), {:.3} (per CPU-s)\n\
         heap allocations per event: bare {:.5}, pipeline {:.5} (batches of 1024 events)\n\
         reproduce: cargo run --release -p periscope-bench --bin bench-pipeline -- {events} {flows}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        bare.per_sec() / 1e6,
        bare.per_cpu_sec() / 1e6,
        bare.wall.as_secs_f64(),
        bare.cpu.as_secs_f64(),
        pipe.per_sec() / 1e6,
        pipe.per_cpu_sec() / 1e6,
        pipe.wall.as_secs_f64(),
        pipe.cpu.as_secs_f64(),
        pipe.per_sec() / bare.per_sec(),
        pipe.per_cpu_sec() / bare.per_cpu_sec(),
        bare.allocations_per_event(),
        pipe.allocations_per_event(),
    );
    print!("{report}");
    std::fs::create_dir_all("bench-results")?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("bench-results/pipeline.txt")?;
    writeln!(f, "# {}", std::env::args().collect::<Vec<_>>().join(" "))?;
    f.write_all(report.as_bytes())?;
    Ok(())
}
