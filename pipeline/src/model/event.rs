//! Events: what receivers produce and processors consume.
//!
//! Events are plain `Copy` values so that decoding, batching and enriching them never
//! allocates; names (interfaces, namespaces, processes) are resolved by processors per
//! series, not per event.

use std::net::{IpAddr, Ipv4Addr};

/// Which way a packet crossed the hook that saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Received by the device (XDP, TCX ingress, or a capture's inbound packets).
    #[default]
    Ingress,
    /// Sent by the device (TCX egress, or a capture's outbound packets).
    Egress,
}

impl Direction {
    /// The value of the `network.io.direction` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "receive",
            Direction::Egress => "transmit",
        }
    }
}

/// The L4 protocol of a packet, as the `network.transport` attribute names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// No L4 header that we decode, or not an IP packet.
    #[default]
    Other,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Transport {
    /// The value of the `network.transport` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
            Transport::Icmpv6 => "icmpv6",
            Transport::Other => "other",
        }
    }

    /// Maps an IP protocol number (IPv4 `protocol`, IPv6 `next header`).
    pub fn from_ip_protocol(proto: u8) -> Self {
        match proto {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            1 => Transport::Icmp,
            58 => Transport::Icmpv6,
            _ => Transport::Other,
        }
    }
}

/// The L3 protocol of a packet, as the `network.type` attribute names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkType {
    /// Not an IP packet (ARP, LLDP, ...).
    #[default]
    Other,
    Ipv4,
    Ipv6,
}

impl NetworkType {
    /// The value of the `network.type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Ipv4 => "ipv4",
            NetworkType::Ipv6 => "ipv6",
            NetworkType::Other => "other",
        }
    }
}

/// Identifies a network namespace. The inode alone is reused after a namespace dies, so the
/// kernel's namespace cookie (unique for the boot) travels with it where it is known (0 if not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    /// Inode number of the namespace's nsfs file (`/proc/PID/ns/net`).
    pub inode: u32,
    /// `SO_NETNS_COOKIE` of the namespace, 0 when unknown (offline captures).
    pub cookie: u64,
}

/// Where a packet was seen: a device in a namespace. Offline receivers give each capture
/// interface a synthetic ifindex and register its name in the [`crate::InterfaceTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRef {
    pub netns: NetnsId,
    pub ifindex: u32,
}

/// One packet seen at a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEvent {
    /// When the packet was seen, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The device (and its namespace) that the packet crossed.
    pub device: DeviceRef,
    pub direction: Direction,
    pub network: NetworkType,
    pub transport: Transport,
    /// Source address; unspecified for non-IP packets.
    pub src_addr: IpAddr,
    /// Destination address; unspecified for non-IP packets.
    pub dst_addr: IpAddr,
    /// Source port (TCP/UDP) or 0.
    pub src_port: u16,
    /// Destination port (TCP/UDP) or 0.
    pub dst_port: u16,
    /// L2 frame length as seen at the hook (what `tshark` calls `frame.len`).
    pub length: u32,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub tcp_flags: u8,
}

impl Default for PacketEvent {
    fn default() -> Self {
        PacketEvent {
            timestamp_ns: 0,
            device: DeviceRef::default(),
            direction: Direction::Ingress,
            network: NetworkType::Other,
            transport: Transport::Other,
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            length: 0,
            tcp_flags: 0,
        }
    }
}

/// Exact totals a kernel hook counted for one device, direction and transport, cumulative
/// since the hook was attached (pinned hooks keep counting across agent restarts). Receivers
/// send them periodically; they stay exact when packet records are sampled or lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// When the counters were read, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub device: DeviceRef,
    pub direction: Direction,
    pub transport: Transport,
    /// Packets the hook saw.
    pub packets: u64,
    /// Bytes (L2 frame length) the hook saw.
    pub bytes: u64,
    /// Packet records the hook could not deliver (ring buffer full).
    pub records_lost: u64,
    /// Packet records the receiver read from the ring buffer, since this receiver started
    /// (with `packets` and `records_lost` this tells sampled from lost).
    pub records_delivered: u64,
}

/// Every kind of event a receiver can produce. New kinds (socket lifecycle, DNS, bursts)
/// become new variants; processors pass on variants they do not handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Packet(PacketEvent),
    DeviceCounters(DeviceCounters),
}

impl Event {
    /// When the event happened, in nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            Event::Packet(p) => p.timestamp_ns,
            Event::DeviceCounters(c) => c.timestamp_ns,
        }
    }
}

/// A batch of events: the unit that crosses a channel. Receivers fill a batch up to its
/// capacity and send it whole, so channel costs are paid per batch, not per event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

impl EventBatch {
    /// The batch size receivers use unless configured otherwise.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn with_capacity(capacity: usize) -> Self {
        EventBatch {
            events: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// True once the batch has reached the capacity it was made with.
    pub fn is_full(&self) -> bool {
        self.events.len() >= self.events.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small_enough_to_copy() {
        // A packet event is copied into batches by value; keep it near a cache line.
        assert!(
            std::mem::size_of::<Event>() <= 80,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}
