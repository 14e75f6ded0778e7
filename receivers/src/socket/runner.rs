//! The run loop of the socket receivers: drain the ring buffer when it has records (at most
//! every `poll_interval`, so that a busy ring is read in batches; an idle one wakes nobody),
//! read the cgroup counters every `counters_interval`, report ring-buffer losses as drops.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::Ebpf;

use periscope_pipeline::component::Receiver;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{DeviceRef, Event, EventBatch, QueueEvent};
use periscope_pipeline::telemetry::now_ns;

use crate::netdev::InterfaceFilter;
use crate::shared::ebpf::{names, BootClock, CgroupCountersRecord, CgroupKey, SocketStats};

use super::{cgroup_counters, decode_record, DropReasons, Record};

/// Timers and identity.
#[derive(Clone, Debug)]
pub struct SocketReceiverOptions {
    /// The component id, for logs.
    pub id: String,
    pub poll_interval: Duration,
    pub counters_interval: Duration,
    /// The devices whose queue records are sent (`qdisc`); `None`: every device.
    pub interfaces: Option<InterfaceFilter>,
}

/// The maps a receiver reads, taken out of its object.
#[derive(Default)]
pub struct SocketMaps {
    pub ring: Option<RingBuf<MapData>>,
    pub stats: Option<PerCpuArray<MapData, SocketStats>>,
    pub cgroup_counters: Option<PerCpuHashMap<MapData, CgroupKey, CgroupCountersRecord>>,
    pub cgroup_full: Option<PerCpuArray<MapData, u64>>,
}

impl SocketMaps {
    /// Takes whichever of the shared maps `ebpf` has.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<SocketMaps> {
        let mut maps = SocketMaps::default();
        if let Some(m) = ebpf.take_map(names::EVENTS) {
            maps.ring = Some(RingBuf::try_from(m)?);
        }
        if let Some(m) = ebpf.take_map(names::SOCKET_STATS) {
            maps.stats = Some(PerCpuArray::try_from(m)?);
        }
        if let Some(m) = ebpf.take_map(names::CGROUP_COUNTERS) {
            maps.cgroup_counters = Some(PerCpuHashMap::try_from(m)?);
        }
        if let Some(m) = ebpf.take_map(names::CGROUP_FULL) {
            maps.cgroup_full = Some(PerCpuArray::try_from(m)?);
        }
        Ok(maps)
    }
}

/// A loaded and attached socket receiver. Dropping it detaches its programs.
pub struct SocketReceiver {
    opts: SocketReceiverOptions,
    /// Owns the programs and their links; kept alive until the receiver stops.
    _ebpf: Ebpf,
    /// The attachment's cgroup directory, held open for as long as the links.
    _cgroup: Option<File>,
    maps: SocketMaps,
    reasons: DropReasons,
}

impl SocketReceiver {
    pub fn new(
        opts: SocketReceiverOptions,
        mut ebpf: Ebpf,
        cgroup: Option<File>,
        reasons: DropReasons,
    ) -> anyhow::Result<SocketReceiver> {
        let maps = SocketMaps::take(&mut ebpf)?;
        Ok(SocketReceiver {
            opts,
            _ebpf: ebpf,
            _cgroup: cgroup,
            maps,
            reasons,
        })
    }
}

struct LoopState {
    clock: BootClock,
    clock_at: Instant,
    lost_seen: u64,
    full_seen: u64,
    table_full_seen: u64,
    unmatched_seen: u64,
    cgroup_full_seen: u64,
    decode_errors: u64,
    /// Whether `interfaces` takes a device, by device and name (bounded: cleared when full).
    taken: HashMap<(DeviceRef, [u8; 16]), bool>,
}

/// Most devices whose `interfaces` verdict is remembered.
const MAX_TAKEN: usize = 4096;

impl LoopState {
    /// Whether a queue record's device is one `interfaces` takes.
    fn takes(&mut self, filter: Option<&InterfaceFilter>, q: &QueueEvent) -> bool {
        let Some(filter) = filter else {
            return true;
        };
        let key = (q.device, q.ifname);
        if let Some(t) = self.taken.get(&key) {
            return *t;
        }
        if self.taken.len() >= MAX_TAKEN {
            self.taken.clear();
        }
        let t = filter.matches(q.ifname());
        self.taken.insert(key, t);
        t
    }
}

impl Receiver for SocketReceiver {
    fn run(self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        let SocketReceiver {
            opts,
            _ebpf,
            _cgroup,
            mut maps,
            reasons,
        } = *self;
        let mut st = LoopState {
            clock: BootClock::now(),
            clock_at: Instant::now(),
            lost_seen: 0,
            full_seen: 0,
            table_full_seen: 0,
            unmatched_seen: 0,
            cgroup_full_seen: 0,
            decode_errors: 0,
            taken: HashMap::new(),
        };
        let mut batch = output.new_batch();
        let mut next_counters = Instant::now() + opts.counters_interval;
        let ring_fd = maps.ring.as_ref().map(|r| r.as_raw_fd());
        loop {
            let stopping = stop.is_raised();
            let drained = drain(&opts, &mut maps, &reasons, &mut st, output, &mut batch);
            if Instant::now() >= next_counters || stopping {
                read_counters(&opts, &mut maps, &mut st, output, &mut batch);
                next_counters = Instant::now() + opts.counters_interval;
            }
            if stopping {
                break;
            }
            let until_counters = next_counters.saturating_duration_since(Instant::now());
            match ring_fd {
                // Records came: let more gather before the next drain.
                Some(_) if drained > 0 => {
                    stop.sleep(opts.poll_interval.min(until_counters));
                }
                Some(fd) => wait_readable(fd, until_counters.min(STOP_CHECK)),
                None => {
                    stop.sleep(until_counters);
                }
            }
        }
        if !batch.is_empty() {
            output.send(batch);
        }
        tracing::info!(receiver = %opts.id, "stopping: detaching its programs");
        Ok(())
    }
}

