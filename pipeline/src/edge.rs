//! Edges: bounded crossbeam channels carrying batches, with an explicit policy when full, and
//! the stop signal receivers watch. Components send into edges and the topology wires them,
//! so this module sits below both: it imports neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use serde::Deserialize;

use crate::model::{EventBatch, Payload};
use crate::telemetry::ComponentCounters;

/// What an edge does when its queue is full.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: backpressure reaches the sender (a kernel receiver then loses records
    /// in its ring buffer, where the kernel side counts them).
    #[default]
    Block,
    /// Drop the batch being sent and count its items as dropped by the sender.
    DropNewest,
}

impl WhenFull {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropNewest => "drop_newest",
        }
    }
}

/// The sending end of one edge. Items it cannot deliver are counted as dropped by the sender.
#[derive(Clone, Debug)]
pub struct EdgeSender {
    tx: Sender<Payload>,
    when_full: WhenFull,
    counters: Arc<ComponentCounters>,
}

impl EdgeSender {
    /// An edge into `tx` that follows `when_full` and counts drops on `counters` (the sender's).
    pub fn new(tx: Sender<Payload>, when_full: WhenFull, counters: Arc<ComponentCounters>) -> Self {
        EdgeSender {
            tx,
            when_full,
            counters,
        }
    }

    /// Sends one payload; returns false (and counts the drop) if it could not be delivered.
    pub fn send(&self, payload: Payload) -> bool {
        let n = payload.item_count() as u64;
        let delivered = match self.when_full {
            WhenFull::Block => self.tx.send(payload).is_ok(),
            WhenFull::DropNewest => match self.tx.try_send(payload) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
        };
        if !delivered {
            self.counters.add_dropped(n);
        }
        delivered
    }
}

/// A bounded edge: the sending half and the receiving half.
pub fn bounded(capacity: usize) -> (Sender<Payload>, Receiver<Payload>) {
    crossbeam_channel::bounded(capacity.max(1))
}

/// Raised when the agent shuts down; receivers check it between batches.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    raised: AtomicBool,
    /// Sleepers wait on this, so that an idle receiver wakes only when its time comes or
    /// the signal is raised (not every few ms to look).
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

impl StopSignal {
    /// Asks every receiver holding a clone to stop.
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::Release);
        let _guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.0.wake.notify_all();
    }

    /// Whether [`StopSignal::raise`] was called.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`, waking at once when the signal is raised. Returns true if it was
    /// raised.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        let mut guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_raised() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.0.wake.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// A receiver's output: fans each batch out to every pipeline that lists the receiver.
#[derive(Debug)]
pub struct EventOutput {
    edges: Vec<EdgeSender>,
    counters: Arc<ComponentCounters>,
    batch_capacity: usize,
}

impl EventOutput {
    /// An output over `edges` (one per pipeline), counting on the receiver's `counters`, whose
    /// batches hold up to `batch_capacity` events.
    pub fn new(
        edges: Vec<EdgeSender>,
        counters: Arc<ComponentCounters>,
        batch_capacity: usize,
    ) -> Self {
        EventOutput {
            edges,
            counters,
            batch_capacity,
        }
    }

    /// An output into one unbounded-enough channel, for tests of a single receiver.
    pub fn for_test(capacity: usize) -> (Self, Receiver<Payload>, Arc<ComponentCounters>) {
        let (tx, rx) = bounded(capacity);
        let counters = Arc::new(ComponentCounters::default());
        let edge = EdgeSender::new(tx, WhenFull::Block, counters.clone());
        (
            EventOutput::new(vec![edge], counters.clone(), EventBatch::DEFAULT_CAPACITY),
            rx,
            counters,
        )
    }

    /// An empty batch of the configured capacity.
    pub fn new_batch(&self) -> EventBatch {
        EventBatch::with_capacity(self.batch_capacity)
    }

    /// Sends a batch to every pipeline (counted once as sent; drops counted per edge).
    pub fn send(&mut self, batch: EventBatch) {
        if batch.is_empty() {
            return;
        }
        self.counters.add_sent(batch.len() as u64);
        if let Some((last, rest)) = self.edges.split_last() {
            for edge in rest {
                edge.send(Payload::Events(batch.clone()));
            }
            last.send(Payload::Events(batch));
        }
    }

    /// The receiver's counters (for errors and drops it sees itself).
    pub fn counters(&self) -> &Arc<ComponentCounters> {
        &self.counters
    }
}
