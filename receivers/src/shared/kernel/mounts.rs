//! bpffs (for pinning), tracefs (for tracepoints) and, on hosts without one, cgroup v2 (for
//! the socket receivers): mounted by the agent when missing.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Where bpffs is expected.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
/// Where tracefs is expected.
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TRACEFS_MAGIC: i64 = 0x7472_6163;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// What `ensure_*` found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mount {
    /// It was mounted already.
    Present,
    /// We mounted it.
    Mounted,
}

fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

fn ensure(path: &str, fstype: &str, magic: i64) -> io::Result<Mount> {
    let p = Path::new(path);
    if fs_magic(p).ok() == Some(magic) {
        return Ok(Mount::Present);
    }
    std::fs::create_dir_all(p)?;
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::other("NUL in mount argument"));
    let (src, target, kind) = (c(fstype)?, c(path)?, c(fstype)?);
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot mount {fstype} at {path}: {e}"),
        ));
    }
    Ok(Mount::Mounted)
}

/// True when bpffs is mounted at `/sys/fs/bpf`.
pub fn bpffs_mounted() -> bool {
    fs_magic(Path::new(BPFFS_PATH)).ok() == Some(BPF_FS_MAGIC)
}

/// True when tracefs is mounted at `/sys/kernel/tracing`.
pub fn tracefs_mounted() -> bool {
    fs_magic(Path::new(TRACEFS_PATH)).ok() == Some(TRACEFS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` unless it is there.
pub fn ensure_bpffs() -> io::Result<Mount> {
    ensure(BPFFS_PATH, "bpf", BPF_FS_MAGIC)
}

/// Mounts tracefs at `/sys/kernel/tracing` unless it is there.
pub fn ensure_tracefs() -> io::Result<Mount> {
    ensure(TRACEFS_PATH, "tracefs", TRACEFS_MAGIC)
}

/// Mounts a cgroup v2 hierarchy at `path` unless one is there.
pub fn ensure_cgroup2(path: &str) -> io::Result<Mount> {
    ensure(path, "cgroup2", CGROUP2_SUPER_MAGIC)
}
