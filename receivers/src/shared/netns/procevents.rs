//! Process events from the kernel's proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): a
//! process born in a new namespace (`clone(CLONE_NEWNET)`) or that unshared one and exec'd
//! (`unshare -n CMD`, container runtimes) is looked at within a millisecond, instead of at the
//! next periodic `/proc` scan; a process that exits may have been the last of a namespace
//! only processes hold.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_sys::{Socket, SocketAddr};

const NETLINK_CONNECTOR: isize = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;
/// `proc_event.event_data` starts after `what`, `cpu` and `timestamp_ns`.
const EVENT_DATA: usize = NLMSG_HDR + CN_MSG + 16;

/// A subscription to process events; unsubscribes on drop.
pub(crate) struct ProcEvents {
    socket: Socket,
}

impl ProcEvents {
    pub(crate) fn subscribe() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_CONNECTOR)?;
        socket.bind(&SocketAddr::new(0, CN_IDX_PROC))?;
        socket.set_non_blocking(true)?;
        let events = Self { socket };
        events.control(PROC_CN_MCAST_LISTEN)?;
        Ok(events)
    }

    fn control(&self, op: u32) -> io::Result<()> {
        let mut msg = Vec::with_capacity(NLMSG_HDR + CN_MSG + 4);
        let len = (NLMSG_HDR + CN_MSG + 4) as u32;
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: let the kernel fill it
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len: a bare op, understood by every kernel
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&op.to_ne_bytes());
        self.socket.send_to(&msg, &SocketAddr::new(0, 0), 0)?;
        Ok(())
    }

    /// Reads every pending event; returns the pids (thread group ids) that forked or exec'd,
    /// or `Err` when events were lost (the socket overflowed): then rescan everything.
    pub(crate) fn drain(&self, buf: &mut [u8], pids: &mut Pids) -> Result<(), ()> {
        let mut lost = false;
        loop {
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => parse(&buf[..n.min(buf.len())], pids),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                Err(e) => {
                    tracing::debug!(error = %e, "proc connector recv");
                    break;
                }
            }
        }
        if lost {
            Err(())
        } else {
            Ok(())
        }
    }
}

impl AsRawFd for ProcEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for ProcEvents {
    fn drop(&mut self) {
        // The kernel counts listeners and stops generating events when none is left.
        let _ = self.control(PROC_CN_MCAST_IGNORE);
    }
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// What the events said.
#[derive(Debug, Default)]
pub(crate) struct Pids {
    /// Processes (thread group ids) that were born or exec'd.
    pub(crate) new: Vec<u32>,
    /// Processes that exited.
    pub(crate) exited: Vec<u32>,
}

fn parse(mut data: &[u8], pids: &mut Pids) {
    while let Some(len) = u32_at(data, 0) {
        let len = len as usize;
        if len < NLMSG_HDR || len > data.len() {
            return; // malformed: drop the rest of this datagram
        }
        let msg = &data[..len];
        match u32_at(msg, NLMSG_HDR + CN_MSG) {
            // fork: parent pid, parent tgid, child pid, child tgid; only new processes matter.
            Some(PROC_EVENT_FORK) => {
                if let (Some(pid), Some(tgid)) =
                    (u32_at(msg, EVENT_DATA + 8), u32_at(msg, EVENT_DATA + 12))
                {
                    if pid == tgid {
                        pids.new.push(tgid);
                    }
                }
            }
            // exec: pid, tgid.
            Some(PROC_EVENT_EXEC) => {
                if let Some(tgid) = u32_at(msg, EVENT_DATA + 4) {
                    pids.new.push(tgid);
                }
            }
            // exit: pid, tgid, ...; a thread's exit is not the process's.
            Some(PROC_EVENT_EXIT) => {
                if let (Some(pid), Some(tgid)) =
                    (u32_at(msg, EVENT_DATA), u32_at(msg, EVENT_DATA + 4))
                {
                    if pid == tgid {
                        pids.exited.push(tgid);
                    }
                }
            }
            _ => {}
        }
        data = data.get((len + 3) & !3..).unwrap_or(&[]);
    }
}
