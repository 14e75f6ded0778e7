//! Running code inside a namespace: a dedicated thread enters it with `setns` (the calling
//! thread never changes namespace).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::Namespace;

/// `statfs` magic of nsfs, the filesystem of `/proc/PID/ns/*` and their bind mounts.
pub(crate) const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `ioctl(NS_GET_NSTYPE)` = `_IO(0xb7, 0x3)`: which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// `SO_NETNS_COOKIE` (not in every libc version).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// An open nsfs file of a namespace. Holding it keeps the namespace alive: drop it when the
/// namespace is gone.
#[derive(Debug)]
pub struct NetnsHandle {
    pub fd: OwnedFd,
    pub inode: u32,
}

/// An open nsfs file shared by clones (a discovery event and what holds it): equal when it
/// is the same open file.
#[derive(Clone, Debug)]
pub struct NetnsFd(Arc<OwnedFd>);

impl NetnsFd {
    /// Shares `fd`.
    pub fn new(fd: OwnedFd) -> Self {
        NetnsFd(Arc::new(fd))
    }
}

impl PartialEq for NetnsFd {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NetnsFd {}

impl NetnsHandle {
    /// Opens `ns` (a duplicate of its shared fd, else its path) and checks that it is still
    /// the namespace `ns.id`: its inode, and its cookie where the kernel tells it without
    /// entering (`NS_GET_ID`; the inode alone is reused after a namespace dies).
    pub fn open(ns: &Namespace) -> io::Result<Self> {
        let handle = match &ns.fd {
            Some(fd) => {
                let what = || format!("the namespace found at {}", ns.path.display());
                let file = File::from(
                    fd.0.try_clone()
                        .map_err(|e| io::Error::new(e.kind(), format!("dup {}: {e}", what())))?,
                );
                let inode = inode_u32(file.metadata()?.ino(), &ns.path)?;
                if inode != ns.id.inode {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: namespace {inode}, expected {}", what(), ns.id.inode),
                    ));
                }
                Self {
                    fd: file.into(),
                    inode,
                }
            }
            None => Self::open_path(&ns.path, Some(ns.id.inode))?,
        };
        if ns.id.cookie != 0 {
            if let Ok(cookie) = nsfs_cookie(handle.fd.as_raw_fd()) {
                if cookie != ns.id.cookie {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "{}: now the namespace with cookie {cookie}, expected {} (it went away)",
                            ns.path.display(),
                            ns.id.cookie
                        ),
                    ));
                }
            }
        }
        Ok(handle)
    }

    /// Opens a network namespace file; with `expect`, fails unless it has that inode (the path
    /// may have been re-used by another namespace since it was found).
    pub fn open_path(path: &Path, expect: Option<u32>) -> io::Result<Self> {
        // std opens with O_CLOEXEC.
        let file = File::open(path).map_err(|e| with_path(e, "open", path))?;
        let fd = file.as_raw_fd();
        if fs_magic(fd).map_err(|e| with_path(e, "fstatfs", path))? != NSFS_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a namespace file (no nsfs mounted there)",
                    path.display()
                ),
            ));
        }
        // SAFETY: plain ioctl on an fd we own; no memory is passed.
        let kind = unsafe { libc::ioctl(fd, NS_GET_NSTYPE as _) };
        if kind < 0 {
            return Err(with_path(io::Error::last_os_error(), "NS_GET_NSTYPE", path));
        }
        if kind != libc::CLONE_NEWNET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a network namespace", path.display()),
            ));
        }
        let inode = inode_u32(file.metadata()?.ino(), path)?;
        if let Some(want) = expect {
            if inode != want {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{}: now namespace {inode}, expected {want} (it went away)",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Self {
            fd: file.into(),
            inode,
        })
    }
}

/// Runs `f` on a fresh thread that has entered `ns`; returns its result. A panic in `f` is
/// resumed on the calling thread.
///
/// A fresh thread per call (rather than a long-lived one hopping between namespaces) means a
/// thread never lingers in a namespace, which would keep it alive; it costs ~50-100 µs.
pub fn run_in<T: Send>(ns: &NetnsHandle, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    run_each_in(ns, [f])
        .pop()
        .unwrap_or_else(|| Err(io::Error::other("run_in: no result")))
}

