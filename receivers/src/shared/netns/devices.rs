//! Listing and watching a namespace's devices over rtnetlink.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A network device as rtnetlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `vxlan`, ...); empty for physical devices and `lo`.
    pub kind: String,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
}

/// `RTNLGRP_LINK`: the multicast group of RTM_NEWLINK/RTM_DELLINK.
const RTNLGRP_LINK: u32 = 1;
/// Big enough for any datagram the kernel sends on a dump (it caps them at 32 KiB).
pub(crate) const RECV_BUF: usize = 64 * 1024;

/// What one rtnetlink message said about a link.
#[derive(Debug)]
pub(crate) enum LinkUpdate {
    /// The device, and whether the message carried its kind: notifications about a bridge
    /// port carry only the port's `IFLA_INFO_SLAVE_KIND`, so their kind reads empty.
    New(Device, bool),
    Del(u32),
}

/// The devices of the namespace this thread is in (call through [`super::run_in`]).
pub fn list_devices() -> io::Result<Vec<Device>> {
    let mut request = LinkMessage::default();
    // Counters are not needed here and make each message several times larger.
    request
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let socket = rtnetlink_request(
        RouteNetlinkMessage::GetLink(request),
        NLM_F_DUMP,
        "RTM_GETLINK",
    )?;

    let mut devices = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| ctx(e, "RTM_GETLINK recv"))?;
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("RTM_GETLINK: a {n}-byte datagram was truncated"),
            ));
        }
        let end = parse_links(&buf[..n], |u| {
            if let LinkUpdate::New(d, _) = u {
                devices.push(d);
            }
        })?;
        if end {
            break;
        }
    }
    devices.sort_by_key(|d| d.ifindex);
    devices.dedup_by_key(|d| d.ifindex);
    Ok(devices)
}

/// Opens an rtnetlink socket in this thread's namespace and sends it `message` as a request
/// (`NLM_F_REQUEST` and `flags`); read the replies from the socket. `what` names the request
/// in errors.
pub(crate) fn rtnetlink_request(
    message: RouteNetlinkMessage,
    flags: u16,
    what: &str,
) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| ctx(e, "netlink socket"))?;
    socket.bind_auto().map_err(|e| ctx(e, "netlink bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| ctx(e, "netlink connect"))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    packet.header.flags = NLM_F_REQUEST | flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out[..]);
    socket
        .send(&out, 0)
        .map_err(|e| ctx(e, &format!("{what} send")))?;
    Ok(socket)
}

/// A non-blocking rtnetlink socket in this thread's namespace, subscribed to link changes.
/// It stays in this namespace whatever thread reads it later.
pub(crate) fn link_subscription() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| ctx(e, "netlink socket"))?;
    socket.bind_auto().map_err(|e| ctx(e, "netlink bind"))?;
    socket
        .add_membership(RTNLGRP_LINK)
        .map_err(|e| ctx(e, "join RTNLGRP_LINK"))?;
    socket
        .set_non_blocking(true)
        .map_err(|e| ctx(e, "netlink non-blocking"))?;
    Ok(socket)
}

/// Parses one datagram of rtnetlink messages, handing each link message to `f`. Returns true
/// at the end of a dump (NLMSG_DONE). A message that does not parse is skipped (logged), never
/// fatal: only the framing must hold. A netlink error reply is returned as an error.
pub(crate) fn parse_links(mut data: &[u8], mut f: impl FnMut(LinkUpdate)) -> io::Result<bool> {
    let mut done = false;
    while data.len() >= 16 {
        // nlmsg_len, read by hand so that a message the parser rejects can still be skipped.
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            tracing::debug!(
                len,
                left = data.len(),
                "netlink: bad message length, rest dropped"
            );
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            Ok(msg) => match msg.payload {
                NetlinkPayload::Done(_) => done = true,
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    if let Some((d, has_kind)) = device_from(&link) {
                        f(LinkUpdate::New(d, has_kind));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    f(LinkUpdate::Del(link.header.index));
                }
                _ => {}
            },
            Err(e) => tracing::debug!(error = %e, "netlink: unparsable message skipped"),
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        data = data.get(step..).unwrap_or(&[]);
    }
    Ok(done)
}

fn device_from(link: &LinkMessage) -> Option<(Device, bool)> {
    let mut name = None;
    let mut kind = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let Some(name) = name else {
        tracing::debug!(
            ifindex = link.header.index,
            "netlink: link without IFLA_IFNAME skipped"
        );
        return None;
    };
    let has_kind = kind.is_some();
    let device = Device {
        ifindex: link.header.index,
        name,
        kind: kind.unwrap_or_default(),
        up: link.header.flags.contains(LinkFlags::Up),
        loopback: link.header.flags.contains(LinkFlags::Loopback),
    };
    Some((device, has_kind))
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkHeader;

    fn newlink(index: u32, name: &str) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index,
            flags: LinkFlags::Up,
            ..LinkHeader::default()
        };
        link.attributes.push(LinkAttribute::IfName(name.into()));
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn parses_a_link_and_survives_any_truncation_or_garbage() {
        let mut two = newlink(7, "eth7");
        two.extend(newlink(8, "eth8"));
        let mut got = Vec::new();
        assert!(!parse_links(&two, |u| got.push(u)).expect("parse"));
        let names: Vec<String> = got
            .iter()
            .filter_map(|u| match u {
                LinkUpdate::New(d, false) if d.up && !d.loopback => Some(d.name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["eth7", "eth8"]);
        // Every prefix, and every single-byte corruption, must not panic.
        for n in 0..two.len() {
            let _ = parse_links(&two[..n], |_| {});
        }
        for i in 0..two.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut bad = two.clone();
                bad[i] = v;
                let _ = parse_links(&bad, |_| {});
            }
        }
    }
}
