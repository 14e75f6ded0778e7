//! The `pcap` receiver: replays a classic pcap or pcapng capture file as packet events, as
//! fast as possible or at the pace it was captured.

pub mod decode;
mod file;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::Event;

pub use decode::{decode_frame, l4_payload, FrameMeta, LinkType};
pub use file::{CaptureReader, Frame, ReadError, RecordError, MAX_PACKET_BYTES};

use crate::shared::dns;

/// Replays a pcap or pcapng capture file as packet events (one per captured frame, with the
/// frame's original length and capture timestamp), then ends.
///
/// Reads classic pcap (either byte order, micro- or nanosecond timestamps) and pcapng (several
/// interfaces with their own link types and timestamp resolutions; enhanced, simple and
/// obsolete packet blocks; packet direction flags). Decodes Ethernet (with VLAN tags), Linux
/// cooked captures v1/v2, raw IP and BSD loopback; frames of other link types are counted
/// with timestamp and length only. Each capture interface becomes a device named after the
/// pcapng `if_name` option, or else after the file (`capture` for `capture.pcap`). TCP/UDP
/// packets from or to port 53 whose payload is a DNS message also become a DNS event (after
/// their packet event), for the `dns` processor; payloads there that are not DNS count as
/// errors of the receiver.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PcapConfig {
    /// The capture file to replay.
    pub path: PathBuf,
    /// `max` replays as fast as the pipeline takes events; `realtime` keeps the gaps between
    /// packets as they were captured (measured from the first packet).
    #[serde(default)]
    pub speed: Speed,
    /// Ports whose TCP/UDP payloads are DNS besides 53 (at most 4, e.g. `[5353]`).
    #[serde(default)]
    pub dns_ports: Vec<u16>,
}

/// How fast a capture is replayed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Speed {
    /// As fast as possible.
    #[default]
    Max,
    /// At the pace of the capture's timestamps.
    Realtime,
}

impl ComponentConfig for PcapConfig {
    const TYPE: &'static str = "pcap";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push(Invalid::new(
                "path",
                "must not be empty; give the capture file to replay, e.g. capture.pcapng",
            ));
        }
        crate::netdev::validate_dns_ports(&self.dns_ports, &mut errors);
        Invalid::all(errors)
    }
}

impl ReceiverConfig for PcapConfig {
    fn is_finite(&self) -> bool {
        true
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        let reader = CaptureReader::open(&self.path, ctx.devices.clone())?;
        Ok(Box::new(PcapReceiver {
            reader,
            speed: self.speed,
            shown: self.path.display().to_string(),
            dns: ctx.dns.clone(),
            dns_ports: self.dns_ports.clone(),
            dns_errors: 0,
        }))
    }
}

/// A built `pcap` receiver: an open capture file.
#[derive(Debug)]
pub struct PcapReceiver {
    reader: CaptureReader,
    speed: Speed,
    /// The path as configured, for error messages.
    shown: String,
    /// Where question names of DNS messages are interned.
    dns: periscope_pipeline::DnsTable,
    /// Ports that are DNS besides 53.
    dns_ports: Vec<u16>,
    /// DNS-port payloads that did not parse.
    dns_errors: u64,
}

impl Receiver for PcapReceiver {
    fn run(mut self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        let mut batch = output.new_batch();
        let mut pacer = Pacer::default();
        loop {
            let (ev, dns_ev) = match self.reader.next_frame() {
                Ok(Some(f)) => {
                    let ev = decode_frame(f.link, f.data, f.meta);
                    // DNS messages become an extra event after their packet's.
                    let payload = dns::is_dns_on(&ev, &self.dns_ports)
                        .then(|| l4_payload(f.link, f.data))
                        .flatten();
                    let d = match payload {
                        Some(payload) => {
                            match dns::parse(&ev, payload, &self.dns) {
                                Ok(d) => d,
                                Err(e) => {
                                    if self.dns_errors == 0 {
                                        tracing::warn!("{}: {e} (first of its kind; all are counted as errors)", self.shown);
                                    }
                                    self.dns_errors += 1;
                                    output.counters().add_errors(1);
                                    None
                                }
                            }
                        }
                        _ => None,
                    };
                    (ev, d)
                }
                Ok(None) => break,
                Err(e) => {
                    // What was read before the bad record still counts.
                    output.send(batch);
                    return Err(anyhow!("{}: {e}", self.shown));
                }
            };
            if self.speed == Speed::Realtime {
                if let Some(wait) = pacer.wait_before(ev.timestamp_ns) {
                    // Deliver what is due now before waiting for what is not.
                    output.send(std::mem::replace(&mut batch, output.new_batch()));
                    if stop.sleep(wait) {
                        return Ok(());
                    }
                }
            }
            batch.push(Event::Packet(ev));
            if let Some(d) = dns_ev {
                batch.push(Event::Dns(d));
            }
            if batch.is_full() {
                output.send(std::mem::replace(&mut batch, output.new_batch()));
                if stop.is_raised() {
                    return Ok(());
                }
            }
        }
        output.send(batch);
        Ok(())
    }
}

/// Maps capture time onto wall-clock time, anchored at the first packet.
#[derive(Debug, Default)]
struct Pacer {
    /// Wall-clock time and capture timestamp of the first packet.
    anchor: Option<(Instant, u64)>,
}

impl Pacer {
    /// Waits shorter than this are not worth a sleep: the packet goes out with its batch.
    const MIN_SLEEP: Duration = Duration::from_millis(1);

    /// How long to wait before the packet captured at `timestamp_ns` is due, if at all.
    /// Packets earlier than the first one (out-of-order captures) are due at once.
    fn wait_before(&mut self, timestamp_ns: u64) -> Option<Duration> {
        let (start, first) = *self
            .anchor
            .get_or_insert_with(|| (Instant::now(), timestamp_ns));
        let offset = Duration::from_nanos(timestamp_ns.saturating_sub(first));
        let wait = start
            .checked_add(offset)
            .map_or(offset, |due| due.saturating_duration_since(Instant::now()));
        (wait >= Self::MIN_SLEEP).then_some(wait)
    }
}
