//! Who a namespace belongs to: the cgroup of a process found in it, read when the namespace is
//! discovered. The process may be gone by the time the namespace's last counters are named, so
//! its cgroup (which names the container or pod) is captured then, while it is alive.

use std::path::Path;

use super::Found;

/// The pid of a `/proc/PID/ns/net` path (`None` for `/proc/self/...` and bind mounts).
pub(crate) fn pid_of(path: &Path) -> Option<u32> {
    let mut parts = path.strip_prefix("/proc").ok()?.components();
    let pid = parts.next()?.as_os_str().to_str()?.parse().ok()?;
    (parts.as_path() == Path::new("ns/net")).then_some(pid)
}

/// The cgroup v2 path of a process, as `/proc/PID/cgroup` shows it (`0::/PATH`).
pub(crate) fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup(&text)
}

fn parse_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The cgroup of a process in namespace `f`: its own pid if it was found through
/// `/proc/PID/ns/net`, and processes of `procs` (the last `/proc` scan) with the same inode;
/// the first that names a container or pod, else the first readable one. (A runtime's setup
/// process may be first, and gone or still in the runtime's cgroup.)
pub(crate) fn owner_cgroup(f: &Found, procs: &[Found]) -> Option<String> {
    let mut first = None;
    let pids = std::iter::once(f)
        .chain(procs.iter().filter(|p| p.inode == f.inode))
        .filter_map(|p| pid_of(&p.path));
    for cgroup in pids.filter_map(cgroup_of) {
        if names_workload(Some(&cgroup)) {
            return Some(cgroup);
        }
        first.get_or_insert(cgroup);
    }
    first
}

/// Whether a cgroup names a container or pod (not a host service or session).
pub(crate) fn names_workload(cgroup: Option<&str>) -> bool {
    cgroup.is_some_and(|c| !periscope_pipeline::workload::parse_cgroup_path(c).is_empty())
}

/// For a namespace found before any process was in it: the cgroup of a process in it (`pid`,
/// else one of `procs` with its inode) that names a container or pod — not a host process that
/// entered it for a moment (`ip netns exec`, a CNI plugin).
pub(crate) fn workload_cgroup(inode: u32, pid: Option<u32>, procs: &[Found]) -> Option<String> {
    pid.into_iter()
        .chain(
            procs
                .iter()
                .filter(|p| p.inode == inode)
                .filter_map(|p| pid_of(&p.path)),
        )
        .filter_map(cgroup_of)
        .find(|c| names_workload(Some(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn pids_of_proc_paths_only() {
        assert_eq!(pid_of(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(pid_of(Path::new("/proc/self/ns/net")), None);
        assert_eq!(pid_of(Path::new("/run/netns/x")), None);
        assert_eq!(pid_of(Path::new("/proc/42/ns/mnt")), None);
    }

    #[test]
    fn the_v2_line_is_the_cgroup() {
        assert_eq!(
            parse_cgroup("1:name=systemd:/x\n0::/kubepods/pod1/abc\n").as_deref(),
            Some("/kubepods/pod1/abc")
        );
        assert_eq!(parse_cgroup("1:cpu:/x\n"), None);
    }

    #[test]
    fn a_process_of_the_namespace_names_it() {
        let me = std::process::id();
        let f = Found {
            inode: 7,
            name: Some("x".into()),
            path: PathBuf::from("/run/netns/x"),
        };
        let procs = [Found {
            inode: 7,
            name: None,
            path: PathBuf::from(format!("/proc/{me}/ns/net")),
        }];
        assert_eq!(owner_cgroup(&f, &procs), cgroup_of(me));
        assert!(cgroup_of(me).is_some());
        assert_eq!(owner_cgroup(&f, &[]), None);
    }
}
