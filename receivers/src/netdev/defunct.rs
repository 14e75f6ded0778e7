//! Letting go of what belonged to devices and namespaces that are gone, off the receiver's
//! thread.
//!
//! Releasing a TCX link waits for an RCU grace period under the RTNL lock (~16 ms each here):
//! 100 pods and their node namespace vanishing at once are ~600 links, ~10 s one after the
//! other. One thread takes every release in turn, and while it has work it sets
//! `/sys/kernel/rcu_expedited` ([`ExpeditedRcu::enable_briefly`], put back when idle), which
//! cuts each release to well under a millisecond. The receiver meanwhile goes on attaching
//! new devices; it learns which device releases are done ([`Defunct::take_released`]) to
//! delete their counters from the kernel's map only once no program can write them again.

use std::collections::HashSet;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use periscope_pipeline::model::NetnsId;
use periscope_pipeline::telemetry::instruments::Counter;

use super::pins::remove_pins;
use super::state::{release, DevState, NsState};
use crate::shared::kernel::ExpeditedRcu;

/// How long the releasing thread keeps expedited grace periods on after its last job: the
/// devices of a namespace being deleted go one after another, a few ms apart.
const LINGER: Duration = Duration::from_millis(30);

/// What to let go of.
enum Job {
    /// A device's links (device deleted or moved out; its namespace stays).
    Device {
        netns: NetnsId,
        ifindex: u32,
        dev: DevState,
    },
    /// A namespace's links, programs and maps; `unpin`: and its pins (the namespace is gone;
    /// at a stop with pinning on they stay).
    Namespace { state: Box<NsState>, unpin: bool },
}

/// A release that is done.
enum Done {
    Device(NetnsId, u32),
    Namespace(NetnsId),
}

/// The releasing thread and what it still has to do.
pub(super) struct Defunct {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    pending_namespaces: HashSet<NetnsId>,
    pending_devices: HashSet<(NetnsId, u32)>,
    /// Device releases done and not yet taken.
    released: Vec<(NetnsId, u32)>,
    /// Namespace releases done and not yet taken.
    released_namespaces: Vec<NetnsId>,
}

impl Defunct {
    /// Starts the thread; `links_released` counts every link it lets go of.
    pub(super) fn start(links_released: Counter) -> Defunct {
        let (jobs, rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("periscope-release".into())
            .spawn(move || run(rx, done_tx, links_released));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Jobs then wait in the channel until the receiver stops (dropped with it).
                tracing::error!("cannot start the thread releasing links: {e}");
                None
            }
        };
        Defunct {
            jobs: Some(jobs),
            done,
            thread,
            pending_namespaces: HashSet::new(),
            pending_devices: HashSet::new(),
            released: Vec::new(),
            released_namespaces: Vec::new(),
        }
    }

    /// Lets go of a device's links.
    pub(super) fn device(&mut self, netns: NetnsId, ifindex: u32, dev: DevState) {
        self.pending_devices.insert((netns, ifindex));
        self.send(Job::Device {
            netns,
            ifindex,
            dev,
        });
    }

    /// Lets go of a namespace (and of its pins with `unpin`).
    pub(super) fn namespace(&mut self, state: NsState, unpin: bool) {
        self.pending_namespaces.insert(state.ns.id);
        self.send(Job::Namespace {
            state: Box::new(state),
            unpin,
        });
    }

    fn send(&mut self, job: Job) {
        if self.thread.is_none() {
            drop(job); // released in place
            return;
        }
        if let Some(tx) = &self.jobs {
            // Unbounded: cannot block; fails only if the thread is gone (then dropped here).
            let _ = tx.send(job);
        }
    }

    /// Device and namespace releases done since the last call: their counters may now be
    /// deleted.
    pub(super) fn take_released(&mut self) -> (Vec<(NetnsId, u32)>, Vec<NetnsId>) {
        self.collect(Duration::ZERO);
        (
            std::mem::take(&mut self.released),
            std::mem::take(&mut self.released_namespaces),
        )
    }

    /// Waits until namespace `id` (and any device of it) is released: it came back in scope
    /// (an XDP slot is single; its pins are re-made).
    pub(super) fn wait_namespace(&mut self, id: NetnsId) {
        while self.pending_namespaces.contains(&id)
            || self.pending_devices.iter().any(|(n, _)| *n == id)
        {
            if !self.collect(Duration::from_secs(5)) {
                tracing::warn!("still releasing the links of namespace {}", id.inode);
                return;
            }
        }
    }

    /// Whether a device's links are being released (its final counters were sent).
    pub(super) fn is_releasing(&self, netns: NetnsId, ifindex: u32) -> bool {
        self.pending_devices.contains(&(netns, ifindex))
    }

    /// Waits until a device's release is done (it came back with the same ifindex).
    pub(super) fn wait_device(&mut self, netns: NetnsId, ifindex: u32) {
        while self.pending_devices.contains(&(netns, ifindex)) {
            if !self.collect(Duration::from_secs(5)) {
                return;
            }
        }
    }

    /// Reads what is done, waiting up to `wait` for the first; false if nothing came.
    fn collect(&mut self, wait: Duration) -> bool {
        let first = if wait.is_zero() {
            self.done.try_recv().ok()
        } else {
            self.done.recv_timeout(wait).ok()
        };
        let Some(first) = first else {
            return false;
        };
        for d in std::iter::once(first).chain(self.done.try_iter().collect::<Vec<_>>()) {
            match d {
                Done::Device(netns, ifindex) => {
                    self.pending_devices.remove(&(netns, ifindex));
                    self.released.push((netns, ifindex));
                }
                Done::Namespace(id) => {
                    self.pending_namespaces.remove(&id);
                    self.released_namespaces.push(id);
                }
            }
        }
        true
    }
}

impl Drop for Defunct {
    /// Waits for every release asked for.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the thread releasing links panicked");
            }
        }
    }
}

fn run(jobs: Receiver<Job>, done: Sender<Done>, released: Counter) {
    while let Ok(first) = jobs.recv() {
        // Set while there is work; put back after a short quiet.
        let rcu = match ExpeditedRcu::enable_briefly() {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!("releasing links with normal RCU grace periods: {e}");
                None
            }
        };
        let mut job = Some(first);
        while let Some(j) = job.take() {
            let d = match j {
                Job::Device {
                    netns,
                    ifindex,
                    dev,
                } => {
                    released.add(release(dev) as u64);
                    Done::Device(netns, ifindex)
                }
                Job::Namespace { mut state, unpin } => {
                    let id = state.ns.id;
                    let mut n = 0;
                    if unpin {
                        for (_, dev) in state.devices.drain() {
                            n += release(dev);
                        }
                        if let Some(d) = &state.dir {
                            remove_pins(d);
                        }
                    } else {
                        // A stop: links held only by us detach as they are dropped below;
                        // pinned ones stay attached and counting.
                        n = state.devices.values().map(DevState::owned_links).sum();
                    }
                    // Programs and the namespace's fd go here too (the shared maps stay).
                    drop(state);
                    released.add(n as u64);
                    Done::Namespace(id)
                }
            };
            let _ = done.send(d);
            job = match jobs.recv_timeout(LINGER) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            };
        }
        drop(rcu);
    }
}
