//! The running agent: receivers → (per pipeline) processors → exporters, connected by bounded
//! edges. Components start downstream-first (exporters, pipelines, receivers) and stop
//! upstream-first: receivers stop, their edges close, each pipeline drains and flushes, then
//! each exporter drains and flushes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};

use crate::component::{
    BuildContext, ComponentId, Emitter, Exporter, Processor, Receiver as EventReceiver,
};
use crate::config::Config;
use crate::devices::DeviceTable;
use crate::edge::{bounded, EdgeSender, EventOutput, StopSignal, WhenFull};
use crate::model::{Payload, Resource, Signal, Telemetry};
use crate::telemetry::{agent_resource, ComponentCounters, SelfTelemetry};

/// Everything built and ready to start.
pub struct Topology {
    receivers: Vec<BuiltReceiver>,
    pipelines: Vec<BuiltPipeline>,
    exporters: Vec<BuiltExporter>,
    telemetry: SelfTelemetry,
    self_metrics: Option<(Duration, Vec<String>)>,
    shutdown_timeout: Duration,
    all_finite: bool,
    resource: Resource,
}

struct BuiltReceiver {
    id: ComponentId,
    receiver: Box<dyn EventReceiver>,
    counters: Arc<ComponentCounters>,
    /// (pipeline index, policy)
    targets: Vec<(usize, WhenFull)>,
}

struct BuiltPipeline {
    id: ComponentId,
    signal: Signal,
    processors: Vec<(Box<dyn Processor>, Arc<ComponentCounters>)>,
    counters: Arc<ComponentCounters>,
    input_capacity: usize,
    /// (exporter index, policy)
    exporters: Vec<(usize, WhenFull)>,
}

struct BuiltExporter {
    id: ComponentId,
    exporter: Box<dyn Exporter>,
    counters: Arc<ComponentCounters>,
    capacity: usize,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Components that failed, with their error.
    pub failures: Vec<(String, String)>,
    /// Components that had not finished when the shutdown deadline passed.
    pub unfinished: Vec<String>,
}

impl RunReport {
    pub fn is_success(&self) -> bool {
        self.failures.is_empty() && self.unfinished.is_empty()
    }
}

/// Components that could not be built, one message each (`receiver `pcap`: cannot open ...`).
#[derive(Debug)]
pub struct BuildErrors(pub Vec<String>);

impl std::fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for BuildErrors {}

