//! Helpers shared by the processors' unit tests.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines written through a shared buffer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// Runs `f` and returns what it returned with the warnings it logged on this thread.
pub(crate) fn warnings<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&lines.0.lock().expect("log buffer")).into_owned();
    (result, text.lines().map(str::to_string).collect())
}

/// How many of `lines` say the cardinality limit was reached.
pub(crate) fn overflow_warnings(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("cardinality limit reached"))
        .count()
}