/// Like [`run_in`] for several jobs at once: each runs on a thread of its own inside `ns`, all
/// in parallel (so that kernel waits they make overlap). Returns their results in order.
pub fn run_each_in<T: Send, F: FnOnce() -> T + Send>(
    ns: &NetnsHandle,
    jobs: impl IntoIterator<Item = F>,
) -> Vec<io::Result<T>> {
    let fd = ns.fd.as_raw_fd();
    let inode = ns.inode;
    std::thread::scope(|s| {
        let workers: Vec<_> = jobs
            .into_iter()
            .map(|f| {
                std::thread::Builder::new()
                    .name("netns-enter".into())
                    .spawn_scoped(s, move || {
                        // Already there (the host's namespace, for an agent in it): setns
                        // would need CAP_SYS_ADMIN for nothing.
                        if in_namespace(inode) {
                            return Ok(f());
                        }
                        // SAFETY: `fd` stays open: `ns` outlives the scope. setns changes only
                        // this thread, which ends with the scope.
                        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                            let e = io::Error::last_os_error();
                            return Err(io::Error::new(e.kind(), format!("setns(netns): {e}")));
                        }
                        Ok(f())
                    })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| match w?.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Whether the calling thread is in the network namespace with `inode` (a namespace we hold
/// open, so its inode is not reused meanwhile).
fn in_namespace(inode: u32) -> bool {
    std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == u64::from(inode))
}

/// `ioctl(NS_GET_ID)` = `_IOR(0xb7, 0xd, u64)`: the namespace's id, which for a network
/// namespace is its cookie (kernels ≥ 6.18; older ones answer ENOTTY).
const NS_GET_ID: libc::c_ulong = 0x8008_b70d;

/// The cookie of the namespace an nsfs fd refers to, without entering it (`NS_GET_ID`).
pub(crate) fn nsfs_cookie(fd: RawFd) -> io::Result<u64> {
    let mut id: u64 = 0;
    // SAFETY: NS_GET_ID writes one u64 into `id`.
    let rc = unsafe { libc::ioctl(fd, NS_GET_ID as _, &mut id as *mut u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// The namespace's cookie: `NS_GET_ID` on its nsfs fd where the kernel has it, else
/// `SO_NETNS_COOKIE` of a socket opened inside it (the two are the same number).
pub fn netns_cookie(ns: &NetnsHandle) -> io::Result<u64> {
    if let Ok(id) = nsfs_cookie(ns.fd.as_raw_fd()) {
        return Ok(id);
    }
    run_in(ns, || {
        // SAFETY: plain socket(2); the result is checked and owned right away.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        socket_cookie(sock.as_raw_fd())
    })?
}

/// `SO_NETNS_COOKIE` of any socket: the cookie of the namespace it was created in.
pub(crate) fn socket_cookie(fd: RawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` (8) bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("SO_NETNS_COOKIE: {e}")));
    }
    Ok(cookie)
}

/// The filesystem magic of an open file.
pub(crate) fn fs_magic(fd: RawFd) -> io::Result<i64> {
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The filesystem magic of a path (following symlinks), without opening it.
pub(crate) fn path_fs_magic(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Namespace inodes are 32-bit (`proc_inum`); anything else is not a namespace.
pub(crate) fn inode_u32(ino: u64, path: &Path) -> io::Result<u32> {
    u32::try_from(ino).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: inode {ino} does not fit a namespace inode",
                path.display()
            ),
        )
    })
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `NS_GET_ID` and `SO_NETNS_COOKIE` name the same number (where the ioctl exists).
    #[test]
    fn ns_get_id_is_the_socket_cookie() {
        let h = NetnsHandle::open_path(Path::new("/proc/self/ns/net"), None).expect("open");
        let Ok(id) = nsfs_cookie(h.fd.as_raw_fd()) else {
            eprintln!("NS_GET_ID not supported by this kernel: nothing to compare");
            return;
        };
        // SAFETY: plain socket(2), closed below.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fresh fd, owned here.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(socket_cookie(sock.as_raw_fd()).expect("cookie"), id);
    }
}
