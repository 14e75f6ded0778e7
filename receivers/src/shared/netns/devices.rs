//! Listing and watching a namespace's devices over rtnetlink.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
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
    /// `IFLA_LINK`: for a veth, its peer's ifindex (in the peer's namespace); 0 if none.
    pub link: u32,
    /// `IFLA_LINK_NETNSID`: the peer's namespace as this namespace numbers it, when the peer is
    /// in another namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_MASTER`: the bridge (or bond, VRF) this device is a port of; 0 if none.
    pub master: u32,
    /// The veth's other end in another namespace, resolved by the watcher (namespace, ifindex).
    pub peer: Option<(periscope_pipeline::model::NetnsId, u32)>,
    /// Whether the device serves its peer's namespace (the node-side end of a veth), decided by
    /// the watcher (see `peers::serves_peer`); false: it serves its own namespace.
    pub serves_peer: bool,
    /// The device-count test of that decision (the peer's namespace a leaf, this one not), as
    /// first found once the peer was resolved: kept, so that a namespace gaining a device
    /// later does not turn its existing devices around.
    pub leaf_peer: Option<bool>,
}

/// One address of a device (`IFA_LOCAL`, else `IFA_ADDRESS`; and `IFA_BROADCAST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceAddress {
    pub ifindex: u32,
    pub addr: IpAddr,
}

/// `RTNLGRP_LINK`: the multicast group of RTM_NEWLINK/RTM_DELLINK.
const RTNLGRP_LINK: u32 = 1;
/// `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR`: RTM_NEWADDR/RTM_DELADDR.
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
/// Big enough for any datagram the kernel sends on a dump (it caps them at 32 KiB).
pub(crate) const RECV_BUF: usize = 64 * 1024;

/// What one rtnetlink message said about a link.
#[derive(Debug)]
pub(crate) enum LinkUpdate {
    /// The device, and whether the message carried its kind: notifications about a bridge
    /// port carry only the port's `IFLA_INFO_SLAVE_KIND`, so their kind reads empty.
    New(Device, bool),
    Del(u32),
    /// Addresses added to a device (RTM_NEWADDR).
    AddrNew(Vec<DeviceAddress>),
    /// Addresses removed from a device (RTM_DELADDR).
    AddrDel(Vec<DeviceAddress>),
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

/// The addresses of the devices of the namespace this thread is in.
pub fn list_addresses() -> io::Result<Vec<DeviceAddress>> {
    let socket = rtnetlink_request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
        "RTM_GETADDR",
    )?;
    let mut addrs = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| ctx(e, "RTM_GETADDR recv"))?;
        let n = n.min(buf.len());
        let end = parse_links(&buf[..n], |u| {
            if let LinkUpdate::AddrNew(a) = u {
                addrs.extend(a);
            }
        })?;
        if end {
            break;
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// A blocking rtnetlink socket in this thread's namespace, for requests made later from any
/// thread ([`nsid_of`]): it stays in this namespace.
pub(crate) fn request_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| ctx(e, "netlink socket"))?;
    socket.bind_auto().map_err(|e| ctx(e, "netlink bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| ctx(e, "netlink connect"))?;
    // A reply never comes late; a missing one must not hang the watcher.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: a valid socket fd and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(ctx(io::Error::last_os_error(), "netlink SO_RCVTIMEO"));
    }
    Ok(socket)
}

/// The id (`nsid`) that the namespace of `socket` ([`request_socket`]) gives the namespace open
/// at `fd`, if it gave it one (`RTM_GETNSID` with `NETNSA_FD`; asking assigns none).
pub(crate) fn nsid_of(
    socket: &Socket,
    fd: std::os::fd::RawFd,
    seq: u32,
) -> io::Result<Option<i32>> {
    use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
    let Ok(fd) = u32::try_from(fd) else {
        return Ok(None);
    };
    let mut request = NsidMessage::default();
    request.attributes.push(NsidAttribute::Fd(fd));
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetNsId(request)),
    );
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = seq;
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out[..]);
    socket
        .send(&out, 0)
        .map_err(|e| ctx(e, "RTM_GETNSID send"))?;
    let mut buf = vec![0u8; 4096];
    // Replies to earlier requests that timed out are skipped by their sequence number.
    for _ in 0..8 {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| ctx(e, "RTM_GETNSID recv"))?;
        let n = n.min(buf.len());
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n]) else {
            continue;
        };
        if msg.header.sequence_number != seq {
            continue;
        }
        return match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                Ok(m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                }))
            }
            NetlinkPayload::Error(e) => match e.code {
                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                None => Ok(None),
            },
            _ => Ok(None),
        };
    }
    Ok(None)
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
    for group in [RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
        socket
            .add_membership(group)
            .map_err(|e| ctx(e, "join RTNLGRP_IPV*_IFADDR"))?;
    }
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
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                    f(LinkUpdate::AddrNew(addresses_of(&a)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                    f(LinkUpdate::AddrDel(addresses_of(&a)));
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

/// The addresses one address message is about: the local address (`IFA_LOCAL`, which differs
/// from `IFA_ADDRESS` on point-to-point links, where that is the peer's), and the broadcast.
fn addresses_of(a: &AddressMessage) -> Vec<DeviceAddress> {
    let ifindex = a.header.index;
    let mut local = None;
    let mut address = None;
    let mut out = Vec::new();
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Broadcast(b) => out.push(DeviceAddress {
                ifindex,
                addr: IpAddr::V4(*b),
            }),
            _ => {}
        }
    }
    if let Some(addr) = local.or(address) {
        out.push(DeviceAddress { ifindex, addr });
    }
    out
}

fn device_from(link: &LinkMessage) -> Option<(Device, bool)> {
    let mut name = None;
    let mut kind = None;
    let mut peer_link = 0;
    let mut link_netnsid = None;
    let mut master = 0;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Link(l) => peer_link = *l,
            LinkAttribute::LinkNetNsId(id) if *id >= 0 => link_netnsid = Some(*id),
            LinkAttribute::Controller(m) => master = *m,
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
        link: peer_link,
        link_netnsid,
        master,
        peer: None,
        serves_peer: false,
        leaf_peer: None,
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