/// Builds every component of `config` (the side-effect phase). Nothing runs yet.
pub fn build(config: &Config, devices: &DeviceTable) -> anyhow::Result<Topology> {
    let sockets = crate::sockets::SocketTable::default();
    let dns = crate::dns::DnsTable::default();
    let namespaces = crate::devices::NamespaceTable::default();
    let telemetry = SelfTelemetry::default();
    let mut errors = Vec::new();
    // Every component shares the tables; each has its own id and counters.
    let context = |id: &ComponentId, counters: &Arc<ComponentCounters>| BuildContext {
        id: id.clone(),
        devices: devices.clone(),
        namespaces: namespaces.clone(),
        sockets: sockets.clone(),
        dns: dns.clone(),
        counters: counters.clone(),
        signal: None,
    };

    let mut exporters = Vec::new();
    let mut exporter_index = BTreeMap::new();
    let self_metrics_targets = config
        .telemetry
        .metrics
        .exporters
        .clone()
        .unwrap_or_default();
    for c in &config.exporters {
        let in_pipeline = config.pipelines.iter().any(|p| p.exporters.contains(&c.id));
        if !in_pipeline && !self_metrics_targets.contains(&c.id.to_string()) {
            continue;
        }
        let counters = telemetry.register("exporter", &c.id.to_string(), None);
        let ctx = context(&c.id, &counters);
        let capacity = config
            .pipelines
            .iter()
            .filter(|p| p.exporters.contains(&c.id))
            .map(|p| p.edges.output.capacity.get())
            .max()
            .unwrap_or(64);
        match c.config.build(&ctx) {
            Ok(exporter) => {
                exporter_index.insert(c.id.clone(), exporters.len());
                exporters.push(BuiltExporter {
                    id: c.id.clone(),
                    exporter,
                    counters,
                    capacity,
                });
            }
            Err(e) => errors.push(format!("exporter `{}`: {e:#}", c.id)),
        }
    }

    let mut pipelines = Vec::new();
    for p in &config.pipelines {
        let mut processors = Vec::new();
        for pid in &p.processors {
            let Some(c) = config.processors.iter().find(|c| &c.id == pid) else {
                continue;
            };
            let counters =
                telemetry.register("processor", &pid.to_string(), Some(&p.id.to_string()));
            let ctx = BuildContext {
                signal: Some(p.signal),
                ..context(pid, &counters)
            };
            match c.config.build(&ctx) {
                Ok(proc_) => processors.push((proc_, counters)),
                Err(e) => errors.push(format!("processor `{pid}` in pipeline `{}`: {e:#}", p.id)),
            }
        }
        pipelines.push(BuiltPipeline {
            id: p.id.clone(),
            signal: p.signal,
            processors,
            counters: telemetry.register("pipeline", &p.id.to_string(), None),
            input_capacity: p.edges.input.capacity.get(),
            exporters: p
                .exporters
                .iter()
                .filter_map(|e| {
                    exporter_index
                        .get(e)
                        .map(|i| (*i, p.edges.output.when_full))
                })
                .collect(),
        });
    }

    let mut receivers = Vec::new();
    let mut all_finite = true;
    for c in &config.receivers {
        let targets: Vec<(usize, WhenFull)> = config
            .pipelines
            .iter()
            .enumerate()
            .filter(|(_, p)| p.receivers.contains(&c.id))
            .map(|(i, p)| (i, p.edges.input.when_full))
            .collect();
        if targets.is_empty() {
            continue;
        }
        all_finite &= c.config.is_finite();
        let counters = telemetry.register("receiver", &c.id.to_string(), None);
        let ctx = context(&c.id, &counters);
        match c.config.build(&ctx) {
            Ok(receiver) => receivers.push(BuiltReceiver {
                id: c.id.clone(),
                receiver,
                counters,
                targets,
            }),
            Err(e) => errors.push(format!("receiver `{}`: {e:#}", c.id)),
        }
    }

    if !errors.is_empty() {
        return Err(BuildErrors(errors).into());
    }

    let self_metrics = config.telemetry.metrics.enabled.then(|| {
        let targets = match &config.telemetry.metrics.exporters {
            Some(list) => list.clone(),
            None => config
                .pipelines
                .iter()
                .filter(|p| p.signal == Signal::Metrics)
                .flat_map(|p| p.exporters.iter().map(ToString::to_string))
                .collect(),
        };
        (config.telemetry.metrics.interval.get(), targets)
    });

    Ok(Topology {
        receivers,
        pipelines,
        exporters,
        telemetry,
        self_metrics,
        shutdown_timeout: config.shutdown_timeout.0,
        all_finite,
        resource: agent_resource(),
    })
}

struct Running {
    name: String,
    handle: JoinHandle<anyhow::Result<()>>,
}

