//! Receivers built and run in the test's own process: on a thread of their own, into a test
//! output whose batches the test collects.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use periscope_pipeline::component::{Receiver, ReceiverConfig};

use crate::component::context;
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{Event, PacketEvent, Payload};
use periscope_pipeline::telemetry::ComponentCounters;

/// What an offline receiver's run produced.
pub struct Run {
    pub events: Vec<PacketEvent>,
    pub batches: usize,
    pub result: anyhow::Result<()>,
    pub devices: DeviceTable,
    pub elapsed: Duration,
    pub counters: Arc<ComponentCounters>,
}

/// Builds and runs `config` until it ends (or `stop` is raised), collecting every event; for
/// receivers that send packet events only (pcap, synthetic). A build error is returned as is.
pub fn run<C: ReceiverConfig>(config: &C, stop: StopSignal) -> anyhow::Result<Run> {
    let ctx = context(C::TYPE);
    let receiver = config.build(&ctx)?;
    let (mut output, rx, counters) = EventOutput::for_test(64);
    let started = Instant::now();
    let thread = std::thread::spawn(move || receiver.run(&mut output, &stop));
    let mut events = Vec::new();
    let mut batches = 0;
    // The channel closes when the receiver's output is dropped at the end of its thread.
    for payload in rx.iter() {
        match payload {
            Payload::Events(b) => {
                batches += 1;
                events.extend(b.events.into_iter().map(|e| match e {
                    Event::Packet(p) => p,
                    other => panic!("offline receivers send only packet events, got {other:?}"),
                }));
            }
            Payload::Telemetry(_) | Payload::Shared(_) => panic!("a receiver sent telemetry"),
        }
    }
    let result = thread.join().expect("receiver thread panicked");
    Ok(Run {
        events,
        batches,
        result,
        devices: ctx.devices,
        elapsed: started.elapsed(),
        counters,
    })
}

/// Runs a built receiver to its end into a bare channel and counts the events it sent: for
/// throughput measurements. Panics if it fails.
pub fn count_events(receiver: Box<dyn Receiver>) -> (usize, Duration) {
    let (mut output, rx, _) = EventOutput::for_test(64);
    let started = Instant::now();
    let thread = std::thread::spawn(move || receiver.run(&mut output, &StopSignal::default()));
    let mut n = 0usize;
    for p in rx.iter() {
        if let Payload::Events(b) = p {
            n += b.len();
        }
    }
    thread.join().expect("join").expect("run");
    (n, started.elapsed())
}

/// A built receiver running on its thread until [`Running::stop`]; a thread of the test
/// collects every event it sends meanwhile.
pub struct Running {
    stop: StopSignal,
    counters: Arc<ComponentCounters>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    collector: Option<JoinHandle<Vec<Event>>>,
}

impl Running {
    /// Starts `receiver` with an output of `capacity` batches.
    pub fn start(receiver: Box<dyn Receiver>, capacity: usize) -> Running {
        let (mut output, events, counters) = EventOutput::for_test(capacity);
        let stop = StopSignal::default();
        let s = stop.clone();
        let thread = std::thread::spawn(move || receiver.run(&mut output, &s));
        let collector = std::thread::spawn(move || {
            let mut all = Vec::new();
            for p in events.iter() {
                if let Payload::Events(b) = p {
                    all.extend(b.events);
                }
            }
            all
        });
        Running {
            stop,
            counters,
            thread: Some(thread),
            collector: Some(collector),
        }
    }

    /// The receiver's counters (sent, dropped, errors).
    pub fn counters(&self) -> &Arc<ComponentCounters> {
        &self.counters
    }

    /// Stops the receiver; panics if it failed; returns every event it sent.
    pub fn stop(mut self) -> Vec<Event> {
        self.stop.raise();
        let r = self
            .thread
            .take()
            .expect("thread")
            .join()
            .expect("receiver panicked");
        r.unwrap_or_else(|e| panic!("receiver failed: {e:#}"));
        self.collector
            .take()
            .expect("collector")
            .join()
            .expect("collector panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.raise();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The error and every cause, one per line: aya's load errors carry the verifier log in a
/// source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}
