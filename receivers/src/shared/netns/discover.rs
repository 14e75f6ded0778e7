//! Finding namespaces: processes' `/proc/*/ns/net`, bind mounts under `/run/netns` and
//! `/var/run/docker/netns`, deduplicated by inode.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use periscope_pipeline::model::NetnsId;

use super::enter::{inode_u32, netns_cookie, path_fs_magic, NetnsFd, NetnsHandle, NSFS_MAGIC};
use super::{Found, Namespace};

/// Folders where tools bind-mount namespaces under a name (`ip netns`, Docker).
pub(crate) const BIND_DIRS: [&str; 2] = ["/run/netns", "/var/run/docker/netns"];
/// The host namespace as seen from this process (`/proc/1/ns/net` may be EACCES).
pub(crate) const HOST_PATH: &str = "/proc/self/ns/net";

/// The host's namespace (through `/proc/self/ns/net`: `/proc/1/ns/net` may be EACCES).
pub fn host_namespace() -> io::Result<Namespace> {
    let found = host_found()?;
    with_cookie(found)
}

/// Every namespace reachable now, host first. Each one's cookie is read from a socket opened
/// inside it (a thread per namespace, ~0.1 ms each); a namespace that vanishes meanwhile is
/// left out.
pub fn scan() -> io::Result<Vec<Namespace>> {
    let host = host_found()?;
    let mut out = Vec::new();
    for found in merge(host, bind_mounts(), proc_namespaces()?) {
        match with_cookie(found) {
            Ok(ns) => out.push(ns),
            // Host first: if even the host fails, something is wrong with us, not the host.
            Err(e) if out.is_empty() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "namespace vanished during scan"),
        }
    }
    Ok(out)
}

fn with_cookie(found: Found) -> io::Result<Namespace> {
    let handle = NetnsHandle::open_path(&found.path, Some(found.inode))?;
    let cookie = netns_cookie(&handle)?;
    let cgroup = super::owner::owner_cgroup(&found, &[]);
    Ok(Namespace {
        fd: Some(NetnsFd::new(handle.fd)),
        id: NetnsId {
            inode: found.inode,
            cookie,
        },
        name: found.name,
        path: found.path,
        cgroup,
        cgroup_late: false,
    })
}

pub(crate) fn host_found() -> io::Result<Found> {
    let path = PathBuf::from(HOST_PATH);
    let inode = nsfs_inode(&path)?;
    Ok(Found {
        inode,
        name: None,
        path,
    })
}

/// Host first, then named bind mounts, then processes; one entry per inode, named after its
/// (first, sorted) bind mount.
pub(crate) fn merge(host: Found, binds: Vec<Found>, procs: Vec<Found>) -> Vec<Found> {
    let names = names_by_inode(&binds);
    let mut seen = HashMap::new();
    let mut out: Vec<Found> = Vec::new();
    for mut f in std::iter::once(host).chain(binds).chain(procs) {
        if seen.contains_key(&f.inode) {
            continue;
        }
        if f.name.is_none() {
            f.name = names.get(&f.inode).cloned();
        }
        seen.insert(f.inode, out.len());
        out.push(f);
    }
    out
}

/// The bind-mount name of each inode (the first in sorted order if several).
pub(crate) fn names_by_inode(binds: &[Found]) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for b in binds {
        if let Some(n) = &b.name {
            names.entry(b.inode).or_insert_with(|| n.clone());
        }
    }
    names
}

/// Namespaces bind-mounted under [`BIND_DIRS`], sorted by path. A file there that is not
/// (yet) an nsfs mount is skipped: `ip netns add` creates the file before mounting on it.
pub(crate) fn bind_mounts() -> Vec<Found> {
    let mut out = Vec::new();
    for dir in BIND_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue; // missing folder: nothing mounted there
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if let Ok(inode) = nsfs_inode(&path) {
                out.push(Found {
                    inode,
                    name: Some(name),
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Files under [`BIND_DIRS`] that are not (yet) a mounted namespace.
pub(crate) fn unmounted_bind_files() -> usize {
    BIND_DIRS
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| nsfs_inode(&e.path()).is_err())
        .count()
}

/// Every distinct namespace of a process, by `/proc/PID/ns/net`, in pid order. Processes that
/// exit meanwhile or that we may not inspect are skipped.
pub(crate) fn proc_namespaces() -> io::Result<Vec<Found>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| io::Error::new(e.kind(), format!("read /proc: {e}")))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pid_namespaces(pids))
}

/// The distinct namespaces of these pids (first pid wins the path).
pub(crate) fn pid_namespaces(pids: impl IntoIterator<Item = u32>) -> Vec<Found> {
    // Stat relative to an open /proc: a third cheaper than full paths (measured).
    let proc = match File::open("/proc") {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "open /proc");
            return Vec::new();
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut rel = String::with_capacity(32);
    for pid in pids {
        rel.clear();
        let _ = write!(rel, "{pid}/ns/net\0");
        // /proc/PID/ns/net is always nsfs: stat is enough (no statfs).
        let Some(ino) = stat_at(&proc, rel.as_bytes()) else {
            continue; // exited, or not ours to inspect
        };
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(inode) = inode_u32(ino, &path) else {
            continue;
        };
        if seen.insert(inode) {
            out.push(Found {
                inode,
                name: None,
                path,
            });
        }
    }
    out
}

/// `fstatat(dir, rel)` (following symlinks) → inode; `rel` must end with a NUL byte.
pub(crate) fn stat_at(dir: &File, rel: &[u8]) -> Option<u64> {
    let c = std::ffi::CStr::from_bytes_with_nul(rel).ok()?;
    // SAFETY: plain data filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `st` is writable, `dir` is open.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, 0) };
    (rc == 0).then_some(st.st_ino)
}

/// The inode of an nsfs file (following symlinks); an error if `path` is not nsfs.
pub(crate) fn nsfs_inode(path: &Path) -> io::Result<u32> {
    let magic = path_fs_magic(path)
        .map_err(|e| io::Error::new(e.kind(), format!("statfs {}: {e}", path.display())))?;
    if magic != NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a namespace file", path.display()),
        ));
    }
    let md = std::fs::metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("stat {}: {e}", path.display())))?;
    inode_u32(md.ino(), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// CPU time of this thread, to cost a scan without the noise of other threads.
    fn thread_cpu() -> std::time::Duration {
        // SAFETY: plain data filled by the kernel.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is writable.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Costs a `/proc` scan with ~300 processes (prints it; asserts only that it works).
    #[test]
    fn proc_scan_cost() {
        let mut children: Vec<std::process::Child> = (0..220)
            .filter_map(|_| std::process::Command::new("sleep").arg("30").spawn().ok())
            .collect();
        let procs = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                    .count()
            })
            .unwrap_or(0);
        let rounds = 50u32;
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let mut found = 0;
        for _ in 0..rounds {
            found = proc_namespaces().expect("scan /proc").len();
        }
        let (wall, cpu) = (wall.elapsed() / rounds, (thread_cpu() - cpu) / rounds);
        let binds = Instant::now();
        for _ in 0..rounds {
            bind_mounts();
        }
        let binds = binds.elapsed() / rounds;
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        eprintln!(
            "/proc scan: {procs} processes, {found} namespaces: {wall:?} wall, {cpu:?} CPU per scan; \
             bind-mount scan {binds:?}"
        );
        assert!(found >= 1);
    }
}
