//! Helpers shared by the processors' unit tests.

use std::io;
use std::num::NonZeroUsize;
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

/// A tiny deterministic generator (xorshift64*), so that failures reproduce.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform latencies from 10 µs to 2 s, in ns.
    pub(crate) fn latency_ns(&mut self) -> u64 {
        (1e4 * 10f64.powf(self.unit() * 5.3)) as u64
    }
}

/// `n` as a limit or count option (at least 1).
pub(crate) fn at_least_one(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("at least 1")
}
