//! Helpers shared by the receiver tests: build a receiver, run it on a thread, collect what
//! it sent.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use periscope_pipeline::component::{BuildContext, ComponentId, ReceiverConfig};
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{Event, PacketEvent, Payload};
use periscope_pipeline::telemetry::ComponentCounters;

/// What a receiver run produced.
pub struct Run {
    pub events: Vec<PacketEvent>,
    pub batches: usize,
    pub result: anyhow::Result<()>,
    pub devices: DeviceTable,
    pub elapsed: Duration,
    pub counters: Arc<ComponentCounters>,
}

pub fn context(id: &str) -> BuildContext {
    BuildContext {
        id: ComponentId::parse(id).expect("component id"),
        devices: DeviceTable::default(),
        sockets: Default::default(),
        dns: Default::default(),
        counters: Arc::default(),
    }
}

/// Builds and runs `config` until it ends (or `stop` is raised), collecting every event.
/// A build error is returned as is.
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
            Payload::Telemetry(_) => panic!("a receiver sent telemetry"),
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

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("periscope-receivers-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this process may load BPF programs; skips (or, under CI, fails) when not.
pub fn bpf_capable(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let reason = if unsafe { libc::geteuid() } != 0 {
        "not root"
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        "no kernel BTF at /sys/kernel/btf/vmlinux"
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot load eBPF programs ({reason}), and CI is set");
    }
    eprintln!("skipping {test}: {reason} (needs root and a BPF-capable kernel)");
    false
}

/// The error and every cause: aya's load errors carry the verifier log in a source.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}
