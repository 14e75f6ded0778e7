//! The `file` exporter: one OTLP/JSON request per line, in the format the OpenTelemetry
//! Collector's `file` exporter writes (and its `otlpjsonfile` receiver reads).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Exporter, ExporterConfig, Invalid,
};
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::model::Telemetry;

use crate::{otlp_json, otlp_proto};

/// Writes each batch as one line of OTLP/JSON, as the OpenTelemetry Collector's `file` exporter
/// does: an `ExportMetricsServiceRequest` or `ExportTraceServiceRequest` in the protobuf JSON
/// mapping, readable by `jq`, the Collector's `otlpjsonfile` receiver and OTLP libraries.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to write. It is created if missing; its directory must exist.
    pub path: PathBuf,
    /// `true`: add to the end of an existing file; `false`: empty the file when periscope
    /// starts.
    #[serde(default)]
    pub append: bool,
    /// How often lines collected in memory are written to the file: a line reaches the file at
    /// most this long after its batch arrived. `0s` writes every batch at once. Whatever is
    /// left is written at shutdown.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: ConfigDuration,
}

fn default_flush_interval() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

impl ComponentConfig for FileConfig {
    const TYPE: &'static str = "file";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let text = self.path.as_os_str();
        if text.is_empty() {
            return Err(vec![Invalid::new(
                "path",
                "must not be empty; give the file to write, e.g. periscope.jsonl",
            )]);
        }
        if text.as_encoded_bytes().ends_with(b"/") {
            return Err(vec![Invalid::new(
                "path",
                format!(
                    "`{}` names a directory; give a file, e.g. {}periscope.jsonl",
                    self.path.display(),
                    self.path.display()
                ),
            )]);
        }
        Ok(())
    }
}

impl ExporterConfig for FileConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        let file = open(&self.path, self.append)?;
        let out = Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, file)));
        let interval = self.flush_interval.0;
        let flusher = if interval.is_zero() {
            None
        } else {
            // The exporter thread only wakes up for batches, so a timer thread of its own
            // writes out what a quiet input would otherwise leave in memory.
            let (stop, stopped) = mpsc::channel::<()>();
            let (out, path) = (out.clone(), self.path.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{}-flush", ctx.id))
                .spawn(move || flush_every(interval, &out, &path, &stopped))
                .context("cannot start the flush thread")?;
            Some(Flusher { stop, thread })
        };
        Ok(Box::new(FileExporter {
            path: self.path.clone(),
            out,
            line: Vec::new(),
            flush_each_batch: interval.is_zero(),
            flusher,
        }))
    }
}

fn open(path: &Path, append: bool) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path).map_err(|e| {
        let mut message = format!("cannot open `{}` for writing: {e}", path.display());
        if e.kind() == ErrorKind::NotFound {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    message.push_str(&format!(" (directory `{}` does not exist)", dir.display()));
                }
            }
        }
        anyhow::anyhow!(message)
    })
}

type Shared = Arc<Mutex<BufWriter<File>>>;

fn lock(out: &Shared) -> MutexGuard<'_, BufWriter<File>> {
    // A panic while holding the lock leaves a BufWriter that is still usable.
    out.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes out the buffer every `interval` until the exporter is dropped.
fn flush_every(interval: Duration, out: &Shared, path: &Path, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        match lock(out).flush() {
            Ok(()) => failing = false,
            // Say it once per failure streak; the lines stay buffered and are retried.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(path = %path.display(), error = %e, "file: cannot write to the file; retrying");
            }
            Err(_) => {}
        }
    }
}

struct Flusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// The running `file` exporter.
pub struct FileExporter {
    path: PathBuf,
    out: Shared,
    /// Reused for every line, so encoding allocates only when a batch outgrows it.
    line: Vec<u8>,
    flush_each_batch: bool,
    flusher: Option<Flusher>,
}

impl FileExporter {
    fn write_out(&mut self) -> anyhow::Result<()> {
        lock(&self.out)
            .flush()
            .with_context(|| format!("cannot write to `{}`", self.path.display()))
    }
}

impl Exporter for FileExporter {
    fn export(&mut self, telemetry: Telemetry) -> anyhow::Result<()> {
        self.line.clear();
        otlp_json::write_request(&mut self.line, &otlp_proto::request(telemetry));
        self.line.push(b'\n');
        lock(&self.out)
            .write_all(&self.line)
            .with_context(|| format!("cannot write to `{}`", self.path.display()))?;
        if self.flush_each_batch {
            self.write_out()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out()
    }
}

impl Drop for FileExporter {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            drop(f.stop);
            let _ = f.thread.join();
        }
    }
}
