//! What the socket-level receivers share (`sockops`, `sk_msg`, `tcp_udp`, `cgroup_skb`):
//! checks before loading, the cgroup to attach to, decoding their records, and one run loop
//! that drains a ring buffer and reads in-kernel counters on timers.
//!
//! Unlike the `xdp`/`tcx` receivers these hooks are global: one program instance sees the
//! sockets of every network namespace (sockops, cgroup_skb: of every cgroup below the one
//! they are attached to), and the records carry the socket's namespace themselves.

mod decode;
mod reasons;
mod runner;

use std::fs::File;
use std::path::{Path, PathBuf};

use periscope_pipeline::component::Invalid;
use periscope_pipeline::config::PositiveDuration;

pub use decode::{cgroup_counters, decode_record, Record, RecordError};
pub use reasons::DropReasons;
pub use runner::{SocketMaps, SocketReceiver, SocketReceiverOptions};

use aya::{Ebpf, EbpfLoader};

use crate::shared::ebpf::{names, Object, SocketConfig};
use crate::shared::kernel;

/// The keyword for "the root of the host's cgroup v2 hierarchy, wherever it is mounted".
pub const ROOT_CGROUP: &str = "root";

/// `cgroup: root`.
pub fn default_cgroup() -> PathBuf {
    PathBuf::from(ROOT_CGROUP)
}

/// Where `periscope` mounts cgroup2 itself when the host has no cgroup v2 mount.
pub const OWN_CGROUP2_MOUNT: &str = "/run/periscope/cgroup2";

/// The mount point of the cgroup v2 hierarchy (the unified one: `/sys/fs/cgroup` on pure v2
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones), from `/proc/self/mountinfo`.
pub fn find_cgroup2() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace().skip(3);
        let (root, mount_point) = (fields.next()?, fields.next()?);
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(mount_point))
    })
}

/// The cgroup directory a `cgroup` option names: `root` is the v2 hierarchy's root (mounted
/// under /run/periscope/cgroup2 when the host has none), anything else is taken as is.
pub fn resolve_cgroup(option: &Path) -> anyhow::Result<PathBuf> {
    if option != Path::new(ROOT_CGROUP) {
        return Ok(option.to_path_buf());
    }
    if let Some(p) = find_cgroup2() {
        return Ok(p);
    }
    match kernel::ensure_cgroup2(OWN_CGROUP2_MOUNT) {
        Ok(kernel::Mount::Mounted) => {
            tracing::info!(
                "mounted cgroup2 at {OWN_CGROUP2_MOUNT} (the host had no cgroup v2 mount)"
            )
        }
        Ok(kernel::Mount::Present) => {}
        Err(e) => anyhow::bail!("the host has no cgroup v2 mount: {e}"),
    }
    Ok(PathBuf::from(OWN_CGROUP2_MOUNT))
}

pub fn default_poll_interval() -> PositiveDuration {
    PositiveDuration::from_millis(50)
}

/// 4 MiB: ~26,000 socket records between two polls.
pub fn default_ring_buffer_size() -> u32 {
    1 << 22
}

/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Opens a cgroup v2 directory to attach to, with an error that says what is wrong.
pub fn open_cgroup(option: &Path) -> anyhow::Result<(File, PathBuf)> {
    let path = &resolve_cgroup(option)?;
    let file = File::open(path).map_err(|e| anyhow::anyhow!("cgroup {}: {e}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_dir() {
        anyhow::bail!(
            "cgroup {} is not a directory (give a cgroup v2 directory such as \
             /sys/fs/cgroup)",
            path.display()
        );
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs with a NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 != CGROUP2_SUPER_MAGIC
    {
        anyhow::bail!(
            "{} is not on a cgroup v2 (unified) hierarchy; give a cgroup2 \
             directory (`mount -t cgroup2 none /sys/fs/cgroup` where the host has none)",
            path.display()
        );
    }
    Ok((file, path.clone()))
}

/// Loads a socket object's maps, with `config` as its `periscope_socket_config` global (the
/// objects that have one) and `ring_bytes` as its ring buffer's size (a power of two, a
/// multiple of the page size); programs are loaded one by one by the receiver.
pub fn load_object(
    object: Object,
    config: Option<&SocketConfig>,
    ring_bytes: Option<u32>,
) -> Result<Ebpf, crate::shared::ebpf::Error> {
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    if let Some(config) = config {
        loader.override_global(names::SOCKET_CONFIG, config, true);
    }
    object.load(&mut loader)
}

/// An error with its causes (aya's syscall errors keep the errno in a source).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Checks the capabilities a socket receiver needs (measured per receiver, docs/deploy.md):
/// the error names each missing one and what it is for.
pub fn preflight(needs: &[kernel::Need]) -> anyhow::Result<()> {
    kernel::check(needs).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The checks the socket receivers share: the `cgroup` option (those attached to a cgroup) and
/// the `ring_buffer_size` (those with a ring buffer).
pub fn validate(cgroup: Option<&Path>, ring_buffer_size: Option<u32>) -> Result<(), Vec<Invalid>> {
    let mut errors = Vec::new();
    if let Some(cgroup) = cgroup {
        validate_cgroup(cgroup, &mut errors);
    }
    if let Some(size) = ring_buffer_size {
        validate_ring(size, &mut errors);
    }
    Invalid::all(errors)
}

/// Checks a ring buffer size.
fn validate_ring(ring_buffer_size: u32, errors: &mut Vec<Invalid>) {
    if ring_buffer_size < 4096 || !ring_buffer_size.is_power_of_two() {
        errors.push(Invalid::new(
            "ring_buffer_size",
            format!(
                "{ring_buffer_size} is not a power of two of at least 4096 (e.g. 4194304 for 4 MiB)"
            ),
        ));
    }
}

/// Checks a cgroup path option.
fn validate_cgroup(cgroup: &Path, errors: &mut Vec<Invalid>) {
    if cgroup != Path::new(ROOT_CGROUP) && !cgroup.is_absolute() {
        errors.push(Invalid::new(
            "cgroup",
            format!(
                "`{}` is neither `root` nor an absolute path; give `root` (the host's cgroup v2 root) or a cgroup v2 directory such as /sys/fs/cgroup/unified/kubepods",
                cgroup.display()
            ),
        ));
    }
}
