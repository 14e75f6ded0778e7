//! Connection spans joined with what the devices saw: a closed connection's span waits
//! `flow_join_delay` (so that the receivers' next read of their flow counters is in), then
//! gets the packets and bytes the devices of its socket's namespace counted for its 4-tuple
//! (`periscope.flow.*`, from the socket table the `flow` processor fills). Spans whose flow
//! no device counted (no `xdp`/`tcx` receiver with `flows` on, or a `flow` processor without
//! `flow_attributes`) go out as they were.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use periscope_pipeline::model::{KeyValue, NetnsId, Span, Transport};
use periscope_pipeline::telemetry::names;
use periscope_pipeline::SocketTable;

/// The socket a span is about: its namespace, local and remote address and port.
pub(super) type JoinKey = (NetnsId, IpAddr, u16, IpAddr, u16);

/// Spans of closed connections waiting for the devices' counts.
#[derive(Debug)]
pub(super) struct PendingSpans {
    queue: VecDeque<(Instant, Span, JoinKey)>,
    delay: Duration,
}

impl PendingSpans {
    pub(super) fn new(delay: Duration) -> Self {
        PendingSpans {
            queue: VecDeque::new(),
            delay,
        }
    }

    pub(super) fn push(&mut self, span: Span, key: JoinKey) {
        self.queue
            .push_back((Instant::now() + self.delay, span, key));
    }

    /// Moves the spans whose wait is over (`all`: every one, at stop) into `out`, with the
    /// devices' counts added.
    pub(super) fn due(
        &mut self,
        now: Instant,
        all: bool,
        sockets: &SocketTable,
        out: &mut Vec<Span>,
    ) {
        while let Some((at, _, _)) = self.queue.front() {
            if !all && *at > now {
                break;
            }
            let Some((_, mut span, (netns, la, lp, ra, rp))) = self.queue.pop_front() else {
                break;
            };
            if let Some(t) = sockets.device_totals(netns, Transport::Tcp, (la, lp), (ra, rp)) {
                let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                span.attributes.extend([
                    KeyValue::new(names::ATTR_FLOW_PACKETS_SENT, int(t.packets_sent)),
                    KeyValue::new(names::ATTR_FLOW_BYTES_SENT, int(t.bytes_sent)),
                    KeyValue::new(names::ATTR_FLOW_PACKETS_RECEIVED, int(t.packets_received)),
                    KeyValue::new(names::ATTR_FLOW_BYTES_RECEIVED, int(t.bytes_received)),
                ]);
            }
            out.push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::net::Ipv4Addr;

    use periscope_pipeline::model::{DeviceRef, Direction, SpanKind, SpanStatus};

    #[test]
    fn a_span_waits_then_carries_what_the_devices_counted() {
        let sockets = SocketTable::default();
        let ns = NetnsId {
            inode: 1,
            cookie: 2,
        };
        let (l, r) = (
            (IpAddr::V4(Ipv4Addr::new(10, 62, 0, 1)), 40000),
            (IpAddr::V4(Ipv4Addr::new(10, 62, 0, 2)), 80),
        );
        let dev = DeviceRef {
            netns: ns,
            ifindex: 2,
        };
        sockets.flow_totals(
            dev,
            Direction::Egress,
            Transport::Tcp,
            l,
            r,
            [6, 600],
            false,
        );
        sockets.flow_totals(
            dev,
            Direction::Ingress,
            Transport::Tcp,
            r,
            l,
            [5, 900],
            false,
        );
        let span = Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: [0; 8],
            name: Cow::Borrowed("tcp.connection"),
            kind: SpanKind::Client,
            start_time_ns: 1,
            end_time_ns: 2,
            attributes: Vec::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
        };
        let mut pending = PendingSpans::new(Duration::from_secs(3600));
        pending.push(span.clone(), (ns, l.0, l.1, r.0, r.1));
        let mut out = Vec::new();
        pending.due(Instant::now(), false, &sockets, &mut out);
        assert!(out.is_empty(), "still waiting");
        pending.due(Instant::now(), true, &sockets, &mut out);
        let attr = |k: &str| {
            out[0]
                .attributes
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr(names::ATTR_FLOW_PACKETS_SENT).as_deref(), Some("6"));
        assert_eq!(attr(names::ATTR_FLOW_BYTES_SENT).as_deref(), Some("600"));
        assert_eq!(
            attr(names::ATTR_FLOW_PACKETS_RECEIVED).as_deref(),
            Some("5")
        );
        assert_eq!(
            attr(names::ATTR_FLOW_BYTES_RECEIVED).as_deref(),
            Some("900")
        );
        // A socket no device saw: the span as it was.
        let mut other = PendingSpans::new(Duration::ZERO);
        other.push(span, (ns, l.0, 40001, r.0, r.1));
        let mut out = Vec::new();
        other.due(Instant::now(), false, &sockets, &mut out);
        assert!(out[0].attributes.is_empty());
    }
}
