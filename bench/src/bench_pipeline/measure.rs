//! What a run is measured with: a counting global allocator, the process's CPU time, and the
//! figures of one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts heap allocations, to show that per-event work allocates nothing (only per batch).
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only adds a relaxed counter.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The figures of one run of `events` events.
pub struct Measure {
    pub wall: Duration,
    pub cpu: Duration,
    pub events: u64,
    pub allocations: u64,
}

impl Measure {
    pub fn per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
    pub fn per_cpu_sec(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64()
    }
    pub fn allocations_per_event(&self) -> f64 {
        self.allocations as f64 / self.events as f64
    }

    /// One report line: `name`, events/s, events per CPU-second, times, allocations/event.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<16} {:>8.2} M events/s wall  {:>8.2} M events/CPU-s  ({:.3}s wall, {:.3}s CPU)  {:.5} allocations/event\n",
            self.per_sec() / 1e6,
            self.per_cpu_sec() / 1e6,
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            self.allocations_per_event(),
        )
    }
}

/// Starts measuring; [`Stopwatch::stop`] makes the [`Measure`] of `events` events.
pub struct Stopwatch {
    cpu: Duration,
    wall: Instant,
    allocations: u64,
}

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch {
            cpu: cpu_time(),
            wall: Instant::now(),
            allocations: allocations(),
        }
    }

    pub fn stop(self, events: u64) -> Measure {
        Measure {
            wall: self.wall.elapsed(),
            cpu: cpu_time() - self.cpu,
            events,
            allocations: allocations() - self.allocations,
        }
    }
}
