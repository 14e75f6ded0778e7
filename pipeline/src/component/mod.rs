//! Components: receivers make events, processors turn events into events or telemetry,
//! exporters ship telemetry. Each goes through three phases:
//!
//! 1. `validate` — pure checks of the typed config (what `periscope validate` runs);
//! 2. `build` — side effects: open files and sockets, load programs; may fail;
//! 3. start — the topology runs the built component on a dedicated thread.

mod hook;
mod id;
pub mod registry;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;

pub use hook::Hook;
pub use id::{ComponentId, Kind};
pub use registry::{ComponentType, Registry};

use crate::devices::{DeviceTable, NamespaceTable};
use crate::dns::DnsTable;
use crate::edge::{EventOutput, StopSignal};
use crate::model::{EventBatch, Payload, Signal, Telemetry};
use crate::sockets::SocketTable;
use crate::telemetry::ComponentCounters;

/// A problem found by a config's `validate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    /// Dotted path of the offending option, relative to the component (`interval`), or empty
    /// for the component as a whole.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl Invalid {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// What a `validate` returns: `Ok` when nothing was found, else everything that was.
    pub fn all(errors: Vec<Invalid>) -> Result<(), Vec<Invalid>> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// What every component config is: a typed, documented struct read from YAML.
///
/// Implementors derive `Deserialize` with `#[serde(deny_unknown_fields)]` and `JsonSchema`
/// (whose doc comments become `periscope components` output), and `Default` when every option
/// has a default.
pub trait ComponentConfig:
    DeserializeOwned + schemars::JsonSchema + Debug + Send + Sync + 'static
{
    /// The type name used in ids (`pcap`).
    const TYPE: &'static str;

    /// Pure checks beyond what the types enforce: no I/O, no side effects.
    fn validate(&self) -> Result<(), Vec<Invalid>> {
        Ok(())
    }

    /// [`validate`](Self::validate) as one error (`invalid burst config: path: message; ...`),
    /// for constructors that may be handed a config no one checked (tests, benchmarks).
    fn ensure_valid(&self) -> anyhow::Result<()> {
        self.validate().map_err(|problems| {
            anyhow::anyhow!(
                "invalid {} config: {}",
                Self::TYPE,
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
    }
}

/// What `build` gets to know about its surroundings.
#[derive(Clone)]
pub struct BuildContext {
    /// The component's id.
    pub id: ComponentId,
    /// Names of devices, filled by receivers (captured while the device is alive, kept a while
    /// after it is gone), read by processors/exporters.
    pub devices: DeviceTable,
    /// What is known of each namespace (by inode and cookie), filled by whatever discovers
    /// namespaces while they are alive, read by `identity`.
    pub namespaces: NamespaceTable,
    /// Which process owns a socket, filled by the `connections` processor.
    pub sockets: SocketTable,
    /// DNS question names (interned by receivers) and the addresses they resolved to (learned
    /// by the `dns` processor, read by `identity`).
    pub dns: DnsTable,
    /// The component's own counters; the framework counts received/sent, the component adds
    /// its drops (with a log line saying why) and errors.
    pub counters: Arc<ComponentCounters>,
    /// What the pipeline a processor is built for carries; `None` for receivers, exporters,
    /// and components built outside a topology.
    pub signal: Option<Signal>,
}

impl BuildContext {
    /// A context of its own (empty tables, fresh counters), for a component built outside a
    /// topology: tests and benchmarks.
    pub fn standalone(id: ComponentId) -> Self {
        BuildContext {
            id,
            devices: DeviceTable::default(),
            namespaces: NamespaceTable::default(),
            sockets: SocketTable::default(),
            dns: DnsTable::default(),
            counters: Arc::default(),
            signal: None,
        }
    }

    /// Whether spans made here can reach an exporter: false for a processor of a metrics
    /// pipeline, whose end drops every span (so it should not build them, nor their
    /// attributes, per connection or lookup).
    pub fn carries_spans(&self) -> bool {
        self.signal != Some(Signal::Metrics)
    }
}

/// A receiver's config.
pub trait ReceiverConfig: ComponentConfig {
    /// True when the receiver ends by itself (a file replay): a run whose receivers are all
    /// finite exits once they are done and everything is flushed.
    fn is_finite(&self) -> bool {
        false
    }

    /// The kernel hooks this receiver needs: `periscope doctor` checks them against what the
    /// kernel accepts, and `periscope run` checks the privileges and mounts they need before
    /// building anything. Empty (the default) for receivers that need no kernel hook.
    fn required_hooks(&self) -> &'static [Hook] {
        &[]
    }

    /// Where the receiver has a choice of hooks: how it will hook this kernel, in one line
    /// for `periscope doctor`. `probe` says whether the kernel accepts a hook (`Err` with the
    /// kernel's reason).
    fn hook_choice(&self, _probe: &dyn Fn(Hook) -> Result<(), String>) -> Option<String> {
        None
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>>;
}

/// A processor's config.
pub trait ProcessorConfig: ComponentConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>>;

    /// Processor types this one must come before in a pipeline (they consume the events it
    /// reads); `periscope validate` refuses a pipeline that lists one of them earlier.
    fn must_precede(&self) -> &'static [&'static str] {
        &[]
    }
}

/// An exporter's config.
pub trait ExporterConfig: ComponentConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>>;
}

