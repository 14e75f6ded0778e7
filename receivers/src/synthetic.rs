//! The `synthetic` receiver: generates packet events at a set rate (or as fast as the
//! pipeline takes them) for benchmarks and demos, without a kernel or a capture file.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::PositiveDuration;
use periscope_pipeline::devices::DeviceInfo;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{
    DeviceRef, Direction, Event, EventBatch, NetnsId, NetworkType, PacketEvent, Transport,
};
use periscope_pipeline::telemetry::now_ns;

/// The device every synthetic event is seen on.
pub const DEVICE_NAME: &str = "synthetic0";

/// Most flows the generator cycles through (its table takes ~80 bytes per flow).
pub const MAX_FLOWS: u32 = 1 << 20;

/// Largest `packet_size` and `batch_size` accepted.
const MAX_PACKET_SIZE: u32 = 256 * 1024;
const MAX_BATCH_SIZE: usize = 65536;

/// Generates IPv4 TCP and UDP packet events for benchmarks and demos: a fixed set of flows
/// between 10.0.0.0/8 addresses (only data: nothing is sent anywhere), seen on device
/// `synthetic0`, timestamped with the current time.
///
/// Runs until stopped, or until `count` events or `duration` have passed when either is set.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Events per second, paced per batch so that the rate holds over each second; 0
    /// generates as fast as the pipeline takes them.
    #[serde(default)]
    pub rate: u64,
    /// Number of distinct 5-tuples the events cycle through (1 to 1048576); three in four
    /// are TCP (ports 80, 443, 8080), one in four UDP (port 53).
    #[serde(default = "default_flows")]
    pub flows: u32,
    /// Frame length of every event, in bytes (what `periscope.network.bytes` counts).
    #[serde(default = "default_packet_size")]
    pub packet_size: u32,
    /// Stop after exactly this many events (at least 1); the receiver then ends by itself.
    /// Leave it out to run until stopped.
    #[serde(default)]
    pub count: Option<NonZeroU64>,
    /// Stop after this long (e.g. `10s`); the receiver then ends by itself. Leave it out to
    /// run until stopped.
    #[serde(default)]
    pub duration: Option<PositiveDuration>,
    /// Events per batch sent downstream; by default the pipeline's batch size.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

fn default_flows() -> u32 {
    1024
}

fn default_packet_size() -> u32 {
    512
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            rate: 0,
            flows: default_flows(),
            packet_size: default_packet_size(),
            count: None,
            duration: None,
            batch_size: None,
        }
    }
}

