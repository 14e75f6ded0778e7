//! What this kernel and this process can do: capabilities, the bpffs and tracefs mounts, and
//! which program types and attachments the kernel accepts — found by probing, never by
//! comparing version strings. `periscope doctor` prints it; receivers check it before loading.

mod caps;
mod mounts;
mod probe;
mod rcu;

pub use caps::{
    check, missing_capabilities, smallest_grant, Capability, Need, CAP_BPF, CAP_NET_ADMIN,
    CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, LOAD_AND_ATTACH, NEED_BPF, NEED_ENTER_NAMESPACES,
    NEED_NET_ADMIN, NEED_OTHER_PROCESSES, NEED_PERFMON, SKIP_CHECK_ENV,
};
pub use mounts::{
    bpffs_mounted, ensure_bpffs, ensure_cgroup2, ensure_tracefs, tracefs_mounted, Mount,
    BPFFS_PATH, TRACEFS_PATH,
};
pub use probe::{probe_all, Hook, Probe, Support};
pub use rcu::{ExpeditedRcu, RCU_EXPEDITED};
