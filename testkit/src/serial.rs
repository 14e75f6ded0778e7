//! Tests of one binary that share kernel-wide state (loaded programs and links, `/run/netns`,
//! the fds of the process) run one at a time.

use std::sync::{Mutex, MutexGuard};

/// A lock the tests of one binary take to run alone; a test that panicked while holding it
/// does not keep the others from running.
#[derive(Debug, Default)]
pub struct Serial(Mutex<()>);

impl Serial {
    /// A lock for a `static`.
    pub const fn new() -> Serial {
        Serial(Mutex::new(()))
    }

    /// Waits until no other test holds it.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Serial::lock`] when the test can run here (`can_run`: the outcome of the skip rules,
    /// which skip or fail the test with a reason), else `None`: the test returns.
    pub fn lock_if(&self, can_run: bool) -> Option<MutexGuard<'_, ()>> {
        can_run.then(|| self.lock())
    }
}