fn push(output: &mut EventOutput, batch: &mut EventBatch, event: Event) {
    batch.push(event);
    if batch.is_full() {
        let fresh = output.new_batch();
        output.send(std::mem::replace(batch, fresh));
    }
}

/// How long an idle receiver waits for records before it looks at the stop signal again.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Waits until the ring buffer has records (the kernel wakes its epoll/poll waiters on
/// submit when the reader has caught up) or `timeout` passes.
fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up: a 0 ms timeout just before the deadline would spin.
    let ms = (timeout + Duration::from_micros(999))
        .as_millis()
        .min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd; an error (EINTR) just ends the wait early.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Reads every record in the ring buffer; returns how many there were.
fn drain(
    opts: &SocketReceiverOptions,
    maps: &mut SocketMaps,
    reasons: &DropReasons,
    st: &mut LoopState,
    output: &mut EventOutput,
    batch: &mut EventBatch,
) -> usize {
    let Some(ring) = maps.ring.as_mut() else {
        return 0;
    };
    let mut n = 0;
    if st.clock_at.elapsed() > Duration::from_secs(5) {
        st.clock = BootClock::now();
        st.clock_at = Instant::now();
    }
    while let Some(item) = ring.next() {
        n += 1;
        match decode_record(&item, &st.clock, reasons) {
            Ok(Record::Socket(e)) => push(output, batch, Event::Socket(e)),
            Ok(Record::Drop(d)) => push(output, batch, Event::Drop(d)),
            Ok(Record::Queue(q)) => {
                if st.takes(opts.interfaces.as_ref(), &q) {
                    push(output, batch, Event::Queue(q));
                }
            }
            Err(e) => {
                if st.decode_errors == 0 {
                    tracing::error!(receiver = %opts.id, "undecodable record: {e}");
                }
                st.decode_errors += 1;
                output.counters().add_errors(1);
            }
        }
    }
    if !batch.is_empty() {
        let fresh = output.new_batch();
        output.send(std::mem::replace(batch, fresh));
    }
    n
}

/// How much a kernel total grew since it was last `seen` (which becomes `total`).
fn since(total: u64, seen: &mut u64) -> u64 {
    let new = total.saturating_sub(*seen);
    *seen = total;
    new
}

fn read_counters(
    opts: &SocketReceiverOptions,
    maps: &mut SocketMaps,
    st: &mut LoopState,
    output: &mut EventOutput,
    batch: &mut EventBatch,
) {
    if let Some(stats) = &maps.stats {
        if let Ok(per_cpu) = stats.get(&0, 0) {
            let mut total = SocketStats::default();
            for s in per_cpu.iter() {
                total.add(s);
            }
            let lost = since(total.records_lost, &mut st.lost_seen);
            if lost > 0 {
                output.counters().add_dropped(lost);
                tracing::warn!(
                    receiver = %opts.id,
                    "{lost} records lost to a full ring buffer (raise ring_buffer_size or lower poll_interval)"
                );
            }
            let full = since(total.sockmap_full, &mut st.full_seen);
            if full > 0 {
                output.counters().add_dropped(full);
                tracing::warn!(
                    receiver = %opts.id,
                    "{full} sockets not observed: the sockhash is full (raise max_sockets)"
                );
            }
            let unmatched = since(total.unmatched, &mut st.unmatched_seen);
            if unmatched > 0 {
                output.counters().add_dropped(unmatched);
                tracing::warn!(
                    receiver = %opts.id,
                    "{unmatched} dequeued packets gave no queue-delay sample: their enqueue was \
                     not seen (queued before the agent started, more queued than max_queued, or \
                     past 16 packets of one bulk dequeue)"
                );
            }
            let table = since(total.table_full, &mut st.table_full_seen);
            if table > 0 {
                tracing::warn!(
                    receiver = %opts.id,
                    "{table} sockets without start time or process: the socket table is full"
                );
            }
        }
    }
    if let Some(full) = &maps.cgroup_full {
        if let Ok(per_cpu) = full.get(&0, 0) {
            let total: u64 = per_cpu.iter().sum();
            let new = since(total, &mut st.cgroup_full_seen);
            if new > 0 {
                output.counters().add_dropped(new);
                tracing::warn!(
                    receiver = %opts.id,
                    "{new} packets not counted: the per-cgroup counter table is full"
                );
            }
        }
    }
    if let Some(counters) = &maps.cgroup_counters {
        let now = now_ns();
        for entry in counters.iter() {
            let Ok((key, per_cpu)) = entry else { continue };
            let mut total = CgroupCountersRecord::default();
            for v in per_cpu.iter() {
                total.packets += v.packets;
                total.bytes += v.bytes;
            }
            push(
                output,
                batch,
                Event::CgroupCounters(cgroup_counters(&key, &total, now)),
            );
        }
        if !batch.is_empty() {
            let fresh = output.new_batch();
            output.send(std::mem::replace(batch, fresh));
        }
    }
}