fn spawn(
    name: String,
    f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<Running> {
    // Linux thread names hold 15 bytes: keep the id, drop the kind and quotes.
    let thread_name: String = name
        .split_once(' ')
        .map_or(name.as_str(), |(_, id)| id)
        .trim_matches('`')
        .chars()
        .take(15)
        .collect();
    let handle = std::thread::Builder::new()
        .name(thread_name)
        .spawn(f)
        .with_context(|| format!("cannot start a thread for {name}"))?;
    Ok(Running { name, handle })
}

impl Topology {
    /// The agent's counters (shared with the running components).
    pub fn self_telemetry(&self) -> SelfTelemetry {
        self.telemetry.clone()
    }

    /// True when every receiver ends by itself: the run then exits when they are done.
    pub fn is_finite(&self) -> bool {
        self.all_finite
    }

    /// Starts everything and runs until every receiver has ended or `shutdown` fires
    /// (SIGINT/SIGTERM), then drains and flushes within the shutdown timeout.
    pub fn run(self, shutdown: Receiver<()>) -> anyhow::Result<RunReport> {
        let mut report = RunReport::default();
        let Topology {
            receivers,
            pipelines,
            exporters,
            telemetry,
            self_metrics,
            shutdown_timeout,
            all_finite: _,
            resource,
        } = self;

        // Exporters first.
        let mut exporter_tx: Vec<(String, Sender<Payload>)> = Vec::new();
        let mut exporter_threads = Vec::new();
        for e in exporters {
            let (tx, rx) = bounded(e.capacity);
            exporter_tx.push((e.id.to_string(), tx));
            let name = format!("exporter `{}`", e.id);
            exporter_threads.push(spawn(name, move || {
                run_exporter(e.exporter, rx, e.counters)
            })?);
        }

        // Then pipelines.
        let mut pipeline_tx = Vec::new();
        let mut pipeline_threads = Vec::new();
        for p in pipelines {
            let (tx, rx) = bounded(p.input_capacity);
            pipeline_tx.push(tx);
            let outputs: Vec<EdgeSender> = p
                .exporters
                .iter()
                .map(|(i, policy)| {
                    EdgeSender::new(exporter_tx[*i].1.clone(), *policy, p.counters.clone())
                })
                .collect();
            let name = format!("pipeline `{}`", p.id);
            let resource = resource.clone();
            pipeline_threads.push(spawn(name, move || {
                run_pipeline(
                    p.id,
                    p.signal,
                    p.processors,
                    rx,
                    outputs,
                    p.counters,
                    resource,
                );
                Ok(())
            })?);
        }

        // The agent's own metrics.
        let (self_stop_tx, self_stop_rx) = crossbeam_channel::bounded::<()>(1);
        let mut self_thread = None;
        if let Some((interval, targets)) = self_metrics {
            let counters = telemetry.register("pipeline", "service.telemetry", None);
            let edges: Vec<EdgeSender> = exporter_tx
                .iter()
                .filter(|(id, _)| targets.contains(id))
                .map(|(_, tx)| EdgeSender::new(tx.clone(), WhenFull::DropNewest, counters.clone()))
                .collect();
            let counters = counters.clone();
            let telemetry = telemetry.clone();
            let resource = resource.clone();
            self_thread = Some(spawn("service.telemetry".into(), move || {
                run_self_metrics(interval, telemetry, edges, self_stop_rx, resource, counters);
                Ok(())
            })?);
        }
        drop(exporter_tx);

        // Receivers last.
        let stop = StopSignal::default();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
        let mut receiver_threads = Vec::new();
        for r in receivers {
            let edges = r
                .targets
                .iter()
                .map(|(i, policy)| {
                    EdgeSender::new(pipeline_tx[*i].clone(), *policy, r.counters.clone())
                })
                .collect();
            let mut output = EventOutput::new(
                edges,
                r.counters.clone(),
                crate::model::EventBatch::DEFAULT_CAPACITY,
            );
            let stop = stop.clone();
            let done = done_tx.clone();
            let counters = r.counters.clone();
            let receiver = r.receiver;
            receiver_threads.push(spawn(format!("receiver `{}`", r.id), move || {
                let result = receiver.run(&mut output, &stop);
                if result.is_err() {
                    counters.add_errors(1);
                }
                drop(output);
                let _ = done.send(());
                result
            })?);
        }
        drop(pipeline_tx);
        drop(done_tx);
        tracing::info!(
            receivers = receiver_threads.len(),
            pipelines = pipeline_threads.len(),
            exporters = exporter_threads.len(),
            "periscope is running"
        );

        // Wait for every receiver to end, or for a signal.
        let mut remaining = receiver_threads.len();
        let mut deadline: Option<Instant> = None;
        while remaining > 0 {
            select! {
                recv(done_rx) -> msg => match msg {
                    Ok(()) => remaining -= 1,
                    Err(_) => break,
                },
                recv(shutdown) -> _ => {
                    tracing::info!(timeout = ?shutdown_timeout, "shutting down: stopping receivers, then draining");
                    deadline = Some(Instant::now() + shutdown_timeout);
                    break;
                }
            }
        }
        stop.raise();

        let join_all = |threads: Vec<Running>, report: &mut RunReport| {
            for t in threads {
                if let Some(d) = deadline {
                    while !t.handle.is_finished() && Instant::now() < d {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if !t.handle.is_finished() {
                        report.unfinished.push(t.name);
                        continue;
                    }
                }
                match t.handle.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => report.failures.push((t.name, format!("{e:#}"))),
                    Err(_) => report.failures.push((t.name, "panicked".into())),
                }
            }
        };
        join_all(receiver_threads, &mut report);
        join_all(pipeline_threads, &mut report);
        drop(self_stop_tx);
        join_all(self_thread.into_iter().collect(), &mut report);
        join_all(exporter_threads, &mut report);
        Ok(report)
    }
}

fn run_exporter(
    mut exporter: Box<dyn Exporter>,
    rx: Receiver<Payload>,
    counters: Arc<ComponentCounters>,
) -> anyhow::Result<()> {
    for payload in rx {
        let n = payload.item_count() as u64;
        counters.add_received(n);
        let exported = match payload {
            Payload::Telemetry(t) => exporter.export(t),
            Payload::Shared(t) => exporter.export_shared(t),
            Payload::Events(_) => {
                counters.add_dropped(n);
                continue;
            }
        };
        match exported {
            Ok(()) => counters.add_sent(n),
            Err(e) => {
                counters.add_dropped(n);
                counters.add_errors(1);
                tracing::warn!(error = %format!("{e:#}"), items = n, "export failed; items dropped");
            }
        }
    }
    exporter.flush().inspect_err(|_| counters.add_errors(1))
}

struct Chain {
    processors: Vec<(Box<dyn Processor>, Arc<ComponentCounters>)>,
    /// Two buffers that pass payloads between processors, and the one the next input goes
    /// in (given back emptied after delivery): no allocation per batch.
    scratch: Vec<Payload>,
    spare: Vec<Payload>,
}

impl Chain {
    /// Runs `input` through processors `from..` and returns what comes out of the last one.
    fn run(&mut self, from: usize, mut current: Vec<Payload>) -> Vec<Payload> {
        for (p, counters) in self.processors.iter_mut().skip(from) {
            let mut emitter = Emitter {
                out: std::mem::take(&mut self.scratch),
            };
            for payload in current.drain(..) {
                counters.add_received(payload.item_count() as u64);
                p.process(payload, &mut emitter);
            }
            counters.add_sent(emitter.out.iter().map(|p| p.item_count() as u64).sum());
            self.scratch = current;
            current = emitter.out;
        }
        current
    }
}

fn run_pipeline(
    id: ComponentId,
    signal: Signal,
    processors: Vec<(Box<dyn Processor>, Arc<ComponentCounters>)>,
    rx: Receiver<Payload>,
    outputs: Vec<EdgeSender>,
    counters: Arc<ComponentCounters>,
    resource: Resource,
) {
    let mut chain = Chain {
        processors,
        scratch: Vec::new(),
        spare: Vec::new(),
    };
    let mut warned = false;
    let mut deliver = |payloads: &mut Vec<Payload>| {
        for payload in payloads.drain(..) {
            let n = payload.item_count() as u64;
            match payload {
                Payload::Telemetry(mut t) if t.signal() == signal => {
                    match &mut t {
                        Telemetry::Metrics(m) if m.resource.attributes.is_empty() => {
                            m.resource = resource.clone()
                        }
                        Telemetry::Traces(s) if s.resource.attributes.is_empty() => {
                            s.resource = resource.clone()
                        }
                        _ => {}
                    }
                    counters.add_sent(n);
                    // Several exporters share one copy.
                    if let [only] = outputs.as_slice() {
                        only.send(Payload::Telemetry(t));
                    } else {
                        let shared = Arc::new(t);
                        for o in &outputs {
                            o.send(Payload::Shared(shared.clone()));
                        }
                    }
                }
                // Telemetry of the other signal belongs to another pipeline: not a loss.
                Payload::Telemetry(_) | Payload::Shared(_) => {}
                Payload::Events(_) => {
                    counters.add_dropped(n);
                    if !warned {
                        warned = true;
                        tracing::warn!(pipeline = %id, "events reach the end of the pipeline without a processor turning them into telemetry (add e.g. `flow`); they are counted as dropped");
                    }
                }
            }
        }
    };
    loop {
        let next_tick = chain
            .processors
            .iter()
            .filter_map(|(p, _)| p.next_tick())
            .min();
        let received = match next_tick {
            Some(t) => rx.recv_deadline(t),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(payload) => {
                counters.add_received(payload.item_count() as u64);
                let mut input = std::mem::take(&mut chain.spare);
                input.push(payload);
                let mut out = chain.run(0, input);
                deliver(&mut out);
                chain.spare = out;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        for i in 0..chain.processors.len() {
            if chain.processors[i].0.next_tick().is_some_and(|t| t <= now) {
                let mut emitter = Emitter::default();
                chain.processors[i].0.tick(now, &mut emitter);
                chain.processors[i]
                    .1
                    .add_sent(emitter.out.iter().map(|p| p.item_count() as u64).sum());
                let mut out = chain.run(i + 1, emitter.out);
                deliver(&mut out);
            }
        }
    }
    // Input closed: flush each processor in order, passing its output through the rest.
    for i in 0..chain.processors.len() {
        let mut emitter = Emitter::default();
        chain.processors[i].0.flush(&mut emitter);
        chain.processors[i]
            .1
            .add_sent(emitter.out.iter().map(|p| p.item_count() as u64).sum());
        let mut out = chain.run(i + 1, emitter.out);
        deliver(&mut out);
    }
}

fn run_self_metrics(
    interval: Duration,
    telemetry: SelfTelemetry,
    edges: Vec<EdgeSender>,
    stop: Receiver<()>,
    resource: Resource,
    counters: Arc<ComponentCounters>,
) {
    let send = || {
        let mut batch = telemetry.metrics();
        batch.resource = resource.clone();
        let payload = Payload::Telemetry(Telemetry::Metrics(batch));
        let n = payload.item_count() as u64;
        for e in &edges {
            if e.send(payload.clone()) {
                counters.add_sent(n);
            }
        }
    };
    let mut next = Instant::now() + interval;
    // Until the stop sender is dropped (pipelines are done), then a final snapshot below.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_deadline(next) {
        send();
        next += interval;
    }
    send();
}
