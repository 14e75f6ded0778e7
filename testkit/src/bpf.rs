//! What the kernel has loaded: programs and links, as `bpftool` lists them, and a cheap link
//! count from the `bpf(2)` syscall.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::run_ok;

/// `bpftool -j ARGS...`, parsed; panics if bpftool fails.
pub fn bpftool_json(args: &[&str]) -> Value {
    let out = run_ok(
        Command::new("bpftool").arg("-j").args(args),
        Duration::from_secs(10),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

/// Every loaded program, as `bpftool prog show` describes them.
pub fn programs() -> Vec<Value> {
    bpftool_json(&["prog", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Ids of loaded programs whose name starts with `periscope`.
pub fn periscope_programs() -> BTreeSet<u64> {
    programs()
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("periscope"))
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// `(link id, prog id)` of every link.
pub fn links() -> Vec<(u64, u64)> {
    bpftool_json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["id"].as_u64()?, l["prog_id"].as_u64()?)))
        .collect()
}

/// How many BPF links the kernel has (a `BPF_LINK_GET_NEXT_ID` walk: microseconds, so it
/// can be polled to time an attachment, unlike `bpftool`).
pub fn link_count() -> usize {
    const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
    #[repr(C)]
    struct Attr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
        _pad: [u32; 13],
    }
    let (mut id, mut n) = (0, 0);
    loop {
        let mut attr = Attr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
            _pad: [0; 13],
        };
        // SAFETY: a BPF_LINK_GET_NEXT_ID attr; the kernel writes `next_id` only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_GET_NEXT_ID,
                &mut attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc != 0 {
            return n;
        }
        id = attr.next_id;
        n += 1;
    }
}
