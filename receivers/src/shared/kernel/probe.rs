//! Probing the kernel: load a two-instruction program of each type (and for BTF-attached types,
//! against a real kernel function or tracepoint) and see whether the kernel accepts it. This is
//! what counts under lockdown, in containers and on patched kernels, where version numbers lie.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use aya_obj::btf::{Btf, BtfKind};

pub use periscope_pipeline::component::Hook;

/// How a probe went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// The kernel accepted it.
    Yes,
    /// The kernel refused it, with the reason (errno text).
    No(String),
}

impl Support {
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub hook: Hook,
    pub support: Support,
}

// From include/uapi/linux/bpf.h.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const PROG_SCHED_CLS: u32 = 3;
const PROG_TRACEPOINT: u32 = 5;
const PROG_XDP: u32 = 6;
const PROG_CGROUP_SKB: u32 = 8;
const PROG_SOCK_OPS: u32 = 13;
const PROG_SK_SKB: u32 = 14;
const PROG_SK_MSG: u32 = 16;
const PROG_RAW_TRACEPOINT: u32 = 17;
const PROG_TRACING: u32 = 26;
const PROG_LSM: u32 = 29;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const ATTACH_TRACE_FENTRY: u32 = 24;
const ATTACH_LSM_MAC: u32 = 27;

/// The leading part of `union bpf_attr` for BPF_PROG_LOAD; the rest must be zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _zero: [u32; 9],
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    _zero: [u32; 28],
}

fn bpf(cmd: libc::c_long, attr: *const u8, size: usize) -> io::Result<OwnedFd> {
    // SAFETY: `attr` points at a live, fully initialised struct of `size` bytes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `bpf(cmd, attr)` succeeds (the object it makes is closed right away).
fn supported<T>(cmd: libc::c_long, attr: &T) -> Support {
    match bpf(cmd, (attr as *const T).cast(), std::mem::size_of::<T>()) {
        Ok(_fd) => Support::Yes,
        Err(e) => Support::No(e.to_string()),
    }
}

/// `r0 = 0; exit` — valid for every program type (for TC, 0 is TC_ACT_OK; the program is never
/// attached anyway).
const PROGRAM: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

fn load(prog_type: u32, attach_type: u32, attach_btf_id: u32) -> Support {
    let license = b"GPL\0";
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: attach_type,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    supported(BPF_PROG_LOAD, &attr)
}

fn btf_load(
    btf: Option<&Btf>,
    prog_type: u32,
    attach_type: u32,
    name: &str,
    kind: BtfKind,
) -> Support {
    let Some(btf) = btf else {
        return Support::No("no kernel BTF".into());
    };
    match btf.id_by_type_name_kind(name, kind) {
        Ok(id) => load(prog_type, attach_type, id),
        Err(_) => Support::No(format!("kernel BTF has no `{name}`")),
    }
}

fn ringbuf() -> Support {
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        max_entries: 4096,
        ..MapCreateAttr::default()
    };
    supported(BPF_MAP_CREATE, &attr)
}

/// Probes every hook. Needs CAP_BPF (and CAP_PERFMON/CAP_NET_ADMIN for some types); without
/// them every probe says why.
pub fn probe_all() -> Vec<Probe> {
    let btf = Btf::from_sys_fs().ok();
    Hook::ALL
        .iter()
        .map(|&hook| {
            let support = match hook {
                Hook::KernelBtf => match &btf {
                    Some(_) => Support::Yes,
                    None => Support::No("/sys/kernel/btf/vmlinux is missing or unreadable".into()),
                },
                Hook::RingBuffer => ringbuf(),
                Hook::Xdp => load(PROG_XDP, 0, 0),
                Hook::TcClassifier => load(PROG_SCHED_CLS, 0, 0),
                Hook::Tcx => match (&btf, load(PROG_SCHED_CLS, 0, 0)) {
                    (_, Support::No(e)) => Support::No(e),
                    (Some(b), Support::Yes) => {
                        match b.id_by_type_name_kind("tcx_link", BtfKind::Struct) {
                            Ok(_) => Support::Yes,
                            Err(_) => Support::No(
                                "kernel has no `struct tcx_link` (TCX needs 6.6+ features)".into(),
                            ),
                        }
                    }
                    (None, Support::Yes) => Support::No("cannot tell without kernel BTF".into()),
                },
                Hook::CgroupSkb => load(PROG_CGROUP_SKB, 0, 0),
                Hook::SockOps => load(PROG_SOCK_OPS, 0, 0),
                Hook::SkMsg => load(PROG_SK_MSG, 0, 0),
                Hook::SkSkb => load(PROG_SK_SKB, 0, 0),
                Hook::Tracepoint => load(PROG_TRACEPOINT, 0, 0),
                Hook::RawTracepoint => load(PROG_RAW_TRACEPOINT, 0, 0),
                Hook::TpBtf => btf_load(
                    btf.as_ref(),
                    PROG_TRACING,
                    ATTACH_TRACE_RAW_TP,
                    "btf_trace_inet_sock_set_state",
                    BtfKind::Typedef,
                ),
                Hook::Fentry => btf_load(
                    btf.as_ref(),
                    PROG_TRACING,
                    ATTACH_TRACE_FENTRY,
                    "tcp_sendmsg",
                    BtfKind::Func,
                ),
                Hook::Lsm => btf_load(
                    btf.as_ref(),
                    PROG_LSM,
                    ATTACH_LSM_MAC,
                    "bpf_lsm_file_open",
                    BtfKind::Func,
                ),
            };
            Probe { hook, support }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel_abi() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 152);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, max_entries), 12);
    }
}
