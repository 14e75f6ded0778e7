//! Which namespaces a watch covers: every one, a list, or those of a cgroup subtree's
//! processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::discover::{names_by_inode, nsfs_inode, BIND_DIRS};
use super::Found;

/// Which namespaces to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Every namespace on the host.
    All,
    /// These: `/run/netns` names or nsfs paths (`/proc/PID/ns/net`, `/var/run/docker/netns/x`);
    /// `host` is the host namespace.
    Listed(Vec<String>),
    /// The namespaces of every process in this cgroup v2 subtree.
    Cgroup(PathBuf),
}

/// Resolves `Listed` entries: `host`, a bare name under the bind-mount folders, or a path.
/// Entries that do not exist (yet) are skipped; they are looked up again at every rescan.
pub(super) fn resolve_listed(list: &[String], host: &Found, binds: &[Found]) -> Vec<Found> {
    let names = names_by_inode(binds);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for entry in list {
        let found = if entry == "host" {
            Some(host.clone())
        } else if !entry.contains('/') {
            BIND_DIRS.iter().find_map(|dir| {
                let path = Path::new(dir).join(entry);
                let inode = nsfs_inode(&path).ok()?;
                Some(Found {
                    inode,
                    name: Some(entry.clone()),
                    path,
                })
            })
        } else {
            let path = PathBuf::from(entry);
            nsfs_inode(&path).ok().map(|inode| Found {
                inode,
                name: names.get(&inode).cloned(),
                path,
            })
        };
        if let Some(f) = found {
            if seen.insert(f.inode) {
                out.push(f);
            }
        }
    }
    out
}

/// `dir` relative to the cgroup2 mount it is under (`/sys/fs/cgroup/unified/a/b` → `/a/b`).
pub(super) fn cgroup_relative(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, at, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(at))
        })
        .filter_map(|at| {
            let rel = dir.strip_prefix(&at).ok()?;
            Some((at.as_os_str().len(), format!("/{}", rel.to_str()?)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, rel)| rel.trim_end_matches('/').to_owned())
}

/// Whether `pid` is in cgroup `rel` (relative to the cgroup2 root) or below it.
pub(super) fn in_cgroup(pid: u32, rel: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    text.lines().filter_map(|l| l.strip_prefix("0::")).any(|p| {
        rel.is_empty() || p == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
    })
}

/// Every pid in `cgroup.procs` of `dir` and of its descendants.
pub(super) fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // A cgroup removed meanwhile just contributes nothing.
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
