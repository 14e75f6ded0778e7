//! A TCP connection between its start and its close, and the span it becomes.

use std::borrow::Cow;
use std::time::Instant;

use periscope_pipeline::model::{
    tcp_state_name, KeyValue, ProcessRef, SocketEvent, SocketRole, Span, SpanEvent, SpanKind,
    SpanStatus,
};
use periscope_pipeline::telemetry::names;

use crate::device_names::push_netns;

/// A connection between its start and its close.
#[derive(Clone, Debug)]
pub(super) struct Conn {
    pub(super) start_ns: u64,
    pub(super) first: SocketEvent,
    pub(super) process: ProcessRef,
    pub(super) connect_ns: u64,
    pub(super) srtt_us: u32,
    pub(super) rttvar_us: u32,
    pub(super) events: Vec<SpanEvent>,
    pub(super) events_dropped: u32,
    pub(super) trace_id: [u8; 16],
    pub(super) span_id: [u8; 8],
    pub(super) seen_at: Instant,
    pub(super) reported_open: bool,
    /// Its opening was counted (by the first receiver to report it established).
    pub(super) counted_open: bool,
    /// Its namespace's name when it opened, if known.
    pub(super) netns_name: Option<String>,
}

/// `periscope.connection.open=true`: the span of a connection still open.
pub(super) const ATTR_CONNECTION_OPEN: &str = "periscope.connection.open";

/// Most span events kept per connection.
const MAX_SPAN_EVENTS: usize = 32;

impl Conn {
    /// The connection's span, ending at `end_ns`: complete with its `close` record, or (without
    /// it) a report of a connection still open.
    pub(super) fn span(&self, close: Option<&SocketEvent>, end_ns: u64) -> Span {
        let c = self;
        let f = &c.first;
        let last = close.unwrap_or(f);
        let mut a = Vec::with_capacity(24);
        a.push(KeyValue::new(names::ATTR_TRANSPORT, "tcp"));
        a.push(KeyValue::new(
            names::ATTR_NETWORK_TYPE,
            if f.local_addr.is_ipv4() {
                "ipv4"
            } else {
                "ipv6"
            },
        ));
        a.push(KeyValue::new(
            names::ATTR_LOCAL_ADDRESS,
            f.local_addr.to_string(),
        ));
        a.push(KeyValue::new(
            names::ATTR_LOCAL_PORT,
            i64::from(f.local_port),
        ));
        a.push(KeyValue::new(
            names::ATTR_PEER_ADDRESS,
            f.remote_addr.to_string(),
        ));
        a.push(KeyValue::new(
            names::ATTR_PEER_PORT,
            i64::from(f.remote_port),
        ));
        push_netns(&mut a, f.netns);
        if let Some(n) = &c.netns_name {
            a.push(KeyValue::new(names::ATTR_NETNS_NAME, n.clone()));
        }
        a.push(KeyValue::new(names::ATTR_SOCKET_COOKIE, f.cookie as i64));
        a.push(KeyValue::new(names::ATTR_CGROUP_ID, f.cgroup_id as i64));
        a.push(KeyValue::new(names::ATTR_CONNECTION_ROLE, f.role.as_str()));
        a.push(KeyValue::new(names::ATTR_HOOK, f.hook.as_str()));
        if c.process.is_known() {
            a.push(KeyValue::new(
                names::ATTR_PROCESS_PID,
                i64::from(c.process.pid),
            ));
            a.push(KeyValue::new(
                names::ATTR_PROCESS_NAME,
                c.process.comm_str().into_owned(),
            ));
        }
        if c.connect_ns > 0 {
            a.push(KeyValue::new(
                names::ATTR_CONNECT_DURATION,
                (c.connect_ns / 1000) as i64,
            ));
        }
        if c.srtt_us > 0 {
            a.push(KeyValue::new(names::ATTR_SRTT, i64::from(c.srtt_us)));
            a.push(KeyValue::new(names::ATTR_RTTVAR, i64::from(c.rttvar_us)));
        }
        a.push(KeyValue::new(
            names::ATTR_BYTES_SENT,
            last.bytes_sent as i64,
        ));
        a.push(KeyValue::new(
            names::ATTR_BYTES_ACKED,
            last.bytes_acked as i64,
        ));
        a.push(KeyValue::new(
            names::ATTR_BYTES_RECEIVED,
            last.bytes_received as i64,
        ));
        a.push(KeyValue::new(
            names::ATTR_TOTAL_RETRANS,
            i64::from(last.total_retrans),
        ));
        if close.is_none() {
            a.push(KeyValue::new(ATTR_CONNECTION_OPEN, true));
        } else {
            a.push(KeyValue::new(
                names::ATTR_CONNECTION_STATE,
                tcp_state_name(last.old_state),
            ));
        }
        if c.events_dropped > 0 {
            a.push(KeyValue::new(
                "periscope.span.events_dropped",
                i64::from(c.events_dropped),
            ));
        }
        let failed = close.is_some_and(|e| e.old_state == 2);
        Span {
            trace_id: c.trace_id,
            span_id: c.span_id,
            parent_span_id: [0; 8],
            name: Cow::Borrowed(names::SPAN_TCP_CONNECTION),
            kind: match f.role {
                SocketRole::Client => SpanKind::Client,
                SocketRole::Server => SpanKind::Server,
                SocketRole::Unknown => SpanKind::Internal,
            },
            start_time_ns: c.start_ns,
            end_time_ns: end_ns.max(c.start_ns),
            attributes: a,
            events: c.events.clone(),
            status: if failed {
                SpanStatus::Error("connect failed".into())
            } else {
                SpanStatus::Unset
            },
        }
    }

    /// Adds a span event, or counts it as dropped past [`MAX_SPAN_EVENTS`].
    pub(super) fn push_event(
        &mut self,
        time_ns: u64,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) {
        if self.events.len() >= MAX_SPAN_EVENTS {
            self.events_dropped += 1;
            return;
        }
        self.events.push(SpanEvent {
            time_ns,
            name: Cow::Borrowed(name),
            attributes,
        });
    }
}
