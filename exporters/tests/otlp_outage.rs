//! The backend goes down for 30 s while telemetry keeps coming, then comes back: the `otlp`
//! exporter neither crashes nor grows (its queue never holds more than `queue_size` batches,
//! resident memory stays flat), every item is either delivered or counted as dropped, and
//! what is produced after the recovery arrives.

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use periscope_exporters::otlp::{OtlpConfig, Protocol};
use periscope_pipeline::component::{ComponentConfig, Exporter};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};
use periscope_pipeline::model::{KeyValue, Telemetry};

use periscope_testkit::context;
use periscope_testkit::otlp::sink::{free_port, point_count, Sink};
use periscope_testkit::process::rss_kib;
use periscope_testkit::telemetry;

const QUEUE: usize = 8;
const OUTAGE: Duration = Duration::from_secs(30);

fn batch(phase: &'static str, seq: i64) -> Telemetry {
    let mut m = telemetry::metrics();
    m.resource.attributes.push(KeyValue::new("phase", phase));
    m.resource.attributes.push(KeyValue::new("seq", seq));
    Telemetry::Metrics(m)
}

/// Items handed to the exporter, and those it refused (which the framework counts as dropped).
#[derive(Clone, Copy, Default)]
struct Tally {
    produced: u64,
    refused: u64,
}

impl Tally {
    fn send(&mut self, exporter: &mut dyn Exporter, t: Telemetry) {
        let n = t.item_count() as u64;
        self.produced += n;
        if exporter.export(t).is_err() {
            self.refused += n;
        }
    }
}

#[test]
fn backend_down_for_30s_then_up() {
    let port = free_port();
    let sink = Sink::start(port);
    let received = sink.received.clone();

    let mut config = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        protocol: Protocol::Grpc,
        ..OtlpConfig::default()
    };
    config.sending_queue.queue_size = NonZeroUsize::new(QUEUE).expect("a queue");
    config.batch.timeout = ConfigDuration::from_millis(0);
    config.timeout = PositiveDuration::from_secs(2);
    config.retry_on_failure.initial_interval = ConfigDuration::from_millis(100);
    config.retry_on_failure.max_interval = ConfigDuration::from_millis(500);
    config.retry_on_failure.max_elapsed_time = ConfigDuration::from_secs(3);
    config.validate().expect("valid");
    let ctx = context("otlp/outage");
    let mut exporter = config.build_exporter(&ctx).expect("builds");
    let stats = exporter.stats();

    // What a pipeline does: hand over batches, count refusals as dropped.
    let mut tally = Tally::default();
    for i in 0..5 {
        tally.send(&mut exporter, batch("before", i));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sink.wait_for(Duration::from_secs(10), |r| r
            .points_with_resource("phase", "before")
            == 30),
        "the first batches did not arrive"
    );

    sink.stop();
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < OUTAGE {
        tally.send(&mut exporter, batch("outage", seq));
        seq += 1;
        assert!(
            stats.queue_len.load(Ordering::Relaxed) <= QUEUE,
            "the queue grew past its size"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_during = rss_kib();
    let peak = stats.queue_peak.load(Ordering::Relaxed);

    // Back up. The queue is still full of outage batches at first, so the first "after"
    // batches may be refused too; keep producing as a pipeline would.
    let sink = Sink::start_with(port, received);
    let before_recovery = tally;
    for i in 0..30 {
        tally.send(&mut exporter, batch("after", i));
        std::thread::sleep(Duration::from_millis(100));
    }
    let Tally { produced, refused } = tally;
    let after_accepted =
        (produced - before_recovery.produced) - (refused - before_recovery.refused);
    let recovered = after_accepted >= 60
        && sink.wait_for(Duration::from_secs(15), |r| {
            r.points_with_resource("phase", "after") as u64 == after_accepted
        });
    exporter.flush().expect("flush");

    let r = sink.received.lock().unwrap();
    let delivered: u64 = r
        .all_metrics()
        .iter()
        .map(|(_, m)| point_count(m) as u64)
        .sum();
    let dropped_later = ctx.counters.values().dropped;
    let (enqueued, full, ok, failed, rejected) = stats.totals();
    eprintln!(
        "outage: produced {produced} points in {seq} outage batches + 35 others; delivered \
         {delivered}; refused by the full queue {refused}; dropped after retries {failed}; \
         queue peak {peak}/{QUEUE}; requests {}; retries {}; RSS {rss_before} → {rss_during} KiB",
        stats.requests.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
    );
    assert!(
        recovered,
        "data produced after the recovery did not arrive: {after_accepted} points accepted, {} \
         arrived",
        r.points_with_resource("phase", "after")
    );
    assert!(peak <= QUEUE, "queue peak {peak} > {QUEUE}");
    assert!(
        rss_during.saturating_sub(rss_before) < 32 * 1024,
        "memory grew by {} KiB during the outage",
        rss_during - rss_before
    );
    // Every item is accounted for: delivered, refused by the full queue (the framework counts
    // an export error as dropped), or dropped by the exporter after retrying.
    assert_eq!(delivered + refused + dropped_later, produced);
    assert_eq!(
        (ok, failed, full, rejected),
        (delivered, dropped_later, refused, 0)
    );
    assert_eq!(enqueued, produced - refused);
    assert!(
        refused > 0 && failed > 0,
        "an outage this long must drop something"
    );
    assert!(
        ctx.counters.values().errors > 0,
        "failed requests count as errors"
    );
}

/// At shutdown `flush` waits for the queue to drain, but no longer than `timeout`: with the
/// backend gone and retries set to go on forever, it returns in time and counts what is left.
#[test]
fn flush_is_bounded_when_the_backend_is_gone() {
    let port = free_port();
    let mut config = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..OtlpConfig::default()
    };
    config.timeout = PositiveDuration::from_secs(1);
    config.batch.timeout = ConfigDuration::from_millis(0);
    config.retry_on_failure.initial_interval = ConfigDuration::from_millis(200);
    config.retry_on_failure.max_interval = ConfigDuration::from_millis(400);
    config.retry_on_failure.max_elapsed_time = ConfigDuration::from_secs(0);
    let ctx = context("otlp/gone");
    let mut exporter = config.build_exporter(&ctx).expect("builds");
    for i in 0..3 {
        exporter.export(batch("gone", i)).expect("queued");
    }
    let started = Instant::now();
    let _ = exporter.flush();
    let took = started.elapsed();
    drop(exporter);
    let total = started.elapsed();
    assert!(took < Duration::from_millis(2500), "flush took {took:?}");
    assert!(
        total < Duration::from_secs(4),
        "flush and drop took {total:?}"
    );
    assert_eq!(
        ctx.counters.values().dropped,
        18,
        "every queued item counted as dropped"
    );
}
