//! The kernel hooks a receiver may need: the vocabulary that receivers declare
//! ([`ReceiverConfig::required_hooks`](super::ReceiverConfig::required_hooks)) and that the
//! kernel is probed for (in `periscope-receivers`, never by version number).

/// A hook periscope can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP programs on a device.
    Xdp,
    /// TC classifier programs (what TCX and clsact run).
    TcClassifier,
    /// TCX links (kernel has `struct tcx_link`), the pre-qdisc hook periscope attaches first.
    Tcx,
    /// cgroup_skb programs (IP packets of a cgroup subtree).
    CgroupSkb,
    /// sockops programs (TCP socket events of a cgroup subtree).
    SockOps,
    /// sk_msg programs (messages sent on sockets in a sockhash).
    SkMsg,
    /// sk_skb stream verdict programs (data received on sockets in a sockhash).
    SkSkb,
    /// Classic tracepoints.
    Tracepoint,
    /// Raw tracepoints.
    RawTracepoint,
    /// `tp_btf/inet_sock_set_state`.
    TpBtf,
    /// `fentry/tcp_sendmsg`.
    Fentry,
    /// BPF LSM (`lsm/file_open`).
    Lsm,
    /// BPF ring buffer maps.
    RingBuffer,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux` (needed for CO-RE).
    KernelBtf,
}

impl Hook {
    /// Every hook, in the order `periscope doctor` lists them.
    pub const ALL: [Hook; 14] = [
        Hook::KernelBtf,
        Hook::RingBuffer,
        Hook::Xdp,
        Hook::TcClassifier,
        Hook::Tcx,
        Hook::CgroupSkb,
        Hook::SockOps,
        Hook::SkMsg,
        Hook::SkSkb,
        Hook::Tracepoint,
        Hook::RawTracepoint,
        Hook::TpBtf,
        Hook::Fentry,
        Hook::Lsm,
    ];

    /// The name `periscope doctor` prints.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcClassifier => "tc classifier",
            Hook::Tcx => "tcx link",
            Hook::CgroupSkb => "cgroup_skb",
            Hook::SockOps => "sockops",
            Hook::SkMsg => "sk_msg",
            Hook::SkSkb => "sk_skb",
            Hook::Tracepoint => "tracepoint",
            Hook::RawTracepoint => "raw tracepoint",
            Hook::TpBtf => "tp_btf",
            Hook::Fentry => "fentry/fexit",
            Hook::Lsm => "bpf lsm",
            Hook::RingBuffer => "ring buffer map",
            Hook::KernelBtf => "kernel BTF",
        }
    }
}