impl ComponentConfig for SyntheticConfig {
    const TYPE: &'static str = "synthetic";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut problems = Vec::new();
        if !(1..=MAX_FLOWS).contains(&self.flows) {
            problems.push(Invalid::new(
                "flows",
                format!("must be between 1 and {MAX_FLOWS}"),
            ));
        }
        if !(1..=MAX_PACKET_SIZE).contains(&self.packet_size) {
            problems.push(Invalid::new(
                "packet_size",
                format!("must be between 1 and {MAX_PACKET_SIZE} bytes"),
            ));
        }
        if let Some(n) = self.batch_size {
            if !(1..=MAX_BATCH_SIZE).contains(&n) {
                problems.push(Invalid::new(
                    "batch_size",
                    format!("must be between 1 and {MAX_BATCH_SIZE}"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl ReceiverConfig for SyntheticConfig {
    fn is_finite(&self) -> bool {
        self.count.is_some() || self.duration.is_some()
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        let device = DeviceRef {
            netns: NetnsId::default(),
            ifindex: 1,
        };
        ctx.devices.insert(
            device,
            DeviceInfo {
                name: DEVICE_NAME.to_string(),
                netns_name: None,
                ..Default::default()
            },
        );
        Ok(Box::new(Synthetic {
            flows: flow_table(self.flows, self.packet_size, device),
            next_flow: 0,
            rate: self.rate,
            count: self.count.map(NonZeroU64::get),
            duration: self.duration.map(PositiveDuration::get),
            batch_size: self.batch_size,
        }))
    }
}

/// The precomputed events of each flow, all but the timestamp.
fn flow_table(flows: u32, packet_size: u32, device: DeviceRef) -> Vec<PacketEvent> {
    (0..flows)
        .map(|i| {
            let udp = i % 4 == 3;
            PacketEvent {
                timestamp_ns: 0,
                device,
                direction: Direction::Ingress,
                network: NetworkType::Ipv4,
                transport: if udp { Transport::Udp } else { Transport::Tcp },
                // One client address per flow (10.128.0.0 upwards) keeps every 5-tuple
                // distinct; 64 servers (10.0.0.1, 10.0.1.1, ...).
                src_addr: IpAddr::V4(Ipv4Addr::from(0x0A80_0000 + i)),
                dst_addr: IpAddr::V4(Ipv4Addr::from(0x0A00_0001 + ((i % 64) << 8))),
                src_port: 32768 + (i % 28232) as u16,
                dst_port: if udp {
                    53
                } else {
                    [80, 443, 8080][(i % 3) as usize]
                },
                length: packet_size,
                // PSH|ACK: mid-connection data segments.
                tcp_flags: if udp { 0 } else { 0x18 },
                locality: periscope_pipeline::model::Locality::Unknown,
            }
        })
        .collect()
}

/// A built `synthetic` receiver.
#[derive(Debug)]
pub struct Synthetic {
    flows: Vec<PacketEvent>,
    next_flow: usize,
    rate: u64,
    count: Option<u64>,
    duration: Option<Duration>,
    batch_size: Option<usize>,
}

/// With a rate set, the longest a partly filled batch waits before it is sent.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(50);

const NS_PER_S: u128 = 1_000_000_000;

impl Synthetic {
    fn new_batch(&self, output: &EventOutput) -> EventBatch {
        match self.batch_size {
            Some(n) => EventBatch::with_capacity(n),
            None => output.new_batch(),
        }
    }

    /// Events due `elapsed` after the start at `rate` per second.
    fn due(&self, elapsed: Duration) -> u64 {
        let n = elapsed.as_nanos() * u128::from(self.rate) / NS_PER_S;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// When (after the start) the `k`-th event is due at `rate` per second.
    fn due_at(&self, k: u64) -> Duration {
        let ns = u128::from(k) * NS_PER_S / u128::from(self.rate.max(1));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Appends `n` events with timestamps `first_ts`, `first_ts + step`, ...
    fn fill(&mut self, batch: &mut EventBatch, n: u64, first_ts: u64, step: u64) {
        let mut ts = first_ts;
        for _ in 0..n {
            let mut ev = self.flows[self.next_flow];
            ev.timestamp_ns = ts;
            batch.push(Event::Packet(ev));
            ts = ts.wrapping_add(step);
            self.next_flow += 1;
            if self.next_flow == self.flows.len() {
                self.next_flow = 0;
            }
        }
    }
}

impl Receiver for Synthetic {
    fn run(mut self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        if self.flows.is_empty() {
            return Ok(());
        }
        let capacity = self.new_batch(output).events.capacity().max(1) as u64;
        let start = Instant::now();
        let end = self.duration.and_then(|d| start.checked_add(d));
        let wall_start = now_ns();
        let mut last_wall = wall_start;
        let mut produced: u64 = 0;
        loop {
            if stop.is_raised() {
                break;
            }
            let mut n = capacity;
            if let Some(count) = self.count {
                n = n.min(count.saturating_sub(produced));
                if n == 0 {
                    break;
                }
            }
            let mut now = Instant::now();
            let (first_ts, step);
            if self.rate > 0 {
                // Sleep until a full batch is due (or a while, or the end), then send what
                // is due: the rate holds however the batches fall.
                let mut wake = start
                    .checked_add(self.due_at(produced + n))
                    .unwrap_or(now)
                    .min(now + MAX_BATCH_WAIT);
                if let Some(e) = end {
                    wake = wake.min(e);
                }
                if wake > now {
                    if stop.sleep(wake - now) {
                        break;
                    }
                    now = Instant::now();
                }
                let until = end.map_or(now, |e| now.min(e));
                n = n.min(self.due(until - start).saturating_sub(produced));
                if n == 0 {
                    if end.is_some_and(|e| now >= e) {
                        break;
                    }
                    continue;
                }
                // Timestamps on the ideal schedule.
                first_ts = wall_start.saturating_add(self.due_at(produced).as_nanos() as u64);
                step = (NS_PER_S / u128::from(self.rate)) as u64;
            } else {
                if end.is_some_and(|e| now >= e) {
                    break;
                }
                // Spread the batch over the time since the previous one.
                let wall = now_ns();
                step = wall.saturating_sub(last_wall) / n;
                first_ts = last_wall + step;
                last_wall = wall;
            }
            let mut batch = self.new_batch(output);
            self.fill(&mut batch, n, first_ts, step);
            produced += n;
            output.send(batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_are_distinct_and_in_10_0_0_0_8() {
        let t = flow_table(5000, 100, DeviceRef::default());
        let mut tuples: Vec<_> = t
            .iter()
            .map(|e| (e.src_addr, e.src_port, e.dst_addr, e.dst_port, e.transport))
            .collect();
        tuples.sort();
        tuples.dedup();
        assert_eq!(tuples.len(), 5000);
        for e in &t {
            for a in [e.src_addr, e.dst_addr] {
                let IpAddr::V4(v4) = a else {
                    panic!("not IPv4: {a}")
                };
                assert_eq!(v4.octets()[0], 10, "{a}");
            }
            assert_eq!(e.length, 100);
        }
        let udp = t.iter().filter(|e| e.transport == Transport::Udp).count();
        assert_eq!(udp, 1250);
        let last = flow_table(MAX_FLOWS, 1, DeviceRef::default());
        assert_eq!(
            last[last.len() - 1].src_addr,
            IpAddr::V4(Ipv4Addr::new(10, 143, 255, 255))
        );
    }

    #[test]
    fn validation_names_each_bad_option() {
        // As `periscope validate` reads it: `validate`'s problems and the values the option
        // types refuse, all at once.
        let paths: Vec<_> = periscope_pipeline::config::problems::<SyntheticConfig>(
            "{flows: 0, packet_size: 0, count: 0, duration: 0s, batch_size: 0}",
        )
        .into_iter()
        .map(|i| i.path)
        .collect();
        assert_eq!(
            paths,
            ["flows", "packet_size", "count", "duration", "batch_size"]
        );
        assert!(SyntheticConfig::default().validate().is_ok());
        assert!(!SyntheticConfig::default().is_finite());
    }
}
