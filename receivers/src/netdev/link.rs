//! One device's bpf_links: created inside the device's namespace, one thread per hook.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{TcAttachType, XdpMode};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;

use super::instance::{Hook, ProgRef};
use crate::shared::netns::{rtnetlink_request, run_each_in, NetnsHandle};

/// A link, or why there is none.
pub(super) type AttachResult = Result<FdLink, Box<dyn std::error::Error + Send + Sync>>;

/// The errno somewhere in an error's chain.
pub(super) fn io_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = err.source();
    }
    None
}

/// Attaches each job on its own thread inside the namespace of `ns` (the kernel waits for an
/// RCU grace period when it creates a device's TCX entry: the waits of ingress and egress
/// overlap); returns (hook, result, fallback = false, why = None) per job.
pub(super) fn attach_parallel(
    ns: &NetnsHandle,
    jobs: Vec<(Hook, ProgRef<'_>)>,
    ifindex: u32,
    name: &str,
) -> Vec<(Hook, AttachResult, bool, Option<String>)> {
    let hooks: Vec<Hook> = jobs.iter().map(|(hook, _)| *hook).collect();
    let results = run_each_in(
        ns,
        jobs.into_iter()
            .map(|(hook, prog)| move || attach_one(prog, hook, ifindex, name)),
    );
    hooks
        .into_iter()
        .zip(results)
        .map(|(hook, r)| (hook, r.map_err(Into::into).and_then(|r| r), false, None))
        .collect()
}

/// Attaches one hook (the calling thread is in the device's namespace).
fn attach_one(prog: ProgRef<'_>, hook: Hook, ifindex: u32, name: &str) -> AttachResult {
    match prog {
        ProgRef::Xdp(prog) => {
            let id = prog.attach_to_if_index(ifindex, XdpMode::default())?;
            let link = prog.take_link(id)?;
            match FdLink::try_from(link) {
                Ok(link) => Ok(link),
                // aya falls back to a netlink attachment when link creation fails with
                // EINVAL: that can be neither pinned nor kept from `ip link set dev X xdp
                // off`, and the failed conversion dropped it without detaching. Undo it.
                Err(e) => {
                    let undone = match prog.fd() {
                        Ok(fd) => detach_netlink_xdp(ifindex, fd.as_fd().as_raw_fd()).map_or_else(
                            |e| format!("detaching it failed: {e}"),
                            |()| "detached again".to_string(),
                        ),
                        Err(e) => format!("cannot detach it: {e}"),
                    };
                    Err(format!(
                        "the kernel refused an XDP bpf_link ({e}: aya fell back to netlink, \
                         which periscope does not use); {undone}"
                    )
                    .into())
                }
            }
        }
        ProgRef::Tc(prog) => {
            let attach_type = if hook == Hook::TcxIngress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            // First in the chain: no other program's verdict can hide packets from us.
            let id = prog.attach_with_options(
                name,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )?;
            let link = prog.take_link(id)?;
            Ok(FdLink::try_from(link)?)
        }
    }
}

/// `XDP_FLAGS_REPLACE`: act only if the attached program is `IFLA_XDP_EXPECTED_FD`'s.
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// Removes the XDP program `prog_fd` from device `ifindex` (of this thread's namespace) if it
/// is attached there through netlink, as `ip link set dev X xdp off` would; any other
/// program, or a bpf_link, is left alone.
pub(super) fn detach_netlink_xdp(ifindex: u32, prog_fd: RawFd) -> io::Result<()> {
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    request.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::ExpectedFd(prog_fd as u32),
        LinkXdp::Flags(XDP_FLAGS_REPLACE),
    ]));
    let socket = rtnetlink_request(
        RouteNetlinkMessage::SetLink(request),
        NLM_F_ACK,
        "RTM_SETLINK",
    )?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n.min(buf.len())])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("RTM_SETLINK: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
            None => Ok(()),
        },
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("RTM_SETLINK: unexpected reply {other:?}"),
        )),
    }
}

#[cfg(all(test, not(periscope_ebpf_stub)))]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use aya::programs::Xdp;

    use super::*;
    use crate::netdev::load_packet;
    use crate::shared::ebpf::{names, Config};
    use crate::shared::netns::run_in;

    /// A test namespace and a pin, removed at the end.
    struct Scratch {
        netns: String,
        pin: PathBuf,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.pin);
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .output();
        }
    }

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What aya's netlink fallback leaves behind (here made with `ip`) is removed again.
    #[test]
    fn a_netlink_xdp_attachment_is_undone() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: a_netlink_xdp_attachment_is_undone needs root");
            return;
        }
        crate::shared::kernel::ensure_bpffs().expect("bpffs");
        let scratch = Scratch {
            netns: format!("periscope-nlxdp-{}", std::process::id()),
            pin: PathBuf::from(format!(
                "/sys/fs/bpf/periscope-nlxdp-{}",
                std::process::id()
            )),
        };
        ip(&["netns", "add", &scratch.netns]);
        let mut bpf = load_packet(&Config::default(), None).expect("load the packet object");
        let prog: &mut Xdp = bpf
            .program_mut(names::XDP)
            .expect("xdp program")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("load the XDP program");
        prog.pin(&scratch.pin).expect("pin the XDP program");
        let ns = NetnsHandle::open_path(
            std::path::Path::new(&format!("/run/netns/{}", scratch.netns)),
            None,
        )
        .expect("open the namespace");
        // `ip -n` would mount another /sys, without the pin: run `ip` from inside instead.
        let in_ns = |args: &[&str]| run_in(&ns, || ip(args)).expect("enter the namespace");
        let pin = scratch.pin.to_string_lossy().into_owned();
        in_ns(&["link", "set", "dev", "lo", "xdpgeneric", "pinned", &pin]);
        let shown = || in_ns(&["link", "show", "dev", "lo"]);
        assert!(shown().contains("xdpgeneric"), "{}", shown());

        let fd = prog.fd().expect("program fd").as_fd().as_raw_fd();
        // lo is ifindex 1 in every namespace. Another program's fd changes nothing.
        let other = std::fs::File::open("/dev/null").expect("/dev/null");
        assert!(run_in(&ns, || detach_netlink_xdp(1, other.as_raw_fd()))
            .expect("enter the namespace")
            .is_err());
        assert!(shown().contains("xdpgeneric"), "{}", shown());
        run_in(&ns, || detach_netlink_xdp(1, fd))
            .expect("enter the namespace")
            .expect("detach");
        assert!(!shown().contains("xdp"), "{}", shown());
    }
}