/// A built receiver.
pub trait Receiver: Send {
    /// Produces events into `output` until the input ends (finite receivers) or `stop` is
    /// raised. Runs on a thread of its own. An error ends this receiver and is reported; the
    /// run's exit code says a component failed.
    fn run(self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()>;
}

/// Where a processor puts what goes downstream.
#[derive(Debug, Default)]
pub struct Emitter {
    pub(crate) out: Vec<Payload>,
}

impl Emitter {
    pub fn events(&mut self, batch: EventBatch) {
        if !batch.is_empty() {
            self.out.push(Payload::Events(batch));
        }
    }

    pub fn telemetry(&mut self, telemetry: Telemetry) {
        if telemetry.item_count() > 0 {
            self.out.push(Payload::Telemetry(telemetry));
        }
    }

    pub fn payload(&mut self, payload: Payload) {
        match payload {
            Payload::Events(b) => self.events(b),
            Payload::Telemetry(t) => self.telemetry(t),
            Payload::Shared(t) => self.telemetry(std::sync::Arc::unwrap_or_clone(t)),
        }
    }

    /// What was emitted so far (for tests).
    pub fn take(&mut self) -> Vec<Payload> {
        std::mem::take(&mut self.out)
    }
}

/// A built processor. One instance per pipeline; all calls come from the pipeline's thread.
pub trait Processor: Send {
    /// Handles one payload. Payload kinds a processor does not handle must be passed on.
    fn process(&mut self, payload: Payload, out: &mut Emitter);

    /// When `tick` is next due; `None` if the processor has no periodic work.
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// Periodic work (emit aggregated telemetry).
    fn tick(&mut self, _now: Instant, _out: &mut Emitter) {}

    /// The input has ended: emit everything still held.
    fn flush(&mut self, _out: &mut Emitter) {}
}

/// A built exporter. Runs on a thread of its own, fed by a bounded queue.
pub trait Exporter: Send {
    /// Ships (or buffers) one batch. An error counts the batch's items as dropped.
    fn export(&mut self, telemetry: Telemetry) -> anyhow::Result<()>;

    /// Ships a batch other exporters get too. Exporters that only read it override this and
    /// save the copy [`export`](Self::export) needs.
    fn export_shared(&mut self, telemetry: std::sync::Arc<Telemetry>) -> anyhow::Result<()> {
        self.export(std::sync::Arc::unwrap_or_clone(telemetry))
    }

    /// Writes out whatever is buffered; called when the input ends, before the run exits.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    struct Probe {
        interval_ms: u64,
        limit: u64,
    }

    impl ComponentConfig for Probe {
        const TYPE: &'static str = "probe";

        fn validate(&self) -> Result<(), Vec<Invalid>> {
            let mut p = Vec::new();
            if self.interval_ms == 0 {
                p.push(Invalid::new("interval_ms", "must be at least 1"));
            }
            if self.limit == 0 {
                p.push(Invalid::new("limit", "must be at least 1"));
            }
            if p.is_empty() {
                Ok(())
            } else {
                Err(p)
            }
        }
    }

    #[test]
    fn ensure_valid_names_the_type_and_every_problem() {
        let ok = Probe {
            interval_ms: 1,
            limit: 1,
        };
        assert!(ok.ensure_valid().is_ok());
        let bad = Probe {
            interval_ms: 0,
            limit: 0,
        };
        assert_eq!(
            bad.ensure_valid()
                .map_err(|e| e.to_string())
                .err()
                .as_deref(),
            Some(
                "invalid probe config: interval_ms: must be at least 1; limit: must be at least 1"
            )
        );
    }
}
