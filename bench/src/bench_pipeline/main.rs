//! Throughput of the pipeline against a bare channel, in one run.
//!
//! 1. bare: the `synthetic` receiver's batches through one crossbeam channel to a consumer
//!    that reads every event and does nothing else;
//! 2. pipeline: `synthetic (count: N) → flow → file`, run by the real topology;
//! 3. bare mix: the same bare channel fed by `bench_mix` (this bench's receiver, `mix.rs`): a
//!    realistic mix of packet, socket, DNS and burst events, generated once and replayed;
//! 4. chain: `bench_mix → dns → latency → connections → burst → flow → identity → file`, every
//!    processor with its defaults, as an agent wires them in one metrics pipeline.
//!
//! Prints events/s (wall clock) and events per CPU-second (the whole process: receiver,
//! pipeline and exporter threads), heap allocations per event, and each pipeline's ratio to
//! its bare channel; appends the result to `bench-results/pipeline.txt`.
//!
//! `PERISCOPE_BENCH_CHAIN=dns,flow` runs only those processors of the chain (in its order).
//!
//! Reproduce: `cargo run --release -p periscope-bench --bin bench-pipeline -- [EVENTS] [FLOWS]`

mod measure;
mod mix;
mod runs;

use std::io::Write;

use measure::Measure;

fn synthetic_yaml(events: u64, flows: u64) -> String {
    format!("{{count: {events}, flows: {flows}, rate: 0}}")
}

fn mix_yaml(events: u64) -> String {
    format!("{{count: {events}}}")
}

/// A metrics pipeline from `receiver` through `processors` (each `name: config`) to a file.
fn config(receiver: &str, processors: &[(&str, &str)], out: &std::path::Path) -> String {
    let defs: String = processors
        .iter()
        .map(|(name, c)| format!("  {name}: {c}\n"))
        .collect();
    let names: Vec<&str> = processors.iter().map(|(name, _)| *name).collect();
    let (kind, _) = receiver.split_once(':').unwrap_or((receiver, ""));
    format!(
        "receivers:\n  {receiver}\nprocessors:\n{defs}exporters:\n  file: {{path: {}}}\nservice:\n  pipelines:\n    metrics: {{receivers: [{kind}], processors: [{}], exporters: [file]}}\n  telemetry: {{metrics: {{enabled: false}}, logs: {{level: warn}}}}\n",
        out.display(),
        names.join(", "),
    )
}

/// The whole chain, each processor with its defaults (flow's 10s interval as in the configs).
const CHAIN: [(&str, &str); 6] = [
    ("dns", "{}"),
    ("latency", "{}"),
    ("connections", "{}"),
    ("burst", "{}"),
    ("flow", "{interval: 10s}"),
    ("identity", "{}"),
];

/// A metric of each processor that turns events into telemetry: the full chain's output holds
/// them all.
const CHAIN_METRICS: [&str; 5] = [
    "dns.lookup.duration",
    "periscope.tcp.connect.duration",
    "periscope.tcp.connections",
    "periscope.burst.count",
    "periscope.network.packets",
];

fn ratio(pipe: &Measure, bare: &Measure) -> String {
    format!(
        "{:.3} (wall), {:.3} (per CPU-s)",
        pipe.per_sec() / bare.per_sec(),
        pipe.per_cpu_sec() / bare.per_cpu_sec()
    )
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
    runs::bare(
        "synthetic",
        &synthetic_yaml(events / 10, flows),
        events / 10,
    )?;
    eprintln!("bench-pipeline: bare channel…");
    let bare = runs::bare("synthetic", &synthetic_yaml(events, flows), events)?;
    eprintln!("bench-pipeline: synthetic → flow → file…");
    let synthetic = format!("synthetic: {}", synthetic_yaml(events, flows));
    let flow_only = config(&synthetic, &[("flow", "{interval: 1h}")], &out);
    let pipe = runs::pipeline(&flow_only, "flow", events)?;
    eprintln!("bench-pipeline: bare channel, mix…");
    let bare_mix = runs::bare("bench_mix", &mix_yaml(events), events)?;
    eprintln!(
        "bench-pipeline: mix → dns → latency → connections → burst → flow → identity → file…"
    );
    let mix = format!("bench_mix: {}", mix_yaml(events));
    // PERISCOPE_BENCH_CHAIN=latency,flow runs a part of the chain (to find what costs).
    let part = std::env::var("PERISCOPE_BENCH_CHAIN").ok();
    let chain_processors: Vec<(&str, &str)> = match &part {
        Some(names) => CHAIN
            .into_iter()
            .filter(|(n, _)| names.split(',').any(|p| p == *n))
            .collect(),
        None => CHAIN.to_vec(),
    };
    let first = chain_processors.first().map_or("flow", |(n, _)| *n);
    let chain_out = out.with_extension("chain.jsonl");
    let chain = runs::pipeline(&config(&mix, &chain_processors, &chain_out), first, events);
    let checked = chain.and_then(|c| match &part {
        None => runs::check_output(&chain_out, &CHAIN_METRICS).map(|()| c),
        Some(_) => Ok(c),
    });
    let _ = std::fs::remove_file(&chain_out);
    let chain = checked?;
    let _ = std::fs::remove_file(&out);

    let batch_allocations = 1.0 / periscope_pipeline::model::EventBatch::DEFAULT_CAPACITY as f64;
    let report = format!(
        "bench-pipeline  events={events} flows={flows} cores={}\n\
         {}{}ratio pipeline/bare: {}\n\
         {}\n\
         {}{}ratio chain/bare mix: {}\n\
         allocations/event beyond the receivers' batches (one per 1024 events): synthetic→flow {:.5}, chain {:.5} (per series and per emit, not per event)\n\
         (CPU-s is the whole process: receiver, pipeline and exporter threads)\n\
         reproduce: cargo run --release -p periscope-bench --bin bench-pipeline -- {events} {flows}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        bare.line("bare channel"),
        pipe.line("synthetic→flow"),
        ratio(&pipe, &bare),
        mix::composition(),
        bare_mix.line("bare mix"),
        chain.line(if part.is_some() { "part of chain" } else { "full chain" }),
        ratio(&chain, &bare_mix),
        pipe.allocations_per_event() - batch_allocations,
        chain.allocations_per_event() - batch_allocations,
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
